"""Segmentation scores from per-image counts: mIoU, mDice and mAcc at dataset, image and class
level, and their worst cases.

Definitions follow refs.md section 2 (Wang, Ning, Blaschko, "Revisiting Evaluation Metrics for
Semantic Segmentation", NeurIPS 2023 D&B). For image i and class c, with ignored pixels removed
from both the prediction and the target, count TP_ic, FP_ic and FN_ic; then

    IoU = TP / (TP + FP + FN)      Dice = 2 TP / (2 TP + FP + FN)      Acc = TP / (TP + FN)

and each score is reduced at one of three levels:

- ``"dataset"`` (mIoU^D): counts summed over the images per class, then the mean over the
  classes whose denominator is non-zero. For IoU and Dice that is every class found in some
  ground truth *or* some prediction (a class that is only ever predicted scores 0); for Acc,
  every class found in some ground truth.
- ``"image"`` (mIoU^I): per image, the mean over the classes present in *that image's ground
  truth*; then the mean over images. A class predicted in an image but absent from its ground
  truth is not averaged in its own right: its wrongly predicted pixels are already false
  negatives of the true classes they belong to and lower those classes' scores.
- ``"class"`` (mIoU^C): per class, the mean over the images whose ground truth contains the
  class; then the mean over the classes found in at least one ground truth.

Worst case (``q`` percent): the mean of the lowest ``max(1, floor(q * n / 100))`` of n
per-image values, as in the official code; for the class level this is done per class over the
images containing the class, then averaged over classes.

Conventions:

- All scores are fractions in [0, 1], not percentages.
- An image whose pixels are all ignored (or that has no pixel) has no ground-truth class, so it
  adds nothing to any image- or class-level mean or worst case; it still counts in
  ``num_images``.
- An average over nothing (no image, every pixel ignored, a class never seen) is NaN; nothing
  raises at compute time.
- ``num_classes = 2`` is two ordinary classes. The official code reports only the foreground
  for binary tasks; use ``iou_per_class[1]`` for that number.
- ``ignore_index`` must lie outside ``[0, num_classes)`` (e.g. 255 or -1): a class index that is
  also ignored would still be counted wherever it is predicted, which is never what is meant.
- Only the target marks pixels as ignored: every predicted class must lie in ``[0, C)``, even at
  ignored pixels, and out-of-range labels in either tensor are errors, never clamped.
"""


from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_finite, check_tensor

__all__ = ["LEVELS", "SCORES", "macc", "mdice", "miou", "per_image_scores", "worst_case"]

LEVELS = ("dataset", "image", "class")
SCORES = ("iou", "dice", "acc")

Counts = tuple[Tensor, Tensor, Tensor]


def miou(tp: Tensor, fp: Tensor, fn: Tensor, level: str = "dataset") -> float:
    """Mean intersection over union at the dataset, image or class level.

    Args:
        tp, fp, fn: non-negative (N, C) counts per image and class, as returned by
            :func:`segmentation_confusion` (several batches may be concatenated along dim 0).
        level: ``"dataset"`` (mIoU^D), ``"image"`` (mIoU^I) or ``"class"`` (mIoU^C); see the
            module docstring for which classes and images each level averages over.

    Returns:
        mIoU in [0, 1], or NaN when there is nothing to average.

    Example:
        >>> tp, fp, fn = torch.tensor([[1, 2]]), torch.tensor([[1, 0]]), torch.tensor([[0, 1]])
        >>> round(miou(tp, fp, fn), 4)  # (1/2 + 2/3) / 2
        0.5833
    """
    return _reduce(*_check_counts(tp, fp, fn), "iou", _check_level(level))


def mdice(tp: Tensor, fp: Tensor, fn: Tensor, level: str = "dataset") -> float:
    """Mean Dice score ``2 TP / (2 TP + FP + FN)``; arguments as in :func:`miou`.

    Example:
        >>> tp, fp, fn = torch.tensor([[1, 2]]), torch.tensor([[1, 0]]), torch.tensor([[0, 1]])
        >>> round(mdice(tp, fp, fn), 4)  # (2/3 + 4/5) / 2
        0.7333
    """
    return _reduce(*_check_counts(tp, fp, fn), "dice", _check_level(level))


def macc(tp: Tensor, fp: Tensor, fn: Tensor, level: str = "dataset") -> float:
    """Mean class accuracy (recall) ``TP / (TP + FN)``; arguments as in :func:`miou`.

    Only classes present in the ground truth have a defined accuracy, at every level.

    Example:
        >>> tp, fp, fn = torch.tensor([[1, 2]]), torch.tensor([[1, 0]]), torch.tensor([[0, 1]])
        >>> round(macc(tp, fp, fn), 4)  # (1/1 + 2/3) / 2
        0.8333
    """
    return _reduce(*_check_counts(tp, fp, fn), "acc", _check_level(level))


def per_image_scores(tp: Tensor, fp: Tensor, fn: Tensor, score: str = "iou") -> Tensor:
    """Each image's mean score over the classes present in its ground truth.

    These are the values that ``level="image"`` averages and that :func:`worst_case` ranks.

    Args:
        tp, fp, fn: non-negative (N, C) counts per image and class.
        score: ``"iou"``, ``"dice"`` or ``"acc"``.

    Returns:
        float64 (N,) on the CPU; NaN for an image without any kept pixel.

    Example:
        >>> tp, fp, fn = torch.tensor([[1, 2], [0, 0]]), torch.ones(2, 2), torch.ones(2, 2)
        >>> [round(v, 4) for v in per_image_scores(tp, fp, fn).tolist()]  # (1/3 + 2/4) / 2, 0
        [0.4167, 0.0]
    """
    counts = _check_counts(tp, fp, fn)
    return _image_class_scores(*counts, check_choice("score", score, SCORES)).nanmean(dim=1)


def worst_case(per_image_scores: Tensor, q: float = 5.0) -> float:
    """Mean of the lowest ``q`` percent of the per-image scores.

    The lowest ``max(1, floor(q * n / 100))`` of the n non-NaN scores are averaged (as in the
    official code), so there is always at least one image. NaN entries (images without any
    kept pixel) are skipped.

    Args:
        per_image_scores: float (N,), e.g. from :func:`per_image_scores`.
        q: percentage in (0, 100]; 100 gives the plain mean.

    Returns:
        The worst-case mean, or NaN when no score is given.

    Example:
        >>> scores = torch.tensor([0.9, 0.1, 0.5, 0.3, float("nan")])
        >>> round(worst_case(scores, q=50), 4)  # lowest floor(50 * 4 / 100) = 2 of 4 values
        0.2
    """
    scores = check_tensor("per_image_scores", per_image_scores)
    if not scores.is_floating_point():
        raise TypeError(f"per_image_scores must be a floating-point tensor, got {scores.dtype}")
    if scores.ndim != 1:
        raise ValueError(f"per_image_scores must have shape (N,), got {tuple(scores.shape)}")
    check_finite("per_image_scores (its non-NaN entries)", scores[~scores.isnan()])
    q = _check_q(q)
    return float(_lowest_mean(scores.detach().to("cpu", torch.float64).unsqueeze(1), q)[0])


# ----------------------------------------------------------------------------- score helpers


def _check_q(q: object) -> float:
    if isinstance(q, bool) or not isinstance(q, int | float):
        raise TypeError(f"q must be a number, got {type(q).__name__}")
    if not 0 < q <= 100:
        raise ValueError(f"q must be a percentage in (0, 100], got {q}")
    return float(q)


def _check_level(level: object) -> str:
    return check_choice("level", level, LEVELS)


# ----------------------------------------------------------------------------- compute helpers


def _check_counts(tp: Tensor, fp: Tensor, fn: Tensor) -> Counts:
    """float64 CPU copies of three matching non-negative (N, C) count tables."""
    out = []
    for name, value in (("tp", tp), ("fp", fp), ("fn", fn)):
        check_tensor(name, value)
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be an integer or floating-point count tensor, got "
                            f"{value.dtype}")
        if value.ndim != 2:
            raise ValueError(f"{name} must have shape (N, C), got {tuple(value.shape)}")
        if value.shape != tp.shape:
            raise ValueError(f"{name} must have the shape of tp {tuple(tp.shape)}, got "
                             f"{tuple(value.shape)}")
        counts = value.detach().to("cpu", torch.float64)
        check_finite(name, counts)
        if bool((counts < 0).any()):
            raise ValueError(f"{name} must hold non-negative counts, got minimum "
                             f"{float(counts.min())}")
        out.append(counts)
    return out[0], out[1], out[2]


def _fraction(tp: Tensor, fp: Tensor, fn: Tensor, score: str) -> tuple[Tensor, Tensor]:
    """Numerator and denominator of a score."""
    if score == "iou":
        return tp, tp + fp + fn
    if score == "dice":
        return 2 * tp, 2 * tp + fp + fn
    return tp, tp + fn


def _divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, NaN where the denominator is zero (undefined, not 0)."""
    defined = denominator > 0
    return torch.where(defined, numerator / torch.where(defined, denominator, 1.0), math.nan)


def _dataset_class_scores(tp: Tensor, fp: Tensor, fn: Tensor, score: str) -> Tensor:
    """float64 (C,) score of the counts summed over images; NaN for a zero denominator."""
    return _divide(*_fraction(tp.sum(0), fp.sum(0), fn.sum(0), score))


def _image_class_scores(tp: Tensor, fp: Tensor, fn: Tensor, score: str) -> Tensor:
    """float64 (N, C) score per image and class; NaN where the class is not in the image's GT.

    Restricting to ground-truth classes is what refs.md defines for mIoU^I and mIoU^C; it also
    makes every kept entry's denominator positive.
    """
    values = _divide(*_fraction(tp, fp, fn, score))
    return values.where(tp + fn > 0, math.nan)


def _reduce(tp: Tensor, fp: Tensor, fn: Tensor, score: str, level: str) -> float:
    if level == "dataset":
        return float(_dataset_class_scores(tp, fp, fn, score).nanmean())
    return _reduce_matrix(_image_class_scores(tp, fp, fn, score), level)


def _reduce_matrix(values: Tensor, level: str) -> float:
    """Image- or class-level mean of (N, C) per-image, per-class scores (NaN = not present)."""
    # nanmean over a row or column of NaN is NaN, so an image without kept pixels (or a class
    # absent from every ground truth) drops out of the outer mean.
    inner = values.nanmean(dim=1 if level == "image" else 0)
    return float(inner.nanmean())


def _lowest_mean(scores: Tensor, q: float) -> Tensor:
    """float64 (K,): per column of (N, K) scores, mean of the lowest q% of the non-NaN values.

    The lowest max(1, floor(q * n / 100)) values are kept, n being the column's non-NaN count;
    a column without values gives NaN. Vectorised over columns, so per-class worst cases cost
    one sort.
    """
    valid = ~scores.isnan()
    count = valid.sum(dim=0).double()
    # q * n / 100 is computed in that order and nudged up by 1e-9 so that an exact product
    # such as 29 * 100 / 100 is not floored to 28 by rounding (0.29 * 100 = 28.999...).
    take = torch.floor(q * count / 100 + 1e-9).clamp_min(1)
    ordered = scores.where(valid, math.inf).sort(dim=0).values
    rank = torch.arange(scores.shape[0], dtype=torch.float64).unsqueeze(1)
    total = ordered.where(rank < take, 0.0).sum(dim=0)
    return torch.where(count > 0, total / take, math.nan)


def _segmentation_compute(tp: Tensor, fp: Tensor, fn: Tensor, q: float) -> dict[str, Any]:
    """The metric dictionary of accumulated int (N, C) counts."""
    num_images = int(tp.shape[0])
    tp, fp, fn = (t.to("cpu", torch.float64) for t in (tp, fp, fn))
    result: dict[str, Any] = {}
    for score, prefix in (("iou", "miou"), ("dice", "mdice"), ("acc", "macc")):
        result[f"{prefix}_dataset"] = _reduce(tp, fp, fn, score, "dataset")
        values = _image_class_scores(tp, fp, fn, score)
        result[f"{prefix}_image"] = _reduce_matrix(values, "image")
        result[f"{prefix}_class"] = _reduce_matrix(values, "class")
        if score == "iou":
            per_image = values.nanmean(dim=1)
            result["miou_image_worst"] = float(_lowest_mean(per_image.unsqueeze(1), q)[0])
            result["miou_class_worst"] = float(_lowest_mean(values, q).nanmean())
    kept = float((tp + fn).sum())
    result["pixel_accuracy"] = float(tp.sum()) / kept if kept > 0 else math.nan
    result["iou_per_class"] = _dataset_class_scores(tp, fp, fn, "iou").tolist()
    result["num_images"] = num_images
    return result
