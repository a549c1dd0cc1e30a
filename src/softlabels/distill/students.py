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

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_positive_int
from ..engine.config import TrainConfig
from ..engine.data import make_source
from ..engine.training import NonFiniteLossError, fit
from ..runtime import build_seeded, resolve_device
from .students_checks import (
    batchnorm_statistics,
    check_classes,
    check_data,
    check_eval_data,
    check_same_architecture,
    check_seeds,
    check_vmappable,
    probe_num_classes,
)
from .students_vectorized import BACKENDS, choose_backend, train_vectorized

__all__ = ["BACKENDS", "StudentsResult", "train_students"]

AugmentFn = Callable[[Tensor, torch.Generator], Tensor]
ModelBuilder = Callable[[int], nn.Module]


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
    seed_list = check_seeds(seeds)
    if not isinstance(images, Tensor):  # a dataset: a distilled set is small, so held whole
        images, targets = _materialize(images, targets)
    if eval_data is not None and not isinstance(eval_data, tuple):
        eval_data = _materialize(eval_data, None)
    check_data(images, targets)
    if eval_data is not None:
        check_eval_data(eval_data, images)
    check_positive_int("eval_batch_size", eval_batch_size)
    if vectorize is not None and not isinstance(vectorize, bool):
        raise TypeError(f"vectorize must be a bool or None, got {type(vectorize).__name__}")
    check_choice("backend", backend, BACKENDS)
    target_device = resolve_device(device)

    models = [build_seeded(build_model, seed) for seed in seed_list]
    check_same_architecture(models, seed_list)
    if vectorize is None:
        vectorize = target_device.type != "cpu" and batchnorm_statistics(models[0]) is None
    chosen = choose_backend(models[0], backend) if vectorize else "sequential"
    if chosen == "vmap":
        check_vmappable(models[0])
    for model in models:
        model.to(target_device)
    x_all, y_all = images.to(target_device), targets.to(target_device)
    num_classes = probe_num_classes(models[0], x_all[:1])
    check_classes(targets, eval_data, num_classes)
    evaluation = None
    if eval_data is not None:
        evaluation = (eval_data[0].to(target_device), eval_data[1].to(target_device))
    # One generator per student, seeded like fit's (config.seed = seed), so a student's data
    # order and augmentation draws do not depend on which other students share the run.
    generators = [torch.Generator().manual_seed(seed) for seed in seed_list]

    began = time.perf_counter()
    if vectorize:
        history = train_vectorized(models, chosen, x_all, y_all, config, generators, augment,
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


def _materialize(data: Any, targets: Tensor | None) -> tuple[Tensor, Tensor]:
    """A dataset or loader of (image, target) pairs as two tensors, in its order."""
    batches = list(make_source(data, targets).ordered(256, torch.device("cpu")))
    return torch.cat([b.x for b in batches]), torch.cat([b.y for b in batches])
