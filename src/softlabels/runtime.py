"""Seeding and device selection."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ._checks import check_choice

__all__ = ["DEVICE_CHOICES", "build_seeded", "resolve_device", "seed_everything"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a CPU ``torch.Generator`` seeded the same.

    Library code draws from explicit generators; seeding the global state as well makes
    model initialisation (which uses the global torch RNG) reproducible.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def follow_device(module: nn.Module, like: Tensor) -> nn.Module:
    """Move ``module`` (e.g. a frozen teacher) to ``like``'s device if its parameters are elsewhere.

    Training code moves the student to the chosen device; a teacher held beside it follows its
    inputs here, so that a recipe written for the CPU runs unchanged on a GPU.
    """
    parameter = next(module.parameters(), None)
    if parameter is not None and parameter.device != like.device:
        module.to(like.device)
    return module


def build_seeded(build_model: Callable[[int], nn.Module], seed: int) -> nn.Module:
    """``build_model(seed)`` with the global torch RNG seeded by ``seed`` and restored after.

    A model's initialisation draws from the global RNG: seeding it per call makes model
    ``seed`` the same whoever builds it, and restoring it leaves the caller's RNG untouched.

    Raises:
        TypeError: ``build_model`` did not return an ``nn.Module``.
    """
    # manual_seed reseeds every CUDA device too, so their states are forked as well.
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        model = build_model(seed)
    if not isinstance(model, nn.Module):
        raise TypeError(f"build_model({seed}) must return an nn.Module, got "
                        f"{type(model).__name__}")
    return model


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"`` or ``"cuda"`` (or a ``torch.device``) into a device.

    ``"auto"`` picks CUDA when available; asking for CUDA on a machine without it is an error
    rather than a silent fallback.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device)
    base = name.split(":", 1)[0]
    check_choice("device", base, DEVICE_CHOICES)
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available; use --device "
                         "cpu or auto")
    return torch.device(name)
