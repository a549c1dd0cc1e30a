"""Semantic segmentation metrics: per-image counts of a prediction against its target, and
every score of them (:mod:`softlabels.metrics.segmentation_scores` defines the scores and
their levels; its functions are re-exported here).

Only the target marks pixels as ignored: every predicted class must lie in ``[0, C)``, even at
ignored pixels, and out-of-range labels in either tensor are errors, never clamped.
``ignore_index`` must lie outside ``[0, num_classes)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._checks import (
    check_finite,
    check_hard_labels,
    check_ignore_index,
    check_positive_int,
    check_tensor,
)
from ..distributed import all_gather_objects
from .segmentation_scores import (
    LEVELS,
    SCORES,
    Counts,
    _check_q,
    _segmentation_compute,
    macc,
    mdice,
    miou,
    per_image_scores,
    worst_case,
)

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
