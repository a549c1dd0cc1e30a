"""Per-image, per-class cardinalities of the metric losses on the PyTorch path (any device).

Autograd through ``softmax -> gather/scatter -> sums`` keeps several (B, C, N) tensors alive
and walks them many times. For p = 1 the functions here return the few (B, C) sums a metric
loss needs and compute their gradient directly: for sums S_k = sum_i w_k(x_i, y_i) of the
probabilities x, the gradient with respect to x is sum_k dL/dS_k * dw_k/dx, and the softmax
backward ``x * (g - <x, g>)`` is folded in. Only the probabilities and (B, N) tensors (the
labels, the probability at each label) are saved for backward. Cross-entropy can ride along
(``with_ce``): it shares the softmax, and its gradient ``x - onehot`` folds into the same
backward.

No float atomics anywhere, so two calls give identical bits: per-label sums use
``scatter_add`` on the CPU, where each row is summed in order by one thread, and a compare
and a plain reduction elsewhere; the scatter in the backward writes one class per pixel.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["Counts", "counts_from_sums", "hard_counts", "linear", "soft_counts"]

_FACTOR_CHUNKS = 4


class Counts(NamedTuple):
    """num = tp and den = tp + alpha fp + beta fn, each (B, C); present: bool (B, C);
    ce: (B,) cross-entropy summed over kept pixels, or None."""

    num: Tensor
    den: Tensor
    present: Tensor
    ce: Tensor | None


def linear(*terms: tuple[float, Tensor]) -> Tensor:
    """sum of c * t over (c, t), skipping c = 0, in one kernel per term (``torch.add``)."""
    kept = sorted((term for term in terms if term[0] != 0), key=lambda term: term[0] != 1)
    scale, out = kept[0]
    out = out if scale == 1 else out * scale
    for scale, tensor in kept[1:]:
        out = torch.add(out, tensor, alpha=scale)
    return out


def tversky(tp: Tensor, fp: Tensor, fn: Tensor, weights: tuple[float, float],
            present: Tensor, ce: Tensor | None) -> Counts:
    """Counts from tp, fp, fn (B, C) and weights (alpha, beta) of fp and fn."""
    alpha, beta = weights
    return Counts(tp, linear((1.0, tp), (alpha, fp), (beta, fn)), present, ce)


def counts_from_sums(variant: str, weights: tuple[float, float], total: Tensor,
                     y_total: Tensor, present: Tensor, ce: Tensor | None, *,
                     hits: Tensor | None = None, prod: Tensor | None = None,
                     dist: Tensor | None = None, excess: Tensor | None = None,
                     shortfall: Tensor | None = None) -> Counts:
    """Counts from per-class sums (p = 1): ``hits`` for hard labels, else the variant's.

    total = sum x, y_total = sum y, hits = sum of x on pixels labelled c, prod = sum x*y,
    dist = sum |x - y|, excess / shortfall = sum relu(x - y) / relu(y - x); all over kept
    pixels. With hard labels every variant has tp = hits. The denominator tp + a fp + b fn
    is written directly in the sums (with fp = total - tp, fn = y_total - tp unless jml2),
    which saves kernels: on a GPU the launches of small-tensor kernels are much of the cost.
    """
    alpha, beta = weights
    rest = 1.0 - alpha - beta  # the weight of tp in tp + a (total - tp) + b (y_total - tp)
    if variant == "jml2" and hits is None:
        return Counts(prod, linear((1.0, prod), (alpha, excess), (beta, shortfall)), present,
                      ce)
    if hits is not None or variant == "sjl":
        tp = hits if hits is not None else prod
        return Counts(tp, linear((alpha, total), (beta, y_total), (rest, tp)), present, ce)
    # jml1: tp = (total + y_total - dist) / 2.
    num = linear((0.5, total), (0.5, y_total), (-0.5, dist))
    den = linear((alpha + rest / 2, total), (beta + rest / 2, y_total), (-rest / 2, dist))
    return Counts(num, den, present, ce)


def activate(scores: Tensor, activation: str, dtype: torch.dtype) -> Tensor:
    """Probabilities in ``dtype`` (half logits are not copied to float32 first)."""
    if activation == "softmax":
        return scores.softmax(dim=1, dtype=dtype)
    if activation == "sigmoid":
        return scores.to(dtype).sigmoid()
    return scores.to(dtype)


def per_label_sum(values: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(B, C): sum of ``values`` (B, N) over the pixels of each label (B, N); differentiable."""
    if values.device.type == "cpu":
        zeros = values.new_zeros(values.shape[0], num_classes)
        return zeros.scatter_add(1, labels, values)
    # On a GPU scatter_add uses float atomics (run-to-run differences): compare and reduce.
    classes = torch.arange(num_classes, device=labels.device).view(1, -1, 1)
    return torch.where(labels.unsqueeze(1) == classes, values.unsqueeze(1), 0).sum(-1)


def _log_probs_and_ce(scores: Tensor, target: Tensor, keep: Tensor | None, hard: bool,
                      dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """log softmax (B, C, N) and the cross-entropy summed over each image's kept pixels (B,)."""
    logp = scores.log_softmax(dim=1, dtype=dtype)
    per_pixel = (logp.gather(1, target.unsqueeze(1)).squeeze(1) if hard
                 else (target * logp).sum(1))
    if keep is not None:
        per_pixel = per_pixel * keep
    return logp, per_pixel.sum(-1).neg()


def _probabilities(scores: Tensor, target: Tensor, keep: Tensor | None, hard: bool,
                   activation: str, with_ce: bool) -> tuple[Tensor, Tensor | None]:
    """Probabilities (B, C, N) in the compute dtype and, ``with_ce``, the summed ce (B,)."""
    dtype = torch.promote_types(scores.dtype, torch.float32)
    if not with_ce:
        return activate(scores, activation, dtype), None
    logp, ce = _log_probs_and_ce(scores, target, keep, hard, dtype)
    return logp.exp_(), ce  # in place: the log-probabilities are not needed again


def _softmax_backward(grad: Tensor, probs: Tensor, ce_scale: Tensor | None,
                      target: Tensor | None) -> Tensor:
    """x * (g - <x, g>) in place over ``grad``, plus the soft cross-entropy's c * (x s - y).

    s = sum_c y; c = d loss / d ce per pixel ((B, 1, N) or (B, 1, 1)).
    """
    grad.mul_(probs)
    inner = grad.sum(1, keepdim=True)
    if ce_scale is not None:
        inner = inner - ce_scale * target.sum(1, keepdim=True)
    grad.addcmul_(probs, inner, value=-1)
    if ce_scale is not None:
        grad.addcmul_(target, ce_scale, value=-1)
    return grad


class _HardSums(torch.autograd.Function):
    """hits[b, c] (x on pixels labelled c), total[b, c] (x), count[b, c] and ce[b]."""

    @staticmethod
    def forward(ctx: FunctionCtx, scores: Tensor, labels: Tensor, keep: Tensor | None,
                activation: str, with_ce: bool
                ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        probs, ce = _probabilities(scores, labels, keep, True, activation, with_ce)
        num_classes = probs.shape[1]
        label_prob = probs.gather(1, labels.unsqueeze(1)).squeeze(1)  # (B, N)
        on_label = label_prob
        if keep is not None:
            on_label = label_prob * keep
            total = torch.bmm(probs, keep.unsqueeze(-1)).squeeze(-1)
        else:
            total = probs.sum(-1)
        weight = keep if keep is not None else torch.ones_like(on_label)
        hits = per_label_sum(on_label, labels, num_classes)
        count = per_label_sum(weight, labels, num_classes)
        ctx.mark_non_differentiable(count)
        # x at each pixel's label, (B, N): saved, as the backward overwrites the probabilities.
        ctx.save_for_backward(probs, labels, keep, label_prob)
        ctx.activation, ctx.with_ce, ctx.dtype = activation, with_ce, scores.dtype
        return hits, total, count, ce

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_hits: Tensor, grad_total: Tensor, _grad_count: Tensor,
                 grad_ce: Tensor | None) -> tuple[Tensor, None, None, None, None]:
        probs, labels, keep, label_prob = ctx.saved_tensors
        # d loss / d x[b, c, i] = keep_i * g[b, c, i] with
        # g[b, c, i] = grad_total[b, c] + [labels_i = c] * grad_hits[b, c].
        index = labels.unsqueeze(1)
        label_term = label_prob * grad_hits.gather(1, labels)  # x_iy * g_hits, (B, N)
        if ctx.activation == "softmax":
            # Softmax backward x * (g - <x, g>), written over the saved probabilities x (the
            # function is once-differentiable, so nothing reads them again; a second backward
            # through a retained graph fails autograd's version check instead of going wrong).
            grad = probs
            inner = torch.bmm(grad_total.unsqueeze(1), grad).squeeze(1) + label_term  # <x, g>
            if ctx.with_ce and grad_ce is not None:
                # Cross-entropy adds c * (x - onehot): -c inside the factor, -c at the label.
                ce_grad = grad_ce.unsqueeze(1)
                inner, label_term = inner - ce_grad, label_term - ce_grad
            # The gradient at each pixel's label, from (B, N) tensors only: no gather from,
            # or read-modify-write of, the (B, C, N) buffer.
            at_label = label_prob * (grad_total.gather(1, labels) - inner) + label_term
            # The factor (g_total - <x, g>) is (B, C, N); built a quarter of the pixels at a
            # time in one reused buffer it costs a quarter of the memory (and of the page
            # faults of fresh memory), in four vectorised steps.
            inner = inner.unsqueeze(1)
            step = max(1, -(-grad.shape[2] // _FACTOR_CHUNKS))
            factor = grad.new_empty(grad.shape[0], grad.shape[1], step)
            for start in range(0, grad.shape[2], step):
                window = slice(start, start + step)
                part = factor[:, :, :min(step, grad.shape[2] - start)]
                torch.sub(grad_total.unsqueeze(-1), inner[:, :, window], out=part)
                grad[:, :, window].mul_(part)
        else:
            grad = grad_total.unsqueeze(-1).expand_as(probs).clone()
            at_label = grad_total.gather(1, labels) + grad_hits.gather(1, labels)
        # One class per pixel: a plain scatter, no accumulation and no atomics.
        grad.scatter_(1, index, at_label.unsqueeze(1))
        if keep is not None:
            grad.mul_(keep.unsqueeze(1))
        return grad.to(ctx.dtype), None, None, None, None


class _SoftSums(torch.autograd.Function):
    """Sums over kept pixels of x, x*y, |x - y|, relu(x - y), relu(y - x); ce[b]."""

    @staticmethod
    def forward(ctx: FunctionCtx, scores: Tensor, target: Tensor, keep: Tensor | None,
                activation: str, needed: tuple[bool, bool, bool, bool], with_ce: bool
                ) -> tuple[Tensor | None, ...]:
        probs, ce = _probabilities(scores, target, keep, False, activation, with_ce)
        weight = keep.unsqueeze(1) if keep is not None else None
        want_t, want_d, want_p, want_n = needed
        kept = probs * weight if weight is not None else probs
        total = kept.sum(-1)
        # Sums the variant does not need are None (not zeros: one tensor returned as several
        # outputs trips torch.compile).
        prod = (kept * target).sum(-1) if want_t else None
        diff = None
        if want_d or want_p or want_n:
            diff = probs - target
            if weight is not None:
                diff.mul_(weight)  # kept pixels only; the backward reuses it
        dist = torch.linalg.vector_norm(diff, ord=1, dim=-1) if want_d else None
        excess = diff.clamp_min(0).sum(-1) if want_p else None
        shortfall = diff.clamp_max(0).sum(-1).neg() if want_n else None
        ctx.save_for_backward(probs, target, keep, diff)
        ctx.activation, ctx.needed, ctx.with_ce, ctx.dtype = (activation, needed, with_ce,
                                                              scores.dtype)
        return total, prod, dist, excess, shortfall, ce

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_total: Tensor, g_prod: Tensor, g_dist: Tensor, g_excess: Tensor,
                 g_short: Tensor, g_ce: Tensor | None
                 ) -> tuple[Tensor | None, Tensor | None, None, None, None, None]:
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
            return None, target_grad, None, None, None, None
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
        if ctx.activation == "softmax":
            ce_scale = None
            if ctx.with_ce and g_ce is not None:
                ce_scale = g_ce.view(-1, 1, 1)
                if keep is not None:
                    ce_scale = ce_scale * keep.unsqueeze(1)
            grad = _softmax_backward(grad, probs, ce_scale, target)
        elif ctx.activation == "sigmoid":
            grad.mul_(probs).mul_(1 - probs)
        return grad.to(ctx.dtype), target_grad, None, None, None, None


def hard_counts(scores: Tensor, labels: Tensor, keep: Tensor | None, variant: str, p: int,
                weights: tuple[float, float], activation: str, with_ce: bool) -> Counts:
    """Counts for hard labels.

    Args:
        scores: float (B, C, N) logits (probabilities with ``activation="none"``).
        labels: int64 (B, N) in [0, C); masked pixels may hold any valid class.
        keep: float (B, N) of 0/1 in the compute dtype, or None when every pixel counts.
        variant, p: as in ``jaccard_metric_loss``.
        weights: (alpha, beta), the weights of fp and fn.
        activation: ``"softmax"`` or ``"none"``.
        with_ce: also return the summed cross-entropy (softmax only).
    """
    num_classes = scores.shape[1]
    if p == 1:
        hits, total, count, ce = _HardSums.apply(scores, labels, keep, activation, with_ce)
        return counts_from_sums(variant, weights, total, count, count > 0, ce, hits=hits)
    dtype = torch.promote_types(scores.dtype, torch.float32)
    ce = _log_probs_and_ce(scores, labels, keep, True, dtype)[1] if with_ce else None
    x = activate(scores, activation, dtype)
    keep_f = keep if keep is not None else torch.ones_like(labels, dtype=dtype)
    y_card = per_label_sum(keep_f, labels, num_classes)
    true_prob = x.gather(1, labels.unsqueeze(1)).squeeze(1)  # (B, N): x at the label's class

    def per_label(values: Tensor) -> Tensor:
        return per_label_sum(values * keep_f, labels, num_classes)

    # bmm sums over pixels without materialising x * keep.
    x_card = torch.bmm(x.pow(p), keep_f.unsqueeze(-1)).squeeze(-1)
    tp = per_label(true_prob)
    present = y_card > 0
    if variant == "sjl":
        return tversky(tp, x_card - tp, y_card - tp, weights, present, ce)
    x_on_label = per_label(true_prob.pow(p))
    miss_on_label = per_label((1 - true_prob).pow(p))
    if variant == "jml2":
        return tversky(tp, x_card - x_on_label, miss_on_label, weights, present, ce)
    tp = (x_card + y_card - (x_card - x_on_label + miss_on_label)) / 2
    return tversky(tp, x_card - tp, y_card - tp, weights, present, ce)


def soft_counts(scores: Tensor, y: Tensor, keep: Tensor | None, variant: str, p: int,
                weights: tuple[float, float], threshold: float, activation: str,
                with_ce: bool) -> Counts:
    """Counts for soft labels: scores and y (B, C, N) in the compute dtype, keep (B, N)."""
    kept_y = y * keep.unsqueeze(1) if keep is not None else y
    present = kept_y.amax(-1) > threshold
    y_card = kept_y.sum(-1) if p == 1 else kept_y.pow(p).sum(-1)
    # Learned labels differentiate the cross-entropy in y too: then it is computed apart.
    fuse_ce = with_ce and p == 1 and not y.requires_grad
    ce = _log_probs_and_ce(scores, y, keep, False, y.dtype)[1] if with_ce and not fuse_ce \
        else None
    if p == 1:
        jml2 = variant == "jml2"
        needed = (variant != "jml1", variant == "jml1", jml2, jml2)
        total, prod, dist, excess, shortfall, fused = _SoftSums.apply(
            scores, y, keep, activation, needed, fuse_ce)
        return counts_from_sums(variant, weights, total, y_card, present,
                                fused if fuse_ce else ce,
                                prod=prod, dist=dist, excess=excess, shortfall=shortfall)
    x = activate(scores, activation, y.dtype)
    if keep is not None:
        x = x * keep.unsqueeze(1)

    def card(values: Tensor) -> Tensor:
        return values.pow(p).sum(-1)

    if variant == "jml1":
        x_card = card(x)
        tp = (x_card + y_card - card((x - kept_y).abs())) / 2
        return tversky(tp, x_card - tp, y_card - tp, weights, present, ce)
    tp = (x * kept_y).sum(-1)
    if variant == "jml2":
        return tversky(tp, card(F.relu(x - kept_y)), card(F.relu(kept_y - x)), weights,
                       present, ce)
    return tversky(tp, card(x) - tp, y_card - tp, weights, present, ce)
