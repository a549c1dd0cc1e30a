"""Class temperatures, robust teacher objectives and the ARD / RSLAD / ABSLD distillers."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softlabels.engine import NonFiniteLossError, TrainConfig, fit
from softlabels.robust import (
    ABSLD,
    ARD,
    RSLAD,
    AttackConfig,
    ClassTemperatures,
    NaturalObjective,
    PGDATObjective,
    TRADESObjective,
)

ATTACK = AttackConfig(eps=0.1, alpha=0.05, steps=2)


def _net(classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(12, classes))


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 4, 4, generator=g), torch.arange(n) % 3


# ------------------------------------------------------------------------ temperatures


def test_temperature_update_rule_by_hand() -> None:
    t = ClassTemperatures(4, rate=0.2)
    risk = torch.tensor([4.0, 2.0, 1.0, 1.0])  # mean 2, gap (2, 0, -1, -1), max |gap| 2
    torch.testing.assert_close(t.update(risk), torch.tensor([0.8, 1.0, 1.1, 1.1],
                                                            dtype=torch.float64))
    assert t.history == [[1.0] * 4, pytest.approx([0.8, 1.0, 1.1, 1.1])]


def test_temperatures_stay_in_bounds_and_ignore_equal_risk() -> None:
    t = ClassTemperatures(2, low=0.5, high=1.2, rate=1.0)
    for _ in range(5):
        t.update(torch.tensor([5.0, 0.0]))
    assert t.values.tolist() == [0.5, 1.2]
    t.update(torch.tensor([3.0, 3.0]))
    assert t.values.tolist() == [0.5, 1.2]
    t.decay(0.1)
    assert t.rate == pytest.approx(0.1)


def test_temperature_state_round_trip() -> None:
    t = ClassTemperatures(3)
    t.update(torch.tensor([1.0, 2.0, 4.0]))
    t.decay(0.5)
    u = ClassTemperatures(3)
    u.load_state_dict(t.state_dict())
    assert torch.equal(u.values, t.values)
    assert (u.rate, u.history) == (t.rate, t.history)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"low": 2.0, "high": 1.0}, "min <= max"),
    ({"low": 0.0}, "0 < min"),
    ({"initial": 9.0}, "outside"),
    ({"rate": -1.0}, "rate"),
])
def test_temperature_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassTemperatures(3, **kwargs)


def test_temperature_update_checks_its_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        ClassTemperatures(3).update(torch.ones(2))
    with pytest.raises(ValueError, match="class_risk"):
        ClassTemperatures(2).update(torch.tensor([1.0, float("nan")]))


# ------------------------------------------------------------------------ objectives


@pytest.mark.parametrize(("objective", "terms"), [
    (NaturalObjective(), {"ce"}),
    (PGDATObjective(ATTACK), {"adv_ce"}),
    (TRADESObjective(ATTACK), {"ce", "trades_kl"}),
])
def test_teacher_objectives_train(objective: object, terms: set[str]) -> None:
    x, y = _data()
    model = _net()
    out = objective(model, x, y)
    assert set(out) == terms
    assert all(torch.isfinite(v) for v in out.values())
    result = fit(model, x, y, TrainConfig(epochs=2, batch_size=8, lr=0.1), objective=objective,
                 show_progress=False)
    assert set(result.history[-1]) >= terms


def test_pgd_at_uses_adversarial_examples() -> None:
    x, y = _data()
    model = _net().eval()
    attacked = PGDATObjective(AttackConfig(eps=0.3, alpha=0.1, steps=5))(model, x, y)["adv_ce"]
    assert float(attacked.detach()) > float(F.cross_entropy(model(x), y).detach())


# ------------------------------------------------------------------------ distillers


@pytest.mark.parametrize("make", [
    lambda s, t: ARD(s, t, ATTACK, alpha=0.9),
    lambda s, t: RSLAD(s, t, ATTACK),
    lambda s, t: ABSLD(s, t, ATTACK, 3),
])
def test_distillers_freeze_the_teacher(make: object) -> None:
    x, y = _data()
    teacher, student = _net(seed=1), _net(seed=2)
    before = copy.deepcopy(teacher.state_dict())
    distiller = make(student, teacher)
    distiller.train()
    assert not teacher.training
    assert student.training
    terms = distiller(x, y)
    sum(terms.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    fit(student, x, y, TrainConfig(epochs=1, batch_size=8), objective=distiller.objective,
        hooks=[distiller], show_progress=False)
    # fit may have moved the teacher (with the student) to a GPU.
    assert all(torch.equal(before[k], v.cpu()) for k, v in teacher.state_dict().items())


def test_rslad_terms_match_the_formula() -> None:
    x, y = _data()
    teacher, student = _net(seed=1).eval(), _net(seed=2).eval()
    distiller = RSLAD(student, teacher, AttackConfig(eps=0.0, alpha=0.1, steps=1))
    terms = distiller(x, y)  # eps = 0: the adversarial input is the clean one
    p = teacher(x).softmax(1).detach()
    kl = (p * (p.log() - student(x).log_softmax(1))).sum(1).mean()
    torch.testing.assert_close(terms["adv_kl"], 5 / 6 * kl)
    torch.testing.assert_close(terms["nat_kl"], 1 / 6 * kl)


def test_absld_soft_labels_use_each_classes_temperature() -> None:
    x, y = _data()
    distiller = ABSLD(_net(seed=2), _net(seed=1), ATTACK, 3)
    distiller.adv_temperatures.values = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    distiller.nat_temperatures.values = torch.tensor([4.0, 1.0, 1.0], dtype=torch.float64)
    teacher = distiller.teacher_logits(x)
    adv, nat = distiller.soft_labels(teacher, y)
    torch.testing.assert_close(adv[y == 0], (teacher[y == 0] / 0.5).softmax(1))
    torch.testing.assert_close(nat[y == 0], (teacher[y == 0] / 4.0).softmax(1))
    distiller.official_product = True
    adv, nat = distiller.soft_labels(teacher, y)
    torch.testing.assert_close(adv[y == 0], (teacher[y == 0] / 2.0).softmax(1))
    torch.testing.assert_close(nat, adv)


def test_absld_risk_and_update_over_an_epoch(tmp_path: Path) -> None:
    x, y = _data()
    student, teacher = _net(seed=2), _net(seed=1)
    distiller = ABSLD(student, teacher, ATTACK, 3, decay_epochs=(1,))
    observed = torch.zeros(2, 3, dtype=torch.float64)
    original = distiller.observe

    def spy(adv_logits: torch.Tensor, nat_logits: torch.Tensor, y: torch.Tensor) -> None:
        for row, logits in enumerate((adv_logits, nat_logits)):
            losses = F.cross_entropy(logits.detach(), y, reduction="none").double()
            for c in range(3):
                observed[row, c] += float(losses[y == c].sum())
        original(adv_logits, nat_logits, y)

    distiller.observe = spy
    result = fit(student, x, y, TrainConfig(epochs=1, batch_size=8, lr=0.1),
                 objective=distiller.objective, hooks=[distiller], show_progress=False,
                 checkpoint_dir=tmp_path)
    expected = ClassTemperatures(3)
    expected_adv = expected.update(observed[0])
    torch.testing.assert_close(distiller.adv_temperatures.values, expected_adv)
    assert distiller.adv_temperatures.rate == pytest.approx(0.01)  # decayed after epoch 1
    assert result.history[0]["tau_adv_min"] == pytest.approx(float(expected_adv.min()))
    # The temperatures travel with the checkpoint: a resumed run starts from them.
    fresh = ABSLD(student, teacher, ATTACK, 3, decay_epochs=(1,))
    fit(student, x, y, TrainConfig(epochs=1, batch_size=8, lr=0.1),
        objective=fresh.objective, hooks=[fresh], show_progress=False, checkpoint_dir=tmp_path)
    assert torch.equal(fresh.adv_temperatures.values, distiller.adv_temperatures.values)
    assert fresh.adv_temperatures.history == distiller.adv_temperatures.history


def test_class_count_mismatch_is_an_error() -> None:
    x, y = _data()
    distiller = RSLAD(_net(3), _net(4), ATTACK)
    with pytest.raises(ValueError, match="same classes: the teacher outputs 4, the student 3"):
        distiller(x, y)


def test_distiller_objective_refuses_another_model() -> None:
    x, y = _data()
    distiller = RSLAD(_net(seed=2), _net(seed=1), ATTACK)
    with pytest.raises(ValueError, match="distiller's own student"):
        distiller.objective(_net(), x, y)


def test_non_finite_loss_stops_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    x, y = _data()
    student, teacher = _net(seed=2), _net(seed=1)
    distiller = RSLAD(student, teacher, ATTACK)
    diverged = {"yes": False}

    class DivergeAfterFirstEpoch:
        def epoch_end(self, epoch: int) -> None:
            diverged["yes"] = True

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
        terms = distiller.objective(model, x, y)
        if diverged["yes"]:  # what a diverging student produces
            terms["adv_kl"] = terms["adv_kl"] * float("inf")
        return terms

    with pytest.raises(NonFiniteLossError, match="epoch 2"):
        fit(student, x, y, TrainConfig(epochs=2, batch_size=8), objective=objective,
            hooks=[DivergeAfterFirstEpoch()], checkpoint_dir=tmp_path, show_progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())
