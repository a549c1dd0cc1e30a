"""``softlabels train``: one model trained with hard, smoothed or teacher soft labels.

The same student (same initialisation, training images, data order and recipe) is trained
once per label mode, so the accuracy differences come from the labels alone. With
``ipc`` (images per class) the students see only a few random images per class while the teacher
learns from the whole training set: the setting where soft labels carry the most knowledge.

- ``hard``: one-hot labels.
- ``smooth``: label smoothing ``(1 - eps) * one_hot + eps / C``.
- ``teacher``: ``softmax(teacher_logits / T)`` from a teacher trained on hard labels, learnt
  with Hinton's distillation loss at the same T (:func:`~softlabels.losses.kd_loss`); the
  labels are kept in a :class:`~softlabels.store.LabelStore` in the output folder.

Cells: the teachers (one per seed, ``labels = "teacher-model"``), then one student per label
mode and seed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..configuration import field_help
from ..data import (
    ImageDataset,
    StreamingImageFolder,
    augmentation,
    list_augmentations,
    load_dataset,
    sample_per_class,
    stream_dataset,
)
from ..engine import OPTIMIZERS, SCHEDULES, TrainConfig, evaluate, fit, predict_logits
from ..labels import smooth, soften
from ..losses import kd_loss, soft_cross_entropy
from ..results import Table
from ..store import LabelMetadata, LabelStore
from .common import StudyConfig, build_model, like
from .sweep import Cell, Stage, Study

__all__ = ["LABEL_MODES", "STUDY", "TrainStudyConfig"]

#: The label modes of ``softlabels train`` and what each trains on.
LABEL_MODES: dict[str, str] = {
    "hard": "one-hot labels",
    "smooth": "label smoothing (1 - eps) * one_hot + eps / C (eps --smoothing)",
    "teacher": "softmax(teacher logits / T) of a teacher trained on every image, learnt with "
               "Hinton's distillation loss (T --temperature)",
}
_TEACHER = "teacher-model"


@dataclass(frozen=True)
class TrainStudyConfig(StudyConfig):
    """Settings of ``softlabels train``; each field is the CLI flag of the same name."""

    RENAMED: ClassVar[dict[str, str]] = {**StudyConfig.RENAMED, "images_per_class": "ipc"}
    MODELS: ClassVar[dict[str, str]] = {**StudyConfig.MODELS, "teacher_model": "teacher_args"}

    labels: tuple[str, ...] = field(default=tuple(LABEL_MODES), metadata=field_help(
        "label modes to train with (softlabels list label-modes)", choices=tuple(LABEL_MODES),
        nonempty=True, unique=True))
    smoothing: float = field(default=0.1, metadata=field_help(
        "label-smoothing eps of the smooth labels: (1 - eps) * one_hot + eps / C", low=0.0,
        high=1.0))
    temperature: float = field(default=4.0, metadata=field_help(
        "teacher softmax temperature T", low=0.0, low_open=True))
    teacher_model: str = field(default="convnet", metadata=field_help(
        "teacher model (as --model)"))
    teacher_args: tuple[str, ...] = field(default=("width=128",), metadata=field_help(
        "teacher model options as KEY=VALUE"))
    epochs: int = field(default=30, metadata=field_help("student training epochs", low=1))
    teacher_epochs: int | None = field(default=None, metadata=field_help(
        "teacher training epochs (default: the student's)", low=1))
    batch_size: int = field(default=64, metadata=field_help("batch size", low=1))
    optimizer: str = field(default="sgd", metadata=field_help("optimiser", choices=OPTIMIZERS))
    lr: float = field(default=0.1, metadata=field_help(
        "initial learning rate", low=0.0, low_open=True))
    weight_decay: float = field(default=5e-4, metadata=field_help("weight decay", low=0.0))
    schedule: str = field(default="cosine", metadata=field_help(
        "learning-rate schedule", choices=SCHEDULES))
    augment: str = field(default="none", metadata=field_help(
        "batch augmentation", choices=tuple(list_augmentations())))
    ipc: int | None = field(default=None, metadata=field_help(
        "images per class: students train on this many random images of each class (the "
        "teacher on all)", low=1))
    checkpoint_every: int = field(default=0, metadata=field_help(
        "keep weights every N epochs", low=0))
    out: str = like("out", "runs/train")

    def check(self) -> None:
        self.train_config(0)  # the engine validates the shared training fields

    def train_config(self, seed: int, teacher: bool = False) -> TrainConfig:
        """The engine's recipe of a student (or of the teacher) with ``seed``."""
        epochs = self.teacher_epochs if teacher and self.teacher_epochs else self.epochs
        return TrainConfig(epochs=epochs, batch_size=self.batch_size,
                           optimizer=self.optimizer, lr=self.lr,
                           weight_decay=self.weight_decay, schedule=self.schedule,
                           checkpoint_every=self.checkpoint_every, seed=seed,
                           **self.engine())


#: Applied by ``--quick`` before the config file and flags: a run of a few seconds.
QUICK = {"out": "runs/train-quick", "ipc": 5, "epochs": 300, "teacher_epochs": 10,
         "teacher_args": ("width=64",)}


def plan(config: TrainStudyConfig, rows: Sequence[dict[str, Any]]) -> list[Stage]:
    """Teachers first (their labels feed the ``teacher`` students), then the students."""
    stages = []
    if "teacher" in config.labels:
        stages.append(Stage("teachers", tuple(
            Cell({"labels": _TEACHER, "seed": s}, f"{_TEACHER}-s{s}") for s in config.seeds)))
    stages.append(Stage("students", tuple(
        Cell({"labels": m, "seed": s}, f"{m}-s{s}") for s in config.seeds
        for m in config.labels)))
    return stages


@functools.lru_cache(maxsize=4)
def _cached(dataset: str, data_root: str | None, stream: bool
            ) -> tuple[ImageDataset | StreamingImageFolder, ...]:
    if stream:
        if data_root is None:
            raise ValueError("--stream reads a folder: give --data-root")
        return (stream_dataset(dataset, data_root, "train"),
                stream_dataset(dataset, data_root, "test"))
    return (load_dataset(dataset, data_root, split="train"),
            load_dataset(dataset, data_root, split="test"))


def _load(config: TrainStudyConfig) -> tuple[Any, Any]:
    """(train, test), loaded (or listed, with ``stream``) once per process."""
    return _cached(config.dataset, config.data_root, config.stream)


def run_cell(config: TrainStudyConfig, cell: Cell, folder: Path, *,
             show_progress: bool | None = None) -> dict[str, Any]:
    """Train and score one teacher or one student; returns its row."""
    began = time.perf_counter()
    mode, seed = cell.key["labels"], cell.key["seed"]
    full, test = _load(config)
    if mode == _TEACHER:
        model, data, targets = _teacher(config, folder, full, seed, show_progress), full, None
    else:
        data = full
        if config.ipc is not None:
            data = full.subset(sample_per_class(full.labels, config.ipc, seed))
        targets = {"hard": lambda: data.labels,
                   "smooth": lambda: smooth(data.labels, data.num_classes, config.smoothing),
                   "teacher": lambda: _teacher_store(config, folder, full, seed, show_progress
                                                     ).labels_for(data.indices)}[mode]()
        loss_fn = soft_cross_entropy
        if mode == "teacher":
            loss_fn = functools.partial(kd_loss, temperature=config.temperature,
                                        teacher_kind="probs")
        model = build_model(config.model, config.model_args, full, seed)
        fit(model, data, targets, config.train_config(seed), loss_fn=loss_fn,
            augment=augmentation(config.augment, min(full.image_size)),
            checkpoint_dir=folder / "checkpoints" / cell.name, device=config.device,
            num_workers=config.data_workers, logger=config.logger,
            show_progress=show_progress)
    result = evaluate(model, test, device=config.device)
    return {"train_images": len(data), "accuracy": result.accuracy,
            "worst_class_accuracy": result.worst_class_accuracy, "nsd": result.nsd,
            "classwise_accuracy": result.classwise_accuracy.tolist(),
            "seconds": time.perf_counter() - began}


def _teacher(config: TrainStudyConfig, folder: Path, full: ImageDataset, seed: int,
             show_progress: bool | None) -> torch.nn.Module:
    """The teacher of ``seed``, trained on every training image (or resumed: a finished one
    loads from its checkpoint)."""
    teacher = build_model(config.teacher_model, config.teacher_args, full, seed)
    fit(teacher, full, None, config.train_config(seed, teacher=True),
        augment=augmentation(config.augment, min(full.image_size)),
        checkpoint_dir=folder / "checkpoints" / f"{_TEACHER}-s{seed}", device=config.device,
        num_workers=config.data_workers, logger=config.logger,
        show_progress=show_progress)
    _teacher_store(config, folder, full, seed, show_progress, teacher)
    return teacher


def _teacher_store(config: TrainStudyConfig, folder: Path, full: ImageDataset, seed: int,
                   show_progress: bool | None, teacher: torch.nn.Module | None = None
                   ) -> LabelStore:
    """The teacher's soft labels of every training image, saved under ``labels/``."""
    path = folder / "labels" / f"teacher_T{config.temperature:g}_s{seed}.safetensors"
    if teacher is None and path.exists():
        return LabelStore.load(path)
    if teacher is None:  # the store was deleted: its teacher's checkpoint rebuilds it
        teacher = _teacher(config, folder, full, seed, show_progress)
        return LabelStore.load(path)
    logits = predict_logits(teacher, full, device=config.device)
    store = LabelStore(full.indices, soften(logits, config.temperature), LabelMetadata(
        source="teacher", dataset=config.dataset, split="train",
        temperature=config.temperature, class_names=full.info.class_names,
        extra={"teacher_model": config.teacher_model, "seed": seed}))
    store.save(path, mode="fp32")
    return store


def check(config: TrainStudyConfig) -> None:
    """Check the data before any cell trains: enough images per class for every seed."""
    full, _ = _load(config)
    if config.ipc is not None:
        for seed in config.seeds:
            sample_per_class(full.labels, config.ipc, seed)


def report(config: TrainStudyConfig, folder: Path, rows: Sequence[dict[str, Any]],
           figures: bool) -> None:
    """``softlabels train`` writes no report: its rows and tables are the result."""


def summary(config: TrainStudyConfig, rows: Sequence[dict[str, Any]]) -> list[Table]:
    """Test accuracy per label mode and seed, and per class."""
    table = Table(f"{config.dataset}: test accuracy by label mode",
                  ("labels", "seed", "accuracy", "worst class", "NSD", "seconds"),
                  text_columns=1, notes=[f"results: {config.out}/results.jsonl"])
    per_class = Table("per-class accuracy (%)", ("labels", "seed"), text_columns=1)
    for row in rows:
        table.rows.append((row["labels"], str(row["seed"]), f"{100 * row['accuracy']:.2f}%",
                           f"{100 * row['worst_class_accuracy']:.2f}%", f"{row['nsd']:.3f}",
                           f"{row['seconds']:.1f}"))
        per_class.rows.append((row["labels"], str(row["seed"]),
                               *(f"{100 * a:.0f}" for a in row["classwise_accuracy"])))
    if rows:
        per_class.columns += tuple(str(c) for c in range(len(rows[0]["classwise_accuracy"])))
    return [table, per_class]


def headline(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Mean test accuracy of each label mode."""
    modes: dict[str, list[float]] = {}
    for row in rows:
        modes.setdefault(row["labels"], []).append(row["accuracy"])
    return [f"{mode}: {100 * sum(v) / len(v):.1f}%" for mode, v in modes.items()]


STUDY = Study(name="train", help="train a model with hard, smoothed or teacher soft labels",
              config_cls=TrainStudyConfig, quick=QUICK, plan=plan, run_cell=run_cell,
              report=report, summary=summary, headline=headline,
              sweep_fields=("labels", "seeds"), check=check, label_modes=LABEL_MODES)

