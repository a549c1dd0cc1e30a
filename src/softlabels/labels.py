"""Soft-label operations: make, reshape, compare and check probability labels.

Every function works on classification labels (N, C) and dense-prediction labels
(N, C, H, W); the class dimension is always dim 1. Hard labels are int64 of shape (N,) or
(N, H, W).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import (
    check_above,
    check_bool,
    check_finite,
    check_float,
    check_float_dtype,
    check_hard_labels,
    check_ignore_index,
    check_logits,
    check_ndim,
    check_positive_int,
    check_probabilities,
    check_range,
    check_temperature,
    check_tensor,
    compute_dtype,
)
from ._label_math import (
    class_first_to_last,
    class_last_to_first,
    kl_to_mixture,
    rows_back,
    tempered_logits,
)

__all__ = [
    "boundary_mask",
    "boundary_smooth",
    "classwise_soften",
    "ensemble",
    "entropy",
    "js_distance",
    "one_hot",
    "shuffle_tail",
    "smooth",
    "soften",
    "swap_ranks",
    "topk",
    "validate",
]

_SUM_TOLERANCE = 1e-3


def validate(probs: Tensor, *, name: str = "probs", allow_partial: bool = False,
             atol: float = _SUM_TOLERANCE) -> Tensor:
    """Check that ``probs`` is a batch of probability vectors and return it unchanged.

    Args:
        probs: float (N, C) or (N, C, H, W).
        name: argument name used in error messages.
        allow_partial: accept rows summing to less than 1 (top-k labels kept without
            renormalisation).
        atol: tolerance on the row sums, a finite number in [0, 0.5] (a NaN or negative
            tolerance is refused rather than switching the sum check off).

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: wrong number of dimensions, no class, NaN/inf, negative entries, rows whose
            sum is not 1 (or above 1 with ``allow_partial``), or a bad ``atol``.
    """
    check_bool("allow_partial", allow_partial)
    return check_probabilities(name, probs, allow_partial=allow_partial, atol=atol)


def one_hot(labels: Tensor, num_classes: int, *, ignore_index: int | None = None,
            dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot encode hard labels.

    Args:
        labels: int64 (N,) or (N, H, W) class indices in [0, num_classes).
        num_classes: C.
        ignore_index: a label value outside [0, C) to accept; its rows are all zeros.
        dtype: floating dtype of the result (soft labels are probabilities, not counts).

    Returns:
        (N, C) or (N, C, H, W) with a single 1 per row (none for ignored positions).
    """
    check_float_dtype("dtype", dtype)
    check_hard_labels("labels", labels, num_classes, ignore_index)
    check_ndim("labels", labels, (1, 3))
    keep = labels != ignore_index if ignore_index is not None else None
    safe = labels.where(keep, 0) if keep is not None else labels
    encoded = F.one_hot(safe, num_classes).to(dtype)
    if keep is not None:
        encoded = encoded * keep.unsqueeze(-1).to(dtype)
    return class_last_to_first(encoded)


def smooth(labels: Tensor, num_classes: int, eps: float, *,
           ignore_index: int | None = None) -> Tensor:
    """Label smoothing: ``(1 - eps) * one_hot + eps / C``.

    Args:
        labels: int64 (N,) or (N, H, W).
        num_classes: C.
        eps: smoothing mass in [0, 1].
        ignore_index: positions with this label get an all-zero row.

    Returns:
        float32 (N, C) or (N, C, H, W).
    """
    eps = check_range("eps", eps, 0.0, 1.0)
    hard = one_hot(labels, num_classes, ignore_index=ignore_index)
    if ignore_index is None:
        return hard * (1 - eps) + eps / num_classes
    keep = (labels != ignore_index).unsqueeze(1).to(hard.dtype)
    return (hard * (1 - eps) + eps / num_classes) * keep


def boundary_smooth(hard: Tensor, num_classes: int, eps: float = 0.5, kernel: int = 3,
                    ignore_index: int | None = None) -> Tensor:
    """Label smoothing at class boundaries only (the JML paper's segmentation recipe).

    A pixel is a boundary pixel when its ``kernel x kernel`` neighbourhood holds another class;
    it gets ``(1 - eps) * one_hot + eps / C``, every other pixel keeps its one-hot label. As
    in the paper's code, a pixel whose neighbourhood touches an ignored pixel is left alone
    (the unknown region is not evidence of a boundary), and the image border is not a boundary.

    Args:
        hard: int64 (N, H, W) labels in [0, C) or ``ignore_index``.
        num_classes: C.
        eps: smoothing mass in [0, 1].
        kernel: odd neighbourhood size >= 1 (1 smooths nothing).
        ignore_index: label of ignored pixels, outside [0, C); their rows are all zeros.

    Returns:
        float32 (N, C, H, W).
    """
    eps = check_range("eps", eps, 0.0, 1.0)
    check_hard_labels("hard", hard, num_classes, ignore_index)
    check_ndim("hard", hard, (3,))
    check_kernel(kernel)
    encoded = one_hot(hard, num_classes, ignore_index=ignore_index)
    boundary = boundary_mask(hard, kernel, ignore_index)
    weight = eps * boundary.unsqueeze(1).to(encoded.dtype)
    return encoded * (1 - weight) + weight / num_classes


def boundary_mask(hard: Tensor, kernel: int = 3, ignore_index: int | None = None) -> Tensor:
    """bool (N, H, W): pixels whose k x k window holds another class and no ignored pixel.

    Args:
        hard: int64 (N, H, W) labels.
        kernel: odd window size >= 1.
        ignore_index: label of ignored pixels, or None.
    """
    check_tensor("hard", hard)
    if hard.dtype != torch.int64:
        raise TypeError(f"hard must be an int64 tensor of class indices, got {hard.dtype}")
    check_ndim("hard", hard, (3,))
    check_kernel(kernel)
    check_ignore_index(ignore_index, 0)
    if hard.numel() == 0:  # max_pool2d refuses empty images; an empty mask is the answer
        return torch.zeros_like(hard, dtype=torch.bool)
    labels = hard.unsqueeze(1).to(torch.float32)
    pad = kernel // 2
    # max_pool2d pads with -inf, so the image border never looks like another class.
    highest = F.max_pool2d(labels, kernel, stride=1, padding=pad)
    lowest = -F.max_pool2d(-labels, kernel, stride=1, padding=pad)
    boundary = ((highest != labels) | (lowest != labels)).squeeze(1)
    if ignore_index is not None:
        ignored = (hard == ignore_index).unsqueeze(1).to(torch.float32)
        near_ignored = F.max_pool2d(ignored, kernel, stride=1, padding=pad).squeeze(1) > 0
        boundary &= ~near_ignored
    return boundary


def soften(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Tempered softmax over classes: ``softmax(logits / T, dim=1)``.

    Computed as ``softmax((logits - max) / T)`` in at least float32, so that a tiny T gives the
    one-hot argmax (ties shared) instead of NaN and a huge T the uniform distribution.

    Args:
        logits: float (N, C) or (N, C, H, W), finite, C >= 1.
        temperature: T > 0, at least float32's smallest normal number; larger T gives
            smoother labels.

    Returns:
        Probabilities with the shape and dtype of ``logits``.
    """
    check_logits("logits", logits)
    temperature = check_temperature("temperature", temperature, compute_dtype(logits.dtype))
    return torch.softmax(tempered_logits(logits, temperature), dim=1).to(logits.dtype)


def classwise_soften(logits: Tensor, targets: Tensor, temperatures: Tensor) -> Tensor:
    """Tempered softmax whose temperature is chosen by each sample's true class (ABSLD).

    Args:
        logits: float (N, C) or (N, C, H, W).
        targets: int64 (N,) or (N, H, W) true classes, selecting ``temperatures[targets]``.
        temperatures: float (C,) strictly positive (and normal numbers of float32 or better,
            as for :func:`soften`).

    Returns:
        Probabilities with the shape and dtype of ``logits``.
    """
    check_logits("logits", logits)
    num_classes = logits.shape[1]
    check_hard_labels("targets", targets, num_classes)
    if targets.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"targets must have shape {tuple(logits.shape[:1] + logits.shape[2:])} to match "
            f"logits {tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    check_float("temperatures", temperatures)
    if temperatures.shape != (num_classes,):
        raise ValueError(
            f"temperatures must have shape ({num_classes},), got {tuple(temperatures.shape)}"
        )
    check_finite("temperatures", temperatures)
    if float(temperatures.min()) <= 0:
        raise ValueError(
            f"temperatures must be > 0, got a minimum of {float(temperatures.min()):.4g}"
        )
    dtype = compute_dtype(logits.dtype)
    for bound in (float(temperatures.min()), float(temperatures.max())):
        check_temperature("temperatures", bound, dtype)
    per_sample = temperatures.to(logits.device, dtype)[targets].unsqueeze(1)
    return torch.softmax(tempered_logits(logits, per_sample), dim=1).to(logits.dtype)


def topk(probs: Tensor, k: int, renormalize: bool = True) -> Tensor:
    """Keep the k largest probabilities of each row and zero the others.

    Ties are broken towards the lowest class index, on every device.

    Args:
        probs: (N, C) or (N, C, H, W) probabilities.
        k: number of classes kept, 1 <= k <= C.
        renormalize: divide the kept values by their sum so rows sum to 1; without it rows
            sum to the kept mass (the official dataset-distillation code does not renormalise).

    Returns:
        Same shape as ``probs``.
    """
    validate(probs, name="probs", allow_partial=True)
    check_positive_int("k", k)
    check_bool("renormalize", renormalize)
    if k > probs.shape[1]:
        raise ValueError(f"k must be <= the number of classes {probs.shape[1]}, got {k}")
    # torch.topk's order among equal values differs between devices; a stable sort does not.
    values, positions = probs.sort(dim=1, descending=True, stable=True)
    values, positions = values.narrow(1, 0, k), positions.narrow(1, 0, k)
    kept = torch.zeros_like(probs).scatter(1, positions, values)
    if renormalize:
        # A row whose top-k mass is zero has nothing to renormalise; leave it zero.
        kept = kept / kept.sum(dim=1, keepdim=True).clamp_min(torch.finfo(kept.dtype).tiny)
    return kept


def ensemble(logits: Sequence[Tensor], temperature: float = 1.0) -> Tensor:
    """Average several models' logits, then apply a tempered softmax.

    Args:
        logits: a non-empty sequence of float tensors of one shape, (N, C) or (N, C, H, W).
        temperature: T > 0 applied after averaging.

    Returns:
        Probabilities of the shared shape.
    """
    if isinstance(logits, Tensor) or not isinstance(logits, Sequence) or len(logits) == 0:
        raise ValueError("logits must be a non-empty list of tensors (one per model)")
    for position, item in enumerate(logits):
        check_logits(f"logits[{position}]", item)
        if item.shape != logits[0].shape:
            raise ValueError(
                f"logits[{position}] has shape {tuple(item.shape)}, expected "
                f"{tuple(logits[0].shape)} like logits[0]"
            )
    # Each model's share is divided first: the sum of huge finite logits could overflow.
    mean = torch.stack([item / len(logits) for item in logits]).sum(dim=0)
    return soften(mean, temperature)


def entropy(probs: Tensor, *, base: float = math.e) -> Tensor:
    """Shannon entropy of each probability vector, with 0 log 0 = 0.

    Args:
        probs: (N, C) or (N, C, H, W).
        base: logarithm base > 1 (e gives nats, 2 gives bits).

    Returns:
        (N,) or (N, H, W).
    """
    validate(probs, name="probs", allow_partial=True)
    base = _check_log_base(base)
    return -torch.special.xlogy(probs, probs).sum(dim=1) / math.log(base)


def js_distance(p: Tensor, q: Tensor, *, base: float = math.e) -> Tensor:
    """Jensen-Shannon distance: the square root of the JS divergence (as in SciPy).

    Args:
        p: (N, C) or (N, C, H, W) probabilities.
        q: probabilities of the same shape.
        base: logarithm base > 1; with base 2 the distance lies in [0, 1].

    Returns:
        (N,) or (N, H, W), symmetric, zero iff p = q, obeys the triangle inequality.
    """
    validate(p, name="p")
    validate(q, name="q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and "
                         f"{tuple(q.shape)}")
    base = _check_log_base(base)
    divergence = ((kl_to_mixture(p, q) + kl_to_mixture(q, p)) / 2).clamp_min(0)
    return (divergence / math.log(base)).sqrt()


def swap_ranks(probs: Tensor, k: int) -> Tensor:
    """Swap each row's k-th largest probability with its smallest one.

    k = 1 moves the top class's mass to the least likely class (destroys the argmax); k = C is
    the identity. Ties are broken by the stable descending sort (lowest class index first).

    Args:
        probs: (N, C) or (N, C, H, W) probabilities.
        k: rank to swap, 1 <= k <= C.

    Returns:
        Same shape; each row is a permutation of the input row.
    """
    validate(probs, name="probs", allow_partial=True)
    check_positive_int("k", k)
    num_classes = probs.shape[1]
    if k > num_classes:
        raise ValueError(f"k must be <= the number of classes {num_classes}, got {k}")
    rows = class_first_to_last(probs).reshape(-1, num_classes)
    order = rows.argsort(dim=1, descending=True, stable=True)
    kth, smallest = order[:, k - 1 : k], order[:, -1:]
    swapped = rows.scatter(1, kth, rows.gather(1, smallest))
    swapped = swapped.scatter(1, smallest, rows.gather(1, kth))
    return rows_back(swapped, probs.shape)


def shuffle_tail(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Randomly permute each row's probabilities among all classes but its top class.

    Keeps the argmax and the entropy and destroys the structure of the remaining mass (which
    wrong classes look alike). Each row gets its own permutation.

    Args:
        probs: (N, C) or (N, C, H, W) probabilities.
        generator: source of randomness; pass one for reproducible results.

    Returns:
        Same shape; each row is a permutation of the input row with the top class fixed.
    """
    validate(probs, name="probs", allow_partial=True)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    num_classes = probs.shape[1]
    rows = class_first_to_last(probs).reshape(-1, num_classes)
    keys = torch.rand(rows.shape, generator=generator, device="cpu").to(rows.device)
    # Sorting random keys gives a uniform permutation; the top class gets key -1 so it stays
    # in front of the order and keeps its position.
    top = rows.argmax(dim=1, keepdim=True)
    keys = keys.scatter(1, top, -1.0)
    tail_positions = keys.argsort(dim=1)[:, 1:]
    tail_sorted = tail_positions.sort(dim=1).values
    shuffled = rows.scatter(1, tail_sorted, rows.gather(1, tail_positions))
    return rows_back(shuffled, probs.shape)


def check_kernel(kernel: object) -> int:
    """Require an odd int >= 1: the side of a boundary neighbourhood (:func:`boundary_smooth`)."""
    check_positive_int("kernel", kernel)
    if kernel % 2 == 0:  # type: ignore[operator]
        raise ValueError(f"kernel must be odd so the window is centred, got {kernel}")
    return kernel  # type: ignore[return-value]


def _check_log_base(base: object) -> float:
    # log(1) = 0 divides by zero, and a base below 1 makes entropies negative (and the
    # square root of a negative divergence NaN).
    return check_above("base", base, 1.0)
