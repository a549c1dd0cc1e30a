"""Adversarial robustness distillation: ARD, RSLAD and ABSLD.

A distiller is an ``nn.Module`` holding the student and a frozen teacher (kept in eval mode
whatever mode the distiller is put in); ``distiller(x, y)`` returns a dict of named loss
terms, so logging and ablations need no extra code. To train with
:func:`softlabels.engine.fit`, pass ``distiller.student`` as the model,
``distiller.objective`` as the objective and the distiller in ``hooks`` (ABSLD updates its
temperatures at the end of every epoch and saves them in the checkpoint).

* ARD (Goldblum et al.): ``alpha * T^2 * KL(teacher(x)/T || student(x_adv)/T) +
  (1 - alpha) * CE(student(x), y)``, ``x_adv`` from PGD on the student's cross-entropy.
* RSLAD (Zi et al.): ``5/6 * KL(p_t || student(x_adv)) + 1/6 * KL(p_t || student(x))`` with
  ``p_t = softmax(teacher(x))``; ``x_adv`` maximises ``KL(p_t || student(x'))`` from
  ``x + 0.001 * N(0, I)``. No hard-label term.
* ABSLD (Zhao et al.): RSLAD with class-wise temperatures, ``p_adv = softmax(teacher(x) /
  tau_adv[y])`` for the adversarial term and ``p_nat = softmax(teacher(x) / tau_nat[y])`` for
  the natural one, each vector updated after every epoch from the student's per-class
  cross-entropy on adversarial and on clean inputs (:class:`ClassTemperatures`).
  ``official_product=True`` reproduces the official code, where both labels end up divided by
  ``tau_adv[y] * tau_nat[y]`` (they share storage and are modified in place).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import pgd
from ..distributed import all_reduce_sum
from ..runtime import follow_device
from .temperatures import ClassTemperatures
from .training import AttackConfig, GeneratorState

__all__ = ["ABSLD", "ARD", "RSLAD", "Distiller"]

# RSLAD's weights of the adversarial and natural terms.
_ADV_WEIGHT, _NAT_WEIGHT = 5.0 / 6.0, 1.0 / 6.0


class Distiller(GeneratorState, nn.Module):
    """Student + frozen teacher; subclasses define :meth:`forward` ``(x, y) -> terms``.

    Args:
        student: maps (B, C, H, W) in [0, 1] to (B, K) logits; trained.
        teacher: the same input to (B, K) logits; frozen and kept in eval mode.
        attack: the PGD used to build the student's adversarial examples.
        generator: draws the attacks' random starts (reproducible training).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, attack: AttackConfig,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.student, self.teacher, self.attack = student, teacher, attack
        self.generator = generator
        self._classes_checked = False
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> Distiller:
        """Set the student's mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def objective(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The :func:`~softlabels.engine.fit` objective; ``model`` must be the student."""
        if model is not self.student:
            raise ValueError("train the distiller's own student: fit(distiller.student, ...)")
        return self(x, y)

    def teacher_logits(self, x: Tensor) -> Tensor:
        """float (B, K) teacher logits, computed without gradient.

        Raises:
            ValueError: on the first call, when teacher and student predict different numbers
                of classes.
        """
        with torch.no_grad():
            logits = follow_device(self.teacher, x)(x)
            if not self._classes_checked:
                was_training = self.student.training
                self.student.eval()
                student_classes = self.student(x[:1]).shape[1]
                self.student.train(was_training)
                if logits.shape[1] != student_classes:
                    raise ValueError(f"teacher and student must have the same classes: the "
                                     f"teacher outputs {logits.shape[1]}, the student "
                                     f"{student_classes}")
                self._classes_checked = True
        return logits


def _kl(target_probs: Tensor, logits: Tensor) -> Tensor:
    """KL(target || softmax(logits)), summed over classes, averaged over the batch."""
    return F.kl_div(logits.log_softmax(1), target_probs, reduction="batchmean")


class ARD(Distiller):
    """Adversarially Robust Distillation (see the module docstring).

    Args:
        temperature: T (ARD: 30).
        alpha: weight of the distillation term (1.0 turns the clean cross-entropy off).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, attack: AttackConfig, *,
                 temperature: float = 30.0, alpha: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(student, teacher, attack, generator)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature, self.alpha = temperature, alpha

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Terms ``kd`` (adversarial distillation) and ``ce`` (clean cross-entropy)."""
        a, t = self.attack, self.temperature
        adv = pgd(self.student, x, y, a.eps, a.alpha, a.steps, random_start=True,
                  generator=self.generator)
        teacher = self.teacher_logits(x)
        adv_logits = self.student(adv)
        terms = {"kd": self.alpha * t * t * _kl((teacher / t).softmax(1), adv_logits / t)}
        if self.alpha < 1:
            terms["ce"] = (1 - self.alpha) * F.cross_entropy(self.student(x), y)
        return terms


class RSLAD(Distiller):
    """Robust Soft Label Adversarial Distillation (see the module docstring)."""

    def soft_labels(self, teacher: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(adversarial-term, natural-term) teacher probabilities, each float (B, K)."""
        probs = teacher.softmax(1)
        return probs, probs

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Terms ``adv_kl`` and ``nat_kl`` (already weighted 5/6 and 1/6)."""
        a = self.attack
        teacher = self.teacher_logits(x)
        adv_target, nat_target = self.soft_labels(teacher, y)
        adv = pgd(self.student, x, y, a.eps, a.alpha, a.steps, random_start="normal",
                  loss="kl", target_probs=adv_target, generator=self.generator)
        adv_logits, nat_logits = self.student(adv), self.student(x)
        self.observe(adv_logits, nat_logits, y)
        return {"adv_kl": _ADV_WEIGHT * _kl(adv_target, adv_logits),
                "nat_kl": _NAT_WEIGHT * _kl(nat_target, nat_logits)}

    def observe(self, adv_logits: Tensor, nat_logits: Tensor, y: Tensor) -> None:
        """Called with every batch's student outputs; RSLAD keeps no statistics."""


class ABSLD(RSLAD):
    """Anti-Bias Soft Label Distillation (see the module docstring).

    Args:
        num_classes: K.
        low, high: temperature bounds (the paper: 0.5 and 5).
        rate: temperature step (the paper: 0.1).
        decay_epochs: epochs after which the rate is multiplied by ``decay`` (the
            learning-rate milestones).
        decay: the rate's decay factor (the paper: 0.1).
        official_product: divide both labels by ``tau_adv[y] * tau_nat[y]`` as the official
            code does, instead of each by its own temperature.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, attack: AttackConfig,
                 num_classes: int, *, low: float = 0.5, high: float = 5.0, rate: float = 0.1,
                 decay_epochs: Sequence[int] = (), decay: float = 0.1,
                 official_product: bool = False,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(student, teacher, attack, generator)
        self.adv_temperatures = ClassTemperatures(num_classes, 1.0, low, high, rate)
        self.nat_temperatures = ClassTemperatures(num_classes, 1.0, low, high, rate)
        self.decay_epochs, self.decay = frozenset(decay_epochs), decay
        self.official_product = official_product
        self._risk = torch.zeros(2, num_classes, dtype=torch.float64)

    def soft_labels(self, teacher: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        adv_tau = self.adv_temperatures.values.to(teacher)[y][:, None]
        nat_tau = self.nat_temperatures.values.to(teacher)[y][:, None]
        if self.official_product:
            adv_tau = nat_tau = adv_tau * nat_tau
        return (teacher / adv_tau).softmax(1), (teacher / nat_tau).softmax(1)

    def observe(self, adv_logits: Tensor, nat_logits: Tensor, y: Tensor) -> None:
        """Add this batch's per-class summed cross-entropy (adversarial, clean) to the risk."""
        with torch.no_grad():
            for row, logits in enumerate((adv_logits, nat_logits)):
                losses = F.cross_entropy(logits, y, reduction="none").double().cpu()
                self._risk[row].index_add_(0, y.cpu(), losses)

    def epoch_end(self, epoch: int) -> dict[str, float]:
        """Update both temperature vectors from the epoch's risk; decay the rate if due.

        Under data-parallel training each rank has summed the risk of its shards; the sum over
        ranks is the risk of the whole epoch, so every rank makes the same update.
        """
        all_reduce_sum(self._risk)
        self.adv_temperatures.update(self._risk[0])
        self.nat_temperatures.update(self._risk[1])
        self._risk.zero_()
        if epoch in self.decay_epochs:
            self.adv_temperatures.decay(self.decay)
            self.nat_temperatures.decay(self.decay)
        return {"tau_adv_min": float(self.adv_temperatures.values.min()),
                "tau_adv_max": float(self.adv_temperatures.values.max()),
                "tau_nat_min": float(self.nat_temperatures.values.min()),
                "tau_nat_max": float(self.nat_temperatures.values.max())}

    def extra_state(self) -> dict[str, Any]:
        """Temperatures, the risk gathered so far and the attack generator, for a resumable
        checkpoint."""
        return {**super().extra_state(), "adv": self.adv_temperatures.state_dict(),
                "nat": self.nat_temperatures.state_dict(), "risk": self._risk.clone()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`extra_state`."""
        super().load_extra_state(state)
        self.adv_temperatures.load_state_dict(state["adv"])
        self.nat_temperatures.load_state_dict(state["nat"])
        self._risk = state["risk"].clone()
