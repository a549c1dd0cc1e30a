"""From per-image, per-class tp/fp/fn to the scalar loss at each level, optionally over ranks.

Every level is a ratio of sums over images, so that under ``sync_dist`` one all-reduce of the
(few, small) sums makes each rank's loss the loss of the global batch: the dataset level needs
per-class sums of the numerator and denominator, the image level the sum of per-image means
and the number of images with an active class, the class level per-class sums of the losses
and of the active counts. All travel in one vector; the all-reduce is differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._cardinalities import linear
from ._distributed import all_reduce_sum
from ._jaccard_checks import MetricOptions

__all__ = ["EPS", "reduce_levels"]

#: Floor of the denominator and (log_loss) of the score when their smoothing term is 0: a
#: class absent from both prediction and label would otherwise be 0 / 0. SMP's default eps,
#: and its rule; with smoothing > 0 nothing is floored, so no gradient is cut off.
EPS = 1e-7


def per_class_loss(num: Tensor, den: Tensor, options: MetricOptions,
                   weights: Tensor | None) -> Tensor:
    """Loss of each entry from score = (tp + s_num) / (tp + a fp + b fn + s_den)."""
    s_num, s_den = options.smooth
    denominator = den + s_den if s_den > 0 else den.clamp_min(EPS)
    if options.log_loss:
        score = (num + s_num) / denominator
        loss = -torch.log(score if s_num > 0 else score.clamp_min(EPS))
    elif s_den > 0:
        # 1 - score as one fraction: a kernel fewer, and no cancellation near score = 1.
        difference = den - num
        if s_den != s_num:
            difference = difference + (s_den - s_num)
        loss = difference / denominator
    else:  # the floor breaks that identity
        loss = 1.0 - (num + s_num) / denominator
    if options.gamma != 1.0:
        # clamp: rounding can push 1 - score a hair below zero, and a fractional power of a
        # negative number is NaN.
        loss = loss.clamp_min(0).pow(options.gamma)
    return loss * weights if weights is not None else loss


def _class_average(values: Tensor, counts: Tensor, options: MetricOptions) -> Tensor:
    """Sum over entries with counts > 0, divided by their number or (class_mean="all") by C."""
    active = counts > 0
    total = (values * active).sum(-1)
    if options.class_mean == "all":
        return total / values.shape[-1]
    return total / active.sum(-1).clamp_min(1)


def reduce_levels(num: Tensor, den: Tensor, active: Tensor, options: MetricOptions,
                  weights: Tensor | None, extra: list[Tensor]
                  ) -> tuple[Tensor, list[Tensor]]:
    """The weighted sum of the level losses, and ``extra`` (1-D tensors) summed over ranks.

    Args:
        num, den: tp and tp + alpha fp + beta fn, (B, C) per image and class.
        active: bool (B, C), the entries that count.
        options: the loss options (levels, smoothing, ``sync_dist``...).
        weights: (C,) class weights or None.
        extra: further sums to all-reduce in the same call (cross-entropy, check flags).
    """
    w_dataset, w_image, w_class = options.levels
    act = active.to(num.dtype)
    pieces = [act.sum(0)]  # images in which each class is active
    if w_dataset:
        pieces += [num.sum(0), den.sum(0)]
    if w_image or w_class:
        loss = per_class_loss(num, den, options, weights) * act  # (B, C)
        if w_image:
            row_counts = act.sum(1)
            row_means = (loss.sum(1) / (loss.shape[1] if options.class_mean == "all"
                                        else row_counts.clamp_min(1)))
            rows = (row_counts > 0).to(num.dtype)
            pieces += [(row_means * rows).sum().view(1), rows.sum().view(1)]
        if w_class:
            pieces.append(loss.sum(0))
    sizes = [piece.numel() for piece in pieces] + [piece.numel() for piece in extra]
    parts = pieces + [piece.to(num.dtype) for piece in extra]
    if options.sync_dist:
        parts = list(all_reduce_sum(torch.cat(parts)).split(sizes))
    counts, rest = parts[0], parts[1:]
    terms = []
    if w_dataset:
        dataset_num, dataset_den, rest = rest[0], rest[1], rest[2:]
        per_class = per_class_loss(dataset_num, dataset_den, options, weights)
        terms.append((w_dataset, _class_average(per_class, counts, options)))
    if w_image:
        image_sum, image_rows, rest = rest[0], rest[1], rest[2:]
        terms.append((w_image, (image_sum / image_rows.clamp_min(1)).squeeze(0)))
    if w_class:
        class_means = rest[0] / counts.clamp_min(1)
        terms.append((w_class, _class_average(class_means, counts, options)))
        rest = rest[1:]
    return linear(*terms), rest
