"""Named batch augmentations, so a config or CLI flag can pick one by string."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .._checks import check_choice, check_positive_int
from .augment import Augment, RandomCrop, RandomFlip
from .dsa import DSA

AugmentFn = Callable[..., Tensor]

__all__ = ["augmentation", "list_augmentations"]

_PRESETS: dict[str, Callable[[int], AugmentFn | None]] = {
    "none": lambda size: None,
    "flip": lambda size: Augment(RandomFlip()),
    # The CIFAR recipe: pad 4 of 32 pixels, i.e. an eighth of the side, then flip.
    "flip_crop": lambda size: Augment(RandomCrop(max(1, size // 8)), RandomFlip()),
    "dsa": lambda size: DSA(),
}


def list_augmentations() -> list[str]:
    """Names accepted by :func:`augmentation`."""
    return sorted(_PRESETS)


def augmentation(name: str, image_size: int = 32) -> AugmentFn | None:
    """The augmentation called ``name`` for images of side ``image_size``.

    Returns a callable ``(x (N, C, H, W), generator) -> x`` or None for ``"none"``.
    """
    check_choice("augment", name, list_augmentations())
    check_positive_int("image_size", image_size)
    return _PRESETS[name](image_size)
