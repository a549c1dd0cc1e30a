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

Options that match the official code (each defaults to this library's earlier behaviour):
``kl_reduction="mean"`` averages every KL over the B x K elements (``KLDivLoss()`` and the
elementwise mean of ABSLD's code, i.e. batchmean / K) instead of ``"batchmean"``; ABSLD's
``risk="sum"`` (official) or ``"mean"`` combines a class's cross-entropies over the epoch, and
``rate_decay="before"`` (official) decays the rate before the epoch's temperature update
instead of ``"after"`` it. A :class:`~softlabels.robust.teacher_cache.TeacherLogitCache` spares
the teacher's forward pass: the distiller then reads the teacher's logits of each (augmented)
image from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_range, check_temperature
from ..attacks import pgd
from ..labels import classwise_soften
from ..losses import kd_loss
from ..runtime import follow_device
from .class_stats import CLASS_REDUCTIONS, ClassTally
from .teacher_cache import TeacherLogitCache
from .temperatures import ClassTemperatures
from .training import AttackConfig, GeneratorState

__all__ = ["ABSLD", "ARD", "KL_REDUCTIONS", "RATE_DECAYS", "RSLAD", "Distiller"]

#: ``batchmean``: KL summed over classes, averaged over the batch; ``mean``: averaged over the
#: B x K elements (the official code of ARD, Fair-ARD, RSLAD and ABSLD), = batchmean / K.
KL_REDUCTIONS = ("batchmean", "mean")
#: When ABSLD's rate decays at a learning-rate decay: ``after`` that epoch's temperature
#: update, or ``before`` it (the official code).
RATE_DECAYS = ("after", "before")

# RSLAD's weights of the adversarial and natural terms.
_ADV_WEIGHT, _NAT_WEIGHT = 5.0 / 6.0, 1.0 / 6.0


class Distiller(GeneratorState, nn.Module):
    """Student + frozen teacher; subclasses define :meth:`forward` ``(x, y) -> terms``.

    Args:
        student: maps (B, C, H, W) in [0, 1] to (B, K) logits; trained.
        teacher: the same input to (B, K) logits; frozen and kept in eval mode.
        attack: the PGD used to build the student's adversarial examples.
        generator: draws the attacks' random starts (reproducible training).
        kl_reduction: one of :data:`KL_REDUCTIONS`.
        teacher_cache: the teacher's logits of every augmented training image; training then
            gets (B, 2) int64 targets ``(label, position)`` (:meth:`TeacherLogitCache.targets`)
            and ``teacher_cache.augment`` as its augmentation.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, attack: AttackConfig,
                 generator: torch.Generator | None = None, *, kl_reduction: str = "batchmean",
                 teacher_cache: TeacherLogitCache | None = None) -> None:
        super().__init__()
        self.student, self.teacher, self.attack = student, teacher, attack
        self.generator = generator
        self.kl_reduction = check_choice("kl_reduction", kl_reduction, KL_REDUCTIONS)
        self.teacher_cache = teacher_cache
        self._classes_checked = self._cache_checked = False
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> Distiller:
        """Set the student's mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def objective(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The :func:`~softlabels.engine.fit` objective; ``model`` must be the student.

        ``y``: int64 (B,) labels, or (B, 2) ``(label, position)`` with a teacher cache.
        """
        if model is not self.student:
            raise ValueError("train the distiller's own student: fit(distiller.student, ...)")
        if self.teacher_cache is None:
            return self(x, y)
        labels, cached = self.teacher_cache.lookup(y)
        if not self._cache_checked:  # once per run: the cache holds what the teacher says
            self.teacher_cache.check_against(self.teacher_logits(x), cached)
            self._cache_checked = True
        return self(x, labels, cached.to(x.device))

    def kl(self, target_probs: Tensor, logits: Tensor, weights: Tensor | None = None
           ) -> Tensor:
        """KL(target || softmax(logits)) under :attr:`kl_reduction`.

        Args:
            target_probs: float (B, K) soft targets.
            logits: float (B, K) student logits.
            weights: optional float (B,) per-example weights (Fair-ARD's class weights).
        """
        per_example = F.kl_div(logits.log_softmax(1), target_probs, reduction="none").sum(1)
        return self.batch_loss(per_example, logits.shape[1], weights)

    def batch_loss(self, per_example: Tensor, num_classes: int,
                   weights: Tensor | None = None) -> Tensor:
        """The batch's loss from float (B,) per-example KLs (each summed over the K =
        ``num_classes`` classes) under :attr:`kl_reduction`, optionally weighted by float
        (B,) ``weights``."""
        loss = (per_example if weights is None else weights * per_example).mean()
        # Dividing by K gives KLDivLoss's elementwise mean over the B x K terms.
        return loss / num_classes if self.kl_reduction == "mean" else loss

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


class ARD(Distiller):
    """Adversarially Robust Distillation (see the module docstring).

    Args:
        temperature: T (ARD: 30).
        alpha: weight of the distillation term (1.0 turns the clean cross-entropy off).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, attack: AttackConfig, *,
                 temperature: float = 30.0, alpha: float = 1.0,
                 generator: torch.Generator | None = None, kl_reduction: str = "batchmean",
                 teacher_cache: TeacherLogitCache | None = None) -> None:
        super().__init__(student, teacher, attack, generator, kl_reduction=kl_reduction,
                         teacher_cache=teacher_cache)
        # T**2 scales the loss: a T whose square under- or overflows would silently zero or
        # blow up the distillation term.
        check_temperature("temperature", temperature, squared=True)
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature, self.alpha = temperature, alpha

    def forward(self, x: Tensor, y: Tensor, teacher_out: Tensor | None = None
                ) -> dict[str, Tensor]:
        """Terms ``kd`` (adversarial distillation) and ``ce`` (clean cross-entropy).

        ``x`` float (B, C, H, W), ``y`` int64 (B,); ``teacher_out``: the teacher's float (B, K)
        logits of ``x`` when known (a cache), computed otherwise.
        """
        a, t = self.attack, self.temperature
        adv = pgd(self.attacked(y), x, y, a.eps, a.alpha, a.steps, random_start=True,
                  generator=self.generator)
        teacher = self.teacher_logits(x) if teacher_out is None else teacher_out
        weights = self.example_weights(y)
        adv_logits = self.student(adv)
        # kd_loss takes the KL in float64: at ARD's T = 30 float32 loses digits to T^2.
        kd = kd_loss(adv_logits, teacher, t, reduction="none")
        terms = {"kd": self.alpha * self.batch_loss(kd, adv_logits.shape[1], weights)}
        if self.alpha < 1:
            if weights is None:
                ce = F.cross_entropy(self.student(x), y)
            else:
                ce = (weights * F.cross_entropy(self.student(x), y, reduction="none")).mean()
            terms["ce"] = (1 - self.alpha) * ce
        return terms

    def attacked(self, y: Tensor) -> nn.Module:
        """The model PGD attacks for labels ``y`` (Fair-ARD wraps the student to count)."""
        return self.student

    def example_weights(self, y: Tensor) -> Tensor | None:
        """float (B,) weights of the examples of labels ``y``; None: all equal (ARD)."""
        return None


class RSLAD(Distiller):
    """Robust Soft Label Adversarial Distillation (see the module docstring)."""

    def soft_labels(self, teacher: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(adversarial-term, natural-term) teacher probabilities, each float (B, K)."""
        probs = teacher.softmax(1)
        return probs, probs

    def forward(self, x: Tensor, y: Tensor, teacher_out: Tensor | None = None
                ) -> dict[str, Tensor]:
        """Terms ``adv_kl`` and ``nat_kl`` (already weighted 5/6 and 1/6); arguments as
        :meth:`ARD.forward`."""
        a = self.attack
        teacher = self.teacher_logits(x) if teacher_out is None else teacher_out
        adv_target, nat_target = self.soft_labels(teacher, y)
        adv = pgd(self.student, x, y, a.eps, a.alpha, a.steps, random_start="normal",
                  loss="kl", target_probs=adv_target, generator=self.generator)
        adv_logits, nat_logits = self.student(adv), self.student(x)
        self.observe(adv_logits, nat_logits, y)
        return {"adv_kl": _ADV_WEIGHT * self.kl(adv_target, adv_logits),
                "nat_kl": _NAT_WEIGHT * self.kl(nat_target, nat_logits)}

    def observe(self, adv_logits: Tensor, nat_logits: Tensor, y: Tensor) -> None:
        """Called with every batch's student outputs; RSLAD keeps no statistics."""


class ABSLD(RSLAD):
    """Anti-Bias Soft Label Distillation (see the module docstring).

    Args:
        num_classes: K.
        low, high: temperature bounds (the paper: 0.5 and 5).
        rate: temperature step eta > 0 (the paper: 0.1).
        decay_epochs: epochs after which the rate is multiplied by ``decay`` (the
            learning-rate milestones).
        decay: the rate's decay factor (the paper: 0.1).
        official_product: divide both labels by ``tau_adv * tau_nat`` as the official
            code does, instead of each by its own temperature.
        shared: one temperature vector, updated from the adversarial risk, for both terms
            (an ablation of the paper's two).
        risk: how a class's cross-entropies combine over the epoch, one of
            :data:`~softlabels.robust.class_stats.CLASS_REDUCTIONS` (official: ``sum``).
        rate_decay: one of :data:`RATE_DECAYS` (official: ``before``).
        kl_reduction, teacher_cache, generator: as :class:`Distiller`.

    Attributes:
        risk_history: per epoch, the ``[adversarial, natural]`` per-class risks (K floats
            each) the temperatures were updated from.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, attack: AttackConfig,
                 num_classes: int, *, low: float = 0.5, high: float = 5.0, rate: float = 0.1,
                 decay_epochs: Sequence[int] = (), decay: float = 0.1,
                 official_product: bool = False, shared: bool = False, risk: str = "sum",
                 rate_decay: str = "after", kl_reduction: str = "batchmean",
                 teacher_cache: TeacherLogitCache | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(student, teacher, attack, generator, kl_reduction=kl_reduction,
                         teacher_cache=teacher_cache)
        if not rate > 0:
            raise ValueError(f"rate (eta) must be > 0, got {rate} (a zero rate keeps every "
                             "temperature at 1: that is RSLAD)")
        if official_product and shared:
            raise ValueError("official_product divides by the product of the adversarial and "
                             "the natural temperature vectors, but shared=True keeps only one "
                             "vector: choose one of them")
        self.risk = check_choice("risk", risk, CLASS_REDUCTIONS)
        self.rate_decay = check_choice("rate_decay", rate_decay, RATE_DECAYS)
        self.adv_temperatures = ClassTemperatures(num_classes, 1.0, low, high, rate)
        self.nat_temperatures = (self.adv_temperatures if shared
                                 else ClassTemperatures(num_classes, 1.0, low, high, rate))
        for epoch in decay_epochs:
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
                raise ValueError(f"decay_epochs must hold epoch numbers >= 0, got "
                                 f"{list(decay_epochs)}")
        self.decay_epochs = frozenset(decay_epochs)
        self.decay = check_range("decay", decay, 0.0, math.inf)
        self.official_product, self.shared = official_product, shared
        self._tally = ClassTally(2, num_classes)
        self.risk_history: list[list[list[float]]] = []

    def soft_labels(self, teacher: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        adv_tau, nat_tau = self.adv_temperatures.values, self.nat_temperatures.values
        if self.official_product:
            adv_tau = nat_tau = adv_tau * nat_tau
        return classwise_soften(teacher, y, adv_tau), classwise_soften(teacher, y, nat_tau)

    def observe(self, adv_logits: Tensor, nat_logits: Tensor, y: Tensor) -> None:
        """Add this batch's per-example cross-entropy (adversarial, clean) to the risk."""
        with torch.no_grad():
            self._tally.add(y, F.cross_entropy(adv_logits, y, reduction="none"),
                            F.cross_entropy(nat_logits, y, reduction="none"))

    def _vectors(self) -> list[ClassTemperatures]:
        return [self.adv_temperatures] if self.shared else [self.adv_temperatures,
                                                             self.nat_temperatures]

    def _decay_rates(self) -> None:
        for vector in self._vectors():
            vector.decay(self.decay)

    def epoch_end(self, epoch: int) -> dict[str, float]:
        """Update the temperatures from the epoch's risk; decay the rate if due (before or
        after the update, as :attr:`rate_decay` says).

        Under data-parallel training the risk is summed over the ranks first
        (:class:`~softlabels.robust.class_stats.ClassTally`), so every rank makes the same
        update.
        """
        risk, _ = self._tally.epoch_values(self.risk)
        self.risk_history.append(risk.tolist())
        decays = epoch in self.decay_epochs
        if decays and self.rate_decay == "before":
            self._decay_rates()
        # A shared vector learns from the adversarial risk (the first row) alone.
        for vector, row in zip(self._vectors(), risk, strict=False):
            vector.update(row)
        if decays and self.rate_decay == "after":
            self._decay_rates()
        return {"tau_adv_min": float(self.adv_temperatures.values.min()),
                "tau_adv_max": float(self.adv_temperatures.values.max()),
                "tau_nat_min": float(self.nat_temperatures.values.min()),
                "tau_nat_max": float(self.nat_temperatures.values.max())}

    def extra_state(self) -> dict[str, Any]:
        """Temperatures, the risk gathered so far, its history and the attack generator, for
        a resumable checkpoint."""
        return {**super().extra_state(), "adv": self.adv_temperatures.state_dict(),
                "nat": self.nat_temperatures.state_dict(), "risk": self._tally.sums.clone(),
                "count": self._tally.counts.clone(),
                "risk_history": [list(r) for r in self.risk_history]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`extra_state` (an older checkpoint lacks counts and history)."""
        super().load_extra_state(state)
        self.adv_temperatures.load_state_dict(state["adv"])
        if not self.shared:
            self.nat_temperatures.load_state_dict(state["nat"])
        self._tally.load_state_dict({"sums": state["risk"], "counts": state.get("count")})
        self.risk_history = [list(r) for r in state.get("risk_history", [])]
