"""``load_segmentation(name, ...)``: segmentation datasets by name.

The registry is the plain dict ``SEGMENTATION_SOURCES`` (no registration at import time). Each
entry says which splits exist, whether files are needed, and which function loads a split.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache import CacheDir, resolve_cache_dir
from .camvid import CAMVID, load_list_folder
from .digit_scenes import DIGIT_SCENE_SPLITS, load_digit_scenes
from .types import SegmentationDataset


@dataclass(frozen=True)
class SegmentationSource:
    """One entry of the segmentation registry.

    Attributes:
        name: registry name.
        description: one line for users and error messages.
        splits: valid split names.
        load: ``(root, split, cache_dir, **options) -> SegmentationDataset``; ``cache_dir`` is
            already resolved (``None`` = no cache).
        options: keyword options ``load`` accepts beyond those (e.g. ``num_images``).
        embedded: needs no files (``root`` is ignored).
    """

    name: str
    description: str
    splits: tuple[str, ...]
    load: Callable[..., SegmentationDataset]
    options: tuple[str, ...] = ()
    embedded: bool = False


def _load_camvid(
    root: str | os.PathLike[str] | None, split: str, cache_dir: Path | None
) -> SegmentationDataset:
    return load_list_folder(CAMVID, root, split, cache_dir)


def _load_digit_scenes(
    root: object, split: str, cache_dir: Path | None, **options: Any
) -> SegmentationDataset:
    del root, cache_dir  # embedded, and built faster than a cache could be read
    return load_digit_scenes(split, **options)


SEGMENTATION_SOURCES: dict[str, SegmentationSource] = {
    "camvid": SegmentationSource(
        name="camvid",
        description="CamVid, SegNet layout (11 classes, void=11 -> ignore 255; 367/101/233)",
        splits=CAMVID.splits,
        load=_load_camvid,
    ),
    "digit_scenes": SegmentationSource(
        name="digit_scenes",
        description="scenes of 1-4 sklearn digits (embedded, 11 classes incl. background)",
        splits=DIGIT_SCENE_SPLITS,
        load=_load_digit_scenes,
        options=("num_images", "image_size", "seed", "max_digits", "scales", "threshold"),
        embedded=True,
    ),
}


def list_segmentation_datasets() -> list[str]:
    """Names accepted by :func:`load_segmentation`, sorted."""
    return sorted(SEGMENTATION_SOURCES)


def load_segmentation(
    name: str,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    *,
    cache_dir: CacheDir = None,
    **options: Any,
) -> SegmentationDataset:
    """Load one split of a segmentation dataset.

    Args:
        name: one of :func:`list_segmentation_datasets`:

            * ``"camvid"``: SegNet's CamVid folder (``train.txt``/``val.txt``/``test.txt`` listing
              ``image annotation`` pairs). 11 classes (``CAMVID_CLASSES``); label 11 (void)
              becomes ``ignore_index=255``; any label above 11 is an error naming the file.
            * ``"digit_scenes"``: embedded scenes of 1-4 sklearn digits (see
              :mod:`~softlabels.data.segmentation.digit_scenes`); class 0 is background.
        root: the dataset's folder; ``None``: ``$SOFTLABELS_DATA/<name>``. Ignored by
            ``digit_scenes``.
        split: ``"train"``, ``"val"``, ``"test"`` for CamVid; ``"train"``, ``"test"`` for
            ``digit_scenes``.
        cache_dir: folder of the decoded-split cache; ``None`` = ``$SOFTLABELS_CACHE`` or
            ``~/.cache/softlabels``; ``False`` = no cache. ``digit_scenes`` is never cached.
        **options: ``digit_scenes`` only: ``num_images``, ``image_size``, ``seed``,
            ``max_digits``, ``scales``, ``threshold``.

    Returns:
        A :class:`SegmentationDataset`: float32 ``(N, C, H, W)`` images in [0, 1], int64
        ``(N, H, W)`` masks, ``ignore_index=255``, ``info`` with the class names and the
        training split's channel mean/std.

    Raises:
        ValueError: unknown name, split or option; corrupt files; label values that are neither
            a class nor void; sizes that differ (naming the file).
        FileNotFoundError: missing folder, list file or listed file (naming it).

    Example:
        >>> data = load_segmentation("digit_scenes", split="test", num_images=8)
        >>> data.images.shape, data.masks.shape, data.num_classes
        (torch.Size([8, 1, 32, 32]), torch.Size([8, 32, 32]), 11)
    """
    if not isinstance(name, str) or name not in SEGMENTATION_SOURCES:
        raise ValueError(
            f"unknown segmentation dataset {name!r}; valid names: {list_segmentation_datasets()}"
        )
    source = SEGMENTATION_SOURCES[name]
    if not isinstance(split, str) or split not in source.splits:
        raise ValueError(
            f"unknown split {split!r} for {name}; valid splits: {list(source.splits)}"
        )
    unknown = sorted(set(options) - set(source.options))
    if unknown:
        raise ValueError(
            f"{name} does not take the option(s) {unknown}; it takes "
            f"{list(source.options) or 'none'}"
        )
    return source.load(root, split, resolve_cache_dir(cache_dir), **options)
