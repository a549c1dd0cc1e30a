"""Seeding and device selection."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

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


def build_seeded(build_model: Callable[[int], nn.Module], seed: int) -> nn.Module:
    """``build_model(seed)`` with the global torch RNG seeded by ``seed`` and restored after.

    A model's initialisation draws from the global RNG: seeding it per call makes model
    ``seed`` the same whoever builds it, and restoring it leaves the caller's RNG untouched.

    Raises:
        TypeError: ``build_model`` did not return an ``nn.Module``.
    """
    with torch.random.fork_rng(devices=[]):
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
