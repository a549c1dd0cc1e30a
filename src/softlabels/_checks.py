"""Argument checks shared by every public function.

Each check raises ``TypeError`` or ``ValueError`` whose message names the argument, what was
expected and what was given, so that a user can fix the call without reading the source.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_tensor(name: str, value: object) -> Tensor:
    """Return ``value`` if it is a tensor, else raise ``TypeError`` naming ``name``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_float(name: str, value: object) -> Tensor:
    """Require a floating-point tensor."""
    tensor = check_tensor(name, value)
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    return tensor


def check_ndim(name: str, tensor: Tensor, allowed: Sequence[int]) -> None:
    """Require ``tensor.ndim`` to be one of ``allowed``."""
    if tensor.ndim not in allowed:
        options = " or ".join(str(n) for n in allowed)
        raise ValueError(
            f"{name} must have {options} dimensions, got shape {tuple(tensor.shape)}"
        )


def check_finite(name: str, tensor: Tensor) -> None:
    """Reject NaN and infinite entries.

    A finite sum proves every entry finite (NaN and infinities propagate), so the common case
    costs one reduction instead of an elementwise test; the exact count is only taken when the
    sum is not finite, where an overflowing sum of finite values is also told apart.
    """
    if tensor.numel() == 0 or bool(torch.isfinite(tensor.detach().sum())):
        return
    bad = int((~torch.isfinite(tensor.detach())).sum())
    if bad:
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite entries")


def check_hard_labels(name: str, labels: object, num_classes: int,
                      ignore_index: int | None = None) -> Tensor:
    """Require an int64 label tensor with values in ``[0, num_classes)``.

    ``ignore_index``, when given, is also allowed. Out-of-range labels are an error and never
    clamped.
    """
    tensor = check_tensor(name, labels)
    if tensor.dtype != torch.int64:
        raise TypeError(f"{name} must be an int64 tensor of class indices, got {tensor.dtype}")
    check_positive_int("num_classes", num_classes)
    valid = (tensor >= 0) & (tensor < num_classes)
    if ignore_index is not None:
        valid |= tensor == ignore_index
    if not bool(valid.all()):
        bad = tensor[~valid]
        allowed = f"[0, {num_classes})" + (
            f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        )
        raise ValueError(
            f"{name} must hold class indices in {allowed}, got {bad.numel()} values outside "
            f"(e.g. {bad.flatten()[:5].tolist()})"
        )
    return tensor


def check_positive_int(name: str, value: object) -> int:
    """Require a Python int (not bool) greater than zero."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_positive(name: str, value: object) -> float:
    """Require a real number greater than zero."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def check_range(name: str, value: object, low: float, high: float) -> float:
    """Require a real number in the closed interval ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return float(value)


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Require ``value`` to be one of ``choices``; the error lists them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return str(value)
