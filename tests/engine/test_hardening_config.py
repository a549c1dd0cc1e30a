"""TrainConfig refuses hyperparameters that would train silently wrong."""

from __future__ import annotations

import math

import pytest

from softlabels.engine.config import TrainConfig


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"lr": math.inf}, ValueError, "lr must be a finite number, got inf"),
    ({"lr": math.nan}, ValueError, "lr must be a finite number, got nan"),
    ({"lr": 10**400}, ValueError, "lr must be a finite number"),
    ({"weight_decay": math.inf}, ValueError, "weight_decay must be a finite number"),
    ({"momentum": math.nan}, ValueError, "momentum must be a finite number"),
    ({"gamma": -math.inf}, ValueError, "gamma must be a finite number"),
    ({"milestones": (2.7,)}, TypeError, r"milestones must be a sequence of int epochs"),
    ({"milestones": (True,)}, TypeError, r"milestones must be a sequence of int epochs"),
    ({"milestones": 3}, TypeError, r"milestones must be a sequence of int epochs"),
    ({"seed": 2**64}, ValueError, r"seed must be an int in \[0, 2\*\*63 - 1\]"),
    ({"seed": -1}, ValueError, r"seed must be an int in \[0, 2\*\*63 - 1\]"),
    ({"seed": 1.0}, TypeError, "seed must be an int"),
])
def test_bad_hyperparameters_are_refused(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        TrainConfig(epochs=10, **kwargs)


def test_integer_milestones_are_kept() -> None:
    assert TrainConfig(epochs=10, milestones=[3, 7]).milestones == (3, 7)
