"""The in-memory segmentation dataset every segmentation loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ..._checks import check_hard_labels, check_tensor
from ..types import DatasetInfo, ImageSetMixin

# The ignore index of every built-in segmentation source. 255 rather than PyTorch's -100: it fits
# in the uint8 masks of the cache and of label PNGs, and is what VOC and most CamVid code use.
IGNORE_INDEX = 255


@dataclass(frozen=True)
class SegmentationDataset(ImageSetMixin):
    """Images and per-pixel hard labels held as tensors.

    Attributes:
        images: float32 ``(N, C, H, W)`` with ``C`` = 1 or 3 and values in [0, 1].
        masks: int64 ``(N, H, W)`` class indices in ``[0, num_classes)``, or ``ignore_index``
            for pixels that carry no label (CamVid's "void").
        info: class names in label order, the per-channel mean/std of the *training* images,
            and provenance.
        ignore_index: the value of unlabelled pixels, or ``None`` when every pixel must hold a
            class. It is the value a loss or metric must skip and the value padding takes in
            :func:`~softlabels.data.segmentation.paired_random_crop`; it may be declared even
            when no pixel uses it (so padding stays valid). It must lie outside
            ``[0, num_classes)``.
        indices: int64 ``(N,)`` position of each image in the full split it was loaded from
            (default ``arange(N)``), so a subset can be traced back.

    Raises:
        TypeError / ValueError: on construction, for wrong dtypes, shapes, image values outside
            [0, 1], or mask values outside ``[0, num_classes)`` that are not ``ignore_index``
            (the message gives their count and examples; nothing is clamped).

    Example:
        >>> from softlabels.data.types import DatasetInfo
        >>> info = DatasetInfo("toy", ("bg", "fg"), (0.5,), (0.25,))
        >>> data = SegmentationDataset(
        ...     torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.int64), info, 255
        ... )
        >>> len(data), data.num_classes, data.in_channels, data.image_size
        (2, 2, 1, (4, 4))
    """

    images: Tensor
    masks: Tensor
    info: DatasetInfo
    ignore_index: int | None = None
    indices: Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_tensor("images", self.images)
        if self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be (N, C, H, W) with C = 1 or 3, got shape "
                f"{tuple(self.images.shape)}"
            )
        if self.images.dtype != torch.float32:
            raise TypeError(f"images must be float32, got {self.images.dtype}")
        if self.images.numel():
            low, high = torch.aminmax(self.images)
            # Written as a negation so that NaN fails too.
            if not (float(low) >= 0.0 and float(high) <= 1.0):
                raise ValueError(
                    f"images must lie in [0, 1], got values in [{float(low)}, {float(high)}]"
                )
        if self.ignore_index is not None:
            if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int):
                raise TypeError(
                    f"ignore_index must be an int or None, got {type(self.ignore_index).__name__}"
                )
            if 0 <= self.ignore_index < self.info.num_classes:
                raise ValueError(
                    f"ignore_index must lie outside the classes [0, {self.info.num_classes}), "
                    f"got {self.ignore_index}"
                )
        n, _, h, w = self.images.shape
        check_tensor("masks", self.masks)
        if tuple(self.masks.shape) != (n, h, w):
            raise ValueError(
                f"masks must have shape {(n, h, w)} to match images (N, H, W), got "
                f"{tuple(self.masks.shape)}"
            )
        check_hard_labels("masks", self.masks, self.info.num_classes, self.ignore_index)
        if self.indices is None:
            object.__setattr__(self, "indices", torch.arange(n))
        else:
            check_tensor("indices", self.indices)
            if tuple(self.indices.shape) != (n,):
                raise ValueError(
                    f"indices must have shape ({n},), got {tuple(self.indices.shape)}"
                )

    def tensors(self) -> tuple[Tensor, Tensor]:
        """(images (N, C, H, W), masks (N, H, W))."""
        return self.images, self.masks

    def subset(self, positions: Tensor) -> SegmentationDataset:
        """Return the images and masks at ``positions`` (int64 ``(K,)`` positions into this set).

        ``indices`` of the result point into the original split, not into this dataset.
        """
        positions = self._positions(positions)
        return replace(
            self,
            images=self.images[positions],
            masks=self.masks[positions],
            indices=self.indices[positions],
        )
