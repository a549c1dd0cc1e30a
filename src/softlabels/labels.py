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
    check_finite,
    check_float,
    check_hard_labels,
    check_ndim,
    check_positive,
    check_positive_int,
    check_range,
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
        atol: tolerance on the row sums.

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: wrong number of dimensions, NaN/inf, negative entries, or rows whose sum is
            not 1 (or above 1 with ``allow_partial``).
    """
    check_float(name, probs)
    check_ndim(name, probs, (2, 4))
    if probs.shape[1] < 1:
        raise ValueError(f"{name} must have at least one class along dim 1, got {probs.shape}")
    check_finite(name, probs)
    minimum = float(probs.min()) if probs.numel() else 0.0
    if minimum < 0:
        raise ValueError(f"{name} must be non-negative, got a minimum of {minimum:.4g}")
    sums = probs.sum(dim=1)
    if sums.numel():
        too_high = float(sums.max()) > 1 + atol
        too_low = not allow_partial and float(sums.min()) < 1 - atol
        if too_high or too_low:
            expected = "<= 1" if allow_partial else "1"
            raise ValueError(
                f"{name} rows must sum to {expected} over dim 1 (tolerance {atol}), got sums in "
                f"[{float(sums.min()):.4f}, {float(sums.max()):.4f}]"
            )
    return probs


def one_hot(labels: Tensor, num_classes: int, *, ignore_index: int | None = None,
            dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot encode hard labels.

    Args:
        labels: int64 (N,) or (N, H, W) class indices in [0, num_classes).
        num_classes: C.
        ignore_index: a label value to accept outside the range; its rows are all zeros.
        dtype: floating dtype of the result.

    Returns:
        (N, C) or (N, C, H, W) with a single 1 per row (none for ignored positions).
    """
    check_hard_labels("labels", labels, num_classes, ignore_index)
    check_ndim("labels", labels, (1, 3))
    keep = labels != ignore_index if ignore_index is not None else None
    safe = labels.where(keep, 0) if keep is not None else labels
    encoded = F.one_hot(safe, num_classes).to(dtype)
    if keep is not None:
        encoded = encoded * keep.unsqueeze(-1).to(dtype)
    return _class_last_to_first(encoded)


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
        ignore_index: label of ignored pixels; their rows are all zeros.

    Returns:
        float32 (N, C, H, W).
    """
    eps = check_range("eps", eps, 0.0, 1.0)
    check_ndim("hard", hard, (3,))
    check_positive_int("kernel", kernel)
    if kernel % 2 == 0:
        raise ValueError(f"kernel must be odd so the window is centred, got {kernel}")
    encoded = one_hot(hard, num_classes, ignore_index=ignore_index)
    boundary = boundary_mask(hard, kernel, ignore_index)
    weight = eps * boundary.unsqueeze(1).to(encoded.dtype)
    return encoded * (1 - weight) + weight / num_classes


def boundary_mask(hard: Tensor, kernel: int = 3, ignore_index: int | None = None) -> Tensor:
    """bool (N, H, W): pixels whose k x k window holds another class and no ignored pixel.

    Args:
        hard: int64 (N, H, W) labels.
        kernel: odd window size.
        ignore_index: label of ignored pixels, or None.
    """
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

    Args:
        logits: float (N, C) or (N, C, H, W).
        temperature: T > 0; larger T gives smoother labels.

    Returns:
        Probabilities with the shape of ``logits``.
    """
    _check_logits("logits", logits)
    temperature = check_positive("temperature", temperature)
    return torch.softmax(logits / temperature, dim=1)


def classwise_soften(logits: Tensor, targets: Tensor, temperatures: Tensor) -> Tensor:
    """Tempered softmax whose temperature is chosen by each sample's true class (ABSLD).

    Args:
        logits: float (N, C) or (N, C, H, W).
        targets: int64 (N,) or (N, H, W) true classes, selecting ``temperatures[targets]``.
        temperatures: float (C,) strictly positive.

    Returns:
        Probabilities with the shape of ``logits``.
    """
    _check_logits("logits", logits)
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
    per_sample = temperatures.to(logits.device, logits.dtype)[targets].unsqueeze(1)
    return torch.softmax(logits / per_sample, dim=1)


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
        _check_logits(f"logits[{position}]", item)
        if item.shape != logits[0].shape:
            raise ValueError(
                f"logits[{position}] has shape {tuple(item.shape)}, expected "
                f"{tuple(logits[0].shape)} like logits[0]"
            )
    return soften(torch.stack(list(logits)).mean(dim=0), temperature)


def entropy(probs: Tensor, *, base: float = math.e) -> Tensor:
    """Shannon entropy of each probability vector, with 0 log 0 = 0.

    Args:
        probs: (N, C) or (N, C, H, W).
        base: logarithm base (e gives nats, 2 gives bits).

    Returns:
        (N,) or (N, H, W).
    """
    validate(probs, name="probs", allow_partial=True)
    check_positive("base", base)
    return -torch.special.xlogy(probs, probs).sum(dim=1) / math.log(base)


def js_distance(p: Tensor, q: Tensor, *, base: float = math.e) -> Tensor:
    """Jensen-Shannon distance: the square root of the JS divergence (as in SciPy).

    Args:
        p: (N, C) or (N, C, H, W) probabilities.
        q: probabilities of the same shape.
        base: logarithm base; with base 2 the distance lies in [0, 1].

    Returns:
        (N,) or (N, H, W), symmetric, zero iff p = q, obeys the triangle inequality.
    """
    validate(p, name="p")
    validate(q, name="q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and "
                         f"{tuple(q.shape)}")
    check_positive("base", base)
    m = (p + q) / 2
    # xlogy keeps 0 * log(0 / m) = 0 without NaN.
    kl_pm = (torch.special.xlogy(p, p) - torch.special.xlogy(p, m)).sum(dim=1)
    kl_qm = (torch.special.xlogy(q, q) - torch.special.xlogy(q, m)).sum(dim=1)
    divergence = ((kl_pm + kl_qm) / 2).clamp_min(0) / math.log(base)
    return divergence.sqrt()


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
    rows = _class_first_to_last(probs).reshape(-1, num_classes)
    order = rows.argsort(dim=1, descending=True, stable=True)
    kth, smallest = order[:, k - 1 : k], order[:, -1:]
    swapped = rows.scatter(1, kth, rows.gather(1, smallest))
    swapped = swapped.scatter(1, smallest, rows.gather(1, kth))
    return _rows_back(swapped, probs.shape)


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
    num_classes = probs.shape[1]
    rows = _class_first_to_last(probs).reshape(-1, num_classes)
    keys = torch.rand(rows.shape, generator=generator, device="cpu").to(rows.device)
    # Sorting random keys gives a uniform permutation; the top class gets key -1 so it stays
    # in front of the order and keeps its position.
    top = rows.argmax(dim=1, keepdim=True)
    keys = keys.scatter(1, top, -1.0)
    tail_positions = keys.argsort(dim=1)[:, 1:]
    tail_sorted = tail_positions.sort(dim=1).values
    shuffled = rows.scatter(1, tail_sorted, rows.gather(1, tail_positions))
    return _rows_back(shuffled, probs.shape)


def _check_logits(name: str, logits: Tensor) -> None:
    check_float(name, logits)
    check_ndim(name, logits, (2, 4))
    check_finite(name, logits)


def _class_last_to_first(encoded: Tensor) -> Tensor:
    """(N, ..., C) -> (N, C, ...)."""
    return encoded if encoded.ndim == 2 else encoded.movedim(-1, 1).contiguous()


def _class_first_to_last(probs: Tensor) -> Tensor:
    """(N, C, ...) -> (N, ..., C)."""
    return probs if probs.ndim == 2 else probs.movedim(1, -1)


def _rows_back(rows: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of ``_class_first_to_last(x).reshape(-1, C)`` for a tensor of ``shape``."""
    if len(shape) == 2:
        return rows
    n, c, *spatial = shape
    return rows.reshape(n, *spatial, c).movedim(-1, 1).contiguous()
