"""Cross-entropy for hard or soft targets, and knowledge distillation.

Both losses refuse what would make them silently NaN: non-finite logits or teachers, a mean
over an empty batch, temperatures whose square leaves the float range. Terms where the target
puts no mass are exactly 0 even where the model's log-probability underflows to -inf (0 * -inf
is NaN in floating point), and a loss that still overflows is reported, not returned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import (
    check_choice,
    check_float,
    check_hard_labels,
    check_logits,
    check_temperature,
    check_tensor,
    compute_dtype,
)
from .._label_math import tempered_logits
from ..labels import validate

__all__ = ["KDLoss", "SoftCrossEntropy", "kd_loss", "soft_cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")
_TEACHER_KINDS = ("logits", "probs")


def soft_cross_entropy(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy ``-sum_c target_c log softmax(logits)_c`` for hard or soft targets.

    Args:
        logits: float (N, C) or (N, C, H, W), finite, C >= 1.
        target: int64 hard labels (N,) / (N, H, W) in [0, C), or float probabilities of the
            shape of ``logits`` (rows sum to 1, or less for truncated top-k labels).
        reduction: ``"mean"`` over samples (and pixels; needs at least one), ``"sum"``, or
            ``"none"`` giving (N,) / (N, H, W).

    Returns:
        A scalar, or the per-sample losses for ``reduction="none"``.
    """
    check_logits("logits", logits)
    check_choice("reduction", reduction, _REDUCTIONS)
    check_tensor("target", target)
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ValueError(f"soft target must have the shape of logits {tuple(logits.shape)}, "
                             f"got {tuple(target.shape)}")
        validate(target.detach(), name="target", allow_partial=True)
        per_sample = -_masked_product(target, F.log_softmax(logits, dim=1)).sum(dim=1)
    else:
        expected = logits.shape[:1] + logits.shape[2:]
        if target.shape != expected:
            raise ValueError(f"hard target must have shape {tuple(expected)} for logits "
                             f"{tuple(logits.shape)}, got {tuple(target.shape)}")
        check_hard_labels("target", target, logits.shape[1])
        per_sample = F.cross_entropy(logits, target, reduction="none")
    return _finite(_reduce(per_sample, reduction, "logits"), "logits")


def kd_loss(student_logits: Tensor, teacher: Tensor, temperature: float = 4.0, *,
            teacher_kind: str = "logits", reduction: str = "mean") -> Tensor:
    """Hinton knowledge distillation: ``T^2 * KL(p_teacher || softmax(student / T))``.

    The T^2 factor keeps gradient magnitudes comparable across temperatures.

    Args:
        student_logits: float (N, C) or (N, C, H, W), finite, C >= 1.
        teacher: finite teacher logits (softened here at ``temperature``) or teacher
            probabilities (used as given), of the student's shape; not differentiated.
        temperature: T > 0 with T**2 a normal float32 number (about 1e-19 to 1.8e19),
            applied to the student and, for logits, to the teacher.
        teacher_kind: ``"logits"`` or ``"probs"``.
        reduction: ``"mean"`` over samples (and pixels; needs at least one), ``"sum"``, or
            ``"none"``.

    Returns:
        A scalar, or (N,) / (N, H, W) for ``reduction="none"``; computed in at least float32.
    """
    check_logits("student_logits", student_logits)
    check_float("teacher", teacher)
    check_choice("teacher_kind", teacher_kind, _TEACHER_KINDS)
    check_choice("reduction", reduction, _REDUCTIONS)
    dtype = compute_dtype(student_logits.dtype)
    temperature = check_temperature("temperature", temperature, dtype, squared=True)
    if teacher.shape != student_logits.shape:
        raise ValueError(f"teacher must have the student's shape {tuple(student_logits.shape)}, "
                         f"got {tuple(teacher.shape)}")
    teacher = teacher.detach()
    if teacher_kind == "logits":
        check_logits("teacher", teacher)
        teacher_probs = torch.softmax(tempered_logits(teacher, temperature), dim=1)
    else:
        teacher_probs = validate(teacher, name="teacher")
    # The KL of two distributions that T flattens is a difference of nearly equal logs, which
    # T^2 then multiplies: in float32 it is 2.5% off at T = 1e3 and negative from T = 1e4, so
    # it is taken in float64 (the tensors are (N, C): the cost is negligible).
    if teacher_kind == "logits":
        teacher_log = F.log_softmax(tempered_logits(teacher.double(), temperature), dim=1)
        teacher_probs = teacher_log.exp()
    else:
        teacher_probs = teacher_probs.double()
        teacher_log = teacher_probs.log()
    log_student = F.log_softmax(tempered_logits(student_logits.double(), temperature), dim=1)
    kl = _masked_product(teacher_probs, teacher_log - log_student).sum(dim=1)
    loss = _reduce(kl * (temperature * temperature), reduction, "student_logits").to(dtype)
    return _finite(loss, "student_logits")


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
        self.temperature = check_temperature("temperature", temperature, squared=True)
        self.teacher_kind = check_choice("teacher_kind", teacher_kind, _TEACHER_KINDS)
        self.reduction = check_choice("reduction", reduction, _REDUCTIONS)

    def forward(self, student_logits: Tensor, teacher: Tensor) -> Tensor:
        """student_logits (N, C[, H, W]); teacher logits or probabilities of the same shape."""
        return kd_loss(student_logits, teacher, self.temperature,
                       teacher_kind=self.teacher_kind, reduction=self.reduction)


def _masked_product(weight: Tensor, log_values: Tensor) -> Tensor:
    """``weight * log_values``, exactly 0 where ``weight`` is 0 even if ``log_values`` is -inf.

    The product is masked rather than clamped so that a class without target mass adds neither
    a term nor a gradient.
    """
    return torch.where(weight > 0, weight * log_values, 0.0)


def _finite(loss: Tensor, blamed: str) -> Tensor:
    """``loss`` if every entry is finite, else a ``ValueError`` that names ``blamed``.

    With finite, checked inputs the loss can only leave the float range through logits whose
    spread over the classes overflows the dtype, so the message says that.
    """
    if loss.numel() and not bool(torch.isfinite(loss.detach()).all()):
        raise ValueError(f"the loss is not finite although every input is: the spread of "
                         f"{blamed} over the classes overflows {loss.dtype}; rescale them")
    return loss


def _reduce(per_sample: Tensor, reduction: str, name: str) -> Tensor:
    if reduction == "mean":
        if per_sample.numel() == 0:
            raise ValueError(f"reduction='mean' needs at least one sample, but {name} has none "
                             f"(per-sample shape {tuple(per_sample.shape)}); use "
                             f"reduction='sum' for a loss of 0")
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample
