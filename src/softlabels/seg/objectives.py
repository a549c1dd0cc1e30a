"""Training objectives for segmentation with hard, smoothed, distilled or pseudo soft labels.

The recipe of "Jaccard Metric Losses" (refs.md section 2): loss = w_ce * CE + w_metric *
metric loss, with the metric loss one of the soft Jaccard loss (``sjl``), the Jaccard metric
loss (``jml``) or the Dice semimetric loss (``dml``). Soft labels are built per batch, after
augmentation, so they move with the image:

- ``hard``: the annotation itself;
- ``ls``: boundary label smoothing (only pixels next to another class are smoothed);
- ``kd``: 0.5 * (hard-label loss) + 0.5 * (w_ce * KL * T^2 + w_metric * metric loss against the
  teacher's probabilities at temperature T); with the ``ce`` loss the metric terms are absent,
  so KL and CE keep the same 1:1 balance as with the metric losses;
- ``semi``: images whose mask is all ``UNLABELLED`` learn from the teacher's probabilities,
  keeping only pixels where the teacher's confidence reaches ``confidence``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import (
    check_choice,
    check_ignore_index,
    check_positive_int,
    check_range,
    check_temperature,
)
from .._label_math import tempered_logits
from ..labels import boundary_smooth, check_kernel, one_hot
from ..losses import ce_jaccard_metric_loss, jaccard_metric_loss, kd_loss, soft_cross_entropy
from ..runtime import follow_device

__all__ = ["LABEL_MODES", "LOSSES", "UNLABELLED", "SegLoss", "SegObjective"]

LOSSES = ("ce", "ce+sjl", "ce+jml", "ce+dml")
LABEL_MODES = ("hard", "ls", "kd", "semi")
#: Mask value marking an image whose annotation the semi-supervised learner may not see.
UNLABELLED = -1

_METRIC_OPTIONS = {
    "ce+sjl": {"variant": "sjl"},
    "ce+jml": {"variant": "jml1"},
    "ce+dml": {"variant": "jml1", "alpha": 0.5, "beta": 0.5},
}


@dataclass(frozen=True)
class SegLoss:
    """``w_ce * CE + w_metric * metric`` for hard or soft per-pixel targets.

    Attributes:
        loss: one of ``LOSSES``.
        num_classes: C.
        ignore_index: hard-label value of unannotated pixels.
        w_ce: weight of the cross-entropy term.
        w_metric: weight of the metric-loss term (unused for ``"ce"``).
        smooth: the metric loss's ``smooth`` (added to the numerator and the denominator of
            each class's score, see :func:`~softlabels.losses.jaccard_metric_loss`); the
            official JDTLosses configs use 1.0. Over a batch of many pixels it matters only for
            classes with almost no mass in the batch, whose score it pulls towards 1.
    """

    loss: str = "ce+jml"
    num_classes: int = 2
    ignore_index: int = 255
    w_ce: float = 0.25
    w_metric: float = 0.75
    smooth: float = 1e-3

    def __post_init__(self) -> None:
        check_choice("loss", self.loss, LOSSES)
        check_range("w_ce", self.w_ce, 0.0, float("inf"))
        check_range("w_metric", self.w_metric, 0.0, float("inf"))
        check_range("smooth", self.smooth, 0.0, float("inf"))
        # Two or more classes: a softmax over one class is 1 everywhere (nothing to learn).
        if check_positive_int("num_classes", self.num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2 (a softmax over one class is "
                             f"constant), got {self.num_classes}")
        check_ignore_index(self.ignore_index, self.num_classes)

    def __call__(self, logits: Tensor, target: Tensor, keep: Tensor | None = None
                 ) -> dict[str, Tensor]:
        """Named terms for logits (B, C, H, W) and target int64 (B, H, W) or float (B, C, H, W).

        ``keep`` (bool (B, H, W)) leaves pixels out of soft targets; hard targets use
        ``ignore_index``.
        """
        hard = not target.is_floating_point()
        if self.loss != "ce":
            # One call gives both terms: they share the softmax and, fused, the backward.
            ce, metric = ce_jaccard_metric_loss(
                logits, target, keep=None if hard else keep,
                ignore_index=self.ignore_index if hard else None, smooth=self.smooth,
                **_METRIC_OPTIONS[self.loss])
            return {"ce": self.w_ce * ce, "metric": self.w_metric * metric}
        if not hard:
            # soft_cross_entropy makes a class without target mass add exactly 0 where its
            # log-probability underflows to -inf (0 * -inf is NaN); torch.where rather than a
            # product keeps whatever a left-out pixel holds out of the sum.
            per_pixel = soft_cross_entropy(logits, target, reduction="none")
            if keep is None:
                ce = per_pixel.mean()
            else:
                ce = torch.where(keep, per_pixel, 0.0).sum() / keep.sum().clamp_min(1)
        else:
            ce = F.cross_entropy(logits, target, ignore_index=self.ignore_index)
            if not bool((target != self.ignore_index).any()):
                ce = 0.0 * logits.sum()  # cross_entropy gives NaN when every pixel is ignored
        return {"ce": self.w_ce * ce}

    def metric_term(self, logits: Tensor, target: Tensor, keep: Tensor | None = None
                    ) -> Tensor:
        """``w_metric`` times the metric loss alone (zero for ``"ce"``)."""
        if self.loss == "ce":
            return 0.0 * logits.sum()
        hard = not target.is_floating_point()
        return self.w_metric * jaccard_metric_loss(
            logits, target, keep=None if hard else keep,
            ignore_index=self.ignore_index if hard else None, smooth=self.smooth,
            **_METRIC_OPTIONS[self.loss])


class SegObjective:
    """``objective(model, x, y)`` for :func:`softlabels.engine.fit` in one label mode.

    Args:
        seg_loss: the per-batch loss.
        labels: one of ``LABEL_MODES``.
        teacher: frozen model giving (B, C, H, W) logits, required for ``kd`` and ``semi``.
        eps: boundary-smoothing mass (``ls``).
        kernel: boundary neighbourhood size (``ls``).
        temperature: teacher temperature T (``kd``, ``semi``).
        confidence: minimum teacher max-probability for a pseudo-labelled pixel (``semi``).
    """

    def __init__(self, seg_loss: SegLoss, labels: str = "hard", *,
                 teacher: nn.Module | None = None, eps: float = 0.5, kernel: int = 3,
                 temperature: float = 1.0, confidence: float = 0.0) -> None:
        check_choice("labels", labels, LABEL_MODES)
        if labels in ("kd", "semi") and teacher is None:
            raise ValueError(f"label mode {labels!r} needs a teacher model")
        self.seg_loss, self.labels, self.teacher = seg_loss, labels, teacher
        self.eps = check_range("eps", eps, 0.0, 1.0)
        self.kernel = check_kernel(kernel)  # checked here, not at the first batch
        # squared: the distillation term is scaled by T^2, which must stay a float32 number.
        self.temperature = check_temperature("temperature", temperature, squared=True)
        self.confidence = check_range("confidence", confidence, 0.0, 1.0)
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Loss terms for images x (B, C, H, W) and masks y int64 (B, H, W)."""
        logits = model(x)
        loss, ignore = self.seg_loss, self.seg_loss.ignore_index
        if self.labels == "hard":
            return loss(logits, y)
        if self.labels == "ls":
            keep = y != ignore
            soft = boundary_smooth(y, loss.num_classes, self.eps, self.kernel, ignore)
            return loss(logits, soft, keep)
        teacher_probs = self._teacher_probs(x)
        if self.labels == "kd":
            return self._distillation_terms(logits, y, teacher_probs)
        return self._semi_terms(logits, y, teacher_probs)

    @torch.no_grad()
    def _teacher_probs(self, x: Tensor) -> Tensor:
        assert self.teacher is not None  # guaranteed by __init__ for kd and semi
        self.teacher.eval()
        # tempered_logits shifts by the max before dividing, so a small T cannot overflow
        # the logits to inf (and the softmax to NaN).
        logits = follow_device(self.teacher, x)(x)
        return torch.softmax(tempered_logits(logits, self.temperature), dim=1)

    def _distillation_terms(self, logits: Tensor, y: Tensor, teacher_probs: Tensor
                            ) -> dict[str, Tensor]:
        loss = self.seg_loss
        terms = {f"hard_{k}": 0.5 * v for k, v in loss(logits, y).items()}
        keep = y != loss.ignore_index
        kl = kd_loss(logits, teacher_probs, self.temperature, teacher_kind="probs",
                     reduction="none")
        kl = (kl * keep).sum() / keep.sum().clamp_min(1)
        terms["kd_kl"] = 0.5 * loss.w_ce * kl
        if loss.loss != "ce":
            terms["kd_metric"] = 0.5 * loss.metric_term(logits, teacher_probs, keep)
        return terms

    def _semi_terms(self, logits: Tensor, y: Tensor, teacher_probs: Tensor
                    ) -> dict[str, Tensor]:
        loss = self.seg_loss
        unlabelled = (y == UNLABELLED).flatten(1).any(1)  # (B,)
        labelled_pixels = (y != loss.ignore_index) & (y != UNLABELLED)
        confident = teacher_probs.amax(dim=1) >= self.confidence
        keep = torch.where(unlabelled[:, None, None], confident & (y != loss.ignore_index),
                           labelled_pixels)
        annotated = one_hot(torch.where(labelled_pixels, y, 0), loss.num_classes)
        target = torch.where(unlabelled[:, None, None, None], teacher_probs, annotated)
        return loss(logits, target, keep)
