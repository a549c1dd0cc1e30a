"""``softlabels distill``: soft-label dataset distillation (Qin et al., NeurIPS 2024).

A sweep over (images, IPC, label mode, expert epoch, temperature, k). For each cell a few real
images per class (random, loss-ranked or from an index file; or Distribution Matching images)
get labels of one mode, and ``len(seeds)`` students, trained together as one vectorised model,
learn from them; the cell's row holds each student's final and best test accuracy.

* Experts are trained once on the training pool (the training split minus a validation split)
  with a checkpoint after every epoch, so any early epoch can label the images.
* ``select_epoch`` picks, per IPC, the expert epoch whose labels give the best students on the
  validation split (``phase = "select"`` rows); the test cells then use that epoch.
* Every cell's labels are written as a :class:`~softlabels.store.LabelStore` under ``labels/``
  and counted in bytes for the Pareto frontier.

Finished cells are read back from ``results.jsonl``; experts and DM images resume from disk.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice
from .._io import torch_load, torch_save, write_json
from ..configuration import field_help
from ..data import ImageDataset, augmentation, list_augmentations, load_dataset
from ..data.split import train_val_split
from ..distill import (
    QUANTILE_PRESETS,
    STUDENT_BACKENDS,
    dataset_bytes,
    load_index_file,
    make_labels,
    save_index_file,
    select_by_loss,
    select_random,
    train_students,
)
from ..distill.dm import distribution_matching
from ..distill.experts import Experts, early_checkpoint_epochs, train_experts
from ..distill.grid import Cell, cells_for
from ..distill.learned import learn_labels
from ..engine import TrainConfig
from ..labels import entropy, js_distance, smooth
from ..models import create_model
from ..results import ResultsLog
from ..runtime import resolve_device
from ..store import LabelMetadata, LabelStore
from .distill_report import chosen_epoch_row, write_report
from .run_folder import prepare_run_folder
from .train import parse_model_args

__all__ = ["DISTILL_LABELS", "QUICK", "DistillStudyConfig", "run"]

#: Label modes of the study: those of :func:`~softlabels.distill.make_labels` plus
#: ``learned`` (optimised through an unrolled student) and ``file`` (a user's LabelStore).
DISTILL_LABELS = ("hard", "expert", "smooth", "topk", "swap", "shuffle", "learned", "file")
IMAGE_SOURCES = ("random", "dm")
SELECTIONS = ("random", *QUANTILE_PRESETS)
_NEEDS_EXPERT = frozenset({"expert", "smooth", "topk", "swap", "shuffle"})
# Start of learned labels: smoothed true labels, so both the top class and the others can move.
_LEARNED_INIT_EPS = 0.3


@dataclass(frozen=True)
class DistillStudyConfig:
    """Settings of ``softlabels distill``; each field is the CLI flag of the same name."""

    dataset: str = field(default="digits", metadata=field_help("dataset name"))
    data_root: str | None = field(default=None, metadata=field_help("dataset folder"))
    model: str = field(default="convnet", metadata=field_help("expert and student model"))
    model_args: tuple[str, ...] = field(default=("width=64",), metadata=field_help(
        "model options as KEY=VALUE"))
    val_fraction: float = field(default=0.1, metadata=field_help(
        "share of each training class held out for --select-epoch"))
    experts: int = field(default=1, metadata=field_help(
        "experts trained (seeds 0..N-1); their logits are averaged (ensemble)"))
    expert_epochs: int = field(default=20, metadata=field_help("epochs each expert trains"))
    expert_lr: float = field(default=0.01, metadata=field_help("expert SGD learning rate"))
    expert_momentum: float = field(default=0.0, metadata=field_help("expert SGD momentum"))
    expert_weight_decay: float = field(default=0.0, metadata=field_help("expert weight decay"))
    expert_batch_size: int = field(default=256, metadata=field_help("expert batch size"))
    expert_schedule: str = field(default="constant", metadata=field_help(
        "expert learning-rate schedule", choices=("constant", "cosine", "step")))
    expert_augment: str = field(default="dsa", metadata=field_help("expert augmentation"))
    expert_checkpoints_per_epoch: int = field(default=1, metadata=field_help(
        "checkpoints per epoch kept in the first --expert-early-epochs epochs (4 gives 0.25, "
        "0.5, 0.75, 1, ...)"))
    expert_early_epochs: int = field(default=2, metadata=field_help(
        "leading expert epochs with --expert-checkpoints-per-epoch checkpoints"))
    images: tuple[str, ...] = field(default=("random",), metadata=field_help(
        "image sources: random real images and/or dm (Distribution Matching)",
        choices=IMAGE_SOURCES))
    dm_labels: tuple[str, ...] = field(default=("hard", "expert"), metadata=field_help(
        "label modes of the dm images (those also in --labels)", choices=DISTILL_LABELS))
    selection: str = field(default="random", metadata=field_help(
        "how real images are chosen: random, or the easiest/hardest by final-expert loss",
        choices=SELECTIONS))
    index_file: str | None = field(default=None, metadata=field_help(
        "JSON or text file of training-split positions to use instead of --selection"))
    selection_seed: int = field(default=0, metadata=field_help("seed of the random selection"))
    ipc: tuple[int, ...] = field(default=(1, 10), metadata=field_help("images per class"))
    labels: tuple[str, ...] = field(default=("hard", "expert"), metadata=field_help(
        "label modes", choices=DISTILL_LABELS))
    expert_epoch: tuple[float, ...] = field(default=(20,), metadata=field_help(
        "expert epochs that label the images (candidates with --select-epoch); fractions "
        "such as 0.5 need --expert-checkpoints-per-epoch"))
    select_epoch: bool = field(default=False, metadata=field_help(
        "choose the expert epoch per IPC on the validation split"))
    temperature: tuple[float, ...] = field(default=(1.0,), metadata=field_help(
        "expert softmax temperatures"))
    k: tuple[int, ...] = field(default=(1,), metadata=field_help(
        "classes kept (topk; 0 = hard argmax) or rank swapped (swap)"))
    topk_renormalize: bool = field(default=False, metadata=field_help(
        "rescale top-k labels to sum to 1 (the official code does not)"))
    label_file: str | None = field(default=None, metadata=field_help(
        "LabelStore whose labels the 'file' mode uses"))
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=field_help(
        "student seeds, trained together in each cell"))
    student_epochs: int = field(default=300, metadata=field_help("student epochs"))
    student_lr: float = field(default=0.01, metadata=field_help("student learning rate"))
    student_optimizer: str = field(default="sgd", metadata=field_help(
        "student optimiser", choices=("sgd", "adamw")))
    student_batch_size: int = field(default=256, metadata=field_help("student batch size"))
    student_augment: str = field(default="dsa", metadata=field_help("student augmentation"))
    student_backend: str = field(default="auto", metadata=field_help(
        "how a cell's students train: sequential, grouped or vmap (vectorised); auto = "
        "sequential on a CPU (measured faster there) and vectorised on a GPU",
        choices=("auto", "sequential", *STUDENT_BACKENDS[1:])))
    eval_every: int = field(default=100, metadata=field_help(
        "score students every N epochs (best = max over these and the end)"))
    dm_iterations: int = field(default=1000, metadata=field_help("DM optimisation steps"))
    dm_lr: float = field(default=1.0, metadata=field_help("DM learning rate on pixels"))
    dm_batch_real: int = field(default=64, metadata=field_help("DM real images per class and step"))
    learned_steps: int = field(default=100, metadata=field_help("label updates (learned)"))
    learned_unroll: int = field(default=10, metadata=field_help(
        "unrolled student steps per update (learned)"))
    learned_inner_lr: float = field(default=0.1, metadata=field_help(
        "student SGD lr inside the unroll (learned); the unrolled student must learn within "
        "the unroll, or the labels only drift (compare the row's learned_loss_first/last)"))
    learned_lr: float = field(default=0.05, metadata=field_help(
        "Adam lr on label logits (learned)"))
    device: str = field(default="auto", metadata=field_help("auto, cpu or cuda"))
    out: str = field(default="runs/distill", metadata=field_help("output folder"))

    def __post_init__(self) -> None:
        for name, choices in (("images", IMAGE_SOURCES), ("labels", DISTILL_LABELS)):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{name} must name at least one of {list(choices)}")
            for value in values:
                check_choice(name, value, choices)
        for name in ("images", "labels", "ipc", "expert_epoch", "temperature", "k", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{name} is empty: the sweep grid would have no cells")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat a value, got {list(values)}")
        if any(v <= 0 for v in self.ipc):
            raise ValueError(f"ipc values must be >= 1, got {list(self.ipc)}")
        if any(t <= 0 for t in self.temperature):
            raise ValueError(f"temperatures must be > 0, got {list(self.temperature)}")
        if any(k < 0 for k in self.k):
            raise ValueError(f"k values must be >= 0, got {list(self.k)}")
        if "swap" in self.labels and 0 in self.k:
            raise ValueError("k = 0 means hard argmax labels for topk; swap needs k >= 1")
        if any(e < 0 or e > self.expert_epochs for e in self.expert_epoch):
            raise ValueError(f"expert_epoch values must lie in [0, expert_epochs="
                             f"{self.expert_epochs}], got {list(self.expert_epoch)}")
        if self.expert_early_epochs < 0:
            raise ValueError(f"expert_early_epochs must be >= 0, got {self.expert_early_epochs}")
        # Whole epochs as ints, so that cell names and result rows read e2, not e2.0.
        object.__setattr__(self, "expert_epoch",
                           tuple(_epoch_value(e) for e in self.expert_epoch))
        saved_fractions = early_checkpoint_epochs(
            self.expert_checkpoints_per_epoch,
            min(self.expert_early_epochs, self.expert_epochs))
        unsaved = [e for e in self.expert_epoch
                   if isinstance(e, float) and e not in saved_fractions]
        if unsaved:
            raise ValueError(f"expert_epoch {unsaved} falls inside an epoch, but the experts "
                             f"keep only {saved_fractions or 'whole epochs'}; set "
                             f"--expert-checkpoints-per-epoch and --expert-early-epochs")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("experts", "expert_epochs", "dm_iterations", "dm_batch_real",
                     "learned_steps", "learned_unroll", "expert_checkpoints_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("expert_augment", "student_augment"):
            check_choice(name, getattr(self, name), list_augmentations())
        if "file" in self.labels and self.label_file is None:
            raise ValueError("label mode 'file' needs --label-file (a LabelStore)")
        if "file" in self.dm_labels and "dm" in self.images:
            raise ValueError("label mode 'file' labels real training images; it cannot label "
                             "dm images (drop it from --dm-labels)")
        for value in self.dm_labels:
            check_choice("dm_labels", value, DISTILL_LABELS)
        if self.index_file is not None and len(self.ipc) != 1:
            raise ValueError(f"with --index-file the images are fixed: give the single ipc it "
                             f"holds, got {list(self.ipc)}")
        self.expert_config()
        self.student_config()
        parse_model_args(self.model_args)

    def expert_config(self) -> TrainConfig:
        """The experts' recipe (a checkpoint after every epoch)."""
        return TrainConfig(epochs=self.expert_epochs, batch_size=self.expert_batch_size,
                           optimizer="sgd", lr=self.expert_lr, momentum=self.expert_momentum,
                           weight_decay=self.expert_weight_decay,
                           schedule=self.expert_schedule, checkpoint_every=1)

    def student_config(self) -> TrainConfig:
        """The students' recipe: the DC protocol's step decay at half the epochs."""
        milestones = (self.student_epochs // 2,) if self.student_epochs >= 2 else ()
        return TrainConfig(epochs=self.student_epochs, batch_size=self.student_batch_size,
                           optimizer=self.student_optimizer, lr=self.student_lr,
                           momentum=0.9, weight_decay=5e-4, schedule="step",
                           milestones=milestones, eval_every=self.eval_every)

    def needs_experts(self) -> bool:
        """Whether any label mode, selection or report uses an expert."""
        return bool(_NEEDS_EXPERT & set(self.labels)) or self.selection != "random" \
            or "learned" in self.labels


#: ``--quick``: every artifact (selection, DM, all label modes, figures) in well under a minute.
QUICK: dict[str, Any] = {
    "out": "runs/distill-quick", "model_args": ("width=16", "depth=2"), "expert_epochs": 10,
    "expert_lr": 0.05, "expert_momentum": 0.9, "expert_batch_size": 64,
    "images": ("random", "dm"), "ipc": (1, 2, 5),
    "labels": ("hard", "expert", "smooth", "topk", "swap", "shuffle", "learned"),
    "expert_epoch": (2, 5, 10), "select_epoch": True, "k": (2,), "seeds": (0, 1),
    "student_epochs": 60, "student_lr": 0.05, "eval_every": 30, "dm_iterations": 20,
    "learned_steps": 8, "learned_unroll": 5, "learned_inner_lr": 0.3, "learned_lr": 0.1,
}


@dataclass
class _Context:
    """What every cell of one run shares."""

    config: DistillStudyConfig
    folder: Path
    pool: ImageDataset
    val: ImageDataset
    test: ImageDataset
    experts: Experts | None
    log: ResultsLog
    done: dict[tuple[Any, ...], dict[str, Any]]
    show_progress: bool | None
    logits_cache: dict[tuple[str, int, float | None], Tensor] = field(default_factory=dict)

    def build(self, seed: int) -> nn.Module:
        """A fresh model; callers seed it through :func:`~softlabels.runtime.build_seeded`."""
        return create_model(self.config.model, self.pool.num_classes, self.pool.in_channels,
                            self.pool.image_size, mean=self.pool.info.mean,
                            std=self.pool.info.std, **parse_model_args(self.config.model_args))


def run(config: DistillStudyConfig, *, show_progress: bool | None = None
        ) -> list[dict[str, Any]]:
    """Run every cell of the sweep; write results, label stores, report and figures.

    Returns the rows of this sweep's cells; ``report.md`` and the figures cover every cell in
    the folder, this sweep's and those of earlier sweeps into the same ``out``.
    """
    folder = prepare_run_folder(config, config.out, sweep_fields=(
        "images", "dm_labels", "ipc", "labels", "expert_epoch", "temperature", "k",
        # Backends compute the same students up to floating-point summation order.
        "student_backend"))
    log = ResultsLog(folder / "results.jsonl", key_fields=tuple(Cell.__dataclass_fields__))
    full = load_dataset(config.dataset, config.data_root, split="train")
    test = load_dataset(config.dataset, config.data_root, split="test")
    train_positions, val_positions = train_val_split(full.labels, config.val_fraction, seed=0)
    ctx = _Context(config, folder, full.subset(train_positions), full.subset(val_positions),
                   test, None, log, {log.key(r): r for r in log.rows()}, show_progress)
    positions = {ipc: _select(ctx, ipc) for ipc in config.ipc}  # fail early on bad input
    if config.needs_experts():
        ctx.experts = _experts(ctx)
    rows: list[dict[str, Any]] = []
    for ipc in config.ipc:
        epochs = list(config.expert_epoch)
        if config.select_epoch and _NEEDS_EXPERT & set(config.labels):
            candidates = cells_for("select", "random", ipc, ["expert"], epochs,
                                   config.temperature[:1], [])
            chosen = [_cell_row(ctx, cell, positions[ipc]) for cell in candidates]
            rows += chosen
            best = chosen_epoch_row(chosen)
            epochs = [best["expert_epoch"]]
        for images in config.images:
            labels = config.labels if images == "random" else \
                [mode for mode in config.labels if mode in config.dm_labels]
            for cell in cells_for("test", images, ipc, labels, epochs,
                                  config.temperature, config.k):
                rows.append(_cell_row(ctx, cell, positions[ipc]))
                write_report(folder, config, list(ctx.done.values()), _expert_accuracy(ctx))
    # The report covers the whole folder: sweeps run into it one after the other (say IPC 1
    # and 10, then IPC 50) share everything but the grid, so they belong in one table.
    write_report(folder, config, list(ctx.done.values()), _expert_accuracy(ctx), figures=True)
    return rows


def _experts(ctx: _Context) -> Experts:
    config = ctx.config
    augment = augmentation(config.expert_augment, min(ctx.pool.image_size))
    return train_experts(ctx.build, ctx.pool.images, ctx.pool.labels, config.expert_config(),
                         list(range(config.experts)), ctx.folder / "experts", augment=augment,
                         device=config.device,
                         checkpoints_per_epoch=config.expert_checkpoints_per_epoch,
                         early_epochs=config.expert_early_epochs,
                         show_progress=ctx.show_progress)


def _epoch_value(epoch: float | str) -> float:
    """An expert epoch as a number: ``int`` for a whole epoch, ``float`` inside one."""
    value = float(epoch)
    return int(value) if value.is_integer() else value


def _expert_accuracy(ctx: _Context) -> dict[float, float]:
    """Test accuracy of the (ensembled) experts at each epoch a cell used, plus the last one.

    Cached in ``experts/test_accuracy.json`` so reports of a resumed run cost nothing.
    """
    if ctx.experts is None:
        return {}
    path = ctx.folder / "experts" / "test_accuracy.json"
    cached = {_epoch_value(k): v for k, v in json.loads(path.read_text()).items()} \
        if path.exists() else {}
    wanted = {ctx.config.expert_epochs} | set(ctx.config.expert_epoch)
    missing = sorted(wanted - set(cached))
    for epoch in missing:
        logits = ctx.experts.logits(epoch, ctx.test.images)
        cached[epoch] = float((logits.argmax(1) == ctx.test.labels).float().mean())
    if missing:
        write_json(path, {str(k): v for k, v in sorted(cached.items())})
    return cached


def _select(ctx: _Context, ipc: int) -> Tensor:
    """Pool positions of the real images at ``ipc``; saved to ``selection/ipc{n}.json``."""
    config, pool = ctx.config, ctx.pool
    path = ctx.folder / "selection" / f"ipc{ipc}.json"
    if config.index_file is not None:
        positions = _index_file_positions(ctx, ipc)
    elif config.selection == "random":
        positions = select_random(pool.labels, ipc, config.selection_seed)
    elif path.exists():
        return load_index_file(path, len(pool))
    else:
        # Needs the experts; they are trained first when the selection is loss-based.
        experts = ctx.experts or _experts(ctx)
        ctx.experts = experts
        logits = experts.logits(config.expert_epochs, pool.images)
        losses = torch.nn.functional.cross_entropy(logits, pool.labels, reduction="none")
        positions = select_by_loss(pool.labels, losses, ipc, config.selection)
    path.parent.mkdir(exist_ok=True)
    save_index_file(path, positions)
    return positions


def _index_file_positions(ctx: _Context, ipc: int) -> Tensor:
    """Positions in the training split from the user's file, mapped into the pool."""
    config, pool = ctx.config, ctx.pool
    wanted = load_index_file(config.index_file, len(pool) + len(ctx.val))  # type: ignore[arg-type]
    lookup = {int(index): position for position, index in enumerate(pool.indices.tolist())}
    held_out = [int(i) for i in wanted if int(i) not in lookup]
    if held_out:
        raise ValueError(f"index file {config.index_file!r} names training images held out "
                         f"for validation (first few: {held_out[:5]}); pick others")
    positions = torch.tensor([lookup[int(i)] for i in wanted], dtype=torch.int64)
    counts = torch.bincount(pool.labels[positions], minlength=pool.num_classes).tolist()
    if any(c != ipc for c in counts):
        raise ValueError(f"index file {config.index_file!r} holds {counts} images per class; "
                         f"--ipc is {ipc}")
    return positions.sort().values


def _dm_images(ctx: _Context, ipc: int, positions: Tensor) -> Tensor:
    """DM images at ``ipc``, initialised from the selected real images; kept under ``dm/``."""
    config = ctx.config
    path = ctx.folder / "dm" / f"ipc{ipc}.pt"
    if path.exists():
        return torch_load(path)["images"]
    # Making DM images can take an hour; a killed run continues from its last checkpoint.
    partial = path.with_name(f"ipc{ipc}.partial.pt")
    partial.parent.mkdir(exist_ok=True)
    result = distribution_matching(
        ctx.build, ctx.pool.images, ctx.pool.labels, ctx.pool.images[positions],
        ctx.pool.labels[positions], iterations=config.dm_iterations, lr=config.dm_lr,
        batch_real=config.dm_batch_real, seed=config.selection_seed, device=config.device,
        checkpoint=partial, show_progress=ctx.show_progress)
    torch_save(path, {"images": result.images, "labels": result.labels,
                      "losses": torch.tensor(result.losses)})
    partial.unlink()
    return result.images


def _cell_row(ctx: _Context, cell: Cell, positions: Tensor) -> dict[str, Any]:
    key = ctx.log.key(cell.key())
    if key in ctx.done:
        return ctx.done[key]
    began = time.perf_counter()
    config, pool = ctx.config, ctx.pool
    hard = pool.labels[positions]
    if cell.images == "dm":
        images = _dm_images(ctx, cell.ipc, positions)
        indices = torch.arange(images.shape[0])
    else:
        images, indices = pool.images[positions], pool.indices[positions]
    targets, extra = _labels(ctx, cell, images, hard, indices)
    store = LabelStore(indices, targets, LabelMetadata(
        source=cell.labels, dataset=config.dataset,
        split="train" if cell.images == "random" else f"dm-ipc{cell.ipc}",
        temperature=cell.temperature, class_names=pool.info.class_names,
        extra={"cell": cell.key()}))
    (ctx.folder / "labels").mkdir(exist_ok=True)
    store.save(ctx.folder / "labels" / f"{cell.name()}.safetensors", mode="fp32")
    evaluation = ctx.val if cell.phase == "select" else ctx.test  # never test for selection
    backend = config.student_backend
    if backend == "auto":
        backend = "sequential" if resolve_device(config.device).type == "cpu" else "auto"
    vectorize = backend != "sequential"
    result = train_students(ctx.build, images, targets, config.student_config(),
                            config.seeds, augment=augmentation(config.student_augment,
                                                               min(pool.image_size)),
                            eval_data=(evaluation.images, evaluation.labels),
                            device=config.device, vectorize=vectorize,
                            backend=backend if vectorize else "auto",
                            show_progress=ctx.show_progress)
    label_bytes = _label_bytes(store, cell)
    row = {**cell.key(), "seeds": list(config.seeds),
           "eval_split": "val" if cell.phase == "select" else "test",
           "final": result.final_accuracy, "best": result.best_accuracy,
           **result.summary(), "num_images": int(images.shape[0]),
           "label_entropy": float(entropy(targets).mean()),
           "label_bytes_per_image": label_bytes,
           "bytes": dataset_bytes(int(images.shape[0]), tuple(images.shape[1:]), label_bytes),
           "bytes_fp32": dataset_bytes(int(images.shape[0]), tuple(images.shape[1:]),
                                       store.report("fp32").bytes_per_image),
           "backend": result.backend, "seconds": time.perf_counter() - began, **extra}
    ctx.log.append(row)
    ctx.done[key] = row
    return row


def _expert_logits(ctx: _Context, cell: Cell, images: Tensor) -> Tensor:
    key = (cell.images, cell.ipc, cell.expert_epoch)
    if key not in ctx.logits_cache:
        assert ctx.experts is not None  # needs_experts() guarantees it for these modes
        ctx.logits_cache[key] = ctx.experts.logits(key[2], images)
    return ctx.logits_cache[key]


def _labels(ctx: _Context, cell: Cell, images: Tensor, hard: Tensor, indices: Tensor
            ) -> tuple[Tensor, dict[str, Any]]:
    """(N, K) labels of the cell and extra row fields."""
    config, num_classes = ctx.config, ctx.pool.num_classes
    if cell.labels == "file":
        return _file_labels(ctx, indices), {}
    if cell.labels == "learned":
        return _learned_labels(ctx, images, hard)
    logits = _expert_logits(ctx, cell, images) if cell.labels in _NEEDS_EXPERT else None
    targets = make_labels(cell.labels, hard=hard, logits=logits, num_classes=num_classes,
                          temperature=cell.temperature or 1.0, k=cell.k,
                          seed=config.selection_seed, renormalize=config.topk_renormalize)
    return targets, {}


def _file_labels(ctx: _Context, indices: Tensor) -> Tensor:
    """The user's LabelStore, checked against this dataset."""
    path = ctx.config.label_file
    store = LabelStore.load(path)  # type: ignore[arg-type]  # refuses corrupt files
    if store.num_classes != ctx.pool.num_classes:
        raise ValueError(f"label store {path!r} has {store.num_classes} classes but dataset "
                         f"{ctx.config.dataset!r} has {ctx.pool.num_classes}")
    stored = store.metadata.dataset
    if stored and stored != ctx.config.dataset:
        raise ValueError(f"label store {path!r} was made for dataset {stored!r}, not "
                         f"{ctx.config.dataset!r}")
    try:
        return store.labels_for(indices)
    except ValueError as err:
        raise ValueError(f"label store {path!r} does not cover the selected training images: "
                         f"{err}") from err


def _learned_labels(ctx: _Context, images: Tensor, hard: Tensor
                    ) -> tuple[Tensor, dict[str, Any]]:
    """Labels learnt through an unrolled student, and their JS distance to expert labels."""
    config, pool = ctx.config, ctx.pool
    init = smooth(hard, pool.num_classes, _LEARNED_INIT_EPS)
    learned = learn_labels(ctx.build, images, init, pool.images, pool.labels,
                           outer_steps=config.learned_steps, inner_steps=config.learned_unroll,
                           inner_lr=config.learned_inner_lr, label_lr=config.learned_lr,
                           seed=config.selection_seed, device=config.device,
                           show_progress=ctx.show_progress)
    extra: dict[str, Any] = {"learned_loss_first": learned.losses[0],
                             "learned_loss_last": learned.losses[-1]}
    if ctx.experts is not None:
        # Distance of the learned (and, for reference, the starting) labels to the expert
        # labels of every saved epoch: the paper finds the learned ones closest to early epochs.
        learned_js, init_js = {}, {}
        for epoch in ctx.experts.saved_epochs():
            expert = ctx.experts.logits(epoch, images).softmax(1)
            learned_js[str(epoch)] = float(js_distance(learned.labels, expert).mean())
            init_js[str(epoch)] = float(js_distance(init, expert).mean())
        extra["js_to_expert"], extra["js_init_to_expert"] = learned_js, init_js
    return learned.labels, extra


def _label_bytes(store: LabelStore, cell: Cell) -> float:
    """Bytes per image of the labels as the study counts them for the Pareto frontier.

    Hard labels count one class index (1 byte for C <= 256); top-k labels their top-k encoding
    (fp16 values + class ids); other soft labels fp16.
    """
    if cell.labels == "hard" or (cell.labels == "topk" and cell.k == 0):
        return 1.0
    if cell.labels == "topk":
        return store.report("topk", k=cell.k).bytes_per_image
    return store.report("fp16").bytes_per_image

