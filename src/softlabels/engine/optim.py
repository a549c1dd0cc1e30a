"""Optimiser and learning-rate schedule from a ``TrainConfig``."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_positive_int
from .config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]

_POLY_POWER = 0.9


def build_optimizer(params: list[nn.Parameter] | nn.Module,
                    config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over ``params`` (a module's parameters when given a module).

    With ``config.decay_norms`` False, parameters of one dimension (biases, normalisation
    weights) are a second group without weight decay.
    """
    parameters = list(params.parameters()) if isinstance(params, nn.Module) else list(params)
    groups: list[dict] = [{"params": parameters}]
    if not config.decay_norms:
        groups = [{"params": [p for p in parameters if p.ndim > 1]},
                  {"params": [p for p in parameters if p.ndim <= 1], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    steps_per_epoch: int = 1) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule; step it after every epoch, or after every optimiser step when
    ``config.per_step`` (then ``steps_per_epoch`` sets its length)."""
    check_positive_int("steps_per_epoch", steps_per_epoch)
    if config.per_step:
        total = config.epochs * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(config, step, total, steps_per_epoch))
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=config.resolved_milestones(), gamma=config.gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def lr_factor(config: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Multiplier of ``config.lr`` for optimiser step ``step`` of ``total``: a linear warm-up
    over ``config.warmup`` of the steps (never 0), then the schedule over the rest."""
    warm = round(config.warmup * total)
    if step < warm:
        return (step + 1) / (warm + 1)
    progress = (step - warm) / max(1, total - warm)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.schedule == "poly":
        return (1.0 - progress) ** _POLY_POWER
    if config.schedule == "step":
        passed = sum(step >= m * steps_per_epoch for m in config.resolved_milestones())
        return config.gamma ** passed
    return 1.0
