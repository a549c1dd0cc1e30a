"""Experts: models trained on the full training set whose early checkpoints label a distilled set.

An expert is an ordinary :func:`~softlabels.engine.fit` run with ``checkpoint_every=1``, so its
weights after every epoch are kept as ``epoch_XXXX.pt``. :class:`Experts` gathers one such run
per seed and turns a checkpoint epoch into logits for any images, averaging the logits of the
experts when there are several (the ensemble of Qin et al.).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .._checks import check_float, check_ndim, check_positive_int
from ..engine import TrainConfig, fit, load_epoch_checkpoint, predict_logits
from ..runtime import build_seeded

__all__ = ["Experts", "train_experts"]

ModelBuilder = Callable[[int], nn.Module]
AugmentFn = Callable[[Tensor, torch.Generator], Tensor]


def train_experts(build_model: ModelBuilder, images: Tensor, labels: Tensor,
                  config: TrainConfig, seeds: Sequence[int], folder: str | os.PathLike[str],
                  *, augment: AugmentFn | None = None, device: str | torch.device = "auto",
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
        show_progress: see :func:`softlabels.progress.progress`.

    Returns:
        :class:`Experts` over the trained runs.
    """
    seed_list = _check_seeds(seeds)
    check_float("images", images)
    check_ndim("images", images, (4,))
    root = Path(folder)
    for seed in seed_list:
        recipe = dataclasses.replace(config, checkpoint_every=1, seed=seed)
        run_dir = root / f"seed{seed}"
        if (run_dir / f"epoch_{recipe.epochs:04d}.pt").is_file() and \
                (run_dir / "last.pt").is_file():
            continue
        fit(build_seeded(build_model, seed), images, labels, recipe, augment=augment,
            checkpoint_dir=run_dir, device=device, show_progress=show_progress)
    return Experts(build_model, root, seed_list, device=device)


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

    def saved_epochs(self) -> list[int]:
        """Epochs saved by every expert (0 = initial weights), ascending."""
        common: set[int] | None = None
        for seed in self.seeds:
            found = {int(p.stem.split("_")[1]) for p in (self.folder / f"seed{seed}").glob(
                "epoch_*.pt")}
            common = found if common is None else common & found
        return sorted(common or ())

    def model(self, seed: int, epoch: int) -> nn.Module:
        """Expert ``seed`` with its weights after ``epoch``.

        Raises:
            FileNotFoundError: that epoch was not saved; the message lists the saved ones.
        """
        model = self.build_model(seed)
        model.load_state_dict(load_epoch_checkpoint(self.folder / f"seed{seed}", epoch))
        return model

    def logits(self, epoch: int, images: Tensor, batch_size: int = 512) -> Tensor:
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
