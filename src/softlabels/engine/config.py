"""Training hyperparameters as one validated dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .._checks import (
    check_choice,
    check_positive,
    check_positive_int,
    check_range,
    check_seed,
)

__all__ = ["OPTIMIZERS", "PRECISIONS", "SCHEDULES", "SCHEDULE_UNITS", "TrainConfig"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant", "poly")
#: When the learning rate changes: after every ``epoch`` or after every optimiser ``step``.
SCHEDULE_UNITS = ("epoch", "step")
#: Autocast precisions: ``fp32`` (none), ``bf16`` (CPU or CUDA), ``fp16`` (CUDA, loss-scaled).
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """How to train one model.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        optimizer: ``"sgd"`` (Nesterov off, momentum) or ``"adamw"``.
        lr: initial learning rate.
        momentum: SGD momentum (ignored by AdamW).
        weight_decay: L2 (SGD) or decoupled (AdamW) weight decay.
        schedule: ``"cosine"`` (to zero over ``epochs``), ``"step"`` (x ``gamma`` at each
            milestone), ``"constant"`` or ``"poly"`` (``(1 - t)^0.9``, the segmentation
            recipe).
        schedule_unit: ``"epoch"`` (the rate changes after every epoch) or ``"step"`` (after
            every optimiser step, as segmentation recipes count iterations).
        warmup: share of training (0 to < 1) over which the rate rises linearly to ``lr``
            before the schedule starts; implies per-step updates.
        decay_norms: apply ``weight_decay`` to biases and normalisation weights too (False:
            to the weights of convolutions and linear layers only, the official recipe of the
            Jaccard metric losses).
        milestones: epochs at which the step schedule decays; empty means halfway and at
            three quarters.
        gamma: step-schedule decay factor.
        checkpoint_every: also keep the model weights after every N-th epoch as
            ``epoch_XXXX.pt`` (0 = only the resumable ``last.pt``).
        eval_every: evaluate on the held-out data every N epochs (0 = only at the end).
        seed: seeds the data order and augmentation.
        precision: autocast dtype of the forward pass and loss, one of :data:`PRECISIONS`
            (weights, optimiser state and the gradient step stay fp32).
        channels_last: NHWC memory layout for the model and its 4-D inputs (faster
            convolutions on recent GPUs).
        compile: ``torch.compile`` the model in place before training.
        save_interval: seconds between two writes of the resumable ``last.pt`` (and of
            ``history.csv``): after an epoch the state is written only when this much time has
            passed since the last write, or the epoch is the first or the last of the run or
            one whose weights ``checkpoint_every`` keeps. 0 = after every epoch. A killed run
            repeats at most this much training, exactly (a resume from any saved epoch gives
            the same result); not part of the checkpoint's fingerprint.
    """

    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] = field(default_factory=tuple)
    gamma: float = 0.1
    checkpoint_every: int = 0
    eval_every: int = 0
    seed: int = 0
    schedule_unit: str = "epoch"
    warmup: float = 0.0
    decay_norms: bool = True
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    save_interval: float = 0.0

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_positive("lr", self.lr)
        check_range("momentum", self.momentum, 0.0, 1.0)
        if self.momentum == 1.0:
            raise ValueError("momentum must be < 1 (1 never forgets a gradient), got 1.0")
        check_range("weight_decay", self.weight_decay, 0.0, float("inf"))
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("schedule_unit", self.schedule_unit, SCHEDULE_UNITS)
        check_range("warmup", self.warmup, 0.0, 1.0)
        if self.warmup >= 1.0:
            raise ValueError(f"warmup must be < 1 (a share of training), got {self.warmup}")
        for name in ("channels_last", "compile", "decay_norms"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        check_range("gamma", self.gamma, 0.0, 1.0)
        check_range("save_interval", self.save_interval, 0.0, float("inf"))
        if not isinstance(self.milestones, tuple | list) or not all(
            isinstance(m, int) and not isinstance(m, bool) for m in self.milestones
        ):
            # int(2.7) would silently decay at epoch 2.
            raise TypeError(f"milestones must be a sequence of int epochs, got "
                            f"{self.milestones!r}")
        object.__setattr__(self, "milestones", tuple(self.milestones))
        if len(set(self.milestones)) != len(self.milestones):
            raise ValueError(f"milestones must be distinct (a repeat decays twice), got "
                             f"{list(self.milestones)}")
        if any(not 0 < m < self.epochs for m in self.milestones):
            raise ValueError(f"milestones must lie in (0, epochs={self.epochs}), got "
                             f"{list(self.milestones)}")
        check_seed("seed", self.seed)
        for name in ("checkpoint_every", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (milestones as a list)."""
        data = asdict(self)
        data["milestones"] = list(self.milestones)
        return data

    @property
    def per_step(self) -> bool:
        """Whether the rate changes after every optimiser step rather than every epoch."""
        return self.schedule_unit == "step" or self.warmup > 0 or self.schedule == "poly"

    def resolved_milestones(self) -> list[int]:
        """The step schedule's milestones, defaulting to 1/2 and 3/4 of the epochs."""
        if self.milestones:
            return list(self.milestones)
        return sorted({max(1, self.epochs // 2), max(1, self.epochs * 3 // 4)})
