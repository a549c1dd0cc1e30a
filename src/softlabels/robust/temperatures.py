"""Class-wise temperatures of ABSLD: sharper teacher labels for the classes the student fails.

Zhao et al. (NeurIPS 2024) adjust one temperature per class after every epoch from the
student's per-class risk ``R_k`` (summed cross-entropy over that class's examples):

    g = R - mean(R);    tau <- clip(tau - rate * g / max|g|, low, high)

A class with above-average risk gets a lower temperature, so its teacher label becomes sharper
(more confident in the true class); easy classes get smoother labels. The rate is multiplied by
``decay`` at each learning-rate decay.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._checks import check_finite, check_positive_int

__all__ = ["ClassTemperatures"]


class ClassTemperatures:
    """One temperature per class, updated from per-class risk.

    Args:
        num_classes: K.
        initial: starting temperature of every class (the paper: 1).
        low, high: bounds (the paper: 0.5 and 5).
        rate: step size eta of the update (the paper: 0.1).

    Attributes:
        values: float64 (K,) current temperatures.
        history: the temperatures after every update, starting with the initial ones.

    Example:
        >>> t = ClassTemperatures(3)
        >>> t.update(torch.tensor([3.0, 1.0, 2.0])).tolist()
        [0.9, 1.1, 1.0]
    """

    def __init__(self, num_classes: int, initial: float = 1.0, low: float = 0.5,
                 high: float = 5.0, rate: float = 0.1) -> None:
        check_positive_int("num_classes", num_classes)
        if not 0 < low <= high:
            raise ValueError(f"temperature bounds need 0 < min <= max, got min={low}, "
                             f"max={high}")
        if not low <= initial <= high:
            raise ValueError(f"initial temperature {initial} lies outside [{low}, {high}]")
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        self.low, self.high, self.rate = float(low), float(high), float(rate)
        self.values = torch.full((num_classes,), float(initial), dtype=torch.float64)
        self.history: list[list[float]] = [self.values.tolist()]

    def update(self, class_risk: Tensor) -> Tensor:
        """Apply one update from float (K,) per-class risk; returns the new temperatures.

        A vector of equal risks (including all zeros) leaves the temperatures unchanged.
        """
        check_finite("class_risk", class_risk)
        if class_risk.shape != self.values.shape:
            raise ValueError(f"class_risk must have shape {tuple(self.values.shape)}, got "
                             f"{tuple(class_risk.shape)}")
        gap = class_risk.double().cpu() - class_risk.double().cpu().mean()
        scale = float(gap.abs().max())
        if scale > 0:
            self.values = (self.values - self.rate * gap / scale).clamp(self.low, self.high)
        self.history.append(self.values.tolist())
        return self.values.clone()

    def decay(self, factor: float) -> None:
        """Multiply the rate by ``factor`` (called at each learning-rate decay)."""
        if not 0 <= factor <= 1:
            raise ValueError(f"decay factor must be in [0, 1], got {factor}")
        self.rate *= factor

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: values, rate, bounds and history."""
        return {"values": self.values.clone(), "rate": self.rate, "low": self.low,
                "high": self.high, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        values = state["values"]
        if values.shape != self.values.shape:
            raise ValueError(f"state holds {values.shape[0]} temperatures, expected "
                             f"{self.values.shape[0]}")
        self.values = values.clone().double()
        self.rate, self.low, self.high = float(state["rate"]), float(state["low"]), \
            float(state["high"])
        self.history = [list(h) for h in state["history"]]
