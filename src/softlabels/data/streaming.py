"""ImageFolder splits read one image at a time, for data larger than memory.

:func:`load_dataset` decodes a whole split into one tensor (and caches it), which is the
fastest path while the data fits. :class:`StreamingImageFolder` lists the files only: each
``dataset[i]`` decodes one image, so with ``fit(..., num_workers=k)`` the DataLoader's worker
processes decode the next batches while the model trains, and memory holds a few batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .registry import SOURCES
from .sources.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES
from .sources.imagefolder import decode_image, tree_files
from .types import DatasetInfo

__all__ = ["STREAMABLE", "StreamingImageFolder", "stream_dataset"]

#: Sources stored as ImageFolder trees, which can stream, and their canonical class order.
_CLASSES: dict[str, tuple[str, ...] | None] = {"imagefolder": None, "cifar10": CIFAR10_CLASSES,
                                               "cifar100": CIFAR100_CLASSES}
STREAMABLE = tuple(_CLASSES)
# Images whose statistics stand in for the training split's mean and std when a source has
# no published constants: enough for 3 significant digits, and a second or two of decoding.
_STATS_IMAGES = 2048


class StreamingImageFolder(Dataset):
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
        source = SOURCES[name]
        canonical = _CLASSES[name]
        folder = Path(root)
        paths, labels, class_names = tree_files(folder, split, canonical=canonical, what=name)
        self.paths, self.labels = paths, torch.from_numpy(labels.copy())
        first = decode_image(paths[0])
        self.image_size = (int(first.shape[0]), int(first.shape[1]))
        self.in_channels = 1 if first.ndim == 2 else int(first.shape[2])
        mean, std = (source.mean, source.std) if source.mean is not None else \
            self._estimate(folder, split, canonical, name)
        self.info = DatasetInfo(name=name, class_names=class_names, mean=tuple(mean),
                                std=tuple(std), source=str(folder / split))

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self.info.num_classes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        array = decode_image(self.paths[index])
        if array.ndim == 2:
            array = array[:, :, None]
        if array.shape[:2] != self.image_size:
            raise ValueError(f"{self.paths[index]!r} is {array.shape[1]}x{array.shape[0]} "
                             f"pixels but the split's images are {self.image_size[1]}x"
                             f"{self.image_size[0]} (resize them beforehand)")
        if array.shape[2] != self.in_channels:  # grey among colour: replicated, as in memory
            array = np.repeat(array, self.in_channels, axis=2)
        image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        return image.to(torch.float32).div_(255.0), self.labels[index]

    def _estimate(self, folder: Path, split: str, canonical: tuple[str, ...] | None,
                  name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        try:
            train, _, _ = tree_files(folder, "train", canonical=canonical, what=name)
        except FileNotFoundError:
            train = self.paths  # no training split: the split's own statistics
        picked = np.linspace(0, len(train) - 1, min(len(train), _STATS_IMAGES)).astype(int)
        pixels = np.stack([_channels(decode_image(train[i]), self.in_channels)
                           for i in picked]).astype(np.float64) / 255.0
        axes = (0, 1, 2)
        return (tuple(float(v) for v in pixels.mean(axis=axes)),
                tuple(float(v) for v in pixels.std(axis=axes)))


def _channels(array: np.ndarray, channels: int) -> np.ndarray:
    array = array[:, :, None] if array.ndim == 2 else array
    return np.repeat(array, channels, axis=2) if array.shape[2] != channels else array


def stream_dataset(name: str, root: str | os.PathLike[str], split: str = "train"
                   ) -> StreamingImageFolder:
    """A streaming split of an ImageFolder-layout source (see :class:`StreamingImageFolder`).

    Example:
        >>> train = stream_dataset("cifar10", "data/cifar10", "train")  # doctest: +SKIP
        >>> fit(model, train, config=TrainConfig(), num_workers=2)  # doctest: +SKIP
    """
    return StreamingImageFolder(root, split, name=name)
