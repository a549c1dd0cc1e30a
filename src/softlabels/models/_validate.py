"""Argument checks shared by the model constructors.

Kept apart from ``softlabels._checks`` because they are about model shapes (image size,
channel counts) rather than tensors, and every model class needs the same few.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._checks import check_positive_int


def check_image_size(image_size: object) -> tuple[int, int]:
    """Return ``image_size`` as ``(H, W)``; accepts an int or a pair of positive ints."""
    if isinstance(image_size, bool):
        raise TypeError(f"image_size must be an int or a (H, W) pair, got {image_size!r}")
    if isinstance(image_size, int):
        check_positive_int("image_size", image_size)
        return image_size, image_size
    if isinstance(image_size, Sequence) and not isinstance(image_size, str):
        if len(image_size) != 2:
            raise ValueError(
                f"image_size must be an int or a (H, W) pair, got {len(image_size)} values "
                f"{tuple(image_size)!r}"
            )
        height = check_positive_int("image_size[0]", image_size[0])
        width = check_positive_int("image_size[1]", image_size[1])
        return height, width
    raise TypeError(
        f"image_size must be an int or a (H, W) pair, got {type(image_size).__name__}"
    )


def check_common(num_classes: object, in_channels: object, image_size: object) -> tuple[int, int]:
    """Check the three arguments every model takes; return ``image_size`` as ``(H, W)``."""
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels)
    return check_image_size(image_size)


def check_input_hw(model_name: str, x_shape: Sequence[int], expected: tuple[int, int]) -> None:
    """Raise when a fixed-size model (its classifier depends on H, W) gets another size.

    Without this the user would see a matrix-multiply shape error deep inside ``nn.Linear``.
    Only shapes are read, so the check is safe under ``torch.func.vmap``.
    """
    got = (int(x_shape[-2]), int(x_shape[-1]))
    if got != expected:
        raise ValueError(
            f"{model_name} was built for image_size {expected} (H, W), got input of shape "
            f"{tuple(x_shape)}; create the model with image_size={got}"
        )
