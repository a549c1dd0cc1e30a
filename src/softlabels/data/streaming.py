"""Image folders read one image at a time, for data larger than memory.

:func:`~softlabels.data.load_dataset` decodes a whole split into one tensor (and caches it),
which is the fastest path while the data fits. A streaming dataset lists the files only: each
``dataset[i]`` decodes one image (and, for segmentation, its mask), so with
``fit(..., num_workers=k)`` the DataLoader's worker processes decode the next batches while the
model trains, and memory holds a few batches. Decoding follows the in-memory loaders exactly
(same file order, same pixels), so a streamed split trains the same weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .registry import SOURCES
from .segmentation.camvid import CAMVID, ListFolderSpec, decode_masks, list_pairs, resolve_root
from .segmentation.types import SegmentationDataset
from .sources.base import channel_stats
from .sources.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES
from .sources.imagefolder import decode_image, tree_files
from .types import DatasetInfo, ImageDataset

__all__ = ["STREAMABLE", "StreamingImageFolder", "StreamingSegmentation", "stream_dataset",
           "stream_segmentation"]

#: Sources stored as ImageFolder trees, which can stream, and their canonical class order.
_CLASSES: dict[str, tuple[str, ...] | None] = {"imagefolder": None, "cifar10": CIFAR10_CLASSES,
                                               "cifar100": CIFAR100_CLASSES}
STREAMABLE = tuple(_CLASSES)
_SEGMENTATION: dict[str, ListFolderSpec] = {"camvid": CAMVID}
# Images whose statistics stand in for the training split's mean and std when a source has
# no published constants: enough for 3 significant digits, and a second or two of decoding.
_STATS_IMAGES = 2048


class _Stream(Dataset):
    """Files decoded on access; sizes from the first image (every image must match it)."""

    paths: list[str]
    info: DatasetInfo

    def _first(self) -> None:
        first = _hwc(decode_image(self.paths[0]))
        self.image_size = (int(first.shape[0]), int(first.shape[1]))
        self.in_channels = int(first.shape[2])

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self.info.num_classes

    @property
    def indices(self) -> Tensor:
        """int64 (N,) positions in the split (as an in-memory split's ``indices``)."""
        return torch.arange(len(self))

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Tensor:
        """float32 (C, H, W) in [0, 1], the way the in-memory loaders convert it."""
        array = _hwc(decode_image(self.paths[index]))
        if array.shape[:2] != self.image_size:
            raise ValueError(f"{self.paths[index]!r} is {array.shape[1]}x{array.shape[0]} "
                             f"pixels but the split's images are {self.image_size[1]}x"
                             f"{self.image_size[0]} (resize them beforehand)")
        if array.shape[2] != self.in_channels:  # grey among colour: replicated, as in memory
            array = np.repeat(array, self.in_channels, axis=2)
        image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        return image.to(torch.float32).div_(255.0)

    def _stats(self, paths: Sequence[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Channel mean/std of up to 2048 evenly spaced images of ``paths``."""
        picked = np.linspace(0, len(paths) - 1, min(len(paths), _STATS_IMAGES)).astype(int)
        stacked = np.stack([_hwc(decode_image(paths[i])) for i in picked])
        if stacked.shape[3] != self.in_channels:
            stacked = np.repeat(stacked, self.in_channels, axis=3)
        return channel_stats(stacked.transpose(0, 3, 1, 2))


class StreamingImageFolder(_Stream):
    """``root/<split>/<class>/*`` as (image float32 (C, H, W) in [0, 1], label int64) pairs.

    Attributes:
        paths, labels: the files in class, then file-name order (as :func:`load_dataset`).
        info: class names and the training split's channel mean/std (published constants
            for CIFAR, else estimated from up to 2048 evenly spaced training images).
        in_channels, image_size: of the first image; every image must match them (a different
            one is an error naming its file, nothing is resized).
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "train", *,
                 name: str = "imagefolder") -> None:
        if name not in STREAMABLE:
            raise ValueError(f"dataset {name!r} cannot stream: streaming reads ImageFolder "
                             f"trees ({list(STREAMABLE)}); load it into memory instead")
        source, canonical, folder = SOURCES[name], _CLASSES[name], Path(root)
        self.paths, labels, class_names = tree_files(folder, split, canonical=canonical,
                                                     what=name)
        self.labels = torch.from_numpy(labels.copy())
        self._first()
        if source.mean is not None and source.std is not None:
            mean, std = source.mean, source.std
        else:
            try:
                train = tree_files(folder, "train", canonical=canonical, what=name)[0]
            except FileNotFoundError:
                train = self.paths  # no training split: the split's own statistics
            mean, std = self._stats(train)
        self.info = DatasetInfo(name=name, class_names=class_names, mean=tuple(mean),
                                std=tuple(std), source=str(folder / split))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.image(index), self.labels[index]

    def subset(self, positions: Tensor) -> ImageDataset:
        """The images at ``positions``, decoded into memory (a few images per class)."""
        rows = [int(p) for p in positions]
        images = torch.stack([self.image(i) for i in rows]) if rows else \
            torch.zeros(0, self.in_channels, *self.image_size)
        return ImageDataset(images, self.labels[rows], self.info,
                            indices=torch.tensor(rows, dtype=torch.int64))


class StreamingSegmentation(_Stream):
    """A list-file segmentation folder (CamVid's SegNet layout) as (image, mask) pairs.

    Masks decode as in :func:`~softlabels.data.load_segmentation`: void labels become
    ``ignore_index``, any other value outside the classes is an error naming the file.
    """

    def __init__(self, root: str | os.PathLike[str] | None, split: str = "train", *,
                 name: str = "camvid") -> None:
        if name not in _SEGMENTATION:
            raise ValueError(f"segmentation dataset {name!r} cannot stream; streamable: "
                             f"{list(_SEGMENTATION)}")
        self.spec = _SEGMENTATION[name]
        folder = resolve_root(name, root)
        _, images, masks = list_pairs(self.spec, folder, split)
        self.paths, self.mask_paths = [str(p) for p in images], masks
        self.ignore_index = self.spec.ignore_index
        self._first()
        try:
            train = [str(p) for p in list_pairs(self.spec, folder, "train")[1]]
        except FileNotFoundError:
            train = self.paths
        mean, std = self._stats(train)
        self.info = DatasetInfo(name=name, class_names=self.spec.class_names, mean=mean,
                                std=std, source=str(folder))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        mask = decode_masks(self.spec, [self.mask_paths[index]], [Path(self.paths[index])],
                            self.image_size)[0]
        return self.image(index), torch.from_numpy(mask.astype(np.int64))

    def subset(self, positions: Tensor) -> SegmentationDataset:
        """The images and masks at ``positions``, decoded into memory."""
        items = [self[int(p)] for p in positions]
        return SegmentationDataset(torch.stack([i for i, _ in items]),
                                   torch.stack([m for _, m in items]), self.info,
                                   ignore_index=self.ignore_index,
                                   indices=torch.tensor([int(p) for p in positions]))


def _hwc(array: np.ndarray) -> np.ndarray:
    return array[:, :, None] if array.ndim == 2 else array


def stream_dataset(name: str, root: str | os.PathLike[str], split: str = "train"
                   ) -> StreamingImageFolder:
    """A streaming split of an ImageFolder-layout source (see :class:`StreamingImageFolder`).

    Example:
        >>> train = stream_dataset("cifar10", "data/cifar10", "train")  # doctest: +SKIP
        >>> fit(model, train, config=TrainConfig(), num_workers=2)  # doctest: +SKIP
    """
    return StreamingImageFolder(root, split, name=name)


def stream_segmentation(name: str, root: str | os.PathLike[str] | None, split: str = "train"
                        ) -> StreamingSegmentation:
    """A streaming split of a list-file segmentation folder (see
    :class:`StreamingSegmentation`)."""
    return StreamingSegmentation(root, split, name=name)
