"""``fit``: train a model on hard or soft targets, with resumable checkpoints.

The one training loop of the library (experts, teachers, students, segmentation models and
robust students all train here). The default objective is ``loss_fn(model(x), y)``. An
``objective(model, x, y)`` replaces it when a step needs more than the model's output (a
teacher's predictions, adversarial examples); it may return a dict of named loss terms, which
are summed and logged one by one.

Data comes as tensors, a map-style ``Dataset`` or a ``DataLoader`` (:mod:`.data`); the
recipe's ``precision`` autocasts the forward pass, ``channels_last`` and ``compile`` tune it.
Under ``torchrun`` every rank trains on its shard of each global batch and the gradients are
all-reduced, so N ranks train the weights one process would (:mod:`softlabels.distributed`);
rank 0 alone writes checkpoints.
"""

from __future__ import annotations

import contextlib
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
from .._io import torch_save
from ..distributed import (
    World,
    all_reduce_gradients,
    all_reduce_sum,
    barrier,
    broadcast_parameters,
    check_same_on_every_rank,
    raise_on_every_rank,
    sharded,
    world,
)
from ..labels import validate
from ..losses import soft_cross_entropy
from ..progress import progress
from ..runtime import resolve_device
from .checkpoints import (
    LAST,
    epoch_checkpoint_name,
    load_epoch_checkpoint,
    restore_state,
    save_state,
    saved_checkpoint_epochs,
)
from .config import TrainConfig
from .data import Data, Source, make_source
from .evaluation import EvalResult, evaluate
from .logs import HistoryLog
from .optim import build_optimizer, build_scheduler

__all__ = ["FitResult", "NonFiniteLossError", "autocast", "epoch_checkpoint_name", "fit",
           "load_epoch_checkpoint", "saved_checkpoint_epochs"]

LossFn = Callable[[Tensor, Tensor], Tensor]
Objective = Callable[[nn.Module, Tensor, Tensor], "Tensor | Mapping[str, Tensor]"]
AugmentFn = Callable[[Tensor, torch.Generator], Tensor]
PairedAugmentFn = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
    images: Data,
    targets: Tensor | None = None,
    config: TrainConfig | None = None,
    *,
    loss_fn: LossFn = soft_cross_entropy,
    objective: Objective | None = None,
    augment: AugmentFn | None = None,
    paired_augment: PairedAugmentFn | None = None,
    eval_data: tuple[Tensor, Tensor] | Data | None = None,
    eval_batch_size: int = 512,
    hooks: Sequence[Any] = (),
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    device: str | torch.device = "auto",
    num_workers: int = 0,
    logger: str | None = None,
    pixels: bool = True,
    show_progress: bool | None = None,
) -> FitResult:
    """Train ``model`` on ``images`` with hard or soft ``targets``.

    Args:
        model: maps (B, C, H, W) images in [0, 1] to (B, K) logits, or (B, K, H, W) for
            segmentation; trained in place.
        images: float (N, C, H, W) in [0, 1]; or a map-style ``Dataset`` of (image (C, H, W),
            target) pairs (read at the same positions, so the same seed gives the same weights
            as its tensors) or a ``DataLoader`` of (images, targets) batches (read in its own
            order). ``targets`` is then None.
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
        eval_data: (images (M, C, H, W), labels (M,)) or a dataset or loader of them,
            evaluated every ``config.eval_every`` epochs and at the end.
        eval_batch_size: images per evaluation forward pass.
        hooks: objects with per-epoch state, such as the class temperatures of ABSLD. Each may
            define ``epoch_end(epoch) -> {name: float} | None`` (called after every epoch, its
            values logged in that epoch's history record), ``batch_end(epoch, step, steps)``
            (called after each optimizer step; ``step`` counts from 0 to ``steps - 1`` within
            the 1-based ``epoch``) and ``extra_state() -> dict`` with
            ``load_extra_state(dict)`` (saved in ``last.pt`` so a resumed run continues with
            the same state).
        checkpoint_dir: where ``last.pt`` (the full resumable state, written after every epoch),
            ``epoch_XXXX.pt`` weights (every ``config.checkpoint_every`` epochs, and the
            initial weights as ``epoch_0000.pt``) and ``history.csv`` (one line per epoch) go.
        resume: continue from ``checkpoint_dir/last.pt`` when it exists. Its config must match
            ``config``; a mismatch is an error, not a silent restart.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        num_workers: ``DataLoader`` worker processes that read a ``Dataset`` (0: this process).
        logger: ``"tensorboard"`` also writes the history's scalars to
            ``checkpoint_dir/tensorboard`` (needs the ``tensorboard`` package).
        pixels: the images are pixels, checked to be in [0, 1] (the contract attacks rely
            on). ``False`` for inputs transformed beforehand, such as ZCA-whitened images:
            only their finiteness is checked.
        show_progress: see :func:`softlabels.progress.progress`.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite; ``last.pt`` still holds the last
            completed epoch. Under ``torchrun`` every rank raises at the same step.
        ValueError: bad data or settings (``fp16`` without CUDA, more ranks than samples,
            configs that differ between ranks), raised on every rank.
    """
    config = config if config is not None else TrainConfig()
    source = make_source(images, targets, num_workers=num_workers)
    default_loss = loss_fn is soft_cross_entropy and objective is None
    _check_training_data(source, default_loss, pixels)
    target_device = resolve_device(device)
    ranks = world()
    _check_run(config, target_device, len(source), ranks)
    if objective is None:
        def objective(net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
            outputs = net(x)
            if not bool(torch.isfinite(outputs.detach()).all()):
                # A diverged model, not bad input: the loop reports it with the epoch.
                return outputs.new_tensor(math.nan)
            return loss_fn(outputs, y)
    model.to(target_device)
    if ranks.backend == "nccl":
        # Per-rank batch statistics would differ from one process's; across GPUs they are
        # synchronised (gloo has no SyncBatchNorm: on CPUs BatchNorm sees the rank's shard).
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    broadcast_parameters(model)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, source.num_batches(config.batch_size))
    scaler = torch.amp.GradScaler(target_device.type) if config.precision == "fp16" else None
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    _, sample_y = source.sample()
    # How often the state is written does not change the run, so a checkpoint written under
    # another save_interval (or before the field existed) still resumes.
    recipe = {k: v for k, v in config.to_dict().items() if k != "save_interval"}
    fingerprint = {"config": recipe, "num_samples": len(source),
                   "target_shape": list(sample_y.shape[1:]),
                   "soft": sample_y.is_floating_point()}
    start_epoch = 0
    barrier()  # rank 0's last checkpoint is complete before any rank reads it
    if folder is not None and resume and (folder / LAST).exists():
        start_epoch, history = restore_state(folder / LAST, fingerprint, model, optimizer,
                                             scheduler, scaler, generator, hooks)
    elif folder is not None and config.checkpoint_every and ranks.is_main:
        torch_save(folder / epoch_checkpoint_name(0), model.state_dict())
    if config.compile:
        model.compile()
    evaluation = None
    if eval_data is not None:
        evaluation = (make_source(*eval_data) if isinstance(eval_data, tuple)
                      else make_source(eval_data))
    log = HistoryLog(folder, logger) if folder is not None and ranks.is_main else None
    step = _Step(model, optimizer, scheduler, scaler, objective, augment, paired_augment,
                 config, hooks)
    began = time.perf_counter()
    final: EvalResult | None = None
    with progress(config.epochs, "train", show_progress, start=start_epoch) as bar:
        saved_at = time.perf_counter()
        for epoch in range(start_epoch + 1, config.epochs + 1):
            tick = time.perf_counter()
            means = step.epoch(source, generator, epoch, target_device)
            record: dict[str, float] = {"epoch": epoch, **means,
                                        "lr": optimizer.param_groups[0]["lr"]}
            for hook in hooks:
                logged = hook.epoch_end(epoch) if hasattr(hook, "epoch_end") else None
                record.update(logged or {})
            if not config.per_step:
                scheduler.step()
            if evaluation is not None and (epoch == config.epochs or (
                    config.eval_every and epoch % config.eval_every == 0)):
                final = evaluate(model, evaluation, batch_size=eval_batch_size,
                                 device=target_device)
                record["eval_accuracy"] = final.accuracy
            record["seconds"] = time.perf_counter() - tick
            history.append(record)
            if _save_due(config, epoch, start_epoch, saved_at):
                saved_at = time.perf_counter()
                if folder is not None and ranks.is_main:
                    save_state(folder, epoch, config, fingerprint, model, optimizer,
                               scheduler, scaler, generator, history, hooks)
                if log is not None:
                    log.write(history)
            bar.advance(f"loss {means['loss']:.4f}" + (
                f" acc {record['eval_accuracy']:.4f}" if "eval_accuracy" in record else ""))
    if evaluation is not None and final is None:  # resumed after the last epoch
        final = evaluate(model, evaluation, batch_size=eval_batch_size, device=target_device)
    if log is not None:
        log.write(history)
        log.close()
    barrier()  # rank 0's last checkpoint is on disk before any rank reads an epoch's weights
    return FitResult(model=model, history=history, final=final, start_epoch=start_epoch,
                     seconds=time.perf_counter() - began)


def _save_due(config: TrainConfig, epoch: int, start_epoch: int, saved_at: float) -> bool:
    """Whether ``epoch``'s state is written (see :attr:`TrainConfig.save_interval`)."""
    return (epoch in (start_epoch + 1, config.epochs)
            or bool(config.checkpoint_every and epoch % config.checkpoint_every == 0)
            or time.perf_counter() - saved_at >= config.save_interval)


def _check_run(config: TrainConfig, device: torch.device, samples: int, ranks: World) -> None:
    """Settings that cannot work, raised on every rank alike (no rank waits for another)."""
    if config.precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs CUDA (a loss-scaled half-precision forward); "
                         "use bf16 on the CPU")
    if samples < ranks.size:
        raise ValueError(f"{ranks.size} ranks but only {samples} training samples: every rank "
                         "needs at least one")
    check_same_on_every_rank("the training config", config.to_dict())


def _check_training_data(source: Source, default_loss: bool, pixels: bool) -> None:
    """Shapes always; label values only for the default loss (a custom one owns its targets,
    e.g. a sentinel for unlabelled images). Tensors are checked whole, a dataset on its first
    items (each batch is checked as it is read)."""
    if len(source) == 0:
        raise ValueError("images is empty: nothing to train on")
    whole = getattr(source, "images", None)
    images, targets = (whole, source.targets) if whole is not None else source.sample()  # type: ignore[attr-defined]
    check_float("images", images)
    check_ndim("images", images, (4,))
    if images.numel():
        low, high = (float(v) for v in torch.aminmax(images.detach()))
        # NaN fails both bounds (and makes the sum NaN), an infinity a bound (or the sum).
        in_range = (low >= 0.0 and high <= 1.0) if pixels else math.isfinite(low + high)
        if not in_range:
            raise ValueError("images must be finite" + (
                " and in [0, 1] (models normalise inside)" if pixels else "")
                + f", got values in [{low:g}, {high:g}]")
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


class _Step:
    """One optimiser step per batch: forward (autocast), backward, all-reduce, update."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: Any,
                 objective: Objective, augment: AugmentFn | None,
                 paired_augment: PairedAugmentFn | None, config: TrainConfig,
                 hooks: Sequence[Any]) -> None:
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.scheduler = scheduler
        self.objective, self.augment, self.paired_augment = objective, augment, paired_augment
        self.config, self.hooks = config, hooks
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.ranks = world()

    def epoch(self, source: Source, generator: torch.Generator, epoch: int,
              device: torch.device) -> dict[str, float]:
        """One pass over ``source``; the sample-weighted mean loss and of each term."""
        self.model.train()
        sums: dict[str, Tensor] = {}
        steps = source.num_batches(self.config.batch_size)
        for number, batch in enumerate(source.epoch(generator, self.config.batch_size,
                                                     device)):
            loss, terms = self._forward_backward(batch, generator, epoch, number)
            self.optimizer.step() if self.scaler is None else self.scaler.step(self.optimizer)
            if self.scaler is not None:
                self.scaler.update()
            if self.config.per_step:
                self.scheduler.step()
            for hook in self.hooks:
                if hasattr(hook, "batch_end"):
                    hook.batch_end(epoch, number, steps)
            for name, value in {"loss": loss, **terms}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().double() * batch.shard.size
            sums["_seen"] = sums.get("_seen", 0.0) + float(batch.shard.size)
        if not sums:
            return {"loss": math.nan}
        names = sorted(sums)
        totals = all_reduce_sum(torch.stack([torch.as_tensor(sums[n]).double().cpu()
                                             for n in names]))
        seen = float(totals[names.index("_seen")])
        return {n: float(t) / seen for n, t in zip(names, totals, strict=True) if n != "_seen"}

    def _loss(self, batch: Any, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch.x, batch.y
        with sharded(batch.shard):
            if self.augment is not None:
                x = self.augment(x, generator)
            if self.paired_augment is not None:
                x, y = self.paired_augment(x, y, generator)
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(x.device, self.config.precision):
                out = self.objective(self.model, x, y)
        terms = dict(out) if isinstance(out, Mapping) else {}
        return (sum(terms.values()) if terms else out).float(), terms  # type: ignore[union-attr]

    def _forward_backward(self, batch: Any, generator: torch.Generator, epoch: int,
                          number: int) -> tuple[Tensor, dict[str, Tensor]]:
        self.optimizer.zero_grad(set_to_none=True)
        if self.ranks.size == 1:
            loss, terms = self._loss(batch, generator)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(_non_finite(float(loss.detach()), epoch, number))
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            return loss, terms
        # Each rank's share of the global batch weights its loss, so the summed gradient is
        # the global batch mean's whatever the shard sizes.
        weight = batch.shard.size / batch.shard.total
        failure: Exception | None = None
        loss, terms = torch.zeros((), device=batch.x.device), {}
        if batch.shard.size:  # a rank without rows in this batch adds nothing
            try:
                loss, terms = self._loss(batch, generator)
                (loss * weight if self.scaler is None
                 else self.scaler.scale(loss * weight)).backward()
            except Exception as err:  # every rank must learn of it, or the others would wait
                failure = err
                self.optimizer.zero_grad(set_to_none=True)
        total, failed = all_reduce_gradients(self.parameters, loss * weight,
                                             failed=failure is not None)
        if failed:
            raise_on_every_rank(failure)
        if not torch.isfinite(total):
            raise NonFiniteLossError(_non_finite(float(total), epoch, number))
        return loss, terms


def _non_finite(value: float, epoch: int, step: int) -> str:
    return (f"training loss became {value} at epoch {epoch}, step {step}; lower the learning "
            "rate or check the targets (the last completed epoch's checkpoint is kept)")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a :data:`~softlabels.engine.config.PRECISIONS` name."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])
