"""Jaccard / Dice / Tversky metric losses that are correct for soft labels.

For one class, with x the predicted probabilities and y the label over the pixels, p-norms
raised to the power p, and |.| the p-norm:

- ``sjl`` (soft Jaccard, kept for comparison): tp = <x, y>, fp = |x| - tp, fn = |y| - tp.
  Right for hard y; for soft y it is not minimised at x = y.
- ``jml1``: tp = (|x| + |y| - |x - y|) / 2, fp = |x| - tp, fn = |y| - tp.
- ``jml2``: tp = <x, y>, fp = |relu(x - y)|, fn = |relu(y - x)|, so fp + fn = |x - y|.

score = (tp + smooth) / (tp + alpha fp + beta fn + smooth); loss = 1 - score (or -log score),
raised to ``gamma``. alpha = beta = 1 is Jaccard, 0.5 is Dice, anything else
Tversky. With hard labels and p = 1 the three variants coincide; JML1 and JML2 are zero iff
x = y and are metrics on [0, 1]^n (Wang, Ning, Blaschko, NeurIPS 2023).

Levels (refs: "Revisiting Evaluation Metrics for Semantic Segmentation"):

- ``dataset`` (mIoU^D): tp/fp/fn summed over the batch per class, averaged over active classes;
- ``image`` (mIoU^I): per image and class, averaged over each image's active classes, then over
  images;
- ``class`` (mIoU^C): per image and class, averaged over the images where the class is active,
  then over classes.

Hard labels never become a one-hot tensor: <x, y> is a gather of the true class's probability
and |y| a per-class pixel count. On a GPU with triton installed, multiclass softmax losses with
p = 1 run as two fused kernels (``_jaccard_triton``); everything else, and the CPU, takes the
PyTorch path (``_cardinalities``). Neither synchronises with the host when ``validate=False``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor

from .._checks import check_finite, check_float
from . import _jaccard_triton as triton_path
from ._cardinalities import Counts, hard_counts, soft_counts
from ._distributed import check_process_group
from ._jaccard_checks import (
    LEVELS,
    MODES,
    VARIANTS,
    DeferredChecks,
    MetricOptions,
    binary_labels,
    check_hard_shape,
    class_weight_tensor,
    hard_label_flag,
    hard_label_report,
    is_hard,
    keep_mask,
    level_weights,
    probability_flag,
    soft_label_flags,
    soft_label_report,
)
from ._jaccard_reduce import reduce_levels

__all__ = ["LEVELS", "MODES", "VARIANTS", "ce_jaccard_metric_loss", "jaccard_metric_loss"]


def jaccard_metric_loss(
    logits: Tensor,
    target: Tensor,
    *,
    variant: str = "jml1",
    mode: str = "multiclass",
    from_logits: bool = True,
    p: int = 1,
    levels: Mapping[str, float] | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    smooth: float | tuple[float, float] = 1e-3,
    log_loss: bool = False,
    class_weights: Tensor | Sequence[float] | None = None,
    active_classes: str | None = None,
    class_mean: str = "active",
    threshold: float = 0.01,
    ignore_index: int | None = None,
    keep: Tensor | None = None,
    validate: bool = True,
    sync_dist: bool = False,
    backend: str = "auto",
) -> Tensor:
    """Jaccard metric loss (JML) and its Dice/Tversky relatives, for hard or soft labels.

    Args:
        logits: float (B, C, *spatial) scores; probabilities when ``from_logits=False``.
            ``binary`` mode takes C = 1.
        target: hard labels, int64 (B, *spatial) in [0, C) (``binary``: {0, 1}), or soft
            labels, float (B, C, *spatial): probabilities summing to 1 over C (multiclass) or
            values in [0, 1] (binary, multilabel). ``multilabel`` takes (B, C, *spatial) of
            either dtype.
        variant: ``"jml1"`` (default), ``"jml2"`` or ``"sjl"``.
        mode: ``"multiclass"`` (softmax over C), ``"binary"`` or ``"multilabel"`` (sigmoid).
        from_logits: apply the softmax/sigmoid; False when ``logits`` are probabilities.
        p: 1 or 2, the norm used for the cardinalities.
        levels: weights of the ``dataset``, ``image`` and ``class`` losses; default
            ``{"dataset": 1.0}``.
        alpha: weight of false positives (1 Jaccard, 0.5 Dice).
        beta: weight of false negatives.
        gamma: >= 1; the per-class loss is raised to this power (focuses on bad classes).
        smooth: >= 0 added to numerator and denominator, or a pair (numerator, denominator)
            (MONAI's ``smooth_nr``, ``smooth_dr``). A zero term is replaced by a floor of
            1e-7 under the denominator (and, with ``log_loss``, under the score), as in SMP,
            so ``smooth=0`` (SMP's default) is safe: a class absent from both prediction and
            label then scores 0 (loss 1, no gradient), where with ``smooth > 0`` it scores 1
            (loss 0). Such a class is never active under ``active_classes="present"``.
        log_loss: use -log(score) instead of 1 - score.
        class_weights: (C,) non-negative per-class weights multiplying each class's loss; a
            tensor on the logits' device avoids a copy per call.
        active_classes: ``"present"`` (a class counts where its label exceeds ``threshold``)
            or ``"all"``; default ``"present"`` for hard and ``"all"`` for soft labels. In
            binary mode with hard labels, "present" means an image without foreground adds
            nothing to the loss, so false positives there go unpunished; pass ``"all"`` to
            count them.
        class_mean: ``"active"`` averages over the active classes; ``"all"`` divides their
            sum by C, inactive classes adding 0 (the convention of segmentation_models_pytorch).
        threshold: label value above which a class is present.
        ignore_index: a hard-label value whose pixels are left out.
        keep: bool (B, *spatial), False for pixels to leave out (works for any label).
        validate: check the values of labels, soft targets, probabilities and logits (NaN).
            The checks run on the device beside the loss and are read back in one host
            synchronisation per call (none in the backward). ``False`` skips them and makes
            the call free of host synchronisations (CUDA graphs, ``torch.compile``); then a
            label outside [0, C) is undefined behaviour (an indexing error, a device-side
            assert, or a pixel silently dropped) and NaN logits give a NaN loss.
        sync_dist: sum the per-class sums over the default process group, so that the loss
            on every rank is the loss of the global batch and DDP's averaged gradients are
            the single-process gradients of that batch (all levels). Every rank must call
            the loss with the same C and options.
        backend: ``"auto"`` (Triton kernels for multiclass softmax with p = 1 on a CUDA
            device when triton is installed, else PyTorch), ``"torch"`` or ``"triton"``.

    Half-precision logits are accumulated in float32; the result has the logits' dtype.

    Returns:
        A scalar. When no class is active (e.g. every pixel ignored) it is 0 with zero
        gradient, never NaN.

    Note:
        To save memory the PyTorch path's hard-label backward writes the gradient over the
        probabilities it saved, so a graph can be backpropagated once: a second ``backward``
        through a graph kept with ``retain_graph=True`` raises a RuntimeError; compute the
        loss again instead.
    """
    options = MetricOptions(
        variant=variant, mode=mode, from_logits=from_logits, p=p, levels=level_weights(levels),
        alpha=alpha, beta=beta, gamma=gamma, smooth=smooth, log_loss=log_loss,
        active_classes=active_classes, class_mean=class_mean, threshold=threshold,
        ignore_index=ignore_index, validate=validate, sync_dist=sync_dist, backend=backend)
    return metric_loss(logits, target, options, class_weights, keep)[0]


def ce_jaccard_metric_loss(logits: Tensor, target: Tensor, *,
                           class_weights: Tensor | Sequence[float] | None = None,
                           keep: Tensor | None = None, levels: Mapping[str, float] | None = None,
                           **options: Any) -> tuple[Tensor, Tensor]:
    """Cross-entropy and the metric loss of the same logits, computed in one pass.

    Users pair the two (the paper's recipe is ``0.25 * ce + 0.75 * metric``); together they
    share the softmax and, on the fused paths, one backward.

    Args:
        logits: float (B, C, *spatial) scores (multiclass, ``from_logits=True``).
        target: int64 (B, *spatial) hard labels or float (B, C, *spatial) soft labels.
        class_weights, keep, levels, **options: as in :func:`jaccard_metric_loss`; class
            weights apply to the metric loss only.

    Returns:
        (ce, metric): scalars. ``ce`` is the mean over kept pixels of -sum_c y_c log x_c
        (``F.cross_entropy`` with ``ignore_index`` for hard labels; 0 when no pixel is kept);
        under ``sync_dist`` it is the mean over the global batch, like the metric loss.
    """
    parsed = MetricOptions(levels=level_weights(levels), **options)
    if parsed.mode != "multiclass" or not parsed.from_logits:
        raise ValueError(f"ce_jaccard_metric_loss takes multiclass logits, got mode="
                         f"{parsed.mode!r}, from_logits={parsed.from_logits}")
    loss, ce = metric_loss(logits, target, parsed, class_weights, keep, with_ce=True)
    return cast(Tensor, ce), loss


def metric_loss(logits: Tensor, target: Tensor, options: MetricOptions,
                class_weights: Tensor | Sequence[float] | None = None,
                keep: Tensor | None = None, with_ce: bool = False
                ) -> tuple[Tensor, Tensor | None]:
    """(metric loss, cross-entropy or None): the shared body of the functions and modules."""
    check_float("logits", logits)
    if logits.ndim < 3:
        raise ValueError(f"logits must be (B, C, *spatial) with at least one spatial "
                         f"dimension, got shape {tuple(logits.shape)} (for (B, C) scores of "
                         "whole images, give logits[..., None] and target[..., None])")
    num_classes = logits.shape[1]
    if options.mode == "binary" and num_classes != 1:
        raise ValueError(f"binary mode takes logits with one channel, got C = {num_classes}")
    if options.sync_dist:
        check_process_group()
    hard = is_hard(target, options.mode)
    checks = DeferredChecks(options.validate)
    mask = keep_mask(logits, target, keep, options.ignore_index, hard, options.mode)
    if not options.from_logits:
        activation = "none"
        probability_flag(logits, checks)
    else:
        activation = "softmax" if options.mode == "multiclass" else "sigmoid"

    def logits_report() -> None:
        check_finite("logits", logits)

    scores = logits.flatten(2)
    flat_mask = mask.flatten(1) if mask is not None else None
    if hard and options.mode == "multiclass":
        check_hard_shape(target, logits)
        report = hard_label_report(target, num_classes, options.ignore_index)
        counts = _hard(scores, target.flatten(1), flat_mask, options, activation, with_ce,
                       checks, report, logits_report)
    else:
        from_hard = options.mode == "binary" and hard
        if from_hard:
            target = binary_labels(target, logits, options.ignore_index, checks)
        if target.shape != logits.shape:
            raise ValueError(f"target must have the shape of logits {tuple(logits.shape)}, "
                             f"got {tuple(target.shape)}")
        counts = _soft(scores, target.flatten(2), flat_mask, options, activation, with_ce,
                       checks, not from_hard, logits_report)
    mode_active = options.active_classes or ("present" if hard else "all")
    active = counts.present if mode_active == "present" else torch.ones_like(counts.present)
    weights = class_weight_tensor(class_weights, num_classes, counts.num, checks)
    extra = []
    if with_ce:
        kept = (flat_mask.sum().to(counts.num) if flat_mask is not None
                else counts.num.new_full((), float(scores.shape[0] * scores.shape[2])))
        extra += [counts.ce.sum().view(1), kept.view(1)]
    payload = checks.payload() if options.sync_dist else None
    if payload is not None:
        extra.append(payload)
    total, summed = reduce_levels(counts.num, counts.den, active, options, weights, extra)
    checks.verdict(summed[-1] if payload is not None else None)
    ce = (summed[0] / summed[1].clamp_min(1)).squeeze(0).to(logits.dtype) if with_ce else None
    return total.to(logits.dtype), ce


def _use_triton(scores: Tensor, target: Tensor, options: MetricOptions, activation: str
                ) -> bool:
    supported = (activation == "softmax" and options.p == 1
                 and scores.dtype in (torch.float16, torch.bfloat16, torch.float32)
                 and scores.shape[1] <= triton_path.MAX_CLASSES and not target.requires_grad)
    if options.backend == "torch":
        return False
    if options.backend == "triton":
        if not supported:
            raise ValueError("backend='triton' runs multiclass softmax losses with p = 1 on "
                             "float16/bfloat16/float32 logits of at most "
                             f"{triton_path.MAX_CLASSES} classes, against targets that need "
                             "no gradient; use backend='auto' or 'torch'")
        if not triton_path.available():
            raise ValueError("backend='triton' needs the triton package")
        return True
    return supported and scores.is_cuda and triton_path.available()


def _hard(scores: Tensor, labels: Tensor, mask: Tensor | None, options: MetricOptions,
          activation: str, with_ce: bool, checks: DeferredChecks, report: Any,
          logits_report: Any) -> Counts:
    """Counts for multiclass hard labels (B, N) and scores (B, C, N)."""
    num_classes, ignore = scores.shape[1], options.ignore_index
    if _use_triton(scores, labels, options, activation):
        counts, bad_labels, bad_logits = triton_path.hard_counts(
            scores, labels, mask, ignore, (options.alpha, options.beta))
        checks.add(bad_labels, report)
        checks.add(bad_logits, logits_report)
        return counts
    index = labels.where(labels != ignore, 0) if ignore is not None else labels
    if checks.enabled:
        checks.add(hard_label_flag(index, num_classes), report)
        # Until the verdict, an invalid label must not reach an indexing kernel.
        index = index.clamp(0, num_classes - 1)
    dtype = torch.promote_types(scores.dtype, torch.float32)
    keep_f = mask.to(dtype) if mask is not None else None
    counts = hard_counts(scores, index, keep_f, options.variant, options.p,
                         (options.alpha, options.beta), activation, with_ce)
    if checks.enabled:  # NaN logits reach every denominator
        checks.add(~torch.isfinite(counts.den.sum()), logits_report)
    return counts


def _soft(scores: Tensor, target: Tensor, mask: Tensor | None, options: MetricOptions,
          activation: str, with_ce: bool, checks: DeferredChecks, check_target: bool,
          logits_report: Any) -> Counts:
    """Counts for a float (or binary 0/1) target (B, C, N) and scores (B, C, N).

    ``check_target``: False when the target came from hard labels, checked as such.
    """
    if _use_triton(scores, target, options, activation):
        counts, bad_target, bad_logits = triton_path.soft_counts(
            scores, target, mask, options.variant, (options.alpha, options.beta),
            options.threshold, options.mode == "multiclass")
        if check_target:
            checks.add(bad_target, soft_label_report(target, mask, options.mode))
        checks.add(bad_logits, logits_report)
        return counts
    if check_target:
        soft_label_flags(target, mask, options.mode, checks)
    dtype = torch.promote_types(scores.dtype, torch.float32)
    keep_f = mask.to(dtype) if mask is not None else None
    counts = soft_counts(scores, target.to(dtype), keep_f, options.variant, options.p,
                         (options.alpha, options.beta), options.threshold, activation, with_ce)
    if checks.enabled:  # NaN logits reach every denominator
        checks.add(~torch.isfinite(counts.den.sum()), logits_report)
    return counts
