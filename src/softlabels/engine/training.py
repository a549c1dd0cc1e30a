"""``fit``: train a model on hard or soft targets, with resumable checkpoints.

The default objective is ``loss_fn(model(x), y)``. An ``objective(model, x, y)`` replaces it
when a step needs more than the model's output (a teacher's predictions, adversarial examples);
it may return a dict of named loss terms, which are summed and logged one by one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_float, check_ndim
from .._io import torch_load, torch_save
from ..labels import validate
from ..losses import soft_cross_entropy
from ..progress import progress
from ..runtime import resolve_device
from .config import TrainConfig
from .evaluation import EvalResult, evaluate
from .optim import build_optimizer, build_scheduler

__all__ = ["FitResult", "NonFiniteLossError", "epoch_checkpoint_name", "fit",
           "load_epoch_checkpoint", "saved_checkpoint_epochs"]

LossFn = Callable[[Tensor, Tensor], Tensor]
Objective = Callable[[nn.Module, Tensor, Tensor], "Tensor | Mapping[str, Tensor]"]
AugmentFn = Callable[[Tensor, torch.Generator], Tensor]
PairedAugmentFn = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]

_CHECKPOINT_FORMAT = "softlabels.fit_checkpoint"
_LAST = "last.pt"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        model: the trained model (the same object that was passed in).
        history: one dict per epoch: ``epoch``, ``loss``, ``lr``, ``seconds``, the mean of each
            named term an objective returns and, when evaluated, ``eval_accuracy``.
        final: evaluation after the last epoch (None without ``eval_data``).
        start_epoch: epochs already done when this call began (> 0 after a resume).
        seconds: wall time of this call.
    """

    model: nn.Module
    history: list[dict[str, float]]
    final: EvalResult | None
    start_epoch: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best_accuracy(self) -> float | None:
        """Highest ``eval_accuracy`` seen in ``history``, or None if never evaluated."""
        scores = [h["eval_accuracy"] for h in self.history if "eval_accuracy" in h]
        return max(scores) if scores else None


def fit(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    config: TrainConfig | None = None,
    *,
    loss_fn: LossFn = soft_cross_entropy,
    objective: Objective | None = None,
    augment: AugmentFn | None = None,
    paired_augment: PairedAugmentFn | None = None,
    eval_data: tuple[Tensor, Tensor] | None = None,
    hooks: Sequence[Any] = (),
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    device: str | torch.device = "auto",
    show_progress: bool | None = None,
) -> FitResult:
    """Train ``model`` on ``images`` with hard or soft ``targets``.

    Args:
        model: maps (B, C, H, W) images in [0, 1] to (B, K) logits, or (B, K, H, W) for
            segmentation; trained in place.
        images: float (N, C, H, W) in [0, 1].
        targets: per-image targets with a leading N: int64 hard labels (N,) or (N, H, W), or
            float soft labels (N, K) or (N, K, H, W). With a custom ``loss_fn`` or
            ``objective`` any float (N, ...) target is accepted (e.g. teacher logits for
            :func:`~softlabels.losses.kd_loss`); checking it is then the loss's job.
        config: hyperparameters; ``TrainConfig()`` when omitted.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` for the default objective.
        objective: ``objective(model, x, y) -> scalar or {name: scalar}``, replacing
            ``loss_fn(model(x), y)``.
        augment: ``augment(batch (B, C, H, W), generator) -> batch``, applied every step.
        paired_augment: ``paired_augment(batch, targets, generator) -> (batch, targets)`` for
            transforms that must move the targets too (segmentation masks).
        eval_data: (images (M, C, H, W), labels (M,)) evaluated every ``config.eval_every``
            epochs and at the end.
        hooks: objects with per-epoch state, such as the class temperatures of ABSLD. Each may
            define ``epoch_end(epoch) -> {name: float} | None`` (called after every epoch, its
            values logged in that epoch's history record), ``batch_end(epoch, step, steps)``
            (called after each optimizer step; ``step`` counts from 0 to ``steps - 1`` within
            the 1-based ``epoch``) and ``extra_state() -> dict`` with
            ``load_extra_state(dict)`` (saved in ``last.pt`` so a resumed run continues with
            the same state).
        checkpoint_dir: where ``last.pt`` (the full resumable state, written after every epoch)
            and ``epoch_XXXX.pt`` weights (every ``config.checkpoint_every`` epochs, and the
            initial weights as ``epoch_0000.pt``) go.
        resume: continue from ``checkpoint_dir/last.pt`` when it exists. Its config must match
            ``config``; a mismatch is an error, not a silent restart.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        show_progress: see :func:`softlabels.progress.progress`.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite; ``last.pt`` still holds the last
            completed epoch.
    """
    config = config if config is not None else TrainConfig()
    _check_training_data(images, targets,
                         default_loss=loss_fn is soft_cross_entropy and objective is None)
    if objective is None:
        def objective(net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
            outputs = net(x)
            if not bool(torch.isfinite(outputs.detach()).all()):
                # A diverged model, not bad input: the loop reports it with the epoch.
                return outputs.new_tensor(math.nan)
            return loss_fn(outputs, y)
    target_device = resolve_device(device)
    model.to(target_device)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fingerprint = {"config": config.to_dict(), "num_samples": int(images.shape[0]),
                   "target_shape": list(targets.shape[1:]), "soft": targets.is_floating_point()}
    start_epoch = 0
    if folder is not None and resume and (folder / _LAST).exists():
        start_epoch, history = _restore(folder / _LAST, fingerprint, model, optimizer,
                                        scheduler, generator, hooks)
    elif folder is not None and config.checkpoint_every:
        torch_save(folder / epoch_checkpoint_name(0), model.state_dict())

    x_all, y_all = images.to(target_device), targets.to(target_device)
    began = time.perf_counter()
    with progress(config.epochs, "train", show_progress, start=start_epoch) as bar:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            tick = time.perf_counter()
            means = _train_epoch(model, x_all, y_all, config.batch_size, optimizer, objective,
                                 augment, paired_augment, generator, epoch, hooks)
            mean_loss = means["loss"]
            record: dict[str, float] = {"epoch": epoch, **means,
                                        "lr": optimizer.param_groups[0]["lr"]}
            for hook in hooks:
                logged = hook.epoch_end(epoch) if hasattr(hook, "epoch_end") else None
                record.update(logged or {})
            scheduler.step()
            if eval_data is not None and (epoch == config.epochs or (
                    config.eval_every and epoch % config.eval_every == 0)):
                record["eval_accuracy"] = evaluate(model, *eval_data,
                                                   device=target_device).accuracy
            record["seconds"] = time.perf_counter() - tick
            history.append(record)
            if folder is not None:
                _save(folder, epoch, config, fingerprint, model, optimizer, scheduler,
                      generator, history, hooks)
            status = f"loss {mean_loss:.4f}" + (
                f" acc {record['eval_accuracy']:.4f}" if "eval_accuracy" in record else "")
            bar.advance(status)
    final = (evaluate(model, *eval_data, device=target_device)
             if eval_data is not None else None)
    return FitResult(model=model, history=history, final=final, start_epoch=start_epoch,
                     seconds=time.perf_counter() - began)


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


def _check_training_data(images: Tensor, targets: Tensor, default_loss: bool) -> None:
    """Shapes always; label values only for the default loss (a custom one owns its targets,
    e.g. a sentinel for unlabelled images)."""
    check_float("images", images)
    check_ndim("images", images, (4,))
    if images.shape[0] == 0:
        raise ValueError("images is empty: nothing to train on")
    if targets.shape[:1] != images.shape[:1]:
        raise ValueError(f"targets has {targets.shape[0] if targets.ndim else 0} rows but "
                         f"images has {images.shape[0]}")
    if targets.is_floating_point():
        if default_loss:
            validate(targets, name="targets", allow_partial=True)
    else:
        if targets.dtype != torch.int64:
            raise TypeError(f"hard targets must be int64 class indices, got {targets.dtype}")
        if default_loss and int(targets.min()) < 0:
            raise ValueError(f"targets must be >= 0, got a minimum of {int(targets.min())}")


def _train_epoch(model: nn.Module, x_all: Tensor, y_all: Tensor, batch_size: int,
                 optimizer: torch.optim.Optimizer, objective: Objective,
                 augment: AugmentFn | None, paired_augment: PairedAugmentFn | None,
                 generator: torch.Generator, epoch: int, hooks: Sequence[Any]
                 ) -> dict[str, float]:
    """One pass over the data; returns the sample-weighted mean loss and of each term."""
    model.train()
    order = torch.randperm(x_all.shape[0], generator=generator).to(x_all.device)
    sums: dict[str, float] = {}
    seen = 0
    total = x_all.shape[0]
    starts = list(range(0, total, batch_size))
    if total % batch_size == 1 and len(starts) > 1:
        # A last batch of one sample breaks BatchNorm; it joins the batch before it.
        starts.pop()
    for step, start in enumerate(starts):
        end = starts[step + 1] if step + 1 < len(starts) else total
        batch = order[start:end]
        x, y = x_all[batch], y_all[batch]
        if augment is not None:
            x = augment(x, generator)
        if paired_augment is not None:
            x, y = paired_augment(x, y, generator)
        out = objective(model, x, y)
        terms = dict(out) if isinstance(out, Mapping) else {}
        loss = sum(terms.values()) if terms else out
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {float(loss.detach())} at epoch {epoch}, step {step}; "
                "lower the learning rate or check the targets (the last completed epoch's "
                "checkpoint is kept)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for hook in hooks:
            if hasattr(hook, "batch_end"):
                hook.batch_end(epoch, step, len(starts))
        for name, value in {"loss": loss, **terms}.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) * x.shape[0]
        seen += x.shape[0]
    return {name: total / seen for name, total in sums.items()}


def _save(folder: Path, epoch: int, config: TrainConfig, fingerprint: dict[str, Any],
          model: nn.Module, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator,
          history: list[dict[str, float]], hooks: Sequence[Any]) -> None:
    # The epoch file first: if the process dies between the two writes, the resumed run
    # redoes this epoch and writes both again, instead of skipping a file for good.
    if config.checkpoint_every and epoch % config.checkpoint_every == 0:
        torch_save(folder / epoch_checkpoint_name(epoch), model.state_dict())
    torch_save(folder / _LAST, {
        "format": _CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        # Dropout and other modules draw from the global generators (CPU and, on a GPU, CUDA).
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": history,
        "hooks": [hook.extra_state() if hasattr(hook, "extra_state") else None
                  for hook in hooks],
    })


def _restore(path: Path, fingerprint: dict[str, Any], model: nn.Module,
             optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
             generator: torch.Generator, hooks: Sequence[Any]
             ) -> tuple[int, list[dict[str, float]]]:
    state = torch_load(path)
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a softlabels training checkpoint")
    saved = state["fingerprint"]
    if saved != fingerprint:
        changed = sorted(k for k in set(saved) | set(fingerprint)
                         if saved.get(k) != fingerprint.get(k))
        raise ValueError(
            f"cannot resume from {str(path)!r}: it was written for a different run (differs in "
            f"{changed}); use a new checkpoint folder or resume=False")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
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
