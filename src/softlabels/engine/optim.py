"""Optimiser and learning-rate schedule from a ``TrainConfig``."""

from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(params: list[nn.Parameter] | nn.Module,
                    config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over ``params`` (a module's parameters when given a module)."""
    parameters = list(params.parameters()) if isinstance(params, nn.Module) else list(params)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer,
                    config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-epoch schedule: cosine to zero, multi-step decay, or constant."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=config.resolved_milestones(), gamma=config.gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
