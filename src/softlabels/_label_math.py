"""Numerics shared by the label operations and the losses: stable tempered scores, the
mixture KL of the Jensen-Shannon distance, and moving the class dimension.

Private: arguments are checked by the public callers in :mod:`softlabels.labels` and
:mod:`softlabels.losses`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import compute_dtype


def tempered_logits(logits: Tensor, temperature: float | Tensor) -> Tensor:
    """``(logits - max) / T`` over dim 1, in :func:`compute_dtype` of the logits.

    The softmax of this equals that of ``logits / T`` but cannot overflow: every entry is <= 0
    and the largest is exactly 0, so a tiny T sends the others to -inf, never to NaN. The max
    is a constant shift, detached so that the gradient is that of ``logits / T``. Shared by
    :func:`softlabels.labels.soften` and the distillation loss.
    """
    scores = logits.to(compute_dtype(logits.dtype))
    return (scores - scores.detach().amax(dim=1, keepdim=True)) / temperature


def kl_to_mixture(p: Tensor, q: Tensor) -> Tensor:
    """``KL(p || (p + q) / 2)`` summed over dim 1, with 0 log 0 = 0.

    Written with the ratio ``p / m = 2p / (p + q)`` rather than ``log p - log m``: for the
    smallest subnormal p and q = 0, m = p / 2 underflows to 0 and ``log m`` is -inf although
    the ratio is exactly 2.
    """
    kept = p > 0
    # The masked denominator keeps 0 / 0 out of the graph, so gradients stay finite too.
    ratio = torch.where(kept, 2 * p / torch.where(kept, p + q, 1.0), 1.0)
    return (p * ratio.log()).sum(dim=1)


def class_last_to_first(encoded: Tensor) -> Tensor:
    """(N, ..., C) -> (N, C, ...)."""
    return encoded if encoded.ndim == 2 else encoded.movedim(-1, 1).contiguous()


def class_first_to_last(probs: Tensor) -> Tensor:
    """(N, C, ...) -> (N, ..., C)."""
    return probs if probs.ndim == 2 else probs.movedim(1, -1)


def rows_back(rows: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of ``class_first_to_last(x).reshape(-1, C)`` for a tensor of ``shape``."""
    if len(shape) == 2:
        return rows
    n, c, *spatial = shape
    return rows.reshape(n, *spatial, c).movedim(-1, 1).contiguous()
