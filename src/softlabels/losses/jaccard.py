"""Jaccard / Dice / Tversky metric losses that are correct for soft labels.

For one class, with x the predicted probabilities and y the label over the pixels, p-norms
raised to the power p, and |.| the p-norm:

- ``sjl`` (soft Jaccard, kept for comparison): tp = <x, y>, fp = |x| - tp, fn = |y| - tp.
  Right for hard y; for soft y it is not minimised at x = y.
- ``jml1``: tp = (|x| + |y| - |x - y|) / 2, fp = |x| - tp, fn = |y| - tp.
- ``jml2``: tp = <x, y>, fp = |relu(x - y)|, fn = |relu(y - x)|, so fp + fn = |x - y|.

score = (tp + smooth) / (tp + alpha fp + beta fn + smooth); loss = 1 - score (or -log score),
raised to ``gamma``. alpha = beta = 1 is Jaccard, 0.5 is Dice, anything else Tversky. With
hard labels and p = 1 the three variants coincide; JML1 and JML2 are zero iff x = y and are
metrics on [0, 1]^n (Wang, Ning, Blaschko, NeurIPS 2023).

Levels (refs: "Revisiting Evaluation Metrics for Semantic Segmentation"):

- ``dataset`` (mIoU^D): tp/fp/fn summed over the batch per class, averaged over active classes;
- ``image`` (mIoU^I): per image and class, averaged over each image's active classes, then over
  images;
- ``class`` (mIoU^C): per image and class, averaged over the images where the class is active,
  then over classes.

Hard labels never become a one-hot tensor: <x, y> is a gather of the true class's probability
and |y| a per-class pixel count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_finite, check_float, check_range, check_tensor
from ._cardinalities import _activate, hard_sums, soft_sums

__all__ = ["LEVELS", "MODES", "VARIANTS", "jaccard_metric_loss"]

VARIANTS = ("jml1", "jml2", "sjl")
MODES = ("multiclass", "binary", "multilabel")
LEVELS = ("dataset", "image", "class")
ACTIVE_CLASSES = ("present", "all")
_SUM_TOLERANCE = 1e-3


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
    smooth: float = 1e-3,
    log_loss: bool = False,
    class_weights: Tensor | Sequence[float] | None = None,
    active_classes: str | None = None,
    threshold: float = 0.01,
    ignore_index: int | None = None,
    keep: Tensor | None = None,
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
        smooth: > 0 added to numerator and denominator.
        log_loss: use -log(score) instead of 1 - score.
        class_weights: (C,) non-negative per-class weights multiplying each class's loss.
        active_classes: ``"present"`` (a class counts where its label exceeds ``threshold``)
            or ``"all"``; default ``"present"`` for hard and ``"all"`` for soft labels. In
            binary mode with hard labels, "present" means an image without foreground adds
            nothing to the loss, so false positives there go unpunished; pass ``"all"`` to
            count them.
        threshold: label value above which a class is present.
        ignore_index: a hard-label value whose pixels are left out.
        keep: bool (B, *spatial), False for pixels to leave out (works for any label).

    Half-precision logits are accumulated in float32; the result has the logits' dtype.

    Returns:
        A scalar. When no class is active (e.g. every pixel ignored) it is 0 with zero
        gradient, never NaN.

    Note:
        To save memory the hard-label backward writes the gradient over the probabilities it
        saved, so a graph can be backpropagated once: a second ``backward`` through a graph
        kept with ``retain_graph=True`` raises a RuntimeError; compute the loss again instead.
    """
    check_choice("variant", variant, VARIANTS)
    check_choice("mode", mode, MODES)
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    weights = _level_weights(levels)
    check_range("alpha", alpha, 0.0, float("inf"))
    check_range("beta", beta, 0.0, float("inf"))
    check_range("gamma", gamma, 1.0, float("inf"))
    check_range("threshold", threshold, 0.0, 1.0)
    if not smooth > 0:
        raise ValueError(f"smooth must be > 0, got {smooth}")
    check_float("logits", logits)
    if logits.ndim < 2:
        raise ValueError(f"logits must be (B, C, *spatial), got shape {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    if mode == "binary" and num_classes != 1:
        raise ValueError(f"binary mode takes logits with one channel, got C = {num_classes}")
    hard = _is_hard(target, mode)
    mask = _keep_mask(logits, target, keep, ignore_index, hard, mode)
    activation = _activation(logits, mode, from_logits)
    # Sums over many pixels overflow or lose counts in half precision: accumulate in float32.
    compute_dtype = torch.promote_types(logits.dtype, torch.float32)
    scores = logits.flatten(2).to(compute_dtype)
    keep_f = mask.flatten(1).to(compute_dtype) if mask is not None else None
    if hard and mode == "multiclass":
        labels = _check_hard(target, logits, num_classes, ignore_index).flatten(1)
        if mask is not None:
            labels = labels.where(mask.flatten(1), 0)  # any valid class; the pixel is masked
        tp, fp, fn, present = _hard_counts(scores, labels, keep_f, variant, p, activation)
    else:
        soft = _soft_target(target, logits, mode, hard, ignore_index, mask).flatten(2)
        soft = soft.to(compute_dtype)
        tp, fp, fn, present = _soft_counts(scores, soft, keep_f, variant, p, threshold,
                                           activation)
    mode_active = active_classes or ("present" if hard else "all")
    check_choice("active_classes", mode_active, ACTIVE_CLASSES)
    active = present if mode_active == "present" else torch.ones_like(present)
    class_w = _class_weights(class_weights, num_classes, scores)

    def loss_of(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        return _per_class_loss(tp, fp, fn, alpha, beta, gamma, smooth, log_loss, class_w)

    total = 0.0 * tp.sum()  # a zero that keeps the graph when nothing is active
    if weights["dataset"]:
        per_class = loss_of(tp.sum(0), fp.sum(0), fn.sum(0))
        total = total + weights["dataset"] * _masked_mean(per_class, active.any(0))
    if weights["image"] or weights["class"]:
        per_image_class = loss_of(tp, fp, fn)
        total = total + weights["image"] * _mean_of_means(per_image_class, active, dim=1)
        total = total + weights["class"] * _mean_of_means(per_image_class, active, dim=0)
    if not bool(torch.isfinite(total)):
        # Checked here rather than up front: one scalar test instead of a pass over the logits.
        check_finite("logits", logits)
    return total.to(logits.dtype)


def _level_weights(levels: Mapping[str, float] | None) -> dict[str, float]:
    if levels is None:
        return {"dataset": 1.0, "image": 0.0, "class": 0.0}
    if not isinstance(levels, Mapping):
        raise TypeError(f"levels must be a mapping of level -> weight, got "
                        f"{type(levels).__name__}")
    unknown = sorted(set(levels) - set(LEVELS))
    if unknown:
        raise ValueError(f"levels has unknown keys {unknown}; valid: {list(LEVELS)}")
    weights = {level: float(levels.get(level, 0.0)) for level in LEVELS}
    if (any(not math.isfinite(w) or w < 0 for w in weights.values())
            or not any(weights.values())):
        raise ValueError(f"levels weights must be >= 0 with at least one > 0, got {weights}")
    return weights


def _is_hard(target: Tensor, mode: str) -> bool:
    check_tensor("target", target)
    if target.dtype == torch.int64:
        return True
    if target.is_floating_point():
        return False
    raise TypeError(f"target must be int64 hard labels or floating-point soft labels for mode "
                    f"{mode!r}, got {target.dtype}")


def _keep_mask(logits: Tensor, target: Tensor, keep: Tensor | None, ignore_index: int | None,
               hard: bool, mode: str) -> Tensor | None:
    """bool (B, *spatial): pixels that count, or None when all count."""
    spatial_shape = logits.shape[:1] + logits.shape[2:]
    mask = None
    if keep is not None:
        check_tensor("keep", keep)
        if keep.dtype != torch.bool:
            raise TypeError(f"keep must be a bool tensor, got {keep.dtype}")
        if keep.shape != spatial_shape:
            raise ValueError(f"keep must have shape {tuple(spatial_shape)}, got "
                             f"{tuple(keep.shape)}")
        mask = keep.to(logits.device)
    if ignore_index is not None:
        if not hard or mode == "multilabel":
            raise ValueError("ignore_index applies to multiclass or binary hard labels; pass a "
                             "bool keep mask to leave out pixels of other labels")
        if target.shape == spatial_shape:  # a wrong shape is reported by the label check
            kept = target != ignore_index
            mask = kept if mask is None else mask & kept
    return mask


def _activation(logits: Tensor, mode: str, from_logits: bool) -> str:
    """How scores become probabilities: softmax, sigmoid, or none (already probabilities)."""
    if not from_logits:
        if float(logits.detach().min()) < 0 or float(logits.detach().max()) > 1:
            raise ValueError("logits must hold probabilities in [0, 1] when from_logits=False")
        return "none"
    return "softmax" if mode == "multiclass" else "sigmoid"


def _check_hard(target: Tensor, logits: Tensor, num_classes: int,
                ignore_index: int | None) -> Tensor:
    expected = logits.shape[:1] + logits.shape[2:]
    if target.shape != expected:
        raise ValueError(f"hard target must have shape {tuple(expected)} for logits "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    if target.numel() == 0:
        return target
    low, high = (int(v) for v in torch.aminmax(target))
    if low >= 0 and high < num_classes:
        return target  # one pass proves every label valid, the common case
    valid = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        valid |= target == ignore_index
    if not bool(valid.all()):
        bad = target[~valid]
        allowed = f"[0, {num_classes})" + (f" or ignore_index={ignore_index}"
                                           if ignore_index is not None else "")
        raise ValueError(f"target must hold class indices in {allowed}, got {bad.numel()} "
                         f"values outside (e.g. {bad[:5].tolist()}); labels are never clamped")
    return target


def _soft_target(target: Tensor, logits: Tensor, mode: str, hard: bool,
                 ignore_index: int | None, mask: Tensor | None) -> Tensor:
    """float (B, C, *spatial) label for the soft path (binary/multilabel hard labels too)."""
    if mode == "binary" and hard:
        labels = _check_hard(target, logits, 2, ignore_index)
        if ignore_index is not None:
            labels = labels.where(labels != ignore_index, 0)  # masked out by ``mask``
        target = labels.unsqueeze(1)
    if target.shape != logits.shape:
        raise ValueError(f"target must have the shape of logits {tuple(logits.shape)}, got "
                         f"{tuple(target.shape)}")
    target = target.to(logits.dtype)
    # Per-pixel summaries keep the checks cheap: only kept pixels are judged, and a NaN or
    # infinity anywhere in a pixel's label makes its sum non-finite.
    sums = target.detach().sum(1)
    if mask is None:
        lows, highs = torch.aminmax(target.detach())  # a contiguous reduction: the fast case
    else:
        sums = sums[mask]
        lows, highs = target.detach().amin(1)[mask], target.detach().amax(1)[mask]
    if sums.numel() == 0:
        return target
    check_finite("target", sums)
    low, high = float(lows.detach().min()), float(highs.detach().max())
    if low < 0 or high > 1:
        raise ValueError(f"target values must lie in [0, 1], got range [{low:.4g}, {high:.4g}]")
    if mode == "multiclass" and float((sums - 1).abs().max()) > _SUM_TOLERANCE:
        raise ValueError(f"soft target must sum to 1 over classes (dim 1, tolerance "
                         f"{_SUM_TOLERANCE}), got sums in [{float(sums.min()):.4f}, "
                         f"{float(sums.max()):.4f}]")
    return target


def _hard_counts(scores: Tensor, labels: Tensor, keep: Tensor | None, variant: str, p: int,
                 activation: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """tp, fp, fn, present, each (B, C), from scores (B, C, N) and int64 labels (B, N)."""
    batch, num_classes, _ = scores.shape
    keep_f = keep if keep is not None else torch.ones_like(labels, dtype=scores.dtype)
    y_card = scores.new_zeros(batch, num_classes).scatter_add_(1, labels, keep_f)
    if p == 1:
        # With p = 1 and binary y every variant has tp = sum of x on the labelled pixels.
        tp, x_card = hard_sums(scores, labels, keep, activation)
        return tp, x_card - tp, y_card - tp, y_card > 0
    x = _activate(scores, activation)
    true_prob = x.gather(1, labels.unsqueeze(1)).squeeze(1)  # (B, N): x at the label's class

    def per_label_class(values: Tensor) -> Tensor:
        return x.new_zeros(batch, num_classes).scatter_add(1, labels, values * keep_f)

    # bmm sums over pixels without materialising x * keep.
    x_card = torch.bmm(x.pow(p), keep_f.unsqueeze(-1)).squeeze(-1)
    tp = per_label_class(true_prob)
    if variant == "sjl":
        fp, fn = x_card - tp, y_card - tp
    else:
        x_on_label = per_label_class(true_prob.pow(p))
        miss_on_label = per_label_class((1 - true_prob).pow(p))
        if variant == "jml1":
            tp = (x_card + y_card - (x_card - x_on_label + miss_on_label)) / 2
            fp, fn = x_card - tp, y_card - tp
        else:
            fp, fn = x_card - x_on_label, miss_on_label
    return tp, fp, fn, y_card > 0


def _soft_counts(scores: Tensor, y: Tensor, keep: Tensor | None, variant: str, p: int,
                 threshold: float, activation: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """tp, fp, fn, present, each (B, C), from scores and y (B, C, N) and keep (B, N)."""
    kept_y = y * keep.unsqueeze(1) if keep is not None else y
    present = kept_y.amax(-1) > threshold
    if p == 1:
        y_card = kept_y.sum(-1)
        jml2 = variant == "jml2"
        needed = (variant != "jml1", variant == "jml1", jml2, jml2)
        x_card, prod, dist, excess, shortfall = soft_sums(scores, y, keep, activation, needed)
        if variant == "jml1":
            tp = (x_card + y_card - dist) / 2
            return tp, x_card - tp, y_card - tp, present
        if jml2:
            return prod, excess, shortfall, present
        return prod, x_card - prod, y_card - prod, present
    x = _activate(scores, activation)
    if keep is not None:
        x = x * keep.unsqueeze(1)
    y = kept_y

    def card(values: Tensor) -> Tensor:
        return (values if p == 1 else values.pow(p)).sum(-1)

    if variant == "jml1":
        x_card, y_card = card(x), card(y)
        tp = (x_card + y_card - card((x - y).abs())) / 2
        fp, fn = x_card - tp, y_card - tp
    elif variant == "jml2":
        tp = (x * y).sum(-1)
        fp, fn = card(F.relu(x - y)), card(F.relu(y - x))
    else:
        tp = (x * y).sum(-1)
        fp, fn = card(x) - tp, card(y) - tp
    return tp, fp, fn, present


def _class_weights(class_weights: Tensor | Sequence[float] | None, num_classes: int,
                   like: Tensor) -> Tensor | None:
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=like.dtype, device=like.device)
    if weights.shape != (num_classes,):
        raise ValueError(f"class_weights must have shape ({num_classes},), got "
                         f"{tuple(weights.shape)}")
    if not bool(torch.isfinite(weights).all()) or float(weights.min()) < 0:
        raise ValueError("class_weights must be finite and non-negative")
    return weights


def _per_class_loss(tp: Tensor, fp: Tensor, fn: Tensor, alpha: float, beta: float,
                    gamma: float, smooth: float, log_loss: bool,
                    weights: Tensor | None) -> Tensor:
    score = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    loss = -torch.log(score) if log_loss else 1.0 - score
    if gamma != 1.0:
        # clamp: rounding can push 1 - score a hair below zero, and a fractional power of a
        # negative number is NaN.
        loss = loss.clamp_min(0).pow(gamma)
    return loss * weights if weights is not None else loss


def _masked_mean(values: Tensor, active: Tensor) -> Tensor:
    count = active.sum()
    return (values * active).sum() / count.clamp_min(1)


def _mean_of_means(values: Tensor, active: Tensor, dim: int) -> Tensor:
    """Mean over ``dim`` of active entries, then mean over the rows that had any."""
    active_f = active.to(values.dtype)
    counts = active_f.sum(dim)
    row_means = (values * active_f).sum(dim) / counts.clamp_min(1)
    rows = counts > 0
    return (row_means * rows).sum() / rows.sum().clamp_min(1)
