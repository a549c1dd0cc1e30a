"""``softlabels distill``: soft-label dataset distillation (Qin et al., NeurIPS 2024).

A sweep over (images, IPC, label mode, expert epoch, temperature, k). For each cell a few real
images per class (random, loss-ranked or from an index file; or Distribution Matching images;
or the user's own distilled images from ``--image-file``) get labels of one mode, and
``len(seeds)`` students, trained together as one vectorised model, learn from them; the cell's
row holds each student's final and best test accuracy.

* Experts are trained once on the training pool (the training split minus a validation split)
  with a checkpoint after every epoch, so any early epoch can label the images.
* ``select_epoch`` picks, per IPC, the expert epoch whose labels give the best students on the
  validation split (``phase = "select"`` rows); the test cells then use that epoch.
* Every cell's labels are written as a :class:`~softlabels.store.LabelStore` under ``labels/``
  and counted in bytes for the Pareto frontier.

Cells, in stages: the experts (one per seed) and then their test accuracy at every epoch used
and the DM images; the selection cells; the test cells. Finished cells are read back from
``results.jsonl``; experts and DM images resume from disk.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..configuration import field_help
from ..data import list_augmentations
from ..distill import QUANTILE_PRESETS, STUDENT_BACKENDS
from ..distill.experts import early_checkpoint_epochs
from ..distill.grid import Cell as GridCell
from ..distill.grid import cells_for
from ..engine import OPTIMIZERS, SCHEDULES, TrainConfig
from ..engine.data import batch_bounds
from ..models import MODEL_SPEC_HELP
from ..results import Table
from .common import StudyConfig, like
from .distill_cells import NEEDS_EXPERT, check, run_cell
from .distill_presets import FULL, QUICK, RECIPES
from .distill_report import chosen_epoch_row, write_report
from .sweep import Cell, RowIndex, Stage, Study

__all__ = ["DISTILL_LABELS", "QUICK", "STUDY", "DistillStudyConfig"]

#: Label modes of the study and what each gives the images. The expert is the teacher: an
#: early-stopped checkpoint of a model trained on the whole pool (the ``--expert-*`` flags).
LABEL_MODES: dict[str, str] = {
    "hard": "one-hot true labels",
    "teacher": "softmax(expert logits / T) at the chosen expert epoch (T --temperature)",
    "smooth": "label smoothing with the teacher labels' mean entropy, no class structure",
    "topk": "teacher labels keeping the k largest probabilities (k --k; 0 = hard argmax)",
    "swap": "teacher labels with the k-th largest probability swapped with the smallest",
    "shuffle": "teacher labels with every probability but the top one randomly permuted",
    "learned": "labels optimised through an unrolled student (images fixed)",
    "file": "your labels: a LabelStore (--label-file) for real images, or the soft labels "
            "inside --image-file for file images",
}
DISTILL_LABELS = tuple(LABEL_MODES)
IMAGE_SOURCES = ("random", "dm", "file")
# Where the default candidate expert epochs sit in the expert's training.
_CANDIDATE_SHARES = (0.1, 0.25, 0.5, 1.0)
SELECTIONS = ("random", *QUANTILE_PRESETS)
_OLD_LABELS = {"expert": "teacher"}


@dataclass(frozen=True)
class DistillStudyConfig(StudyConfig):
    """Settings of ``softlabels distill``; each field is the CLI flag of the same name."""

    RENAMED_VALUES: ClassVar[dict[str, dict[str, str]]] = {"labels": _OLD_LABELS,
                                                           "dm_labels": _OLD_LABELS}

    model: str = like("model", "convnet", "expert and student model: " + MODEL_SPEC_HELP)
    val_fraction: float = field(default=0.1, metadata=field_help(
        "share of each training class held out for --select-epoch", low=0.0, high=1.0,
        low_open=True, high_open=True))
    experts: int = field(default=1, metadata=field_help(
        "experts trained (seeds 0..N-1); their logits are averaged (ensemble)", low=1))
    expert_epochs: int | None = field(default=None, metadata=field_help(
        "epochs each expert trains (default: as many as --expert-steps optimiser steps take "
        "on this dataset, so a small dataset trains as long as CIFAR-10's 20 epochs)", low=1))
    expert_steps: int = field(default=3500, metadata=field_help(
        "optimiser steps of each expert when --expert-epochs is not given", low=1))
    expert_lr: float = field(default=0.01, metadata=field_help(
        "expert SGD learning rate", low=0.0, low_open=True))
    expert_momentum: float = field(default=0.0, metadata=field_help(
        "expert SGD momentum", low=0.0, high=1.0, high_open=True))
    expert_weight_decay: float = field(default=0.0, metadata=field_help(
        "expert weight decay", low=0.0))
    expert_batch_size: int = field(default=256, metadata=field_help(
        "expert batch size", low=1))
    expert_schedule: str = field(default="constant", metadata=field_help(
        "expert learning-rate schedule", choices=SCHEDULES))
    expert_augment: str = field(default="dsa", metadata=field_help(
        "expert augmentation", choices=tuple(list_augmentations())))
    expert_checkpoints_per_epoch: int = field(default=1, metadata=field_help(
        "checkpoints per epoch kept in the first --expert-early-epochs epochs (4 gives 0.25, "
        "0.5, 0.75, 1, ...)", low=1))
    expert_early_epochs: int = field(default=2, metadata=field_help(
        "leading expert epochs with --expert-checkpoints-per-epoch checkpoints", low=0))
    images: tuple[str, ...] = field(default=("random",), metadata=field_help(
        "image sources: random real images, dm (Distribution Matching) and/or file (your "
        "own distilled images, --image-file)", choices=IMAGE_SOURCES, nonempty=True,
        unique=True))
    image_file: str | None = field(default=None, metadata=field_help(
        "distilled images to score (images file): a .npz with x, y (and optionally "
        "soft_labels, class_names), e.g. from softlabels export, or its .safetensors"))
    dm_labels: tuple[str, ...] = field(default=("hard", "teacher"), metadata=field_help(
        "label modes of the dm images (those also in --labels)", choices=DISTILL_LABELS,
        unique=True))
    selection: str = field(default="random", metadata=field_help(
        "how real images are chosen: random, or the easiest/hardest by final-expert loss",
        choices=SELECTIONS))
    index_file: str | None = field(default=None, metadata=field_help(
        "JSON or text file of training-split positions to use instead of --selection"))
    selection_seed: int = field(default=0, metadata=field_help(
        "seed of the random selection", low=0))
    ipc: tuple[int, ...] = field(default=(1, 10), metadata=field_help(
        "images per class", nonempty=True, unique=True, low=1))
    labels: tuple[str, ...] = field(default=("hard", "teacher"), metadata=field_help(
        "label modes (softlabels list label-modes)", choices=DISTILL_LABELS, nonempty=True,
        unique=True))
    expert_epoch: tuple[float, ...] = field(default=(), metadata=field_help(
        "expert epochs that label the images (candidates with --select-epoch; default: 10%%, "
        "25%%, 50%% and 100%% of the expert's epochs); fractions such as 0.5 need "
        "--expert-checkpoints-per-epoch", unique=True, low=0.0))
    select_epoch: bool = field(default=False, metadata=field_help(
        "choose the expert epoch per IPC on the validation split"))
    temperature: tuple[float, ...] = field(default=(1.0,), metadata=field_help(
        "expert softmax temperatures", nonempty=True, unique=True, low=0.0, low_open=True))
    k: tuple[int, ...] = field(default=(1,), metadata=field_help(
        "classes kept (topk; 0 = hard argmax) or rank swapped (swap)", nonempty=True,
        unique=True, low=0))
    topk_renormalize: bool = field(default=False, metadata=field_help(
        "rescale top-k labels to sum to 1 (the official code does not)"))
    label_file: str | None = field(default=None, metadata=field_help(
        "LabelStore whose labels the 'file' mode uses"))
    seeds: tuple[int, ...] = like("seeds", (0, 1, 2),
                                  "student seeds, trained together in each cell")
    student_epochs: int = field(default=300, metadata=field_help("student epochs", low=1))
    student_decay_every: int = field(default=0, metadata=field_help(
        "multiply the student lr by --student-decay every N epochs (the official code: 750 of "
        "3,000); 0 = once, at half the epochs (the DC protocol)", low=0))
    student_decay: float = field(default=0.1, metadata=field_help(
        "the student lr's decay factor (the official code: 0.3)", low=0.0, high=1.0))
    student_lr: float = field(default=0.01, metadata=field_help(
        "student learning rate", low=0.0, low_open=True))
    student_optimizer: str = field(default="sgd", metadata=field_help(
        "student optimiser", choices=OPTIMIZERS))
    student_batch_size: int = field(default=256, metadata=field_help(
        "student batch size", low=1))
    student_augment: str = field(default="dsa", metadata=field_help(
        "student augmentation", choices=tuple(list_augmentations())))
    student_backend: str = field(default="auto", metadata=field_help(
        "how a cell's students train: sequential (one after the other), grouped or vmap "
        "(vectorised); auto = sequential on a CPU (measured faster there), and on a GPU "
        "vectorised: grouped for a ConvNet, else vmap",
        choices=("auto", "sequential", *STUDENT_BACKENDS[1:])))
    eval_every: int = field(default=100, metadata=field_help(
        "score students every N epochs (best = max over these and the end)", low=0))
    dm_iterations: int = field(default=1000, metadata=field_help(
        "DM optimisation steps", low=1))
    dm_lr: float = field(default=1.0, metadata=field_help(
        "DM learning rate", low=0.0, low_open=True))
    dm_lr_space: str = field(default="pixels", metadata=field_help(
        "what --dm-lr is a rate of: pixels in [0, 1], or the normalised images the official "
        "code optimises (each channel's pixel step then scales by its std squared)",
        choices=("pixels", "normalized")))
    dm_batch_real: int = field(default=64, metadata=field_help(
        "DM real images per class and step", low=1))
    learned_steps: int = field(default=100, metadata=field_help(
        "label updates (learned)", low=1))
    learned_unroll: int = field(default=10, metadata=field_help(
        "unrolled student steps per update (learned)", low=1))
    learned_inner_lr: float = field(default=0.1, metadata=field_help(
        "student SGD lr inside the unroll (learned); the unrolled student must learn within "
        "the unroll, or the labels only drift (compare the row's learned_loss_first/last)",
        low=0.0, low_open=True))
    learned_lr: float = field(default=0.05, metadata=field_help(
        "Adam lr on label logits (learned)", low=0.0, low_open=True))
    zca: bool = field(default=False, metadata=field_help(
        "ZCA-whiten what experts and students see (fitted on the training split; DSA then "
        "augments whitened images), as the official CIFAR-10 commands do"))
    zca_eps: float = field(default=0.1, metadata=field_help(
        "ZCA eigenvalue regulariser (official: 0.1)", low=0.0, low_open=True))
    out: str = like("out", "runs/distill")

    def check(self) -> None:
        self.no_streaming("distillation selects, labels and re-reads a few real images per "
                          "class many times, so the training pool is held in memory")
        if "swap" in self.labels and 0 in self.k:
            raise ValueError("k = 0 means hard argmax labels for topk; swap needs k >= 1")
        # Whole epochs as ints, so that cell names and result rows read e2, not e2.0.
        object.__setattr__(self, "expert_epoch",
                           tuple(epoch_value(e) for e in self.expert_epoch))
        # Without --expert-epochs the length comes from the data (resolve_experts), and these
        # checks run again on the resolved config.
        if self.expert_epochs is not None:
            self._check_expert_epochs(self.expert_epochs)
        if "file" in self.labels and self.label_file is None and "random" in self.images:
            raise ValueError("label mode 'file' on random images needs --label-file (a "
                             "LabelStore)")
        if ("file" in self.images) != (self.image_file is not None):
            raise ValueError("--images file and --image-file go together: give both or "
                             "neither")
        if "file" in self.images and len(self.ipc) != 1:
            raise ValueError(f"with --images file the images are fixed: give the single ipc "
                             f"that --image-file {self.image_file!r} holds, got "
                             f"{list(self.ipc)}")
        if "file" in self.dm_labels and "dm" in self.images:
            raise ValueError("label mode 'file' labels real training images; it cannot label "
                             "dm images (drop it from --dm-labels)")
        if self.index_file is not None and len(self.ipc) != 1:
            raise ValueError(f"with --index-file the images are fixed: give the single ipc it "
                             f"holds, got {list(self.ipc)}")
        if self.expert_epochs is not None:
            self.expert_config()
        self.student_config()

    def _check_expert_epochs(self, epochs: int) -> None:
        if any(e > epochs for e in self.expert_epoch):
            raise ValueError(f"expert_epoch values must lie in [0, expert_epochs={epochs}], "
                             f"got {list(self.expert_epoch)}")
        saved_fractions = early_checkpoint_epochs(
            self.expert_checkpoints_per_epoch, min(self.expert_early_epochs, epochs))
        unsaved = [e for e in self.expert_epoch
                   if isinstance(e, float) and e not in saved_fractions]
        if unsaved:
            raise ValueError(f"expert_epoch {unsaved} falls inside an epoch, but the experts "
                             f"keep only {saved_fractions or 'whole epochs'}; set "
                             f"--expert-checkpoints-per-epoch and --expert-early-epochs")

    def expert_config(self) -> TrainConfig:
        """The experts' recipe (a checkpoint after every epoch); needs a resolved config."""
        if self.expert_epochs is None:
            raise RuntimeError("expert_epochs is resolved from the data first (resolve_experts)")
        return TrainConfig(epochs=self.expert_epochs, batch_size=self.expert_batch_size,
                           optimizer="sgd", lr=self.expert_lr, momentum=self.expert_momentum,
                           weight_decay=self.expert_weight_decay,
                           schedule=self.expert_schedule, checkpoint_every=1,
                           **self.engine())

    def student_config(self) -> TrainConfig:
        """The students' recipe: SGD with a step decay, once at half the epochs (the DC
        protocol) or every ``student_decay_every`` epochs (the official StepLR)."""
        every = self.student_decay_every
        milestones = tuple(range(every, self.student_epochs, every)) if every else (
            (self.student_epochs // 2,) if self.student_epochs >= 2 else ())
        return TrainConfig(epochs=self.student_epochs, batch_size=self.student_batch_size,
                           optimizer=self.student_optimizer, lr=self.student_lr,
                           momentum=0.9, weight_decay=5e-4, schedule="step",
                           milestones=milestones, gamma=self.student_decay,
                           eval_every=self.eval_every, **self.engine())

    def resolve_experts(self, pool_size: int) -> DistillStudyConfig:
        """This config with the expert's length and candidate epochs filled in for a
        training pool of ``pool_size`` images: ``expert_steps`` worth of epochs, and
        candidates at 10%, 25%, 50% and 100% of them."""
        epochs = self.expert_epochs
        if epochs is None:
            steps_per_epoch = len(batch_bounds(pool_size, self.expert_batch_size))
            epochs = max(1, math.ceil(self.expert_steps / steps_per_epoch))
        candidates = self.expert_epoch or tuple(sorted(
            {max(1, round(share * epochs)) for share in _CANDIDATE_SHARES}))
        if (epochs, candidates) == (self.expert_epochs, self.expert_epoch):
            return self
        return dataclasses.replace(self, expert_epochs=epochs, expert_epoch=candidates)

    def needs_experts(self) -> bool:
        """Whether any label mode, selection or report uses an expert."""
        return bool(NEEDS_EXPERT & set(self.labels)) or self.selection != "random" \
            or "learned" in self.labels


def epoch_value(epoch: float | str) -> float:
    """An expert epoch as a number: ``int`` for a whole epoch, ``float`` inside one."""
    value = float(epoch)
    return int(value) if value.is_integer() else value



def plan(config: DistillStudyConfig, rows: Sequence[dict[str, Any]]) -> list[Stage]:
    """Experts; their test accuracy and DM images; expert-epoch selection; test cells.

    The test cells of an IPC use the expert epoch its selection cells chose, so they are
    planned once those rows exist (until then they are counted as pending).
    """
    index = RowIndex(rows)
    experts: list[Cell] = []
    prepare: list[Cell] = []
    if config.needs_experts():
        experts = [Cell({"phase": "expert", "seed": s}, f"expert-s{s}")
                   for s in range(config.experts)]
        prepare = [Cell({"phase": "expert_test", "expert_epoch": e}, f"expert-test-e{e}")
                   for e in sorted({config.expert_epochs, *config.expert_epoch})]
    if "dm" in config.images:
        prepare += [Cell({"phase": "dm", "ipc": ipc}, f"dm-ipc{ipc}") for ipc in config.ipc]
    select: list[Cell] = []
    test: list[Cell] = []
    pending = 0
    for ipc in config.ipc:
        epochs = list(config.expert_epoch)
        if config.select_epoch and NEEDS_EXPERT & set(config.labels):
            candidates = [_cell(c) for c in cells_for(
                "select", "random", ipc, ["teacher"], epochs, config.temperature[:1], [])]
            # Hard labels are scored too, so the report can say when no expert epoch helps.
            select += [*candidates, *(_cell(c) for c in cells_for(
                "select", "random", ipc, ["hard"], [], [], []))]
            chosen = [index.find(c) for c in candidates]
            if any(row is None for row in chosen):
                pending += len(_test_cells(config, ipc, epochs[:1]))
                continue
            epochs = [chosen_epoch_row(chosen)["expert_epoch"]]  # type: ignore[arg-type]
        test += _test_cells(config, ipc, epochs)
    return [Stage("experts", tuple(experts)), Stage("prepare", tuple(prepare)),
            Stage("select", tuple(select)), Stage("test", tuple(test), pending)]


def _cell(grid: GridCell) -> Cell:
    return Cell(grid.key(), grid.name())


def _test_cells(config: DistillStudyConfig, ipc: int, epochs: list[Any]) -> list[Cell]:
    cells = []
    for images in config.images:
        labels = config.labels if images != "dm" else \
            [mode for mode in config.labels if mode in config.dm_labels]
        cells += [_cell(c) for c in cells_for("test", images, ipc, labels, epochs,
                                              config.temperature, config.k)]
    return cells


def report(config: DistillStudyConfig, folder: Path, rows: Sequence[dict[str, Any]],
           figures: bool) -> None:
    """The report over every row in the folder: sweeps run into one folder one after the other
    (say IPC 1 and 10, then IPC 50) share everything but the grid, so they share one table."""
    accuracy = {r["expert_epoch"]: r["accuracy"] for r in rows if r.get("phase") == "expert_test"}
    if config.expert_epochs is None and accuracy:  # a report rebuilt from config.json alone
        config = dataclasses.replace(config, expert_epochs=int(max(accuracy)))
    write_report(folder, config, rows, accuracy, figures=figures,
                 warnings=selection_warnings(rows))


def selection_warnings(rows: Sequence[dict[str, Any]]) -> list[str]:
    """What a reader must not miss about the expert-epoch choice, per IPC: the chosen epoch is
    the last candidate (the expert may still be improving), or hard labels beat the chosen
    expert's labels on the validation split (soft labels then do not help here)."""
    notes = []
    selects = [r for r in rows if r.get("phase") == "select"]
    for ipc in sorted({r["ipc"] for r in selects}):
        experts = [r for r in selects if r["ipc"] == ipc and r["labels"] == "teacher"]
        hard = [r for r in selects if r["ipc"] == ipc and r["labels"] == "hard"]
        if not experts:
            continue
        chosen = chosen_epoch_row(experts)
        last = max(r["expert_epoch"] for r in experts)
        if chosen["expert_epoch"] == last and len(experts) > 1:
            notes.append(f"IPC {ipc}: the chosen expert epoch ({last}) is the last candidate; "
                         "the expert may still have been improving: train it longer "
                         "(--expert-steps or --expert-epochs) or add later candidates")
        if hard and hard[0]["best_mean"] > chosen["best_mean"]:
            notes.append(f"IPC {ipc}: hard labels beat the best expert labels on the "
                         f"validation split ({100 * hard[0]['best_mean']:.1f}% against "
                         f"{100 * chosen['best_mean']:.1f}% at epoch "
                         f"{chosen['expert_epoch']}): soft labels do not help here")
    return notes


def summary(config: DistillStudyConfig, rows: Sequence[dict[str, Any]]) -> list[Table]:
    """Student test accuracy of every test cell, mean ± std over seeds."""
    table = Table(f"{config.dataset}: student test accuracy, mean ± std over seeds (%)",
                  ("images", "labels", "IPC", "epoch", "T", "k", "best", "final", "seconds"),
                  text_columns=2, notes=[*(f"warning: {w}" for w in selection_warnings(rows)),
                                         f"report: {config.out}/report.md"])
    for row in rows:
        if row.get("phase") != "test":
            continue
        table.rows.append((row["images"], row["labels"], str(row["ipc"]),
                           *("" if row[k] is None else f"{row[k]:g}"
                             for k in ("expert_epoch", "temperature", "k")),
                           f"{100 * row['best_mean']:.1f} ± {100 * row['best_std']:.1f}",
                           f"{100 * row['final_mean']:.1f} ± {100 * row['final_std']:.1f}",
                           f"{row['seconds']:.0f}"))
    return [table]


def headline(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Best accuracy of hard and teacher labels on random images, per IPC."""
    tests = [r for r in rows if r.get("phase") == "test" and r["images"] == "random"]
    lines = []
    for ipc in sorted({r["ipc"] for r in tests}):
        cells = {r["labels"]: r for r in tests if r["ipc"] == ipc
                 and r["labels"] in ("hard", "teacher")}
        if cells:
            lines.append(f"IPC {ipc}: " + ", ".join(
                f"{mode} {100 * cells[mode]['best_mean']:.1f}%" for mode in sorted(cells)))
    return lines


STUDY = Study(name="distill",
              help="soft-label dataset distillation: real images + teacher soft labels",
              config_cls=DistillStudyConfig, quick=QUICK, plan=plan, run_cell=run_cell,
              report=report, summary=summary, headline=headline,
              # Backends compute the same students up to floating-point summation order.
              sweep_fields=("images", "dm_labels", "ipc", "labels", "expert_epoch",
                            "temperature", "k", "student_backend"),
              check=check, full=FULL, label_modes=LABEL_MODES, recipes=RECIPES)
