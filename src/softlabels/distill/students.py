"""Train the S students of one distillation cell together, as one vectorised model.

The student protocol of Qin et al. (and of DC/DSA/MTT before them) trains several students
(5 seeds) of the same ConvNet on the same tiny distilled set and reports the mean and spread of
their test accuracies. At IPC <= 10 a student's whole epoch is one small batch, so a plain loop
over students issues S times as many small kernels as needed. :func:`train_students` instead
stacks the S students' parameters along a new leading dimension
(``torch.func.stack_module_state``) and runs one forward pass for all of them per step, either
as ``vmap`` over ``functional_call`` (any vmap-able model) or, for the ConvNet, as one network
of S-group convolutions (no vmap layout copies); one optimiser step then updates all students.

Each student keeps its own initialisation (``build_model(seed)`` under
``torch.manual_seed(seed)``), its own data order and its own augmentation draws (a
``torch.Generator`` per seed), so the vectorised run computes what a loop over students computes
(``vectorize=False``) up to the order of floating-point sums. Student ``i`` of the loop is, in
turn, exactly what :func:`softlabels.engine.fit` gives for ``build_model(seeds[i])`` with
``config.seed = seeds[i]``.

Speed: vectorising removes per-call overhead and gives the hardware larger kernels; it does not
remove arithmetic. Where one student's step already keeps the device busy (a width-128 ConvNet
on a CPU core) the gain is small; it is large where kernels are small or launch-bound (narrow
students, GPUs). ``benchmarks/students.py`` measures it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from .._checks import (
    check_choice,
    check_finite,
    check_float,
    check_hard_labels,
    check_ndim,
    check_positive_int,
)
from ..engine.config import TrainConfig
from ..engine.data import batch_bounds, make_source
from ..engine.optim import build_optimizer, build_scheduler
from ..engine.training import NonFiniteLossError, autocast, fit
from ..labels import validate
from ..losses import soft_cross_entropy
from ..models.convnet import ConvBlock, ConvNet
from ..models.layers import Normalize
from ..progress import progress
from ..runtime import build_seeded, resolve_device

__all__ = ["BACKENDS", "StudentsResult", "train_students"]

#: How the vectorised students run: ``"grouped"`` (ConvNet only: the stacked students as one
#: network of grouped convolutions), ``"vmap"`` (any vmap-able model) or ``"auto"`` (grouped
#: when the model allows it, else vmap).
BACKENDS = ("auto", "grouped", "vmap")

AugmentFn = Callable[[Tensor, torch.Generator], Tensor]
ModelBuilder = Callable[[int], nn.Module]
StackedForward = Callable[[dict[str, Tensor], dict[str, Tensor], Tensor], Tensor]


@dataclass
class StudentsResult:
    """Outcome of :func:`train_students`; every per-student list follows ``seeds``.

    Attributes:
        seeds: the students' seeds, in order.
        final_accuracy: accuracy on ``eval_data`` after the last epoch (the DC protocol's
            figure); None without ``eval_data``.
        best_accuracy: highest accuracy over the periodic evaluations, the last one included
            (what the official code of Qin et al. reports); None without ``eval_data``.
        history: one dict per epoch: ``epoch``, ``lr``, ``loss`` (list of S sample-weighted
            mean training losses), ``seconds`` and, when evaluated, ``eval_accuracy`` (list
            of S accuracies).
        state_dicts: the trained students' state dicts, on the CPU; load one into a fresh
            ``build_model(seed)``.
        backend: how they were trained: ``"grouped"`` or ``"vmap"`` (vectorised), or
            ``"sequential"``.
        seconds: wall time of the training (evaluations included).
    """

    seeds: list[int]
    final_accuracy: list[float] | None
    best_accuracy: list[float] | None
    history: list[dict[str, Any]]
    state_dicts: list[dict[str, Tensor]]
    backend: str
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vectorized(self) -> bool:
        """Whether the students were trained together as one vectorised model."""
        return self.backend != "sequential"

    def summary(self) -> dict[str, float]:
        """Mean and sample standard deviation over students of the final and best accuracy.

        The std is 0.0 for a single student. Empty without ``eval_data``.
        """
        out: dict[str, float] = {}
        for name, values in (("final", self.final_accuracy), ("best", self.best_accuracy)):
            if values is not None:
                out[f"{name}_mean"] = statistics.fmean(values)
                out[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        return out


def train_students(
    build_model: ModelBuilder,
    images: Tensor | Any,
    targets: Tensor | None,
    config: TrainConfig,
    seeds: Sequence[int],
    *,
    augment: AugmentFn | None = None,
    eval_data: tuple[Tensor, Tensor] | Any | None = None,
    eval_batch_size: int = 64,
    device: str | torch.device = "auto",
    vectorize: bool | None = None,
    backend: str = "auto",
    pixels: bool = True,
    show_progress: bool | None = None,
) -> StudentsResult:
    """Train one student per seed on the same (distilled) set; vectorised by default.

    Args:
        build_model: ``build_model(seed) -> nn.Module``, a freshly initialised student mapping
            (B, C, H, W) images in [0, 1] to (B, K) logits. It is called with the global torch
            RNG seeded with ``seed`` (and restored afterwards), so a builder that just calls
            ``create_model(...)`` gets a per-seed initialisation. All students must have the
            same parameter and buffer names, shapes and dtypes.
        images: float (N, C, H, W) in [0, 1], or a dataset / loader of (image, target) pairs
            (read whole: a distilled set is small).
        targets: soft labels float (N, K) (rows summing to 1, or less for top-k labels) or hard
            labels int64 (N,) in [0, K); None with a dataset.
        config: epochs, batch size, optimiser and schedule, as for
            :func:`~softlabels.engine.fit`; ``config.eval_every`` sets how often ``eval_data``
            is scored (it always is after the last epoch). ``config.seed`` is not used: each
            student's seed seeds its data order and augmentation.
        seeds: one distinct int >= 0 per student.
        augment: ``augment(batch (B, C, H, W), generator) -> batch`` (e.g.
            :class:`~softlabels.data.dsa.DSA`), applied to every student's batch with that
            student's generator.
        eval_data: (images (M, C, H, W), labels int64 (M,)) to score the students on, or a
            dataset / loader of (image, label) pairs.
        eval_batch_size: images per evaluation forward pass; each pass holds activations
            for ``S * eval_batch_size`` images.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        vectorize: ``True`` trains all students as one model (see ``backend``; the model must
            have no BatchNorm running statistics and no random layers such as dropout; the
            default instance-norm ConvNet qualifies); ``False`` one after the other, each by
            :func:`~softlabels.engine.fit`; ``None`` (the default) decides: vectorised on a
            GPU, where it is 2-3x faster for small students, sequential on a CPU, where it is
            measured slower (``benchmarks/students.py``), and sequential for a model with
            BatchNorm running statistics (which a vectorised run cannot carry).
        backend: how a vectorised run computes, one of :data:`BACKENDS`. ``"grouped"`` runs
            a :class:`~softlabels.models.ConvNet` (GroupNorm/instance norm or no norm) as one
            network whose convolutions have S groups, in a (B, S * width, H, W) layout kept
            from input to classifier; ``"vmap"`` is ``torch.func.vmap`` over
            ``functional_call`` and takes any model. On the CPU ``vmap``'s batching rules add
            layout copies and an unfused GroupNorm affine, which ``"grouped"`` avoids.
            ``"auto"`` picks ``"grouped"`` when the model allows it. Ignored when
            ``vectorize=False``.
        pixels: the images are pixels in [0, 1] (False for ZCA-whitened ones; see
            :func:`~softlabels.engine.fit`).
        show_progress: see :func:`softlabels.progress.progress`.

    Returns:
        :class:`StudentsResult` with per-student accuracies, history and trained weights.

    Raises:
        TypeError: ``build_model`` is not callable or returns no ``nn.Module``; a tensor
            argument has the wrong type or dtype.
        ValueError: empty or duplicate ``seeds``; mismatched shapes between ``images``,
            ``targets``, ``eval_data`` and the model's outputs; students whose parameters differ
            in shape; a model with BatchNorm when ``vectorize=True``; ``backend="grouped"``
            for a model other than a GroupNorm/no-norm ConvNet.
        NonFiniteLossError: a student's training loss became NaN or infinite.

    Example:
        >>> from softlabels.models import create_model
        >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
        >>> result = train_students(lambda s: create_model("convnet", 2, 1, 8, width=4), x, y,
        ...                         TrainConfig(epochs=2, batch_size=4), seeds=[0, 1],
        ...                         eval_data=(x, y), device="cpu", show_progress=False)
        >>> len(result.final_accuracy), len(result.state_dicts)
        (2, 2)
    """
    if not callable(build_model):
        raise TypeError(f"build_model must be callable (seed -> nn.Module), got "
                        f"{type(build_model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    seed_list = _check_seeds(seeds)
    if not isinstance(images, Tensor):  # a dataset: a distilled set is small, so held whole
        images, targets = _materialize(images, targets)
    if eval_data is not None and not isinstance(eval_data, tuple):
        eval_data = _materialize(eval_data, None)
    _check_data(images, targets)
    if eval_data is not None:
        _check_eval_data(eval_data, images)
    check_positive_int("eval_batch_size", eval_batch_size)
    if vectorize is not None and not isinstance(vectorize, bool):
        raise TypeError(f"vectorize must be a bool or None, got {type(vectorize).__name__}")
    check_choice("backend", backend, BACKENDS)
    target_device = resolve_device(device)

    models = [build_seeded(build_model, seed) for seed in seed_list]
    _check_same_architecture(models, seed_list)
    if vectorize is None:
        vectorize = target_device.type != "cpu" and _batchnorm_statistics(models[0]) is None
    chosen = _choose_backend(models[0], backend) if vectorize else "sequential"
    if chosen == "vmap":
        _check_vmappable(models[0])
    for model in models:
        model.to(target_device)
    x_all, y_all = images.to(target_device), targets.to(target_device)
    num_classes = _probe_num_classes(models[0], x_all[:1])
    _check_classes(targets, eval_data, num_classes)
    evaluation = None
    if eval_data is not None:
        evaluation = (eval_data[0].to(target_device), eval_data[1].to(target_device))
    # One generator per student, seeded like fit's (config.seed = seed), so a student's data
    # order and augmentation draws do not depend on which other students share the run.
    generators = [torch.Generator().manual_seed(seed) for seed in seed_list]

    began = time.perf_counter()
    if vectorize:
        history = _train_vectorized(models, chosen, x_all, y_all, config, generators, augment,
                                    evaluation, eval_batch_size, seed_list, show_progress)
    else:
        history = _train_sequential(models, x_all, y_all, config, augment, evaluation,
                                    eval_batch_size, seed_list, pixels, show_progress)
    seconds = time.perf_counter() - began

    final = best = None
    if evaluation is not None:
        scored = [h["eval_accuracy"] for h in history if "eval_accuracy" in h]
        final = list(scored[-1])
        best = [max(run_scores[i] for run_scores in scored) for i in range(len(seed_list))]
    state_dicts = [{k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
                   for m in models]
    return StudentsResult(seeds=seed_list, final_accuracy=final, best_accuracy=best,
                          history=history, state_dicts=state_dicts, backend=chosen,
                          seconds=seconds)


# --------------------------------------------------------------------------- training loops


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


def _train_vectorized(models: list[nn.Module], backend: str, x_all: Tensor, y_all: Tensor,
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


def _train_sequential(models: list[nn.Module], x_all: Tensor, y_all: Tensor,
                      config: TrainConfig, augment: AugmentFn | None,
                      evaluation: tuple[Tensor, Tensor] | None, eval_batch_size: int,
                      seeds: list[int], pixels: bool, show_progress: bool | None
                      ) -> list[dict[str, Any]]:
    """The reference: one student after the other, each trained by :func:`fit` with its seed
    (its data order and augmentation draws) exactly as a single model would be."""
    per_student: list[list[dict[str, Any]]] = []
    for model, seed in zip(models, seeds, strict=True):
        try:
            result = fit(model, x_all, y_all, dataclasses.replace(config, seed=seed),
                         augment=augment, eval_data=evaluation, eval_batch_size=eval_batch_size,
                         device=x_all.device, pixels=pixels, show_progress=show_progress)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(f"the student with seed [{seed}]: {err}") from err
        per_student.append(result.history)
    # Same layout as the vectorised history: one record per epoch, lists over students.
    history: list[dict[str, Any]] = []
    for epoch_records in zip(*per_student, strict=True):
        merged: dict[str, Any] = {"epoch": epoch_records[0]["epoch"],
                                  "lr": epoch_records[0]["lr"],
                                  "loss": [r["loss"] for r in epoch_records],
                                  "seconds": sum(r["seconds"] for r in epoch_records)}
        if "eval_accuracy" in epoch_records[0]:
            merged["eval_accuracy"] = [r["eval_accuracy"] for r in epoch_records]
        history.append(merged)
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


def _choose_backend(model: nn.Module, backend: str) -> str:
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


def _materialize(data: Any, targets: Tensor | None) -> tuple[Tensor, Tensor]:
    """A dataset or loader of (image, target) pairs as two tensors, in its order."""
    batches = list(make_source(data, targets).ordered(256, torch.device("cpu")))
    return torch.cat([b.x for b in batches]), torch.cat([b.y for b in batches])


# --------------------------------------------------------------------------- input checks


def _check_seeds(seeds: object) -> list[int]:
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence):
        raise TypeError(f"seeds must be a sequence of ints, got {type(seeds).__name__}")
    if len(seeds) == 0:
        raise ValueError("seeds is empty: give one seed per student, e.g. [0, 1, 2, 3, 4]")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seeds must hold ints, got {type(seed).__name__} ({seed!r})")
        if seed < 0:
            raise ValueError(f"seeds must be >= 0, got {seed}")
    duplicates = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if duplicates:
        raise ValueError(f"seeds must be distinct (a repeated seed trains the same student "
                         f"twice), got duplicates {duplicates} in {list(seeds)}")
    return [int(s) for s in seeds]


def _check_data(images: Tensor, targets: Tensor) -> None:
    check_float("images", images)
    check_ndim("images", images, (4,))
    if images.shape[0] == 0:
        raise ValueError("images is empty: nothing to train on")
    check_finite("images", images)
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.is_floating_point():
        if targets.ndim != 2:
            raise ValueError(f"soft targets must have shape (N, K), got {tuple(targets.shape)}")
        validate(targets, name="targets", allow_partial=True)
    else:
        if targets.dtype != torch.int64:
            raise TypeError(f"hard targets must be int64 class indices, got {targets.dtype}")
        if targets.ndim != 1:
            raise ValueError(f"hard targets must have shape (N,), got {tuple(targets.shape)}")
        if int(targets.min()) < 0:
            raise ValueError(f"targets must be >= 0, got a minimum of {int(targets.min())}")
    if targets.shape[0] != images.shape[0]:
        raise ValueError(f"targets has {targets.shape[0]} rows but images has "
                         f"{images.shape[0]}")


def _check_eval_data(eval_data: object, images: Tensor) -> None:
    if not isinstance(eval_data, tuple | list) or len(eval_data) != 2:
        raise TypeError("eval_data must be a pair (images, labels)")
    eval_images, eval_labels = eval_data
    check_float("eval_data[0]", eval_images)
    check_ndim("eval_data[0]", eval_images, (4,))
    if eval_images.shape[0] == 0:
        raise ValueError("eval_data[0] is empty: nothing to evaluate")
    if eval_images.shape[1:] != images.shape[1:]:
        raise ValueError(f"eval_data[0] has images of shape {tuple(eval_images.shape[1:])} but "
                         f"the training images are {tuple(images.shape[1:])}")
    if not isinstance(eval_labels, Tensor) or eval_labels.dtype != torch.int64:
        raise TypeError("eval_data[1] must be an int64 tensor of class indices")
    if eval_labels.shape != eval_images.shape[:1]:
        raise ValueError(f"eval_data[1] must have shape ({eval_images.shape[0]},), got "
                         f"{tuple(eval_labels.shape)}")


def _signature(model: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {name: (tuple(t.shape), t.dtype)
            for name, t in [*model.named_parameters(), *model.named_buffers()]}


def _check_same_architecture(models: list[nn.Module], seeds: list[int]) -> None:
    reference = _signature(models[0])
    for model, seed in zip(models[1:], seeds[1:], strict=True):
        other = _signature(model)
        if other == reference:
            continue
        names = sorted(set(reference) ^ set(other))
        if names:
            detail = f"the tensor names differ ({names[:5]})"
        else:
            name = next(n for n in reference if reference[n] != other[n])
            detail = (f"{name!r} has shape/dtype {other[name]} instead of "
                      f"{reference[name]}")
        raise ValueError(f"build_model must build the same architecture for every seed, but "
                         f"build_model({seed}) differs from build_model({seeds[0]}): {detail}")


def _batchnorm_statistics(model: nn.Module) -> str | None:
    """The first module keeping BatchNorm running statistics, described, or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            return f"{name or 'the model'} is {type(module).__name__}"
    return None


def _check_vmappable(model: nn.Module) -> None:
    found = _batchnorm_statistics(model)
    if found is not None:
        raise ValueError(
            f"vectorize=True cannot train a model with BatchNorm running statistics "
            f"({found}); use an instance-norm model (e.g. convnet with norm='instancenorm'), "
            "vectorize=False, or vectorize=None to fall back to sequential students")


@torch.no_grad()
def _probe_num_classes(model: nn.Module, x: Tensor) -> int:
    """Number of logits, from one image, so label mismatches fail before any training."""
    was_training = model.training
    model.eval()
    try:
        out = model(x)
    finally:
        model.train(was_training)
    if out.ndim != 2:
        raise ValueError(f"build_model must return a classifier with (B, K) logits, got an "
                         f"output of shape {tuple(out.shape)}")
    return int(out.shape[1])


def _check_classes(targets: Tensor, eval_data: tuple[Tensor, Tensor] | None,
                   num_classes: int) -> None:
    if targets.is_floating_point():
        if targets.shape[1] != num_classes:
            raise ValueError(f"soft targets have {targets.shape[1]} classes but the model "
                             f"returns {num_classes} logits")
    else:
        check_hard_labels("targets", targets, num_classes)
    if eval_data is not None:
        check_hard_labels("eval_data[1]", eval_data[1], num_classes)
