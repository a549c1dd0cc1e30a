"""The vectorised students of :func:`~softlabels.distill.train_students`: S students stacked
into one model (``torch.func.stack_module_state``), run as ``vmap`` over ``functional_call``
or, for the ConvNet, as one network of S-group convolutions; one optimiser step updates all.

Each student keeps its own data order and augmentation draws (a generator per seed), so the
run computes what the sequential students compute up to the order of floating-point sums.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from ..engine.config import TrainConfig
from ..engine.data import batch_bounds
from ..engine.optim import build_optimizer, build_scheduler
from ..engine.training import NonFiniteLossError, autocast
from ..losses import soft_cross_entropy
from ..models.convnet import ConvBlock, ConvNet
from ..models.layers import Normalize
from ..progress import progress

__all__ = ["BACKENDS", "choose_backend", "train_vectorized"]

#: How the vectorised students run: ``"grouped"`` (ConvNet only: the stacked students as one
#: network of grouped convolutions), ``"vmap"`` (any vmap-able model) or ``"auto"`` (grouped
#: when the model allows it, else vmap).
BACKENDS = ("auto", "grouped", "vmap")

AugmentFn = Callable[[Tensor, torch.Generator], Tensor]
StackedForward = Callable[[dict[str, Tensor], dict[str, Tensor], Tensor], Tensor]


def _per_student_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean soft cross-entropy of each student: logits (S, B, K), y (S, B, K) or (S, B) -> (S,).

    The students' losses are later summed, not averaged, so each student's gradient is
    exactly the gradient of its own mean batch loss, as if it were trained alone.
    """
    s, b = logits.shape[:2]
    diverged = ~torch.isfinite(logits.detach()).flatten(1).all(dim=1)
    if bool(diverged.any()):
        # The loss refuses non-finite logits; a NaN loss lets the caller name the students.
        return torch.where(diverged, math.nan, 0.0).to(logits.dtype)
    per_sample = soft_cross_entropy(logits.reshape(s * b, -1), y.reshape(s * b, *y.shape[2:]),
                                    reduction="none")
    return per_sample.view(s, b).mean(dim=1)


def _raise_non_finite(losses: Tensor, seeds: Sequence[int], epoch: int, step: int) -> None:
    bad = [seeds[i] for i in (~torch.isfinite(losses)).nonzero().flatten().tolist()]
    raise NonFiniteLossError(
        f"training loss became non-finite for the student(s) with seed {bad} at epoch {epoch}, "
        f"step {step}; lower the learning rate or check the targets")


def train_vectorized(models: list[nn.Module], backend: str, x_all: Tensor, y_all: Tensor,
                      config: TrainConfig, generators: list[torch.Generator],
                      augment: AugmentFn | None, evaluation: tuple[Tensor, Tensor] | None,
                      eval_batch_size: int, seeds: list[int],
                      show_progress: bool | None) -> list[dict[str, Any]]:
    """All students as one model: parameters stacked to (S, ...), one forward for all."""
    count = len(models)
    stacked_params, stacked_buffers = stack_module_state(models)
    # Leaf tensors of shape (S, ...). SGD (momentum, L2 weight decay) and AdamW act
    # elementwise, with a step count and learning rate shared by all students, so one
    # optimiser over the stacked tensors performs exactly the S separate optimisers' updates.
    params = {name: nn.Parameter(value.detach()) for name, value in stacked_params.items()}
    buffers = {name: value.detach() for name, value in stacked_buffers.items()}
    optimizer = build_optimizer(list(params.values()), config)
    total = x_all.shape[0]
    bounds = batch_bounds(total, config.batch_size)
    scheduler = build_scheduler(optimizer, config, len(bounds))
    # A weightless copy that only lends its structure and forward code.
    base = copy.deepcopy(models[0]).to("meta")
    # train_call: (S, B, C, H, W), a batch per student; eval_call: (B, C, H, W) shared.
    if backend == "grouped":
        grouped = _GroupedConvNet(base)
        train_call: StackedForward = grouped
        eval_call: StackedForward = grouped.shared_input
    else:
        def call(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(base, (p, b), (x,))

        train_call = vmap(call, in_dims=(0, 0, 0))
        # The same images for all students (in_dims None): the first layer then runs as one
        # wider convolution instead of S copies of the input.
        eval_call = vmap(call, in_dims=(0, 0, None))

    history: list[dict[str, Any]] = []
    with progress(config.epochs, f"{count} students (vectorised)", show_progress) as bar:
        for epoch in range(1, config.epochs + 1):
            tick = time.perf_counter()
            base.train()
            # Same draw order per generator as the sequential loop and fit: one permutation
            # per epoch, then one augmentation call per step.
            orders = torch.stack([torch.randperm(total, generator=g) for g in generators])
            orders = orders.to(x_all.device)
            sums = torch.zeros(count, device=x_all.device)
            for step, (start, end) in enumerate(bounds):
                index = orders[:, start:end]  # (S, B)
                if augment is None:
                    x = x_all[index]
                else:
                    x = torch.stack([augment(x_all[index[i]], generators[i])
                                     for i in range(count)])
                y = y_all[index]
                with autocast(x.device, config.precision):
                    logits = train_call(params, buffers, x)
                losses = _per_student_loss(logits.float(), y)
                if not bool(torch.isfinite(losses).all()):
                    _raise_non_finite(losses, seeds, epoch, step)
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                optimizer.step()
                if config.per_step:
                    scheduler.step()
                sums += losses.detach() * (end - start)
            record: dict[str, Any] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                                      "loss": (sums / total).tolist()}
            if not config.per_step:
                scheduler.step()
            if evaluation is not None and _evaluate_now(epoch, config):
                base.eval()
                record["eval_accuracy"] = _stacked_accuracy(eval_call, params, buffers,
                                                            *evaluation, eval_batch_size)
            record["seconds"] = time.perf_counter() - tick
            history.append(record)
            bar.advance(_status(record))
    # Hand the trained weights back to the student modules (their state_dict then also
    # covers tied weights and non-persistent buffers correctly).
    with torch.no_grad():
        for i, model in enumerate(models):
            for name, param in model.named_parameters():
                param.copy_(params[name][i])
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name][i])
    return history


class _GroupedConvNet:
    """S stacked :class:`~softlabels.models.ConvNet` students run as one grouped network.

    Activations live in a (B, S * C, H, W) layout from the first convolution to the
    classifier: a convolution with weights (S, O, C, k, k) is one ``conv2d`` with S groups
    (group s sees only student s's channels), a GroupNorm with ``g`` groups becomes one with
    ``S * g`` groups (a group never straddles two students since each student's channels are
    contiguous), and ReLU and average pooling act per channel, so they run unchanged. The
    classifier is one batched matrix product. This computes what ``vmap`` computes, without
    its layout copies and separate affine multiply-add after each GroupNorm.

    Call with stacked ``params``/``buffers`` (as from ``stack_module_state``) and images
    (S, B, C, H, W); returns logits (S, B, K).
    """

    def __init__(self, template: ConvNet) -> None:
        # _grouped_supported has checked that every block is a plain ConvBlock.
        self.blocks = [block for block in template.features if isinstance(block, ConvBlock)]
        self.block_names = [f"features.{i}" for i in range(len(self.blocks))]

    def __call__(self, params: dict[str, Tensor], buffers: dict[str, Tensor],
                 x: Tensor) -> Tensor:
        count, batch = x.shape[:2]
        # Normalize's buffers stack to (S, 1, C, 1, 1) and broadcast over (S, B, C, H, W).
        x = (x - buffers["normalize.mean"]) / buffers["normalize.std"]
        h = x.transpose(0, 1).reshape(batch, count * x.shape[2], *x.shape[3:])
        for name, block in zip(self.block_names, self.blocks, strict=True):
            conv = block.conv
            weight = params[f"{name}.conv.weight"]
            bias = params.get(f"{name}.conv.bias")
            h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]),
                         None if bias is None else bias.reshape(-1), conv.stride, conv.padding,
                         conv.dilation, conv.groups * count)
            norm = block.norm
            if isinstance(norm, nn.GroupNorm):
                norm_weight = params.get(f"{name}.norm.weight")
                norm_bias = params.get(f"{name}.norm.bias")
                h = F.group_norm(h, norm.num_groups * count,
                                 None if norm_weight is None else norm_weight.reshape(-1),
                                 None if norm_bias is None else norm_bias.reshape(-1), norm.eps)
            h = block.pool(block.act(h))
        features = h.reshape(batch, count, -1).transpose(0, 1)  # (S, B, C * h * w)
        weight = params["classifier.weight"]  # (S, K, F)
        bias = params["classifier.bias"]  # (S, K)
        return torch.baddbmm(bias[:, None, :], features, weight.transpose(1, 2))

    def shared_input(self, params: dict[str, Tensor], buffers: dict[str, Tensor],
                     x: Tensor) -> Tensor:
        """The same images (B, C, H, W) for every student -> logits (S, B, K)."""
        count = next(iter(params.values())).shape[0]
        return self(params, buffers, x.expand(count, *x.shape))


def _grouped_supported(model: nn.Module) -> str | None:
    """Why ``model`` cannot run as a grouped network, or None when it can.

    Exact type checks: a subclass may have overridden ``forward``, and the grouped network
    only reproduces :class:`ConvNet`'s own.
    """
    if type(model) is not ConvNet:
        return f"it is a {type(model).__name__}, not a softlabels ConvNet"
    if type(model.normalize) is not Normalize:
        return "its input normalisation was replaced"
    for i, block in enumerate(model.features):
        if type(block) is not ConvBlock:
            return f"features.{i} is a {type(block).__name__}, not a ConvBlock"
        if type(block.conv) is not nn.Conv2d or block.conv.padding_mode != "zeros":
            return f"features.{i}.conv is not a zero-padded nn.Conv2d"
        if type(block.norm) not in (nn.GroupNorm, nn.Identity):
            return (f"features.{i}.norm is a {type(block.norm).__name__}; only GroupNorm "
                    "(instance/layer/group norm) or no norm can be grouped")
        if type(block.act) is not nn.ReLU or type(block.pool) is not nn.AvgPool2d:
            return f"features.{i} does not use ReLU and AvgPool2d"
    if type(model.classifier) is not nn.Linear:
        return "its classifier is not an nn.Linear"
    return None


def choose_backend(model: nn.Module, backend: str) -> str:
    reason = _grouped_supported(model)
    if backend == "auto":
        return "grouped" if reason is None else "vmap"
    if backend == "grouped" and reason is not None:
        raise ValueError(f"backend='grouped' needs a softlabels ConvNet with GroupNorm or no "
                         f"norm, but {reason}; use backend='vmap' or 'auto'")
    return backend


def _evaluate_now(epoch: int, config: TrainConfig) -> bool:
    return epoch == config.epochs or bool(config.eval_every and epoch % config.eval_every == 0)


def _status(record: dict[str, Any]) -> str:
    """Progress text: the loss and accuracy, averaged over students for list values."""
    def mean(value: float | list[float]) -> float:
        return statistics.fmean(value) if isinstance(value, list) else float(value)

    text = f"loss {mean(record['loss']):.4f}"
    if "eval_accuracy" in record:
        text += f" acc {mean(record['eval_accuracy']):.4f}"
    return text


@torch.no_grad()
def _stacked_accuracy(eval_call: Callable[..., Tensor], params: dict[str, Tensor],
                      buffers: dict[str, Tensor], images: Tensor, labels: Tensor,
                      batch_size: int) -> list[float]:
    """Accuracy of each stacked student on the same images -> list of S floats."""
    count = next(iter(params.values())).shape[0]
    correct = torch.zeros(count, dtype=torch.int64, device=images.device)
    for start in range(0, images.shape[0], batch_size):
        logits = eval_call(params, buffers, images[start:start + batch_size])  # (S, B, K)
        correct += (logits.argmax(dim=2) == labels[start:start + batch_size]).sum(dim=1)
    return (correct.double() / images.shape[0]).tolist()
