"""Tests of soft_cross_entropy and kd_loss."""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from softlabels.losses import KDLoss, SoftCrossEntropy, kd_loss, soft_cross_entropy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import assert_close_on, device_fixture, gen  # noqa: F401


def test_soft_ce_with_one_hot_equals_torch_ce() -> None:
    logits = torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    expected = F.cross_entropy(logits, y)
    assert torch.allclose(soft_cross_entropy(logits, F.one_hot(y, 5).float()), expected)
    assert torch.allclose(soft_cross_entropy(logits, y), expected)


def test_soft_ce_matches_torch_probability_targets() -> None:
    logits = torch.randn(6, 4, 3, 3)
    target = torch.softmax(torch.randn(6, 4, 3, 3), 1)
    for reduction in ("mean", "sum", "none"):
        got = soft_cross_entropy(logits, target, reduction)
        assert torch.allclose(got, F.cross_entropy(logits, target, reduction=reduction),
                              atol=1e-6)


def test_soft_ce_manual_value() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    target = torch.tensor([[0.0, 0.5, 0.5]])
    assert soft_cross_entropy(logits, target).item() == pytest.approx(math.log(4))


@given(st.integers(1, 6), st.integers(2, 8), st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_property_soft_ce_minimised_at_target(n: int, c: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    target = torch.softmax(torch.randn(n, c, generator=g), 1)
    at_target = soft_cross_entropy(torch.log(target), target)
    other = soft_cross_entropy(torch.randn(n, c, generator=g), target)
    # Gibbs: cross-entropy >= entropy, with equality at logits = log target.
    assert at_target <= other + 1e-6
    logits = torch.log(target).requires_grad_()
    soft_cross_entropy(logits, target).backward()
    assert torch.allclose(logits.grad, torch.zeros_like(logits), atol=1e-6)


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (torch.zeros(4, 3), ValueError, "soft target must have the shape"),
        (torch.tensor([0, 1, 5, 1]), ValueError, "target must hold class indices"),
        (torch.tensor([0, 1, -1, 1]), ValueError, "target must hold class indices"),
        (torch.zeros(3, dtype=torch.int64), ValueError, "hard target must have shape"),
        (torch.full((4, 5), 0.5), ValueError, "rows must sum"),
        (torch.tensor([[math.nan] + [0.25] * 4] * 4), ValueError, "finite"),
        (torch.tensor([0, 1, 2, 1], dtype=torch.int32), TypeError, "int64"),
    ],
)
def test_soft_ce_bad_targets(target, error, message) -> None:
    with pytest.raises(error, match=message):
        soft_cross_entropy(torch.randn(4, 5), target)


def test_soft_ce_bad_reduction() -> None:
    with pytest.raises(ValueError, match="reduction must be one of"):
        soft_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), "avg")


def test_kd_matches_hinton_formula() -> None:
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    temp = 3.0
    expected = F.kl_div(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1),
                        reduction="batchmean") * temp**2
    assert torch.allclose(kd_loss(s, t, temp), expected, atol=1e-6)


def test_kd_probs_equals_logits_form() -> None:
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    probs = torch.softmax(t / 2.0, 1)
    assert torch.allclose(kd_loss(s, probs, 2.0, teacher_kind="probs"), kd_loss(s, t, 2.0),
                          atol=1e-6)


def test_kd_zero_when_student_equals_teacher_and_teacher_gets_no_grad() -> None:
    t = torch.randn(4, 6, requires_grad=True)
    s = t.detach().clone().requires_grad_()
    loss = kd_loss(s, t, 4.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert t.grad is None


def test_kd_handles_zero_teacher_probabilities() -> None:
    probs = torch.tensor([[1.0, 0.0, 0.0]])
    loss = kd_loss(torch.tensor([[5.0, 0.0, 0.0]]), probs, 1.0, teacher_kind="probs")
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(-math.log(torch.softmax(torch.tensor([5.0, 0, 0]), 0)[0]),
                                        rel=1e-5)


def test_kd_dense_and_errors() -> None:
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert kd_loss(s, t, reduction="none").shape == (2, 4, 4)
    with pytest.raises(ValueError, match="teacher must have the student's shape"):
        kd_loss(s, t[:1])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_loss(s, t, 0.0)
    with pytest.raises(ValueError, match="teacher_kind must be one of"):
        kd_loss(s, t, teacher_kind="soft")
    with pytest.raises(ValueError, match="rows must sum"):
        kd_loss(torch.randn(2, 3), torch.ones(2, 3), teacher_kind="probs")


def test_modules_match_functions() -> None:
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    y = torch.tensor([0, 3, 1])
    assert torch.equal(SoftCrossEntropy()(s, y), soft_cross_entropy(s, y))
    assert torch.equal(KDLoss(2.0)(s, t), kd_loss(s, t, 2.0))
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(-1.0)


def _library_losses(logits: torch.Tensor, target: torch.Tensor,
                    teacher: torch.Tensor) -> dict[str, torch.Tensor]:
    """soft_cross_entropy in every reduction, its module, and (2-D) kd_loss and KDLoss."""
    out = {f"ce_{r}": soft_cross_entropy(logits, target, r) for r in ("mean", "sum", "none")}
    out["module"] = SoftCrossEntropy("sum")(logits, target)
    if logits.ndim == 2:
        out["kd"] = kd_loss(logits, teacher, 3.0)
        out["kd_probs"] = KDLoss(2.0, "probs", "none")(logits, teacher.softmax(1))
    return out


def _reference_losses(logits: torch.Tensor, target: torch.Tensor,
                      teacher: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same numbers from torch's cross-entropy and Hinton's formula written out."""
    out = {f"ce_{r}": F.cross_entropy(logits, target, reduction=r)
           for r in ("mean", "sum", "none")}
    out["module"] = F.cross_entropy(logits, target, reduction="sum")
    if logits.ndim == 2:
        for name, temperature, probs, reduce in (
                ("kd", 3.0, torch.softmax(teacher / 3.0, 1), torch.mean),
                ("kd_probs", 2.0, teacher.softmax(1), lambda v: v)):
            log_student = F.log_softmax(logits / temperature, 1)
            out[name] = reduce(temperature**2 * (probs * (probs.log() - log_student)).sum(1))
    return out


@pytest.mark.parametrize(("target_kind", "shape"), [("hard", (6, 4)), ("soft", (6, 4)),
                                                    ("hard", (2, 4, 3, 3)),
                                                    ("soft", (2, 4, 3, 3))])
def test_losses_and_gradients_on_device(device: str, target_kind: str,
                                        shape: tuple[int, ...]) -> None:
    """soft_cross_entropy (every reduction), SoftCrossEntropy, kd_loss and KDLoss (2-D) on
    device tensors: on the device, equal to torch's cross-entropy and Hinton's formula in
    float64 on the CPU, values and gradients."""
    g = gen(3)
    logits_cpu = torch.randn(shape, generator=g)
    if target_kind == "hard":
        target_cpu = torch.randint(0, 4, (shape[0], *shape[2:]), generator=g)
    else:
        target_cpu = torch.softmax(torch.randn(shape, generator=g), 1)
    teacher_cpu = torch.randn(shape, generator=g)
    logits = logits_cpu.clone().to(device).requires_grad_(True)
    values = _library_losses(logits, target_cpu.to(device), teacher_cpu.to(device))
    sum(v.sum() for v in values.values()).backward()
    reference = logits_cpu.double().requires_grad_(True)
    expected = _reference_losses(reference, target_cpu if target_kind == "hard"
                                 else target_cpu.double(), teacher_cpu.double())
    sum(v.sum() for v in expected.values()).backward()
    assert values.keys() == expected.keys()
    for name, value in values.items():
        assert_close_on(value.detach(), expected[name].detach().float(), device)
    assert_close_on(logits.grad, reference.grad.float(), device)
