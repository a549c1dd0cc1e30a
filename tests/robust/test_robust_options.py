"""The official-code options of the distillers, Fair-ARD and the per-class tallies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softlabels.engine import TrainConfig, fit
from softlabels.robust import (
    ABSLD,
    ARD,
    RSLAD,
    AttackConfig,
    ClassTally,
    ClassTemperatures,
    FairARD,
    fair_weights,
)

ATTACK = AttackConfig(eps=0.1, alpha=0.05, steps=2)
STILL = AttackConfig(eps=0.0, alpha=0.1, steps=1)  # the adversarial input is the clean one


def _net(classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, classes))


def _data(n: int = 24, labels: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.tensor(labels) if labels is not None else torch.arange(n) % 3
    return torch.rand(len(y), 1, 4, 4, generator=g), y


# ------------------------------------------------------------------------ KL reduction


@pytest.mark.parametrize("make", [
    lambda s, t, r: RSLAD(s, t, STILL, kl_reduction=r),
    lambda s, t, r: ABSLD(s, t, STILL, 3, kl_reduction=r),
    lambda s, t, r: ARD(s, t, STILL, kl_reduction=r),
    lambda s, t, r: FairARD(s, t, STILL, 3, kl_reduction=r),
])
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # torch's own "mean", below
def test_mean_kl_is_the_elementwise_mean_over_batch_and_classes(make: object) -> None:
    x, y = _data()
    teacher, student = _net(seed=1).eval(), _net(seed=2).eval()
    batchmean = make(student, teacher, "batchmean")(x, y)
    mean = make(student, teacher, "mean")(x, y)
    for name, value in batchmean.items():
        torch.testing.assert_close(mean[name], value / 3)
    # The official code's own formula: KLDivLoss() with its default elementwise mean.
    p = teacher(x).softmax(1).detach()
    official = nn.KLDivLoss(reduction="mean")(student(x).log_softmax(1), p)
    if "adv_kl" in mean:
        torch.testing.assert_close(mean["adv_kl"], 5 / 6 * official)


def test_unknown_kl_reduction_is_an_error() -> None:
    with pytest.raises(ValueError, match="kl_reduction"):
        RSLAD(_net(), _net(), ATTACK, kl_reduction="sum")


# ------------------------------------------------------------------------ ARD temperature


def _ard_reference(student: nn.Module, teacher: nn.Module, x: torch.Tensor, t: float
                   ) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), batch mean, in float64."""
    with torch.no_grad():
        p = (teacher(x).double() / t).log_softmax(1)
        q = (student(x).double() / t).log_softmax(1)
    return t * t * (p.exp() * (p - q)).sum(1).mean()


@pytest.mark.parametrize("t", [1.0, 30.0, 1e4])
def test_ard_term_is_exact_at_large_temperatures(t: float) -> None:
    # A float32 KL times T^2 is a few percent off at T = 1e3 and negative from T = 1e4.
    x, y = _data()
    teacher, student = _net(seed=1).eval(), _net(seed=2).eval()
    kd = ARD(student, teacher, STILL, temperature=t)(x, y)["kd"]
    reference = _ard_reference(student, teacher, x, t)
    assert float(kd.detach()) > 0
    torch.testing.assert_close(kd.double(), reference, rtol=1e-5, atol=0)


def test_ard_at_a_tiny_temperature_is_finite_and_a_tinier_one_is_refused() -> None:
    x, y = _data()
    teacher, student = _net(seed=1).eval(), _net(seed=2).eval()
    terms = ARD(student, teacher, STILL, temperature=1e-3)(x, y)
    assert torch.isfinite(terms["kd"])
    terms["kd"].backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters())
    with pytest.raises(ValueError, match=r"temperature must lie in .* temperature\*\*2"):
        ARD(student, teacher, STILL, temperature=1e-25)


# ------------------------------------------------------------------------ ABSLD options


def _one_epoch(distiller: ABSLD, x: torch.Tensor, y: torch.Tensor, folder: Path | None = None
               ) -> None:
    fit(distiller.student, x, y, TrainConfig(epochs=1, batch_size=8, lr=0.1),
        objective=distiller.objective, hooks=[distiller], show_progress=False,
        checkpoint_dir=folder)


def _expected_risk(distiller: ABSLD, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-class summed clean cross-entropy of the student as it is now."""
    with torch.no_grad():
        losses = F.cross_entropy(distiller.student(x), y, reduction="none").double()
    return torch.stack([losses[y == c].sum() for c in range(3)])


def test_class_risk_mean_divides_by_the_class_sizes() -> None:
    x, y = _data(labels=[0] * 6 + [1] * 2 + [2] * 4)
    sums, means = [], []
    for risk, out in (("sum", sums), ("mean", means)):
        distiller = ABSLD(_net(seed=2), _net(seed=1), STILL, 3, risk=risk)
        distiller.student.eval()
        distiller.observe(distiller.student(x), distiller.student(x), y)
        distiller.epoch_end(1)
        out.append(torch.tensor(distiller.risk_history[0], dtype=torch.float64))
        expected = _expected_risk(distiller, x, y)
    torch.testing.assert_close(sums[0][1], expected)
    torch.testing.assert_close(means[0][1], expected / torch.tensor([6.0, 2.0, 4.0],
                                                                      dtype=torch.float64))


def test_rate_decays_before_or_after_the_update() -> None:
    x, y = _data()
    moved = {}
    for when in ("before", "after"):
        distiller = ABSLD(_net(seed=2), _net(seed=1), ATTACK, 3, decay_epochs=(1,),
                          rate_decay=when)
        _one_epoch(distiller, x, y)
        # The largest gap moves one temperature by the whole rate.
        moved[when] = float((distiller.adv_temperatures.values - 1).abs().max())
        assert distiller.adv_temperatures.rate == pytest.approx(0.01)
    assert moved == {"before": pytest.approx(0.01), "after": pytest.approx(0.1)}


def test_risks_are_logged_per_epoch_and_survive_a_resume(tmp_path: Path) -> None:
    x, y = _data()
    distiller = ABSLD(_net(seed=2), _net(seed=1), ATTACK, 3)
    _one_epoch(distiller, x, y, tmp_path)
    assert len(distiller.risk_history) == 1
    assert len(distiller.risk_history[0]) == 2
    # The update used exactly the logged risk.
    expected = ClassTemperatures(3).update(torch.tensor(distiller.risk_history[0][0]))
    torch.testing.assert_close(distiller.adv_temperatures.values, expected)
    fresh = ABSLD(distiller.student, distiller.teacher, ATTACK, 3)
    _one_epoch(fresh, x, y, tmp_path)  # the finished epoch is restored, not rerun
    assert fresh.risk_history == distiller.risk_history


def test_shared_temperatures_are_one_vector_from_the_adversarial_risk() -> None:
    x, y = _data()
    distiller = ABSLD(_net(seed=2), _net(seed=1), ATTACK, 3, shared=True)
    _one_epoch(distiller, x, y)
    assert distiller.nat_temperatures is distiller.adv_temperatures
    assert len(distiller.adv_temperatures.history) == 2  # one update, not two
    expected = ClassTemperatures(3).update(torch.tensor(distiller.risk_history[0][0]))
    torch.testing.assert_close(distiller.adv_temperatures.values, expected)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"official_product": True, "shared": True}, "choose one"),
    ({"rate": 0.0}, "rate .eta. must be > 0"),
    ({"rate": -0.1}, "rate .eta. must be > 0"),
    ({"risk": "median"}, "risk"),
    ({"rate_decay": "during"}, "rate_decay"),
])
def test_absld_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ABSLD(_net(), _net(), ATTACK, 3, **kwargs)


# ------------------------------------------------------------------------ tallies


def test_class_tally_sums_counts_and_resets() -> None:
    tally = ClassTally(2, 3)
    y = torch.tensor([0, 2, 2])
    tally.add(y, torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 1.0, 1.0]))
    tally.add(torch.tensor([1]), torch.tensor([5.0]), torch.tensor([0.0]))
    values, counts = tally.epoch_values("mean")
    assert values.tolist() == [[1.0, 5.0, 3.0], [1.0, 0.0, 1.0]]
    assert counts.tolist() == [1.0, 1.0, 2.0]
    assert tally.epoch_values("sum")[0].abs().sum() == 0  # reset after an epoch
    with pytest.raises(ValueError, match="expected 2 statistics"):
        tally.add(y, torch.ones(3))


# ------------------------------------------------------------------------ Fair-ARD


def test_fair_weights_by_hand() -> None:
    # kappa (1, 1, 4): (1/kappa)^2 = (1, 1, 1/16), rescaled to sum 3: 3 / 2.0625 = 1.4545 for
    # the first two and 0.0909 -> clamped to 5/6 for the third.
    weights = fair_weights(torch.tensor([1.0, 1.0, 4.0]))
    torch.testing.assert_close(weights, torch.tensor([3 / 2.0625, 3 / 2.0625, 5 / 6],
                                                     dtype=torch.float64), rtol=1e-4, atol=0)
    assert fair_weights(torch.tensor([2.0, 2.0])).tolist() == pytest.approx([1.0, 1.0])
    assert float(fair_weights(torch.tensor([0.0, 5.0, 5.0]))[0]) == 2.5  # the upper clamp


class _AlwaysZero(nn.Module):
    """Predicts class 0 whatever the input (and has a parameter to train)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([5.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias + 0 * x.flatten(1)[:, :3]


def test_fair_ard_counts_the_steps_each_class_survives() -> None:
    x, y = _data(12)
    distiller = FairARD(_AlwaysZero(), _net(seed=1), AttackConfig(0.1, 0.05, steps=3), 3)
    distiller(x, y)
    distiller.epoch_end(1)
    # Class 0 is right at every one of the 3 iterates, the others never.
    assert distiller.kappa_history == [[3.0, 0.0, 0.0]]
    torch.testing.assert_close(distiller.weights, fair_weights(torch.tensor([3.0, 0.0, 0.0])))
    assert distiller.weights.tolist() == pytest.approx([5 / 6, 1.5, 1.5], rel=1e-6)


def test_fair_ard_weights_each_example_by_its_class() -> None:
    x, y = _data()
    teacher, student = _net(seed=1).eval(), _net(seed=2).eval()
    distiller = FairARD(student, teacher, STILL, 3, alpha=0.5)
    distiller.weights = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    terms = distiller(x, y)
    w = distiller.weights.float()[y]
    t = 30.0
    kl = F.kl_div((student(x).double() / t).log_softmax(1),
                  (teacher(x).double() / t).softmax(1), reduction="none").sum(1)
    torch.testing.assert_close(terms["kd"], (0.5 * t * t * (w * kl).mean()).float())
    ce = F.cross_entropy(student(x), y, reduction="none")
    torch.testing.assert_close(terms["ce"], 0.5 * (w * ce).mean())


def test_fair_ard_trains_and_resumes(tmp_path: Path) -> None:
    x, y = _data()
    distiller = FairARD(_net(seed=2), _net(seed=1), ATTACK, 3)
    config = TrainConfig(epochs=2, batch_size=8, lr=0.1)
    result = fit(distiller.student, x, y, config, objective=distiller.objective,
                 hooks=[distiller], show_progress=False, checkpoint_dir=tmp_path)
    assert len(distiller.weight_history) == 2
    assert "fair_weight_max" in result.history[-1]
    fresh = FairARD(distiller.student, distiller.teacher, ATTACK, 3)
    fit(fresh.student, x, y, config, objective=fresh.objective, hooks=[fresh],
        show_progress=False, checkpoint_dir=tmp_path)
    assert fresh.weight_history == distiller.weight_history
    assert torch.equal(fresh.weights, distiller.weights)


def test_fair_ard_bad_options() -> None:
    with pytest.raises(ValueError, match="beta must be >= 0"):
        FairARD(_net(), _net(), ATTACK, 3, beta=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        FairARD(_net(), _net(), ATTACK, 3, reduction="max")
