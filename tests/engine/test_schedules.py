"""Per-step schedules with warm-up (the segmentation recipe) and weight decay on weights only."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from softlabels.engine import TrainConfig, fit
from softlabels.engine.optim import build_optimizer, build_scheduler


def _rates(config: TrainConfig, steps_per_epoch: int) -> list[float]:
    """The learning rate of each optimiser step under ``config``'s schedule."""
    optimizer = build_optimizer(nn.Linear(2, 2), config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    rates = []
    for _ in range(config.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_then_poly_per_step() -> None:
    # 4 steps an epoch, 5 epochs = 20 steps, warm-up 20% = 4 steps rising to lr.
    config = TrainConfig(epochs=5, batch_size=10, lr=1.0, schedule="poly", warmup=0.2)
    expected = [(t + 1) / 5 for t in range(4)] + [(1 - (t - 4) / 16) ** 0.9
                                                  for t in range(4, 20)]
    assert _rates(config, 4) == pytest.approx(expected)


def test_per_step_cosine_and_the_unchanged_per_epoch_one() -> None:
    per_step = TrainConfig(epochs=2, lr=1.0, schedule="cosine", schedule_unit="step")
    assert _rates(per_step, 4) == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)])
    per_epoch = TrainConfig(epochs=2, lr=1.0, schedule="cosine")
    assert [group["lr"] for group in build_scheduler(
        build_optimizer(nn.Linear(2, 2), per_epoch), per_epoch).optimizer.param_groups] == [1.0]


def test_fit_steps_the_schedule_after_every_batch() -> None:
    config = TrainConfig(epochs=2, batch_size=10, lr=1.0, schedule="poly", warmup=0.25)
    result = fit(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.rand(40, 1, 2, 2),
                 torch.arange(40) % 2, config, device="cpu", show_progress=False)
    # After epoch 1 (4 of 8 steps; 2 warm-up): the rate of step 4 = (1 - 2/6) ** 0.9.
    assert result.history[0]["lr"] == pytest.approx((1 - 2 / 6) ** 0.9)


def test_weight_decay_on_weights_only() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2), nn.Flatten(),
                          nn.Linear(2, 3))
    groups = build_optimizer(model, TrainConfig(decay_norms=False, weight_decay=0.1)
                             ).param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert sorted(p.ndim for p in groups[0]["params"]) == [2, 4]  # conv and linear weights
    assert len(groups[1]["params"]) == 4  # biases, GroupNorm weight and bias
    assert len(build_optimizer(model, TrainConfig()).param_groups) == 1


@pytest.mark.parametrize(("changes", "message"), [
    ({"warmup": 1.0}, "warmup must be < 1"),
    ({"schedule_unit": "iteration"}, "schedule_unit must be one of"),
    ({"decay_norms": 1}, "decay_norms must be a bool"),
])
def test_bad_schedule_settings(changes: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        TrainConfig(**changes)
