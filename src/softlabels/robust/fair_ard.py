"""Fair-ARD (Yue et al., NeurIPS 2023): ARD with class weights from how long a class resists.

While PGD attacks the student, each example counts the iterates the student still classifies
correctly (``kappa``: from 0 to the number of steps; the official code counts the prediction
on each iterate before its step, the random start included). After every epoch the classes'
counts give the weights of the next epoch's loss terms:

    w_k = (1 / (kappa_k + 1e-5)) ** beta,   rescaled to sum to K,   clamped to [5/6, 5/2]

so a class the attack breaks early gets a larger weight. The first epoch trains with weights
1. ``kappa_k`` is the class's summed count divided by the average class size N / K (the
official code; ``reduction="sum"``) or by its own size (``"mean"``); on balanced data the two
are equal.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_finite, check_float, check_ndim, check_range
from .class_stats import CLASS_REDUCTIONS, ClassTally
from .distillers import ARD
from .teacher_cache import TeacherLogitCache
from .training import AttackConfig

__all__ = ["FairARD", "fair_weights"]

# The official code's guard against a class the attack always breaks at once.
_KAPPA_FLOOR = 1e-5
_WEIGHT_LOW, _WEIGHT_HIGH = 5.0 / 6.0, 5.0 / 2.0


def fair_weights(kappa: Tensor, beta: float = 2.0) -> Tensor:
    """Fair-ARD's class weights from the (K,) per-class survived steps ``kappa``.

    Example:
        >>> [round(w, 4) for w in fair_weights(torch.tensor([1.0, 1.0, 2.0])).tolist()]
        [1.3333, 1.3333, 0.8333]
    """
    kappa = check_float("kappa", kappa)
    check_ndim("kappa", kappa, (1,))
    check_finite("kappa", kappa)
    if bool((kappa < 0).any()):
        raise ValueError("kappa counts survived attack steps: it must be >= 0")
    beta = check_range("beta", beta, 0.0, math.inf)
    weights = (1.0 / (kappa.double() + _KAPPA_FLOOR)) ** beta
    return (weights * (kappa.numel() / weights.sum())).clamp(_WEIGHT_LOW, _WEIGHT_HIGH)


class _Survival(nn.Module):
    """The student, counting for each example the attack iterates it classifies correctly.

    :func:`~softlabels.attacks.pgd` makes exactly one forward pass per step, on the iterate
    before that step, so the count is Fair-ARD's ``kappa``.
    """

    def __init__(self, student: nn.Module, y: Tensor) -> None:
        super().__init__()
        self.student, self.y = student, y
        self.survived = torch.zeros(y.shape[0], dtype=torch.float64, device=y.device)
        self.train(student.training)  # the attack restores this mode on the student

    def forward(self, x: Tensor) -> Tensor:
        logits = self.student(x)
        self.survived += (logits.detach().argmax(1) == self.y).double()
        return logits


class FairARD(ARD):
    """ARD with Fair-ARD's class weights on both loss terms (see the module docstring).

    Args:
        num_classes: K.
        beta: the weights' exponent (the paper: 2).
        reduction: how a class's counts combine, one of
            :data:`~softlabels.robust.class_stats.CLASS_REDUCTIONS` (official: ``sum``).
        temperature, alpha, generator, kl_reduction, teacher_cache: as :class:`ARD`.

    Attributes:
        weights: float64 (K,) weights of the current epoch.
        kappa_history, weight_history: per finished epoch, the per-class survived steps and
            the weights computed from them (for the next epoch).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, attack: AttackConfig,
                 num_classes: int, *, beta: float = 2.0, reduction: str = "sum",
                 temperature: float = 30.0, alpha: float = 1.0,
                 generator: torch.Generator | None = None, kl_reduction: str = "batchmean",
                 teacher_cache: TeacherLogitCache | None = None) -> None:
        super().__init__(student, teacher, attack, temperature=temperature, alpha=alpha,
                         generator=generator, kl_reduction=kl_reduction,
                         teacher_cache=teacher_cache)
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = float(beta)
        self.reduction = check_choice("reduction", reduction, CLASS_REDUCTIONS)
        self.weights = torch.ones(num_classes, dtype=torch.float64)
        self._tally = ClassTally(1, num_classes)
        self.kappa_history: list[list[float]] = []
        self.weight_history: list[list[float]] = []

    def forward(self, x: Tensor, y: Tensor, teacher_out: Tensor | None = None
                ) -> dict[str, Tensor]:
        """ARD's terms, each example weighted by its class; the survived steps are counted."""
        terms = super().forward(x, y, teacher_out)
        self._tally.add(y, self._counter.survived)
        return terms

    def attacked(self, y: Tensor) -> nn.Module:
        self._counter = _Survival(self.student, y)
        return self._counter

    def example_weights(self, y: Tensor) -> Tensor:
        return self.weights.to(device=y.device, dtype=torch.float32)[y]

    def epoch_end(self, epoch: int) -> dict[str, float]:
        """Next epoch's weights from this epoch's survived steps (summed over the ranks)."""
        sums, counts = self._tally.epoch_values(self.reduction)
        kappa = sums[0]
        if self.reduction == "sum":  # the official code divides by the average class size
            kappa = kappa / (counts.sum() / counts.numel()).clamp(min=1.0)
        self.weights = fair_weights(kappa, self.beta)
        self.kappa_history.append(kappa.tolist())
        self.weight_history.append(self.weights.tolist())
        return {"fair_weight_min": float(self.weights.min()),
                "fair_weight_max": float(self.weights.max())}

    def extra_state(self) -> dict[str, Any]:
        """Weights, counts so far, their histories and the attack generator."""
        return {**super().extra_state(), "weights": self.weights.clone(),
                "tally": self._tally.state_dict(),
                "kappa_history": [list(k) for k in self.kappa_history],
                "weight_history": [list(w) for w in self.weight_history]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`extra_state`."""
        super().load_extra_state(state)
        self.weights = state["weights"].clone().double()
        self._tally.load_state_dict(state["tally"])
        self.kappa_history = [list(k) for k in state["kappa_history"]]
        self.weight_history = [list(w) for w in state["weight_history"]]
