"""Semantic segmentation metrics: mIoU, mDice and mAcc at dataset, image and class level.

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

from .._checks import (
    check_choice,
    check_finite,
    check_hard_labels,
    check_ignore_index,
    check_positive_int,
    check_tensor,
)
from ..distributed import all_gather_objects

__all__ = [
    "LEVELS",
    "SCORES",
    "SegmentationMetrics",
    "macc",
    "mdice",
    "miou",
    "per_image_scores",
    "segmentation_confusion",
    "segmentation_metrics",
    "worst_case",
]

LEVELS = ("dataset", "image", "class")
SCORES = ("iou", "dice", "acc")

Counts = tuple[Tensor, Tensor, Tensor]


# ----------------------------------------------------------------------------- functional API


def segmentation_confusion(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    ignore_index: int | None = None,
    *,
    keep: Tensor | None = None,
) -> Counts:
    """Per-image, per-class true positives, false positives and false negatives.

    Args:
        pred: int64 (B, H, W) predicted classes in [0, C), or float (B, C, H, W) logits or
            probabilities (the argmax over dim 1 is taken).
        target: int64 (B, H, W) classes in [0, C) or equal to ``ignore_index``.
        num_classes: C.
        ignore_index: a label value (outside [0, C)) whose pixels are removed from both the
            prediction and the target.
        keep: optional bool (B, H, W); pixels where it is False are removed as well.

    Returns:
        ``(tp, fp, fn)``, each int64 (B, C) on ``target``'s device.

    Example:
        >>> target = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
        >>> pred = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
        >>> tp, fp, fn = segmentation_confusion(pred, target, 3, ignore_index=255)
        >>> tp.tolist(), fp.tolist(), fn.tolist()
        ([[1, 2, 1]], [[0, 1, 0]], [[1, 0, 0]])
    """
    return _segmentation_update(pred, target, num_classes, ignore_index, keep)


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


def segmentation_metrics(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    ignore_index: int | None = None,
    q: float = 5.0,
    *,
    keep: Tensor | None = None,
) -> dict[str, Any]:
    """Every segmentation metric of one batch; the same as one :class:`SegmentationMetrics` update.

    Args:
        pred, target, num_classes, ignore_index, keep: as in :func:`segmentation_confusion`.
        q: percentage in (0, 100] for the worst-case scores.

    Returns:
        The dictionary described in :meth:`SegmentationMetrics.compute`.

    Example:
        >>> target = torch.tensor([[[0, 0], [1, 1]]])
        >>> result = segmentation_metrics(target.clone(), target, num_classes=2)
        >>> result["miou_dataset"], result["miou_image"], result["num_images"]
        (1.0, 1.0, 1)
    """
    q = _check_q(q)
    return _segmentation_compute(*_segmentation_update(pred, target, num_classes, ignore_index,
                                                       keep), q)


# ----------------------------------------------------------------------------- stateful API


class SegmentationMetrics:
    """Accumulates per-image counts over batches and reports every segmentation metric.

    The state is three int64 (num_images, C) count tables (TP, FP, FN) kept on the CPU, so the
    image- and class-level metrics can be computed exactly at the end; it costs 24 bytes per
    image and class (about 18 MB for 5000 images of 150 classes).

    Calibration is a separate metric, :class:`softlabels.metrics.CalibrationError`, because it
    needs probabilities while this class also accepts class maps; feed both the same batches.

    Args:
        num_classes: C.
        ignore_index: label value (outside [0, C)) whose pixels are removed from prediction and
            target, or None.
        q: percentage in (0, 100] for the worst-case scores (default 5).

    Example:
        >>> metrics = SegmentationMetrics(num_classes=3, ignore_index=255)
        >>> target = torch.tensor([[[0, 0, 1], [1, 2, 2]], [[0, 0, 0], [0, 255, 1]]])
        >>> pred = torch.tensor([[[0, 1, 1], [1, 2, 0]], [[0, 0, 2], [0, 1, 0]]])
        >>> metrics.update(pred[:1], target[:1])
        >>> metrics.update(pred[1:], target[1:])
        >>> result = metrics.compute()
        >>> round(result["miou_dataset"], 4), round(result["miou_image"], 4)
        (0.4444, 0.4)
        >>> round(result["pixel_accuracy"], 4), result["num_images"]
        (0.6364, 2)
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None,
                 q: float = 5.0) -> None:
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.ignore_index = check_ignore_index(ignore_index, num_classes)
        self.q = _check_q(q)
        self._tp: list[Tensor] = []
        self._fp: list[Tensor] = []
        self._fn: list[Tensor] = []

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._tp, self._fp, self._fn = [], [], []

    def update(self, pred_or_logits: Tensor, target: Tensor, *,
               keep: Tensor | None = None) -> None:
        """Add one batch.

        Args:
            pred_or_logits: int64 (B, H, W) predicted classes, or float (B, C, H, W) logits or
                probabilities (argmax over dim 1).
            target: int64 (B, H, W) in [0, C) or equal to ``ignore_index``.
            keep: optional bool (B, H, W); False pixels are left out like ignored ones.
        """
        tp, fp, fn = _segmentation_update(pred_or_logits, target, self.num_classes,
                                          self.ignore_index, keep)
        # The per-image tables are small; keeping them on the CPU frees the accelerator and
        # makes the state independent of where each batch was computed.
        self._tp.append(tp.cpu())
        self._fp.append(fp.cpu())
        self._fn.append(fn.cpu())

    @property
    def num_images(self) -> int:
        """Number of images seen since the last reset (including fully ignored ones)."""
        return sum(int(t.shape[0]) for t in self._tp)

    def counts(self) -> Counts:
        """The accumulated ``(tp, fp, fn)``, each int64 (num_images, C) on the CPU."""
        if not self._tp:
            empty = torch.zeros(0, self.num_classes, dtype=torch.int64)
            return empty, empty.clone(), empty.clone()
        return torch.cat(self._tp), torch.cat(self._fp), torch.cat(self._fn)

    def gather(self) -> None:
        """Under ``torchrun``: hold every rank's images (in rank order), so each rank computes
        the metrics of the whole evaluation set exactly; a no-op in a single process."""
        tables = all_gather_objects(self.counts())
        self._tp, self._fp, self._fn = ([t[i] for t in tables] for i in range(3))

    def compute(self) -> dict[str, Any]:
        """Every metric over the images seen so far (fractions in [0, 1]).

        Returns:
            A dict with float values (NaN where undefined) for ``miou_dataset``,
            ``miou_image``, ``miou_class``, ``miou_image_worst``, ``miou_class_worst``,
            ``mdice_dataset``, ``mdice_image``, ``mdice_class``, ``macc_dataset``,
            ``macc_image``, ``macc_class`` and ``pixel_accuracy`` (correct kept pixels over
            kept pixels); ``iou_per_class``, a list of C dataset-level IoUs (NaN for a class
            never in a ground truth nor a prediction); and ``num_images`` (int).
        """
        return _segmentation_compute(*self.counts(), self.q)


# ----------------------------------------------------------------------------- update helpers


def _segmentation_update(pred: Tensor, target: Tensor, num_classes: int,
                         ignore_index: int | None, keep: Tensor | None) -> Counts:
    """int64 (B, C) TP, FP, FN of one batch, after checking every argument."""
    check_positive_int("num_classes", num_classes)
    ignore_index = check_ignore_index(ignore_index, num_classes)
    classes = _as_class_map(pred, target, num_classes)
    check_hard_labels("target", target, num_classes, ignore_index)
    mask = _kept_pixels(target, ignore_index, keep)

    batch = target.shape[0]
    image = torch.arange(batch, device=target.device).view(-1, 1, 1).expand_as(target)
    if mask is not None:
        image, target, classes = image[mask], target[mask], classes[mask]
    image, target, classes = image.reshape(-1), target.reshape(-1), classes.reshape(-1)

    # The key image * C + class numbers every (image, class) pair, so one bincount counts a
    # whole batch for all classes at once. Three bincounts of length B * C (ground truth,
    # prediction, correct) give TP, FP and FN without a (B, C, C) confusion table.
    size = batch * num_classes
    truth_key = image * num_classes + target
    in_truth = torch.bincount(truth_key, minlength=size)
    in_pred = torch.bincount(image * num_classes + classes, minlength=size)
    tp = torch.bincount(truth_key[classes == target], minlength=size)
    shape = (batch, num_classes)
    return tp.view(shape), (in_pred - tp).view(shape), (in_truth - tp).view(shape)


def _as_class_map(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """int64 (B, H, W) predicted classes from a class map or (B, C, H, W) scores."""
    check_tensor("pred", pred)
    check_tensor("target", target)
    if target.dtype != torch.int64:
        raise TypeError(f"target must be an int64 tensor of class indices, got {target.dtype}")
    if target.ndim != 3:
        raise ValueError(f"target must have shape (B, H, W), got {tuple(target.shape)}")
    if pred.is_floating_point():
        expected = (target.shape[0], num_classes, *target.shape[1:])
        if pred.shape != expected:
            raise ValueError(f"pred scores must have shape (B, C, H, W) = {expected} for target "
                             f"{tuple(target.shape)} and num_classes={num_classes}, got "
                             f"{tuple(pred.shape)}")
        # argmax of NaN scores is meaningless, so report them instead of counting garbage.
        check_finite("pred", pred)
        # Scores on a GPU may meet labels kept on the CPU: the (smaller) class map follows them.
        return pred.detach().argmax(dim=1).to(target.device)
    if pred.dtype != torch.int64:
        raise TypeError(f"pred must be int64 classes (B, H, W) or float scores (B, C, H, W), "
                        f"got {pred.dtype}")
    if pred.shape != target.shape:
        raise ValueError(f"pred classes must have the shape of target {tuple(target.shape)}, "
                         f"got {tuple(pred.shape)}")
    # Predictions are never ignored: every pixel of pred must be a real class.
    return check_hard_labels("pred", pred, num_classes).to(target.device)


def _kept_pixels(target: Tensor, ignore_index: int | None,
                 keep: Tensor | None) -> Tensor | None:
    """bool (B, *spatial) of the pixels that count, or None when every pixel counts."""
    mask = None
    if keep is not None:
        check_tensor("keep", keep)
        if keep.dtype != torch.bool:
            raise TypeError(f"keep must be a bool tensor, got {keep.dtype}")
        if keep.shape != target.shape:
            raise ValueError(f"keep must have the shape of target {tuple(target.shape)}, got "
                             f"{tuple(keep.shape)}")
        mask = keep.to(target.device)
    if ignore_index is not None:
        kept = target != ignore_index
        mask = kept if mask is None else mask & kept
    return mask


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
