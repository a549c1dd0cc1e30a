"""``fit``'s checkpoints: the resumable ``last.pt`` and the per-epoch weights.

``last.pt`` holds everything a resumed run needs to continue exactly (model, optimiser,
schedule, loss scaler, the data-order generator, the global RNGs, the history and the hooks'
state), plus a fingerprint of the run (recipe and data shape) so that a checkpoint is never
resumed by a different run. ``epoch_XXXX.pt`` files hold weights only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._io import torch_load, torch_save
from .config import TrainConfig

__all__ = ["LAST", "epoch_checkpoint_name", "load_epoch_checkpoint", "restore_state",
           "save_state", "saved_checkpoint_epochs"]

_FORMAT = "softlabels.fit_checkpoint"
LAST = "last.pt"


def epoch_checkpoint_name(epoch: float) -> str:
    """File name of the weights after ``epoch``: ``epoch_0002.pt``, or ``epoch_0001.5000.pt``
    for a checkpoint inside an epoch (1.5 = half-way through the second epoch)."""
    if isinstance(epoch, bool) or not isinstance(epoch, int | float) or not epoch >= 0:
        raise ValueError(f"epoch must be a number >= 0, got {epoch!r}")
    if float(epoch).is_integer():
        return f"epoch_{int(epoch):04d}.pt"
    return f"epoch_{epoch:09.4f}.pt"


def saved_checkpoint_epochs(checkpoint_dir: str | os.PathLike[str]) -> list[float]:
    """Epochs with weights in ``checkpoint_dir``, ascending; whole epochs as ``int``."""
    epochs: list[float] = []
    for path in Path(checkpoint_dir).glob("epoch_*.pt"):
        try:
            value = float(path.stem.removeprefix("epoch_"))
        except ValueError:  # a file of the user's, such as epoch_best.pt
            continue
        epochs.append(int(value) if value.is_integer() else value)
    return sorted(epochs)


def load_epoch_checkpoint(checkpoint_dir: str | os.PathLike[str], epoch: float
                          ) -> dict[str, Tensor]:
    """Weights saved after ``epoch`` (0 = initial weights; a fraction = inside an epoch).

    Raises:
        FileNotFoundError: that epoch was not saved; the message lists the saved epochs.
    """
    folder = Path(checkpoint_dir)
    path = folder / epoch_checkpoint_name(epoch)
    if not path.is_file():
        saved = saved_checkpoint_epochs(folder)
        raise FileNotFoundError(f"no checkpoint for epoch {epoch} in {str(folder)!r}; saved "
                                f"epochs: {saved if saved else 'none'}")
    return torch_load(path)


def save_state(folder: Path, epoch: int, config: TrainConfig, fingerprint: dict[str, Any],
               model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: Any,
               generator: torch.Generator, history: list[dict[str, float]],
               hooks: Sequence[Any]) -> None:
    """Write the epoch's weights (when due) and then ``last.pt``."""
    # The epoch file first: if the process dies between the two writes, the resumed run
    # redoes this epoch and writes both again, instead of skipping a file for good.
    if config.checkpoint_every and epoch % config.checkpoint_every == 0:
        torch_save(folder / epoch_checkpoint_name(epoch), model.state_dict())
    torch_save(folder / LAST, {
        "format": _FORMAT,
        "fingerprint": fingerprint,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "generator": generator.get_state(),
        # Dropout and other modules draw from the global generators (CPU and, on a GPU, CUDA).
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": history,
        "hooks": [hook.extra_state() if hasattr(hook, "extra_state") else None
                  for hook in hooks],
    })


def restore_state(path: Path, fingerprint: dict[str, Any], model: nn.Module,
                  optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: Any,
                  generator: torch.Generator, hooks: Sequence[Any]
                  ) -> tuple[int, list[dict[str, float]]]:
    """Load ``last.pt`` into the run's objects; returns (epochs done, history).

    Raises:
        ValueError: the file is not a ``fit`` checkpoint, belongs to another run (the message
            names what differs), holds another number of hooks or a non-finite loss.
    """
    state = torch_load(path)
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"{str(path)!r} is not a softlabels training checkpoint")
    changed = _differences(state["fingerprint"], fingerprint)
    if changed:
        raise ValueError(
            f"cannot resume from {str(path)!r}: it was written for a different run (differs in "
            f"{changed}); use a new checkpoint folder or resume=False")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    generator.set_state(state["generator"])
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    cuda_states = state.get("cuda_rng") or []
    if cuda_states and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    saved_hooks = state.get("hooks") or [None] * len(hooks)
    if len(saved_hooks) != len(hooks):
        raise ValueError(f"cannot resume from {str(path)!r}: it holds the state of "
                         f"{len(saved_hooks)} hooks, this run has {len(hooks)}")
    for hook, hook_state in zip(hooks, saved_hooks, strict=True):
        if hook_state is not None and hasattr(hook, "load_extra_state"):
            hook.load_extra_state(hook_state)
    history = [dict(h) for h in state["history"]]
    if any(not math.isfinite(h["loss"]) for h in history):
        raise ValueError(f"{str(path)!r} records a non-finite loss; it cannot be resumed")
    return int(state["epoch"]), history


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Fingerprint entries that differ; a recipe field a checkpoint predates counts as equal
    while it holds its default (an older checkpoint resumes after an upgrade)."""
    defaults = TrainConfig().to_dict()
    changed = sorted(k for k in set(saved) | set(current)
                     if k != "config" and saved.get(k) != current.get(k))
    old, new = saved.get("config", {}), current.get("config", {})
    changed += sorted(f"config.{k}" for k in set(old) | set(new)
                      if old.get(k, defaults.get(k)) != new.get(k, defaults.get(k)))
    return changed
