"""Experts: models trained on the full training set whose early checkpoints label a distilled set.

An expert is an ordinary :func:`~softlabels.engine.fit` run with ``checkpoint_every=1``, so its
weights after every epoch are kept as ``epoch_XXXX.pt``. Early on, where the labels change
fastest, it can also keep several checkpoints per epoch (``epoch_0000.5000.pt`` is half-way
through the first epoch). :class:`Experts` gathers one such run per seed and turns a checkpoint
epoch into logits for any images, averaging the logits of the experts when there are several
(the ensemble of Qin et al.).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .._checks import check_float, check_ndim, check_positive_int
from .._io import torch_save
from ..distributed import world
from ..engine import (
    TrainConfig,
    epoch_checkpoint_name,
    fit,
    load_epoch_checkpoint,
    predict_logits,
    saved_checkpoint_epochs,
)
from ..runtime import build_seeded

__all__ = ["Experts", "early_checkpoint_epochs", "train_experts"]

ModelBuilder = Callable[[int], nn.Module]
AugmentFn = Callable[[Tensor, torch.Generator], Tensor]


def train_experts(build_model: ModelBuilder, images: Tensor, labels: Tensor,
                  config: TrainConfig, seeds: Sequence[int], folder: str | os.PathLike[str],
                  *, augment: AugmentFn | None = None, device: str | torch.device = "auto",
                  checkpoints_per_epoch: int = 1, early_epochs: int = 0,
                  logger: str | None = None, pixels: bool = True,
                  show_progress: bool | None = None) -> Experts:
    """Train (or resume) one expert per seed, keeping its weights after every epoch.

    Args:
        build_model: ``build_model(seed) -> nn.Module`` mapping (B, C, H, W) to (B, K) logits;
            called with the global torch RNG seeded with ``seed`` (and restored after).
        images: float (N, C, H, W) in [0, 1], the expert's training set.
        labels: int64 (N,) hard labels (checked by :func:`~softlabels.engine.fit`).
        config: the recipe; ``checkpoint_every`` is forced to 1 and ``seed`` to each seed.
        seeds: one distinct seed per expert.
        folder: the experts' home; expert ``s`` lives in ``folder/seed{s}``. A finished expert
            is not retrained; an interrupted one resumes from its ``last.pt``.
        augment: batch augmentation (e.g. DSA), as for :func:`~softlabels.engine.fit`.
        device: where to train.
        checkpoints_per_epoch: during the first ``early_epochs`` epochs, keep this many
            checkpoints per epoch, evenly spaced in optimizer steps: with 4, epoch 1 also
            leaves 0.25, 0.5 and 0.75 (after steps ``round(k * steps / 4)``). 1 keeps only
            whole epochs.
        early_epochs: how many leading epochs get the extra checkpoints.
        logger: ``"tensorboard"`` also logs each expert's history (see
            :func:`~softlabels.engine.fit`).
        pixels: the images are pixels in [0, 1] (False for ZCA-whitened ones; see ``fit``).
        show_progress: see :func:`softlabels.progress.progress`.

    Returns:
        :class:`Experts` over the trained runs.

    Raises:
        ValueError: a finished expert in ``folder`` lacks the early checkpoints asked for (it
            was trained with fewer; use a new folder), or an epoch has fewer optimizer steps
            than ``checkpoints_per_epoch``.
    """
    seed_list = _check_seeds(seeds)
    check_float("images", images)
    check_ndim("images", images, (4,))
    check_positive_int("checkpoints_per_epoch", checkpoints_per_epoch)
    if isinstance(early_epochs, bool) or not isinstance(early_epochs, int) or early_epochs < 0:
        raise ValueError(f"early_epochs must be an int >= 0, got {early_epochs!r}")
    early = early_checkpoint_epochs(checkpoints_per_epoch, min(early_epochs, config.epochs))
    root = Path(folder)
    for seed in seed_list:
        recipe = dataclasses.replace(config, checkpoint_every=1, seed=seed)
        run_dir = root / f"seed{seed}"
        if (run_dir / epoch_checkpoint_name(recipe.epochs)).is_file() and \
                (run_dir / "last.pt").is_file():
            missing = [e for e in early if not (run_dir / epoch_checkpoint_name(e)).is_file()]
            if missing:
                raise ValueError(
                    f"expert {str(run_dir)!r} is finished but lacks the early checkpoints "
                    f"{missing}: it was trained with fewer checkpoints per epoch; train into a "
                    f"new folder")
            continue
        model = build_seeded(build_model, seed)
        hooks = [_EarlyCheckpoints(model, run_dir, checkpoints_per_epoch, early_epochs)] \
            if early else []
        fit(model, images, labels, recipe, augment=augment, hooks=hooks,
            checkpoint_dir=run_dir, device=device, logger=logger, pixels=pixels,
            show_progress=show_progress)
    return Experts(build_model, root, seed_list, device=device)


def early_checkpoint_epochs(checkpoints_per_epoch: int, early_epochs: int) -> list[float]:
    """The fractional epochs :func:`train_experts` saves, e.g. (2, 2) -> [0.5, 1.5]."""
    return [_fraction(epoch, k, checkpoints_per_epoch) for epoch in range(1, early_epochs + 1)
            for k in range(1, checkpoints_per_epoch)]


def _fraction(epoch: int, k: int, per_epoch: int) -> float:
    """Epoch value of the k-th of ``per_epoch`` checkpoints inside 1-based ``epoch``."""
    return round(epoch - 1 + k / per_epoch, 4)  # 4 decimals, as in the file names


class _EarlyCheckpoints:
    """:func:`~softlabels.engine.fit` hook saving the weights inside the early epochs.

    A resumed run redoes an interrupted epoch from its start with the same data order, so it
    writes the same checkpoints again.
    """

    def __init__(self, model: nn.Module, folder: Path, per_epoch: int, early_epochs: int
                 ) -> None:
        self.model, self.folder = model, folder
        self.per_epoch, self.early_epochs = per_epoch, early_epochs

    def batch_end(self, epoch: int, step: int, steps: int) -> None:
        if epoch > self.early_epochs:
            return
        if steps < self.per_epoch:
            raise ValueError(f"cannot keep {self.per_epoch} checkpoints per epoch: an epoch "
                             f"has only {steps} optimizer steps")
        for k in range(1, self.per_epoch):
            if step + 1 == max(1, round(k * steps / self.per_epoch)) and world().is_main:
                state = {name: value.detach().cpu() for name, value in
                         self.model.state_dict().items()}
                torch_save(self.folder / epoch_checkpoint_name(
                    _fraction(epoch, k, self.per_epoch)), state)


class Experts:
    """Checkpointed experts, one folder of ``epoch_XXXX.pt`` files per seed.

    Args:
        build_model: ``build_model(seed) -> nn.Module`` with the experts' architecture.
        folder: holds ``seed{s}/epoch_XXXX.pt`` for each seed.
        seeds: the experts to use; several are averaged (logits mean) as an ensemble.
        device: where predictions run.
    """

    def __init__(self, build_model: ModelBuilder, folder: str | os.PathLike[str],
                 seeds: Sequence[int], *, device: str | torch.device = "auto") -> None:
        self.build_model = build_model
        self.folder = Path(folder)
        self.seeds = _check_seeds(seeds)
        self.device = device

    def saved_epochs(self) -> list[float]:
        """Epochs saved by every expert (0 = initial weights; whole epochs as ``int``)."""
        common: set[float] | None = None
        for seed in self.seeds:
            found = set(saved_checkpoint_epochs(self.folder / f"seed{seed}"))
            common = found if common is None else common & found
        return sorted(common or ())

    def model(self, seed: int, epoch: float) -> nn.Module:
        """Expert ``seed`` with its weights after ``epoch``.

        Raises:
            FileNotFoundError: that epoch was not saved; the message lists the saved ones.
        """
        model = self.build_model(seed)
        model.load_state_dict(load_epoch_checkpoint(self.folder / f"seed{seed}", epoch))
        return model

    def logits(self, epoch: float, images: Tensor, batch_size: int = 512) -> Tensor:
        """Mean over experts of their logits after ``epoch``.

        Args:
            epoch: a saved epoch (see :meth:`saved_epochs`).
            images: float (N, C, H, W) in [0, 1].
            batch_size: images per forward pass.

        Returns:
            float32 (N, K) on the CPU.
        """
        check_positive_int("batch_size", batch_size)
        outputs = [predict_logits(self.model(seed, epoch), images, batch_size=batch_size,
                                  device=self.device) for seed in self.seeds]
        return torch.stack(outputs).mean(0)


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    values = list(seeds)
    if not values:
        raise ValueError("seeds must hold at least one seed")
    for seed in values:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seeds must be ints >= 0, got {seed!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"seeds must be distinct, got {values}")
    return values
