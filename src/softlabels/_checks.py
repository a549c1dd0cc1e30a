"""Argument checks shared by every public function.

Each check raises ``TypeError`` or ``ValueError`` whose message names the argument, what was
expected and what was given, so that a user can fix the call without reading the source.

Numbers must be finite: a NaN compares false with every bound, so a check written as
``if value < low: raise`` lets it through and an infinity makes every later product or ratio
meaningless. Every number check here therefore tests finiteness first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Probability sums and tempered softmaxes are computed in at least float32: a half-precision sum
# of many classes drifts past any sensible tolerance although every entry is right, and a
# float16 temperature of 1e-5 is zero.
_MIN_COMPUTE_DTYPE = torch.float32


def check_tensor(name: str, value: object) -> Tensor:
    """Return ``value`` if it is a tensor with values (not on the meta device), else raise
    ``TypeError`` / ``ValueError`` naming ``name``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_meta:
        raise ValueError(f"{name} is on the meta device: it has a shape but no values to "
                         "compute with")
    return value


def check_float(name: str, value: object) -> Tensor:
    """Require a floating-point tensor."""
    tensor = check_tensor(name, value)
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    return tensor


def check_float_dtype(name: str, value: object) -> torch.dtype:
    """Require a floating-point ``torch.dtype`` (for an argument that chooses an output dtype)."""
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Require a Python bool: a string such as ``"no"`` would otherwise count as true."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


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


def check_logits(name: str, value: object, allowed_ndim: Sequence[int] = (2, 4)) -> Tensor:
    """Require finite float scores (N, C) or (N, C, H, W) with at least one class.

    A softmax over zero classes is empty and every loss or label built from it is undefined.
    """
    tensor = check_float(name, value)
    check_ndim(name, tensor, allowed_ndim)
    if tensor.shape[1] < 1:
        raise ValueError(f"{name} must have at least one class along dim 1, got shape "
                         f"{tuple(tensor.shape)}")
    check_finite(name, tensor)
    return tensor


def check_probabilities(name: str, value: object, *, allow_partial: bool = False,
                        atol: float = 1e-3, hint: str = "") -> Tensor:
    """Require float (N, C) or (N, C, H, W) probabilities: finite, non-negative, rows summing
    to 1 over dim 1 within ``atol`` (or to at most ``1 + atol`` with ``allow_partial``).

    ``hint`` is appended to the value errors (e.g. "; pass softmax(logits, dim=1)"). The
    tolerance used is at least the dtype's machine epsilon: rounding every probability of a
    row to bfloat16 moves its sum by up to 2**-8, so exact probabilities would fail 1e-3.
    """
    # A tolerance of half the total mass or more no longer checks anything.
    atol = check_range("atol", atol, 0.0, 0.5)
    probs = check_logits(name, value)
    atol = max(atol, torch.finfo(probs.dtype).eps)
    minimum = float(probs.min()) if probs.numel() else 0.0
    if minimum < 0:
        raise ValueError(f"{name} must be non-negative, got a minimum of {minimum:.4g}{hint}")
    sums = probs.detach().to(torch.promote_types(probs.dtype, _MIN_COMPUTE_DTYPE)).sum(dim=1)
    if sums.numel():
        low, high = float(sums.min()), float(sums.max())
        if high > 1 + atol or (not allow_partial and low < 1 - atol):
            expected = "<= 1" if allow_partial else "1"
            raise ValueError(f"{name} rows must sum to {expected} over dim 1 (within {atol}), "
                             f"got sums in [{low:.4f}, {high:.4f}]{hint}")
    return probs


def check_images(name: str, value: object) -> Tensor:
    """Require float (N, C, H, W) images, every entry finite and in [0, 1] (pixel space).

    The finiteness test comes first: ``min()`` and ``max()`` of a tensor holding NaN are NaN,
    which passes both bound comparisons.
    """
    tensor = check_float(name, value)
    check_ndim(name, tensor, (4,))
    check_finite(name, tensor)
    if tensor.numel():
        low, high = float(tensor.min()), float(tensor.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"{name} must hold images in [0, 1] (models normalise "
                             f"internally), got values in [{low:.4g}, {high:.4g}]")
    return tensor


def check_ignore_index(ignore_index: object, num_classes: int) -> int | None:
    """Require ``None`` or an int outside the class range ``[0, num_classes)``.

    A class index that is also ignored would be dropped from the targets but still counted
    wherever it is predicted or encoded, which is never what is meant. ``num_classes = 0``
    checks only the type (for a caller that learns C later).
    """
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int or None, got {type(ignore_index).__name__}")
    if 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index must lie outside the class range [0, {num_classes}) "
                         f"(e.g. 255 or -1), got {ignore_index}")
    return ignore_index


def check_hard_labels(name: str, labels: object, num_classes: int,
                      ignore_index: int | None = None) -> Tensor:
    """Require an int64 label tensor with values in ``[0, num_classes)``.

    ``ignore_index``, when given, must lie outside that range and is also allowed.
    Out-of-range labels are an error and never clamped.
    """
    tensor = check_tensor(name, labels)
    if tensor.dtype != torch.int64:
        raise TypeError(f"{name} must be an int64 tensor of class indices, got {tensor.dtype}")
    check_positive_int("num_classes", num_classes)
    check_ignore_index(ignore_index, num_classes)
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


def check_indices(name: str, value: object) -> Tensor:
    """Require 1-D integer positions (a tensor or a sequence of ints) and return them as int64.

    Floats are refused rather than converted: ``tensor([1.7]).long()`` is 1, a silently
    different position. Bools are refused too (a mask is not a list of positions).
    """
    tensor = value if isinstance(value, Tensor) else None
    if tensor is None:
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise TypeError(f"{name} must be an integer tensor or a sequence of ints, got "
                            f"{type(value).__name__}")
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError, OverflowError) as err:
            raise TypeError(f"{name} must be an integer tensor or a sequence of ints: {err}"
                            ) from err
        if tensor.numel() == 0:
            tensor = tensor.long()  # torch.as_tensor([]) is float32; an empty list has no dtype
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"{name} must hold integer positions, got dtype {tensor.dtype}")
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
    return tensor.to(torch.int64)


# Counts, sizes and class numbers beyond int32 overflow tensor arithmetic (or allocate without
# bound) long before they could mean anything.
MAX_COUNT = 2**31 - 1


def check_positive_int(name: str, value: object, maximum: int = MAX_COUNT) -> int:
    """Require a Python int (not bool) in ``[1, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


# torch.Generator.manual_seed takes up to 2**64 - 1; staying within int64 keeps seeds storable
# as JSON numbers and as numpy seeds as well.
MAX_SEED = 2**63 - 1


def check_seed(name: str, value: object) -> int:
    """Require an int seed (not bool) in ``[0, 2**63 - 1]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be an int in [0, 2**63 - 1], got {value}")
    return value


def check_number(name: str, value: object) -> float:
    """Require a finite real number (int or float, not bool) and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return number


def check_above(name: str, value: object, bound: float) -> float:
    """Require a finite real number strictly greater than ``bound``."""
    number = check_number(name, value)
    if not number > bound:
        raise ValueError(f"{name} must be > {bound:g}, got {value}")
    return number


def check_positive(name: str, value: object) -> float:
    """Require a finite real number greater than zero."""
    return check_above(name, value, 0)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a softmax over ``dtype`` scores is computed in: at least float32.

    In float16 a temperature of 1e-5 is zero and one of 300 squares to infinity; computing the
    tempered softmax in float32 keeps every temperature float32 can represent usable.
    """
    return torch.promote_types(dtype, _MIN_COMPUTE_DTYPE)


def check_temperature(name: str, value: object, dtype: torch.dtype = torch.float32, *,
                      squared: bool = False) -> float:
    """Require a temperature T > 0 that stays a normal number of ``dtype`` when used.

    ``logits / T`` with T below the smallest normal number divides by zero (or by a
    denormal) and gives NaN; with ``squared`` (the ``T**2`` factor of distillation) T**2 must
    also neither overflow nor underflow. ``dtype`` is the dtype the computation runs in, see
    :func:`compute_dtype`.
    """
    temperature = check_positive(name, value)
    info = torch.finfo(dtype)
    power = 2 if squared else 1
    # Compared as powers of T rather than by squaring T, which overflows a Python float.
    low, high = info.tiny ** (1 / power), info.max ** (1 / power)
    if not low <= temperature <= high:
        what = f"{name}**2" if squared else name
        raise ValueError(f"{name} must lie in [{low:.3g}, {high:.3g}] so that {what} is a "
                         f"normal {str(dtype).removeprefix('torch.')} number, got {value}")
    return temperature


def check_range(name: str, value: object, low: float, high: float) -> float:
    """Require a finite real number in the closed interval ``[low, high]``.

    ``high`` may be ``inf`` for a parameter without an upper bound; the value itself must still
    be finite.
    """
    number = check_number(name, value)
    if not low <= number <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return number


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Require ``value`` to be one of ``choices``; the error lists them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return str(value)
