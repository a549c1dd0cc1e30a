"""Fused per-image, per-class sums for the metric losses with p = 1.

Autograd through ``softmax -> gather/scatter -> sums`` keeps several (B, C, N) tensors alive
and walks them many times. These functions return the few (B, C) sums a metric loss needs and
compute their gradient directly: for sums S_k = sum_i w_k(x_i, y_i) of the probabilities x, the
gradient with respect to x is sum_k dL/dS_k * dw_k/dx, and the softmax backward
``x * (g - <x, g>)`` is folded in. Only the probabilities (and the labels the caller already
holds) are saved for backward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["hard_sums", "soft_sums"]

ACTIVATIONS = ("softmax", "sigmoid", "none")
_FACTOR_CHUNKS = 4


def _activate(scores: Tensor, activation: str) -> Tensor:
    if activation == "softmax":
        return scores.softmax(dim=1)
    if activation == "sigmoid":
        return scores.sigmoid()
    return scores


def _activation_backward(grad: Tensor, probs: Tensor, activation: str) -> Tensor:
    """Turn d loss / d probs (B, C, N) into d loss / d scores, reusing ``grad``'s memory."""
    if activation == "softmax":
        # x * (g - <x, g>) = x*g - x * sum_c(x*g), computed in place in three passes.
        grad.mul_(probs)
        return grad.addcmul_(probs, grad.sum(1, keepdim=True), value=-1)
    if activation == "sigmoid":
        return grad.mul_(probs).mul_(1 - probs)
    return grad


class _HardSums(torch.autograd.Function):
    """(T, X): T[b, c] = sum of kept x_ic over pixels labelled c; X[b, c] = sum of kept x_ic."""

    @staticmethod
    def forward(ctx: FunctionCtx, scores: Tensor, labels: Tensor, keep: Tensor | None,
                activation: str) -> tuple[Tensor, Tensor]:
        probs = _activate(scores, activation)
        ctx.save_for_backward(probs, labels, keep)
        on_label = probs.gather(1, labels.unsqueeze(1)).squeeze(1)  # (B, N)
        if keep is not None:
            on_label = on_label * keep
            total = torch.bmm(probs, keep.unsqueeze(-1)).squeeze(-1)
        else:
            total = probs.sum(-1)
        hits = probs.new_zeros(total.shape).scatter_add_(1, labels, on_label)
        ctx.activation = activation
        return hits, total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_hits: Tensor, grad_total: Tensor
                 ) -> tuple[Tensor, None, None, None]:
        probs, labels, keep = ctx.saved_tensors
        # d loss / d x[b, c, i] = keep_i * g[b, c, i] with
        # g[b, c, i] = grad_total[b, c] + [labels_i = c] * grad_hits[b, c].
        hit_grad = grad_hits.gather(1, labels).unsqueeze(1)  # (B, 1, N)
        if ctx.activation == "softmax":
            # Softmax backward x * (g - <x, g>), written over the saved probabilities x (the
            # function is once-differentiable, so nothing reads them again; a second backward
            # through a retained graph fails autograd's version check instead of going wrong).
            # No (B, C, N) tensor is allocated in the backward at all.
            grad = probs
            label_term = grad.gather(1, labels.unsqueeze(1)) * hit_grad  # x_iy * g_hits
            inner = torch.bmm(grad_total.unsqueeze(1), grad) + label_term  # <x, g>, (B, 1, N)
            # The factor (g_total - <x, g>) is (B, C, N); built a quarter of the pixels at a
            # time it costs a quarter of the memory, in four vectorised steps.
            step = max(1, -(-grad.shape[2] // _FACTOR_CHUNKS))
            for start in range(0, grad.shape[2], step):
                window = slice(start, start + step)
                grad[:, :, window].mul_(grad_total.unsqueeze(-1) - inner[:, :, window])
            grad.scatter_add_(1, labels.unsqueeze(1), label_term)
        else:
            grad = grad_total.unsqueeze(-1).expand_as(probs).clone()
            grad.scatter_add_(1, labels.unsqueeze(1), hit_grad)
            grad = _activation_backward(grad, probs, ctx.activation)
        if keep is not None:
            grad.mul_(keep.unsqueeze(1))
        return grad, None, None, None


def hard_sums(scores: Tensor, labels: Tensor, keep: Tensor | None,
              activation: str) -> tuple[Tensor, Tensor]:
    """Per-image, per-class sums of the probabilities for hard labels.

    Args:
        scores: float (B, C, N) logits (or probabilities with ``activation="none"``).
        labels: int64 (B, N) in [0, C); ignored pixels may hold any valid class.
        keep: float (B, N) of 0/1, or None when every pixel counts.
        activation: ``"softmax"``, ``"sigmoid"`` or ``"none"``.

    Returns:
        (hits, total), each (B, C): the kept probability mass on pixels labelled c, and the
        kept probability mass of class c over all pixels.
    """
    return _HardSums.apply(scores, labels, keep, activation)


class _SoftSums(torch.autograd.Function):
    """Sums over kept pixels of x, x*y, |x - y|, relu(x - y) and relu(y - x)."""

    @staticmethod
    def forward(ctx: FunctionCtx, scores: Tensor, target: Tensor, keep: Tensor | None,
                activation: str, needed: tuple[bool, bool, bool, bool]
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        probs = _activate(scores, activation)
        weight = keep.unsqueeze(1) if keep is not None else None
        want_t, want_d, want_p, want_n = needed
        kept = probs * weight if weight is not None else probs
        total = kept.sum(-1)
        zeros = total.new_zeros(total.shape)
        prod = (kept * target).sum(-1) if want_t else zeros
        diff = None
        if want_d or want_p or want_n:
            diff = probs - target
            if weight is not None:
                diff.mul_(weight)  # kept pixels only; the backward reuses it
        dist = torch.linalg.vector_norm(diff, ord=1, dim=-1) if want_d else zeros
        excess = diff.clamp_min(0).sum(-1) if want_p else zeros
        shortfall = diff.clamp_max(0).sum(-1).neg() if want_n else zeros
        ctx.save_for_backward(probs, target, keep, diff)
        ctx.activation, ctx.needed = activation, needed
        return total, prod, dist, excess, shortfall

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_total: Tensor, g_prod: Tensor, g_dist: Tensor, g_excess: Tensor,
                 g_short: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        probs, target, keep, diff = ctx.saved_tensors
        want_t, want_d, want_p, want_n = ctx.needed
        target_grad = None
        if ctx.needs_input_grad[1]:  # learned labels: the loss is differentiated in y too
            target_grad = torch.zeros_like(probs)
            if want_t:
                target_grad.addcmul_(g_prod.unsqueeze(-1), probs)
            if want_d:
                target_grad.addcmul_(g_dist.unsqueeze(-1), torch.sign(diff), value=-1)
            if want_p:
                target_grad.addcmul_(g_excess.unsqueeze(-1), (diff > 0).to(probs.dtype),
                                     value=-1)
            if want_n:
                target_grad.addcmul_(g_short.unsqueeze(-1), (diff < 0).to(probs.dtype))
            if keep is not None:
                target_grad.mul_(keep.unsqueeze(1))
        if not ctx.needs_input_grad[0]:
            return None, target_grad, None, None, None
        # Subgradients at x = y are 0, as autograd's abs and relu give, so that a loss
        # minimised at x = y has a zero gradient there.
        if want_d and not (want_t or want_p or want_n):
            # The default JML1 path: one buffer, sign(x - y) * g_dist + g_total, in place.
            grad = torch.sign(diff).mul_(g_dist.unsqueeze(-1)).add_(g_total.unsqueeze(-1))
        else:
            grad = g_total.unsqueeze(-1).expand_as(probs).clone()
            if want_t:
                grad.addcmul_(g_prod.unsqueeze(-1), target)
            if want_d:
                grad.addcmul_(g_dist.unsqueeze(-1), torch.sign(diff))
            if want_p:
                grad.addcmul_(g_excess.unsqueeze(-1), (diff > 0).to(probs.dtype))
            if want_n:
                grad.addcmul_(g_short.unsqueeze(-1), (diff < 0).to(probs.dtype), value=-1)
        if keep is not None:
            grad.mul_(keep.unsqueeze(1))
        return _activation_backward(grad, probs, ctx.activation), target_grad, None, None, None


def soft_sums(scores: Tensor, target: Tensor, keep: Tensor | None, activation: str,
              needed: tuple[bool, bool, bool, bool]
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-image, per-class sums of the probabilities x against a soft target y.

    Args:
        scores: float (B, C, N) logits (or probabilities with ``activation="none"``).
        target: float (B, C, N) labels in [0, 1].
        keep: float (B, N) of 0/1, or None.
        activation: ``"softmax"``, ``"sigmoid"`` or ``"none"``.
        needed: which of (sum x*y, sum |x - y|, sum relu(x - y), sum relu(y - x)) to
            compute; the others are returned as zeros.

    Returns:
        (sum x, sum x*y, sum |x - y|, sum relu(x - y), sum relu(y - x)), each (B, C), over
        kept pixels.
    """
    return _SoftSums.apply(scores, target, keep, activation, needed)
