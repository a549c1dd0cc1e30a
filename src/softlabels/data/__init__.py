"""Datasets, splits and batch augmentation.

* :func:`load_dataset` / :func:`list_datasets`: the registry of sources (embedded digits, MNIST
  and Fashion-MNIST IDX files, CIFAR-10/100 pickles or ImageFolder trees, any ImageFolder tree,
  ``.npz`` files), with an on-disk cache and optional download. Every loader returns an
  :class:`ImageDataset` of float32 ``(N, C, H, W)`` images in [0, 1].
* :func:`train_val_split`: seeded, stratified split of positions.
* :mod:`~softlabels.data.augment`: seeded batch augmentations (flip, crop) and :class:`Augment`.
* :mod:`~softlabels.data.dsa`: differentiable siamese augmentation (DSA) of dataset distillation.
* :func:`augmentation`: an augmentation by name (``none``, ``flip``, ``flip_crop``, ``dsa``).
"""

from .augment import Augment, RandomCrop, RandomFlip, random_crop, random_flip
from .cache import default_cache_dir
from .download import RESOURCES, Resource, download_dataset
from .dsa import DSA, DSA_STRATEGY, DSAParams, dsa
from .presets import augmentation, list_augmentations
from .registry import SOURCES, list_datasets, load_dataset
from .segmentation import (
    PairedAugment,
    SegmentationDataset,
    list_segmentation_datasets,
    load_segmentation,
    paired_flip,
    paired_random_crop,
    paired_random_scale,
)
from .split import sample_per_class, train_val_split
from .streaming import (
    STREAMABLE,
    StreamingImageFolder,
    StreamingSegmentation,
    stream_dataset,
    stream_segmentation,
)
from .types import DatasetInfo, ImageDataset

__all__ = [
    "DSA",
    "DSA_STRATEGY",
    "RESOURCES",
    "SOURCES",
    "STREAMABLE",
    "Augment",
    "DSAParams",
    "DatasetInfo",
    "ImageDataset",
    "PairedAugment",
    "RandomCrop",
    "RandomFlip",
    "Resource",
    "SegmentationDataset",
    "StreamingImageFolder",
    "StreamingSegmentation",
    "augmentation",
    "default_cache_dir",
    "download_dataset",
    "dsa",
    "list_augmentations",
    "list_datasets",
    "list_segmentation_datasets",
    "load_dataset",
    "load_segmentation",
    "paired_flip",
    "paired_random_crop",
    "paired_random_scale",
    "random_crop",
    "random_flip",
    "sample_per_class",
    "stream_dataset",
    "stream_segmentation",
    "train_val_split",
]
