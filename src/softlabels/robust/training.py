"""Objectives for robust teachers: natural training, PGD-AT (Madry et al.) and TRADES.

Each is a callable ``objective(model, x, y) -> {term: scalar}`` for
:func:`softlabels.engine.fit`: it builds adversarial examples with the model in eval mode
(:mod:`softlabels.attacks` restores training mode), then returns the named loss terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_range
from ..attacks import pgd

__all__ = ["AttackConfig", "GeneratorState", "NaturalObjective", "PGDATObjective",
           "TRADESObjective"]


class GeneratorState:
    """``fit`` hook methods that keep ``self.generator`` (the attacks' random starts) in the
    training checkpoint, so that a resumed run draws the same starts as an uninterrupted one.

    Pass the object in ``fit(..., hooks=[...])``.
    """

    generator: torch.Generator | None

    def extra_state(self) -> dict[str, Any]:
        """The generator's state (empty without a generator)."""
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`; a checkpoint of an older version may lack it."""
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])


@dataclass(frozen=True)
class AttackConfig:
    """The L-inf PGD used inside training.

    Attributes:
        eps: radius (8/255 on CIFAR-10, 0.3 on MNIST).
        alpha: step size (2/255 on CIFAR-10, 0.01 on MNIST).
        steps: number of steps (10 in the papers).
    """

    eps: float
    alpha: float
    steps: int = 10

    def __post_init__(self) -> None:
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


class NaturalObjective:
    """Cross-entropy on clean images."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(model(x), y)}


class PGDATObjective(GeneratorState):
    """Madry et al.: cross-entropy on PGD examples (uniform random start)."""

    def __init__(self, attack: AttackConfig, generator: torch.Generator | None = None) -> None:
        self.attack, self.generator = attack, generator

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        a = self.attack
        adv = pgd(model, x, y, a.eps, a.alpha, a.steps, random_start=True,
                  generator=self.generator)
        return {"adv_ce": F.cross_entropy(model(adv), y)}


class TRADESObjective(GeneratorState):
    """Zhang et al.: ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))``, attack on that KL.

    The attack starts at ``x + 0.001 * N(0, I)`` and ascends ``KL(softmax(f(x)) ||
    softmax(f(x')))`` with the clean prediction fixed, as in the official code.
    """

    def __init__(self, attack: AttackConfig, beta: float = 6.0,
                 generator: torch.Generator | None = None) -> None:
        beta = check_range("beta", beta, 0.0, math.inf)
        self.attack, self.beta, self.generator = attack, beta, generator

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        a = self.attack
        was_training = model.training
        model.eval()
        with torch.no_grad():
            clean_probs = model(x).softmax(1)
        model.train(was_training)
        adv = pgd(model, x, y, a.eps, a.alpha, a.steps, random_start="normal", loss="kl",
                  target_probs=clean_probs, generator=self.generator)
        logits = model(x)
        robust = F.kl_div(model(adv).log_softmax(1), logits.softmax(1), reduction="batchmean")
        return {"ce": F.cross_entropy(logits, y), "trades_kl": self.beta * robust}
