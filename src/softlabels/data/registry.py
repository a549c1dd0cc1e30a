"""``load_dataset(name, ...)``: every dataset by name, through one pipeline.

The registry is the plain dict ``SOURCES`` below (no registration at import time): each entry is
a :class:`~softlabels.data.sources.base.Source` saying where a split's files are and how to
decode them. ``load_dataset`` adds what is common to all of them: root resolution, optional
download, the on-disk cache, normalisation statistics and the conversion to float tensors.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from . import download as _download
from .cache import CacheDir, CacheEntry, resolve_cache_dir
from .sources.base import RawSplit, Source, SplitPlan, channel_stats, need_root
from .sources.cifar import CIFAR10, CIFAR100
from .sources.digits import DIGITS
from .sources.imagefolder import IMAGEFOLDER
from .sources.mnist import FASHION_MNIST, MNIST
from .sources.npz import NPZ
from .types import DatasetInfo, ImageDataset

logger = logging.getLogger(__name__)

DATA_ENV = "SOFTLABELS_DATA"
STATS_SPLIT = "train"

SOURCES: dict[str, Source] = {
    "digits": DIGITS,
    "mnist": MNIST,
    "fashion_mnist": FASHION_MNIST,
    "cifar10": CIFAR10,
    "cifar100": CIFAR100,
    "imagefolder": IMAGEFOLDER,
    "npz": NPZ,
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(SOURCES)


def _source(name: object) -> Source:
    if not isinstance(name, str) or name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {list_datasets()}")
    return SOURCES[name]


def _resolve_root(source: Source, root: str | os.PathLike[str] | None) -> Path | None:
    if source.embedded:
        return None
    if root is None:
        env = os.environ.get(DATA_ENV, "")
        if not env:
            raise FileNotFoundError(
                f"{source.name} needs its files: pass root=<folder> or set ${DATA_ENV} to a "
                f"folder holding a {source.name!r} sub-folder"
            )
        root = Path(env).expanduser() / source.name
    if not isinstance(root, str | os.PathLike):
        raise TypeError(f"root must be a path or None, got {type(root).__name__}")
    # Resolved so that two spellings of one folder share a cache entry.
    return Path(root).expanduser().resolve()


def _locate(source: Source, root: Path | None, split: str, download: bool) -> SplitPlan:
    downloadable = source.name in _download.RESOURCES
    if download and not downloadable:
        raise ValueError(
            f"download=True is not available for {source.name!r}; downloadable datasets: "
            f"{sorted(_download.RESOURCES)}"
        )
    try:
        return source.locate(root, split)
    except FileNotFoundError as err:
        if not download:
            hint = (
                f"; pass download=True to fetch it into {str(root)!r}"
                if downloadable
                else ""
            )
            raise FileNotFoundError(
                f"{source.name} (root {str(root)!r}): {err}. Point root (or ${DATA_ENV}) at a "
                f"folder holding the data{hint}"
            ) from err
    _download.download_dataset(source.name, need_root(root, source.name))
    return source.locate(root, split)


def _read(source: Source, plan: SplitPlan, name: str, split: str,
          cache_dir: Path | None) -> tuple[RawSplit, dict]:
    """Decode ``plan`` or take it from the cache.

    The returned meta carries the split's own channel mean/std when the source has no
    published statistics, so that another split can take them without decoding this one again.
    """
    entry = None
    if cache_dir is not None and source.cacheable:
        # The plan's origin is the resolved folder (or file) the split is read from.
        entry = CacheEntry.create(cache_dir, name, split, plan.origin, plan.files, plan.key_extra)
        cached = entry.load()
        if cached is not None and (source.mean is not None or "mean" in cached[1]):
            return cached
    raw = plan.read()
    meta: dict = {"origin": plan.origin, "split": split}
    if source.mean is None:  # published constants make the (0.5 s for 50000 images) pass moot
        mean, std = channel_stats(raw.images)
        meta.update(mean=list(mean), std=list(std))
    if entry is not None:
        try:
            entry.store(raw, meta)
        except OSError as err:  # read-only or full disk: the data is fine, only not cached
            logger.warning("could not write the cache entry in %s: %s", cache_dir, err)
    return raw, meta


def _train_stats(source: Source, root: Path | None, split: str, own_plan: SplitPlan,
                 own: dict, cache_dir: Path | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of the training split: published constants, else computed (and cached)."""
    if source.mean is not None and source.std is not None:
        return source.mean, source.std
    if split != STATS_SPLIT:
        try:
            plan = source.locate(root, STATS_SPLIT)
        except FileNotFoundError:
            plan = None  # no training split: fall back to the loaded split's own statistics
        # (A single .npz file is its own "train" split: nothing else to read.)
        if plan is not None and not (plan.files and plan.files == own_plan.files):
            _, meta = _read(source, plan, source.name, STATS_SPLIT, cache_dir)
            return tuple(meta["mean"]), tuple(meta["std"])
    return tuple(own["mean"]), tuple(own["std"])


def _to_float(images: np.ndarray) -> torch.Tensor:
    if not images.flags.writeable:  # e.g. a view of a decompressed IDX buffer
        images = images.copy()
    if images.dtype == np.uint8:
        # Same as torchvision's ToTensor: float division by 255 (not multiplication by 1/255,
        # which differs in the last bit).
        return torch.from_numpy(images).to(torch.float32).div_(255.0)
    return torch.from_numpy(images.astype(np.float32, copy=False))


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    *,
    download: bool = False,
    cache_dir: CacheDir = None,
) -> ImageDataset:
    """Load one split of a dataset as float32 ``(N, C, H, W)`` images in [0, 1] and labels.

    Args:
        name: one of :func:`list_datasets` (``digits``, ``mnist``, ``fashion_mnist``,
            ``cifar10``, ``cifar100``, ``imagefolder``, ``npz``).
        root: the dataset's folder (or ``.npz`` file). ``None``: ``$SOFTLABELS_DATA/<name>``;
            ignored by the embedded ``digits``.
        split: ``"train"`` or ``"test"`` (``digits`` also ``"all"``); for ``imagefolder`` and
            ``npz`` any split folder or file present under the root.
        download: fetch missing files of ``mnist``, ``fashion_mnist``, ``cifar10``,
            ``cifar100`` into ``root`` (checksums verified). Never happens implicitly.
        cache_dir: folder of the decoded-split cache; ``None`` = ``$SOFTLABELS_CACHE`` or
            ``~/.cache/softlabels``; ``False`` = no cache. ``digits`` and ``npz`` are never
            cached (reading them is as fast as reading a cache).

    Returns:
        An :class:`ImageDataset`: images float32 ``(N, C, H, W)`` in [0, 1], labels int64
        ``(N,)``, and ``info`` with class names and the channel mean/std of the *training*
        split (published constants for MNIST, Fashion-MNIST, CIFAR-10/100; computed from the
        training images otherwise, or from the loaded split when there is no training split).

    Raises:
        ValueError: unknown name or split (the message lists the valid ones), corrupt files,
            inconsistent images (naming the file).
        FileNotFoundError: missing files; names the expected files and the folder searched.

    Example:
        >>> data = load_dataset("digits", split="test")
        >>> data.images.shape[1:], data.num_classes
        (torch.Size([1, 8, 8]), 10)
    """
    source = _source(name)
    if not isinstance(split, str):
        raise TypeError(f"split must be a string, got {type(split).__name__}")
    if source.splits is not None and split not in source.splits:
        raise ValueError(
            f"unknown split {split!r} for {source.name}; valid splits: {list(source.splits)}"
        )
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    cache_folder = resolve_cache_dir(cache_dir)
    root_path = _resolve_root(source, root)
    plan = _locate(source, root_path, split, download)
    raw, meta = _read(source, plan, source.name, split, cache_folder)
    mean, std = _train_stats(source, root_path, split, plan, meta, cache_folder)
    info = DatasetInfo(
        name=source.name,
        class_names=raw.class_names,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        source=plan.origin,
    )
    return ImageDataset(
        images=_to_float(raw.images), labels=torch.from_numpy(raw.labels.copy()), info=info
    )
