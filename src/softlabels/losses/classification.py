"""Cross-entropy for hard or soft targets, and knowledge distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_float, check_hard_labels, check_ndim, check_positive
from ..labels import validate

__all__ = ["KDLoss", "SoftCrossEntropy", "kd_loss", "soft_cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")
_TEACHER_KINDS = ("logits", "probs")


def soft_cross_entropy(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy ``-sum_c target_c log softmax(logits)_c`` for hard or soft targets.

    Args:
        logits: float (N, C) or (N, C, H, W).
        target: int64 hard labels (N,) / (N, H, W) in [0, C), or float probabilities of the
            shape of ``logits`` (rows sum to 1, or less for truncated top-k labels).
        reduction: ``"mean"`` over samples (and pixels), ``"sum"``, or ``"none"`` giving
            (N,) / (N, H, W).

    Returns:
        A scalar, or the per-sample losses for ``reduction="none"``.
    """
    check_float("logits", logits)
    check_ndim("logits", logits, (2, 4))
    check_choice("reduction", reduction, _REDUCTIONS)
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ValueError(f"soft target must have the shape of logits {tuple(logits.shape)}, "
                             f"got {tuple(target.shape)}")
        validate(target.detach(), name="target", allow_partial=True)
        per_sample = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
        return _reduce(per_sample, reduction)
    expected = logits.shape[:1] + logits.shape[2:]
    if target.shape != expected:
        raise ValueError(f"hard target must have shape {tuple(expected)} for logits "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    check_hard_labels("target", target, logits.shape[1])
    return F.cross_entropy(logits, target, reduction=reduction)


def kd_loss(student_logits: Tensor, teacher: Tensor, temperature: float = 4.0, *,
            teacher_kind: str = "logits", reduction: str = "mean") -> Tensor:
    """Hinton knowledge distillation: ``T^2 * KL(p_teacher || softmax(student / T))``.

    The T^2 factor keeps gradient magnitudes comparable across temperatures.

    Args:
        student_logits: float (N, C) or (N, C, H, W).
        teacher: teacher logits (softened here at ``temperature``) or teacher probabilities
            (used as given), of the student's shape; not differentiated.
        temperature: T > 0, applied to the student and, for logits, to the teacher.
        teacher_kind: ``"logits"`` or ``"probs"``.
        reduction: ``"mean"`` over samples (and pixels), ``"sum"``, or ``"none"``.

    Returns:
        A scalar, or (N,) / (N, H, W) for ``reduction="none"``.
    """
    check_float("student_logits", student_logits)
    check_ndim("student_logits", student_logits, (2, 4))
    check_float("teacher", teacher)
    check_choice("teacher_kind", teacher_kind, _TEACHER_KINDS)
    check_choice("reduction", reduction, _REDUCTIONS)
    temperature = check_positive("temperature", temperature)
    if teacher.shape != student_logits.shape:
        raise ValueError(f"teacher must have the student's shape {tuple(student_logits.shape)}, "
                         f"got {tuple(teacher.shape)}")
    teacher = teacher.detach()
    if teacher_kind == "logits":
        teacher_probs = torch.softmax(teacher / temperature, dim=1)
    else:
        teacher_probs = validate(teacher, name="teacher")
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    # xlogy gives 0 log 0 = 0 where the teacher puts no mass.
    kl = (torch.special.xlogy(teacher_probs, teacher_probs) - teacher_probs * log_student)
    return _reduce(kl.sum(dim=1) * temperature**2, reduction)


class SoftCrossEntropy(nn.Module):
    """Module form of :func:`soft_cross_entropy`."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_choice("reduction", reduction, _REDUCTIONS)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """logits (N, C[, H, W]); target hard (N[, H, W]) or soft like logits."""
        return soft_cross_entropy(logits, target, self.reduction)


class KDLoss(nn.Module):
    """Module form of :func:`kd_loss`."""

    def __init__(self, temperature: float = 4.0, teacher_kind: str = "logits",
                 reduction: str = "mean") -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.teacher_kind = check_choice("teacher_kind", teacher_kind, _TEACHER_KINDS)
        self.reduction = check_choice("reduction", reduction, _REDUCTIONS)

    def forward(self, student_logits: Tensor, teacher: Tensor) -> Tensor:
        """student_logits (N, C[, H, W]); teacher logits or probabilities of the same shape."""
        return kd_loss(student_logits, teacher, self.temperature,
                       teacher_kind=self.teacher_kind, reduction=self.reduction)


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample
