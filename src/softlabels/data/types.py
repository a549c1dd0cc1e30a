"""The in-memory dataset every loader returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_hard_labels, check_indices, check_tensor


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know about a dataset.

    Attributes:
        name: registry name, e.g. ``"cifar10"``.
        class_names: one name per class, in label order.
        mean: per-channel mean of the training images in [0, 1] (length = channels).
        std: per-channel standard deviation of the training images.
        source: where the data came from (a path or ``"embedded"``), for provenance.
    """

    name: str
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = "embedded"

    def __post_init__(self) -> None:
        if not self.class_names:
            raise ValueError(f"dataset {self.name!r} must name at least one class")
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"dataset {self.name!r} needs one mean and one std per channel, "
                             f"got {len(self.mean)} and {len(self.std)}")
        if not all(math.isfinite(m) for m in self.mean) \
                or not all(math.isfinite(s) and s >= 0 for s in self.std):
            # A constant channel has std 0 (a model's Normalize refuses to divide by it).
            raise ValueError(f"dataset {self.name!r} needs finite means and stds >= 0, got "
                             f"mean {self.mean}, std {self.std}")

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return len(self.class_names)


class ImageSetMixin(Dataset):
    """Sizes shared by every dataset that holds an ``images`` (N, C, H, W) tensor.

    Such a dataset is a map-style ``torch.utils.data.Dataset`` of ``(image, target)`` pairs,
    and :meth:`tensors` hands the engine the whole tensors to index on the device.
    """

    images: Tensor
    info: DatasetInfo

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def tensors(self) -> tuple[Tensor, Tensor]:
        """(images (N, C, H, W), targets (N, ...)): what ``dataset[i]`` indexes."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """(image float32 (C, H, W), target) at position ``index``."""
        images, targets = self.tensors()
        return images[index], targets[index]

    @property
    def num_classes(self) -> int:
        """Number of classes C (an ignore index is not a class)."""
        return self.info.num_classes

    @property
    def in_channels(self) -> int:
        """Image channels (1 for grey, 3 for colour)."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def _positions(self, positions: Tensor) -> Tensor:
        """``positions`` as int64 (K,), checked to be integers in [0, N) (floats are refused,
        not truncated)."""
        positions = check_indices("positions", positions)
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= len(self)):
            raise ValueError(
                f"positions must lie in [0, {len(self)}), got range "
                f"[{int(positions.min())}, {int(positions.max())}]"
            )
        return positions


@dataclass(frozen=True)
class ImageDataset(ImageSetMixin):
    """Images and hard labels held as tensors.

    Attributes:
        images: float32 (N, C, H, W) with values in [0, 1].
        labels: int64 (N,) class indices in [0, num_classes).
        info: class names, normalisation statistics and provenance.
        indices: int64 (N,) position of each image in the full split it was loaded from, so that
            a subset (a distilled set, a validation split) can be traced back and a label store
            can be matched against it.
    """

    images: Tensor
    labels: Tensor
    info: DatasetInfo
    indices: Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_tensor("images", self.images)
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.images.dtype != torch.float32:
            raise TypeError(f"images must be float32, got {self.images.dtype}")
        check_hard_labels("labels", self.labels, self.info.num_classes)
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must have shape ({self.images.shape[0]},) to match images, "
                f"got {tuple(self.labels.shape)}"
            )
        if self.indices is None:
            object.__setattr__(self, "indices", torch.arange(len(self.labels)))
        elif self.indices.shape != self.labels.shape:
            raise ValueError(
                f"indices must have shape {tuple(self.labels.shape)}, "
                f"got {tuple(self.indices.shape)}"
            )

    def tensors(self) -> tuple[Tensor, Tensor]:
        """(images (N, C, H, W), labels (N,))."""
        return self.images, self.labels

    def subset(self, positions: Tensor) -> ImageDataset:
        """Return the images at ``positions`` (int64 (K,) positions into this dataset)."""
        positions = self._positions(positions)
        return replace(
            self,
            images=self.images[positions],
            labels=self.labels[positions],
            indices=self.indices[positions],
        )
