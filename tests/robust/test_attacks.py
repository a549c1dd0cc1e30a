"""Attacks: analytic optimum on linear models, agreement with torchattacks, contracts."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softlabels.attacks import fgsm, pgd, robust_evaluate, standard_attacks
from softlabels.models import create_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import (
    assert_close_on,
    assert_on,
    device_fixture,  # noqa: F401  (the device fixture)
    gen,
    off_cpu,
    seeded,
)


def _linear(num_classes: int = 2, features: int = 12, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))


def _images(n: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(seed))


def _optimal_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Best L-inf attack on a 2-class linear model within [0, 1]: each pixel moves by eps
    (or to the box edge) against the sign of d = w_y - w_other, which minimises the margin."""
    weight = model[1].weight.detach()
    d = (weight[y] - weight[1 - y]).view_as(x)
    return torch.where(d > 0, (x - eps).clamp_min(0), torch.where(d < 0, (x + eps).clamp_max(1), x))


def _margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(x)
    return logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, 1 - y[:, None]).squeeze(1)


@pytest.mark.parametrize("loss", ["ce", "cw"])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_reaches_the_optimal_linf_attack_on_a_linear_model(loss: str,
                                                               random_start: bool) -> None:
    model = _linear()
    x, y = _images(), torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(2))
    eps = 0.1
    adv = pgd(model, x, y, eps, alpha=eps / 4, steps=20, loss=loss, random_start=random_start,
              confidence=1e6)
    optimum = _optimal_linf(model, x, y, eps)
    torch.testing.assert_close(adv, optimum, atol=1e-6, rtol=0)
    assert (_margin(model, adv, y) <= _margin(model, x, y)).all()


def test_fgsm_is_optimal_on_a_linear_model_without_the_box() -> None:
    model = _linear()
    x = 0.25 + 0.5 * _images()  # far from 0 and 1 so the box never binds at eps = 0.1
    y = torch.zeros(16, dtype=torch.int64)
    torch.testing.assert_close(fgsm(model, x, y, 0.1), _optimal_linf(model, x, y, 0.1))


def test_l2_pgd_stays_in_the_ball_and_follows_the_weights() -> None:
    model = _linear()
    x = 0.25 + 0.5 * _images()
    y = torch.zeros(16, dtype=torch.int64)
    adv = pgd(model, x, y, eps=0.2, alpha=0.05, steps=20, norm="l2", random_start=False)
    norms = (adv - x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= 0.2 + 1e-5
    # The L2-optimal direction is -(w_y - w_other) / ||.||: the margin drops by eps * ||d||.
    weight = model[1].weight.detach()
    drop = _margin(model, x, y) - _margin(model, adv, y)
    torch.testing.assert_close(drop, torch.full((16,), 0.2 * float((weight[0] - weight[1]).norm())),
                               atol=1e-4, rtol=1e-4)


def test_agrees_with_torchattacks_pgd_from_the_same_start() -> None:
    torchattacks = pytest.importorskip("torchattacks", reason="dev extra, installed --no-deps")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 8 * 8, 10))
    x = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(4))
    theirs = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=False)(x, y)
    ours = pgd(model, x, y, 8 / 255, 2 / 255, 10, random_start=False)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_model_mode_restored_and_no_parameter_gradients() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    x, y = _images(), torch.randint(0, 3, (16,))
    first = pgd(model, x, y, 0.1, 0.02, 5, random_start=False)
    second = pgd(model, x, y, 0.1, 0.02, 5, random_start=False)
    assert model.training
    assert torch.equal(first, second)  # dropout was off during the attack
    assert all(p.grad is None for p in model.parameters())


def test_kl_attack_moves_away_from_the_soft_target() -> None:
    model = _linear(3)
    x = _images()
    with torch.no_grad():
        target = model(x).softmax(1)
    y = target.argmax(1)
    adv = pgd(model, x, y, 0.1, 0.02, 10, loss="kl", target_probs=target,
              random_start="normal", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        kl = torch.nn.functional.kl_div(model(adv).log_softmax(1), target, reduction="batchmean")
    assert float(kl) > 1e-3
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6


def test_seeded_random_start_is_reproducible() -> None:
    model, x, y = _linear(3), _images(), torch.zeros(16, dtype=torch.int64)
    runs = [pgd(model, x, y, 0.1, 0.01, 2, generator=torch.Generator().manual_seed(5))
            for _ in range(2)]
    assert torch.equal(*runs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"eps": -0.1}, "eps must be a finite number >= 0"),
    ({"eps": math.nan}, "eps must be a finite number >= 0"),
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"alpha": 0.0}, "alpha"),
    ({"x": 2 * _images()}, r"x must hold images in \[0, 1\]"),
    ({"loss": "kl"}, "needs target_probs"),
    ({"loss": "hinge"}, "loss"),
    ({"y": torch.zeros(3, dtype=torch.int64)}, "y must be int64"),
])
def test_bad_input(kwargs: dict, message: str) -> None:
    args = {"model": _linear(), "x": _images(), "y": torch.zeros(16, dtype=torch.int64),
            "eps": 0.1, "alpha": 0.01, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        pgd(**args)


def test_robust_evaluate_reports_classwise_scores() -> None:
    model = _linear(2)
    x = _images(64)
    with torch.no_grad():
        y = model(x).argmax(1)  # the model is right on every clean image
    results = robust_evaluate(model, x, y, standard_attacks(0.3, pgd_steps=5), batch_size=16,
                              device="cpu")
    assert list(results) == ["clean", "fgsm", "pgd5", "cw"]
    assert results["clean"].accuracy == 1.0
    assert results["clean"].nsd == 0.0
    assert results["pgd5"].accuracy < 1.0
    for result in results.values():
        present = result.classwise_accuracy[~result.classwise_accuracy.isnan()]
        assert result.worst_class_accuracy == float(present.min())
        assert result.accuracy <= float(present.max()) + 1e-9
    # On a linear model one full-size signed step is the optimal attack.
    assert results["fgsm"].accuracy == 0.0


# ----------------------------------------------------------------------------- devices


def test_optimal_attacks_on_a_linear_model_on_device(device: str) -> None:
    """pgd (ce and cw, with a CPU generator's random start) and fgsm with model and inputs on
    the device: the analytic optimum, on the device."""
    model_cpu = _linear()
    model = copy.deepcopy(model_cpu).to(device)
    x, y = _images(), torch.randint(0, 2, (16,), generator=gen(2))
    for loss in ("ce", "cw"):
        adv = pgd(model, x.to(device), y.to(device), 0.1, alpha=0.025, steps=20, loss=loss,
                  generator=gen(3), confidence=1e6)
        assert_close_on(adv, _optimal_linf(model_cpu, x, y, 0.1), device, atol=1e-6, rtol=0)
    inside = 0.25 + 0.5 * x  # far from 0 and 1 so the box never binds at eps = 0.1
    assert_close_on(fgsm(model, inside.to(device), y.to(device), 0.1),
                    _optimal_linf(model_cpu, inside, y, 0.1), device, atol=1e-6, rtol=0)


ATTACK_CASES: list[tuple[str, dict[str, Any]]] = [
    ("fgsm", {"loss": "ce"}),
    ("fgsm", {"loss": "kl"}),
    ("pgd", {"norm": "linf", "loss": "ce", "random_start": "uniform"}),
    ("pgd", {"norm": "linf", "loss": "cw", "random_start": True}),
    ("pgd", {"norm": "linf", "loss": "kl", "random_start": "normal"}),
    ("pgd", {"norm": "linf", "loss": "ce", "random_start": "none"}),
    ("pgd", {"norm": "l2", "loss": "ce", "random_start": "uniform"}),
    ("pgd", {"norm": "l2", "loss": "kl", "random_start": "normal"}),
    ("pgd", {"norm": "l2", "loss": "cw", "random_start": "normal"}),
]


def _attack_model() -> nn.Module:
    """A 4-class linear classifier with input normalisation: its input gradient has no ReLU
    zeros and is of order one, so rounding cannot flip the sign of an L-inf step between
    devices."""
    return seeded(lambda: create_model("mlp", 4, 3, 8, hidden=(), mean=(0.5, 0.5, 0.5),
                                       std=(0.25, 0.25, 0.25)), 1)


@pytest.mark.parametrize(("attack", "options"), ATTACK_CASES,
                         ids=[f"{a}-{'-'.join(str(v) for v in o.values())}"
                              for a, o in ATTACK_CASES])
def test_attacks_on_device(device: str, attack: str, options: dict[str, Any]) -> None:
    """fgsm and pgd (L-inf, L2; ce, cw, kl; uniform, normal and no start) with model and
    inputs on the device and a CPU generator: on the device, inside the ball and the box,
    the loss raised, no parameter gradient; off the CPU, the CPU's adversarial examples."""
    g = gen(12)
    x_cpu = 0.1 + 0.8 * torch.rand(8, 3, 8, 8, generator=g)
    y_cpu = torch.randint(0, 4, (8,), generator=g)
    target_cpu = torch.softmax(2 * torch.randn(8, 4, generator=g), 1)
    model_cpu = _attack_model()
    eps, alpha = (0.05, 0.02) if options.get("norm", "linf") == "linf" else (0.5, 0.2)

    def run(net: nn.Module, where: str, generator: torch.Generator | None) -> torch.Tensor:
        x, y = x_cpu.to(where), y_cpu.to(where)
        target = target_cpu.to(where) if options["loss"] == "kl" else None
        if attack == "fgsm":
            return fgsm(net, x, y, eps, target_probs=target, **options)
        return pgd(net, x, y, eps, alpha, 3, target_probs=target, generator=generator,
                   **options)

    model = _attack_model().to(device)
    adv = run(model, device, gen(13))
    assert_on(adv, device)
    assert not adv.requires_grad
    assert all(p.grad is None for p in model.parameters())  # attacks touch no .grad
    if off_cpu(device):  # the same CPU generator state: the same start
        assert_close_on(adv, run(model_cpu, "cpu", gen(13)), device, atol=1e-5, rtol=1e-5)
    # A generator on the device, or none (the device's global RNG), also works.
    for generator in (torch.Generator(device=device).manual_seed(0), None):
        if attack == "pgd":
            assert_on(run(model, device, generator), device)
    delta = (adv.cpu() - x_cpu).flatten(1)
    if options.get("norm", "linf") == "linf":
        assert float(delta.abs().max()) <= eps + 1e-6
    else:
        assert float(delta.norm(dim=1).max()) <= eps * (1 + 1e-5)
    assert 0.0 <= float(adv.min()) <= float(adv.max()) <= 1.0
    if options["loss"] == "ce":
        with torch.no_grad():
            assert float(F.cross_entropy(model_cpu(adv.cpu()), y_cpu)) > float(
                F.cross_entropy(model_cpu(x_cpu), y_cpu))


@pytest.mark.parametrize("data_on_device", [False, True])
def test_robust_evaluate_on_device(device: str, data_on_device: bool) -> None:
    """robust_evaluate with device=device, for CPU data and data already on the device: the
    model's plain clean accuracy, attacks that lower it, classwise scores consistent with
    it, and (off the CPU) the CPU's numbers."""
    x = torch.rand(32, 3, 8, 8, generator=gen(14))
    y = torch.arange(32) % 4
    model = _attack_model()
    with torch.no_grad():
        predicted = model(x).argmax(1)
    expected = robust_evaluate(model, x, y, standard_attacks(0.05, pgd_steps=3),
                               batch_size=16, device="cpu") if off_cpu(device) else None
    data = (x.to(device), y.to(device)) if data_on_device else (x, y)
    result = robust_evaluate(model, *data, standard_attacks(0.05, pgd_steps=3), batch_size=16,
                             device=device)
    assert list(result) == ["clean", "fgsm", "pgd3", "cw"]
    assert result["clean"].accuracy == float((predicted == y).float().mean())
    per_class = [float((predicted[y == c] == c).float().mean()) for c in range(4)]
    assert result["clean"].classwise_accuracy.tolist() == pytest.approx(per_class)
    assert result["pgd3"].accuracy <= result["clean"].accuracy
    for name, scores in result.items():
        present = scores.classwise_accuracy[~scores.classwise_accuracy.isnan()]
        assert scores.worst_class_accuracy == float(present.min()), name
        if expected is not None:
            reference = expected[name]
            assert scores.accuracy == reference.accuracy, name
            torch.testing.assert_close(scores.classwise_accuracy.cpu(),
                                       reference.classwise_accuracy, equal_nan=True)
            assert scores.nsd == pytest.approx(reference.nsd, nan_ok=True)
