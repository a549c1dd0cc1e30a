"""What every data source hands to the loading pipeline in :mod:`softlabels.data.registry`.

A source is declarative: which splits it has, its published normalisation statistics (if any)
and two functions. ``locate(root, split)`` finds the files a split is made of without decoding
them (so the cache can fingerprint them cheaply) and returns a :class:`SplitPlan` whose
``read()`` decodes them into a :class:`RawSplit`. Keeping "find" and "decode" apart is what
makes a cache hit cost a directory scan instead of a decode.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class RawSplit:
    """Decoded images of one split, before the conversion to float tensors.

    Attributes:
        images: ``(N, C, H, W)`` array, either ``uint8`` in 0..255 or ``float32`` in [0, 1].
            Keeping ``uint8`` until the end makes the cache four times smaller than float32.
        labels: ``(N,)`` ``int64`` class indices in ``[0, len(class_names))``.
        class_names: one name per class, in label order.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        # Internal invariant checks: a source that breaks them has a bug, but the message still
        # says what is wrong rather than failing later inside a tensor op.
        if self.images.ndim != 4:
            raise ValueError(f"decoded images must be (N, C, H, W), got {self.images.shape}")
        if self.images.dtype not in (np.uint8, np.float32):
            raise TypeError(f"decoded images must be uint8 or float32, got {self.images.dtype}")
        if self.labels.dtype != np.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"decoded labels must be int64 of shape ({self.images.shape[0]},), got "
                f"{self.labels.dtype} {self.labels.shape}"
            )


@dataclass(frozen=True)
class SplitPlan:
    """The files one split is decoded from, and how to decode them.

    Attributes:
        origin: the folder or file the split comes from (stored as ``DatasetInfo.source``).
        files: every file the decoded result depends on; their sizes and modification times
            form the cache fingerprint. Plain strings are accepted (and used by large
            ImageFolder trees: ``pathlib`` costs ~10 us a path, 0.5 s for 50000 files).
        read: decodes the files; raises ``ValueError`` naming a file that is corrupt.
        key_extra: anything besides the files that changes the result (e.g. the class order
            of an ImageFolder tree, which depends on folders of other splits too).
    """

    origin: str
    files: tuple[str | Path, ...]
    read: Callable[[], RawSplit]
    key_extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    """One entry of the dataset registry.

    Attributes:
        name: registry name.
        description: one line for ``list_datasets`` users and error messages.
        locate: ``(root, split) -> SplitPlan``; raises ``FileNotFoundError`` naming the expected
            files and the folder searched. ``root`` is ``None`` only for embedded sources.
        splits: the valid split names, or ``None`` when they are discovered from the root
            (ImageFolder and ``.npz`` folders).
        mean, std: published per-channel statistics of the training split, or ``None`` to
            compute them from the decoded training images.
        embedded: needs no files (``root`` is ignored).
        cacheable: decoded splits are worth caching (``False`` where reading the source is
            already as fast as reading the cache).
    """

    name: str
    description: str
    locate: Callable[[Path | None, str], SplitPlan]
    splits: tuple[str, ...] | None = ("train", "test")
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    embedded: bool = False
    cacheable: bool = True


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of images scaled to [0, 1].

    Args:
        images: ``(N, C, H, W)`` ``uint8`` (read as value / 255) or float in [0, 1].

    Returns:
        ``(mean, std)``, each a tuple of ``C`` floats.
    """
    means: list[float] = []
    stds: list[float] = []
    for c in range(images.shape[1]):
        channel = images[:, c]
        if images.dtype == np.uint8:
            # A 256-bin histogram gives exact sums in one pass, several times faster than
            # converting tens of millions of bytes to float64.
            hist = np.bincount(channel.ravel(), minlength=256).astype(np.float64)
            values = np.arange(256, dtype=np.float64) / 255.0
            count = hist.sum()
            mean = float((hist * values).sum() / count)
            var = float((hist * (values - mean) ** 2).sum() / count)
        else:
            data = channel.astype(np.float64, copy=False)
            mean = float(data.mean())
            var = float(data.var())
        means.append(mean)
        stds.append(var**0.5)
    return tuple(means), tuple(stds)


def first_existing(folders: Sequence[Path], names: Sequence[str]) -> Path | None:
    """Return the first folder of ``folders`` that holds every file in ``names``."""
    for folder in folders:
        if all((folder / name).is_file() for name in names):
            return folder
    return None


def plain_split_name(split: str) -> str:
    """Reject split names that could escape the data root when used as a folder name."""
    if not isinstance(split, str) or not split or split in (".", "..") or any(
        sep in split for sep in ("/", "\\", os.sep)
    ):
        raise ValueError(f"split must be a plain folder or file name, got {split!r}")
    return split


def listing(folder: Path, *, dirs: bool) -> list[str]:
    """Sorted names of the sub-folders (``dirs=True``) or files directly inside ``folder``."""
    with os.scandir(folder) as entries:
        names = [
            e.name
            for e in entries
            if not e.name.startswith(".") and (e.is_dir() if dirs else e.is_file())
        ]
    return sorted(names)


def need_root(root: Path | None, name: str) -> Path:
    """Return ``root``; the registry always resolves it for sources that read files."""
    if root is None:
        raise ValueError(f"{name} reads files: a data root is required")
    return root
