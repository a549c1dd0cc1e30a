"""Seeded augmentation of image batches together with their segmentation masks.

A geometric augmentation of a segmentation sample must move the image and its mask
identically, and must never invent labels: the image is interpolated bilinearly, the mask only
by nearest neighbour, and padding of the mask takes the ignore index so that padded pixels
count as no class. Conventions are those of :mod:`softlabels.data.augment`:

* images: floating-point ``(N, C, H, W)``; masks: integer ``(N, H, W)`` (int64 as loaded,
  any integer dtype works). Outputs keep dtypes and devices.
* ``generator``: a ``torch.Generator``, an ``int`` seed, or ``None`` (fresh seed). Random
  numbers are drawn on the generator's device and moved to the images' device, so one seed
  gives the same result on CPU and GPU, and the global RNG is never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._checks import check_range, check_tensor
from ..augment import (
    GeneratorLike,
    check_images,
    crop_windows,
    make_generator,
    randint,
    uniform,
)
from .types import IGNORE_INDEX

__all__ = [
    "PairedAugment",
    "PairedFlip",
    "PairedRandomCrop",
    "PairedRandomScale",
    "paired_flip",
    "paired_random_crop",
    "paired_random_scale",
]


def check_pair(images: object, masks: object) -> tuple[Tensor, Tensor]:
    """Require float ``(N, C, H, W)`` images and integer ``(N, H, W)`` masks on one device."""
    images = check_images("images", images)
    masks = check_tensor("masks", masks)
    if masks.is_floating_point() or masks.is_complex() or masks.dtype == torch.bool:
        raise TypeError(f"masks must be an integer tensor of class indices, got {masks.dtype}")
    n, _, h, w = images.shape
    if tuple(masks.shape) != (n, h, w):
        raise ValueError(
            f"masks must have shape {(n, h, w)} to match images (N, H, W), got "
            f"{tuple(masks.shape)}"
        )
    if masks.device != images.device:
        raise ValueError(
            f"masks must be on the images' device {images.device}, got {masks.device}"
        )
    return images, masks


def _size(size: object) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"size must be an int > 0 or a pair (h, w) of ints > 0, got {size!r}")
    return int(size[0]), int(size[1])


def _check_fill(masks: Tensor, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"pad_value_mask must be an int, got {type(value).__name__}")
    info = torch.iinfo(masks.dtype)
    if not info.min <= value <= info.max:
        raise ValueError(
            f"pad_value_mask={value} does not fit the masks' dtype {masks.dtype} "
            f"([{info.min}, {info.max}])"
        )
    return value


def paired_flip(
    images: Tensor, masks: Tensor, generator: GeneratorLike = None, *, p: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Flip each image and its mask left-right with probability ``p``, independently per sample.

    Args:
        images: ``(N, C, H, W)`` float images.
        masks: ``(N, H, W)`` integer masks.
        generator: ``torch.Generator``, ``int`` seed or ``None``.
        p: flip probability in [0, 1].

    Returns:
        ``(images, masks)`` with the input shapes, dtypes and devices.

    Example:
        >>> x, m = torch.rand(2, 3, 4, 5), torch.zeros(2, 4, 5, dtype=torch.int64)
        >>> [t.shape for t in paired_flip(x, m, 0)]
        [torch.Size([2, 3, 4, 5]), torch.Size([2, 4, 5])]
    """
    images, masks = check_pair(images, masks)
    p = check_range("p", p, 0.0, 1.0)
    g = make_generator(generator)
    flip = uniform(images.shape[0], g, images) < p
    return (
        torch.where(flip[:, None, None, None], images.flip(3), images),
        torch.where(flip[:, None, None], masks.flip(2), masks),
    )


def paired_random_crop(
    images: Tensor,
    masks: Tensor,
    size: int | tuple[int, int],
    generator: GeneratorLike = None,
    *,
    pad_value_image: float = 0.0,
    pad_value_mask: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor]:
    """Crop each sample to ``size`` at its own random offset, the same window for image and mask.

    Where a side of the input is shorter than the crop, the input is padded on both sides by the
    difference first, so the whole input lands at a random place inside the crop; images are
    padded with ``pad_value_image`` and masks with ``pad_value_mask`` (the ignore index by
    default, so that padding never counts as a class).

    Args:
        images: ``(N, C, H, W)`` float images.
        masks: ``(N, H, W)`` integer masks.
        size: crop ``(h, w)``, or one int for a square.
        generator: ``torch.Generator``, ``int`` seed or ``None``.
        pad_value_image: value of padded image pixels.
        pad_value_mask: value of padded mask pixels; must fit the masks' dtype.

    Returns:
        ``(images (N, C, h, w), masks (N, h, w))``, same dtypes and devices.
    """
    images, masks = check_pair(images, masks)
    h, w = _size(size)
    pad_value_mask = _check_fill(masks, pad_value_mask)
    if isinstance(pad_value_image, bool) or not isinstance(pad_value_image, int | float):
        raise TypeError(f"pad_value_image must be a number, got {type(pad_value_image).__name__}")
    g = make_generator(generator)
    n, _, height, width = images.shape
    pad_h, pad_w = max(0, h - height), max(0, w - width)
    if pad_h or pad_w:
        borders = (pad_w, pad_w, pad_h, pad_h)
        images = F.pad(images, borders, value=float(pad_value_image))
        masks = F.pad(masks, borders, value=pad_value_mask)
    # Offsets are drawn even when the range is a single value, so the number of draws (and
    # what later steps sharing the generator see) does not depend on the input size.
    top = randint(0, images.shape[2] - h + 1, n, g, images.device)
    left = randint(0, images.shape[3] - w + 1, n, g, images.device)
    return (
        crop_windows(images, top, left, h, w),
        crop_windows(masks[:, None], top, left, h, w)[:, 0],
    )


def _nearest_index(n_out: int, n_in: int, device: torch.device) -> Tensor:
    # Source pixel whose centre is nearest to each output pixel's centre (PyTorch's
    # "nearest-exact"), computed on integers so that labels are copied, never converted.
    index = ((torch.arange(n_out, device=device) * 2 + 1) * n_in) // (2 * n_out)
    return index.clamp_(max=n_in - 1)


def paired_random_scale(
    images: Tensor,
    masks: Tensor,
    scale_range: tuple[float, float] = (0.5, 2.0),
    generator: GeneratorLike = None,
) -> tuple[Tensor, Tensor]:
    """Resize the whole batch by one random factor: image bilinear, mask nearest neighbour.

    One factor per batch (not per sample) because a batch tensor has one size; follow with
    :func:`paired_random_crop` for a fixed output size. The factor is uniform in
    ``scale_range``; the output side is ``max(1, round(side * factor))``. Pixel centres are
    aligned the same way for both (``align_corners=False`` and PyTorch's "nearest-exact"), so
    a mask still lies on its image.

    Args:
        images: ``(N, C, H, W)`` float images.
        masks: ``(N, H, W)`` integer masks.
        scale_range: ``(low, high)`` factors, ``0 < low <= high``.
        generator: ``torch.Generator``, ``int`` seed or ``None``.

    Returns:
        ``(images (N, C, H', W'), masks (N, H', W'))``, same dtypes and devices.
    """
    images, masks = check_pair(images, masks)
    low, high = _scale_range(scale_range)
    g = make_generator(generator)
    factor = low + (high - low) * float(torch.rand(1, generator=g, device=g.device))
    _, _, height, width = images.shape
    out_h, out_w = max(1, round(height * factor)), max(1, round(width * factor))
    if (out_h, out_w) == (height, width):
        return images.clone(), masks.clone()
    resized = F.interpolate(images, size=(out_h, out_w), mode="bilinear", align_corners=False)
    rows = _nearest_index(out_h, height, masks.device)
    cols = _nearest_index(out_w, width, masks.device)
    return resized, masks[:, rows[:, None], cols[None, :]]


def _scale_range(scale_range: object) -> tuple[float, float]:
    if (
        not isinstance(scale_range, tuple | list)
        or len(scale_range) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in scale_range)
        or not 0 < scale_range[0] <= scale_range[1]
    ):
        raise ValueError(
            f"scale_range must be a pair (low, high) with 0 < low <= high, got {scale_range!r}"
        )
    return float(scale_range[0]), float(scale_range[1])


class PairedOp(Protocol):
    """A paired augmentation step: ``(images, masks, generator) -> (images, masks)``."""

    def __call__(
        self, images: Tensor, masks: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]: ...


class PairedFlip:
    """:func:`paired_flip` as a step of :class:`PairedAugment`."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = check_range("p", p, 0.0, 1.0)

    def __call__(
        self, images: Tensor, masks: Tensor, generator: GeneratorLike = None
    ) -> tuple[Tensor, Tensor]:
        return paired_flip(images, masks, generator, p=self.p)

    def __repr__(self) -> str:
        return f"PairedFlip(p={self.p})"


class PairedRandomCrop:
    """:func:`paired_random_crop` as a step of :class:`PairedAugment`."""

    def __init__(
        self,
        size: int | tuple[int, int],
        *,
        pad_value_image: float = 0.0,
        pad_value_mask: int = IGNORE_INDEX,
    ) -> None:
        self.size = _size(size)
        if isinstance(pad_value_mask, bool) or not isinstance(pad_value_mask, int):
            raise TypeError(f"pad_value_mask must be an int, got {type(pad_value_mask).__name__}")
        self.pad_value_image = pad_value_image
        self.pad_value_mask = pad_value_mask

    def __call__(
        self, images: Tensor, masks: Tensor, generator: GeneratorLike = None
    ) -> tuple[Tensor, Tensor]:
        return paired_random_crop(
            images, masks, self.size, generator,
            pad_value_image=self.pad_value_image, pad_value_mask=self.pad_value_mask,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"PairedRandomCrop(size={self.size}, pad_value_image={self.pad_value_image}, "
            f"pad_value_mask={self.pad_value_mask})"
        )


class PairedRandomScale:
    """:func:`paired_random_scale` as a step of :class:`PairedAugment`."""

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        self.scale_range = _scale_range(scale_range)

    def __call__(
        self, images: Tensor, masks: Tensor, generator: GeneratorLike = None
    ) -> tuple[Tensor, Tensor]:
        return paired_random_scale(images, masks, self.scale_range, generator)

    def __repr__(self) -> str:
        return f"PairedRandomScale(scale_range={self.scale_range})"


class PairedAugment:
    """Apply paired steps in order, all drawing from one generator.

    Steps are callables ``(images, masks, generator) -> (images, masks)``
    (:class:`PairedRandomScale`, :class:`PairedRandomCrop`, :class:`PairedFlip`, or your own).
    One call with a given seed is reproducible; with one ``torch.Generator`` reused across
    calls, each call draws fresh parameters.

    Example:
        >>> augment = PairedAugment(PairedRandomScale((0.75, 1.5)), PairedRandomCrop(24),
        ...                         PairedFlip())
        >>> x, m = augment(torch.rand(8, 3, 32, 32), torch.zeros(8, 32, 32, dtype=torch.long), 0)
        >>> x.shape, m.shape
        (torch.Size([8, 3, 24, 24]), torch.Size([8, 24, 24]))
    """

    def __init__(
        self, *steps: PairedOp | Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]
    ) -> None:
        for step in steps:
            if not callable(step):
                raise TypeError(f"each step must be callable, got {type(step).__name__}")
        self.steps = steps

    def __call__(
        self, images: Tensor, masks: Tensor, generator: GeneratorLike = None
    ) -> tuple[Tensor, Tensor]:
        """Augment ``(N, C, H, W)`` images and ``(N, H, W)`` masks; keeps dtypes and devices."""
        images, masks = check_pair(images, masks)
        g = make_generator(generator)
        for step in self.steps:
            images, masks = step(images, masks, g)
        return images, masks

    def __repr__(self) -> str:
        return f"PairedAugment({', '.join(repr(s) for s in self.steps)})"
