"""Segmentation data: datasets of images with per-pixel labels, and paired augmentation.

* :class:`SegmentationDataset`: float32 ``(N, C, H, W)`` images in [0, 1], int64 ``(N, H, W)``
  masks with values in ``[0, C)`` or ``ignore_index``, checked at construction.
* :func:`load_segmentation` / :func:`list_segmentation_datasets`: ``camvid`` (SegNet layout,
  cached decode) and ``digit_scenes`` (embedded scenes of sklearn digits).
* :func:`paired_flip`, :func:`paired_random_crop`, :func:`paired_random_scale` and
  :class:`PairedAugment`: seeded augmentations that move an image and its mask together.
"""

from .augment import (
    PairedAugment,
    PairedFlip,
    PairedRandomCrop,
    PairedRandomScale,
    paired_flip,
    paired_random_crop,
    paired_random_scale,
)
from .camvid import CAMVID, CAMVID_CLASSES, ListFolderSpec
from .digit_scenes import DIGIT_SCENE_CLASSES, DigitScenes, build_digit_scenes, digit_pool
from .registry import (
    SEGMENTATION_SOURCES,
    SegmentationSource,
    list_segmentation_datasets,
    load_segmentation,
)
from .types import IGNORE_INDEX, SegmentationDataset

__all__ = [
    "CAMVID",
    "CAMVID_CLASSES",
    "DIGIT_SCENE_CLASSES",
    "IGNORE_INDEX",
    "SEGMENTATION_SOURCES",
    "DigitScenes",
    "ListFolderSpec",
    "PairedAugment",
    "PairedFlip",
    "PairedRandomCrop",
    "PairedRandomScale",
    "SegmentationDataset",
    "SegmentationSource",
    "build_digit_scenes",
    "digit_pool",
    "list_segmentation_datasets",
    "load_segmentation",
    "paired_flip",
    "paired_random_crop",
    "paired_random_scale",
]
