"""soft_cross_entropy and kd_loss never return NaN silently."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from softlabels.losses import KDLoss, kd_loss, soft_cross_entropy

NAN_LOGITS = torch.tensor([[0.0, math.nan, 1.0], [0.0, 1.0, 2.0]])
SOFT = torch.full((2, 3), 1 / 3)
HARD = torch.tensor([0, 2])


@pytest.mark.parametrize("target", [SOFT, HARD])
def test_nan_logits_are_refused(target: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="logits must be finite"):
        soft_cross_entropy(NAN_LOGITS, target)


@pytest.mark.parametrize(("student", "teacher", "kind", "name"), [
    (NAN_LOGITS, torch.randn(2, 3), "logits", "student_logits"),
    (torch.randn(2, 3), NAN_LOGITS, "logits", "teacher"),
    (torch.randn(2, 3), torch.tensor([[math.nan, 0.5, 0.5]] * 2), "probs", "teacher"),
    (torch.randn(2, 3), torch.full((2, 3), math.inf), "logits", "teacher"),
])
def test_kd_refuses_non_finite_inputs(student, teacher, kind: str, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be finite"):
        kd_loss(student, teacher, 2.0, teacher_kind=kind)


@pytest.mark.parametrize("shape", [(0, 3), (2, 3, 0, 4)])
def test_the_mean_over_an_empty_batch_is_refused(shape: tuple[int, ...]) -> None:
    logits = torch.zeros(shape)
    with pytest.raises(ValueError, match="reduction='mean' needs at least one sample"):
        soft_cross_entropy(logits, torch.zeros(shape))
    with pytest.raises(ValueError, match="reduction='mean' needs at least one sample"):
        kd_loss(logits, torch.zeros(shape))
    assert float(soft_cross_entropy(logits, torch.zeros(shape), "sum")) == 0.0
    assert soft_cross_entropy(logits, torch.zeros(shape), "none").numel() == 0


def test_zero_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="logits must have at least one class"):
        soft_cross_entropy(torch.zeros(2, 0), torch.zeros(2, dtype=torch.int64))


def test_target_must_be_a_tensor() -> None:
    with pytest.raises(TypeError, match=r"target must be a torch\.Tensor"):
        soft_cross_entropy(torch.zeros(2, 3), [0, 1])


@pytest.mark.parametrize(("temperature", "message"), [
    (1e20, r"temperature\*\*2 is a normal float32"),
    (1e200, r"temperature\*\*2"),  # Python's 1e200 ** 2 raises OverflowError
    (1e-20, r"temperature\*\*2"),
    (math.inf, "temperature must be a finite number"),
    (math.nan, "temperature must be a finite number"),
])
def test_temperatures_whose_square_leaves_the_float_range(temperature: float,
                                                          message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kd_loss(torch.randn(2, 3), torch.randn(2, 3), temperature)
    with pytest.raises(ValueError, match=message):
        KDLoss(temperature)


STUDENT, TEACHER = [1.0, 4.0, -2.0], [3.0, 0.0, 1.0]


def _kd_by_hand(temperature: float) -> float:
    """T**2 KL(softmax(teacher / T) || softmax(student / T)) in Python floats (float64)."""
    def log_softmax(z: list[float]) -> list[float]:
        top = max(z)
        log_total = top + math.log(sum(math.exp(v - top) for v in z))
        return [v - log_total for v in z]

    student = log_softmax([v / temperature for v in STUDENT])
    teacher = log_softmax([v / temperature for v in TEACHER])
    return temperature**2 * sum(math.exp(q) * (q - p) for p, q in zip(student, teacher,
                                                                         strict=True))


# The limits of T**2 KL: for T -> 0 the teacher is one-hot at its top class a = 0 and the
# loss is T * (max_j s_j - s_a) = 3 T; for T -> inf both softmaxes are uniform + (z - mean) /
# (C T) and the loss tends to sum((d - mean d)**2) / (2 C) with d = t - s = (2, -4, 3):
# (25 + 169 + 64) / 9 / 6 = 258 / 54.
@pytest.mark.parametrize(("temperature", "expected"), [
    pytest.param(1e-6, 3e-6, id="T=1e-6"),
    *(pytest.param(t, _kd_by_hand(t), id=f"T={t:g}") for t in (1.0, 10.0, 100.0, 1e3, 1e4)),
    # float32 logs gave 2.5% off at T = 1e3 and a negative loss from T = 1e4 (-158943 at 1e6).
    pytest.param(1e6, 258 / 54, id="T=1e6"),
])
def test_large_and_small_valid_temperatures_give_the_right_loss(temperature: float,
                                                                 expected: float) -> None:
    s, t = torch.tensor([STUDENT]), torch.tensor([TEACHER])
    assert float(kd_loss(s, t, temperature)) == pytest.approx(expected, rel=1e-3)


def test_zero_target_mass_on_an_underflowing_class_adds_nothing() -> None:
    # log_softmax is -inf at the second class; 0 * -inf used to make the loss NaN.
    logits = torch.tensor([[3e38, -3e38]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0]])
    loss = soft_cross_entropy(logits, target)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert float(kd_loss(logits.detach(), target, 1.0, teacher_kind="probs")) == 0.0


def test_an_overflowing_loss_is_reported() -> None:
    logits = torch.tensor([[3e38, -3e38]])
    with pytest.raises(ValueError, match="spread of logits over the classes overflows"):
        soft_cross_entropy(logits, torch.tensor([[0.5, 0.5]]))


def test_half_precision_kd_is_computed_in_float32() -> None:
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    expected = F.kl_div(F.log_softmax(s / 100, 1), F.softmax(t / 100, 1),
                        reduction="batchmean") * 100**2
    got = kd_loss(s.half(), t.half(), 100.0)  # 100**2 = 1e4 is fine, the fp16 product is not
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-3)
