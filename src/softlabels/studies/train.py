"""``softlabels train``: one model trained with hard, smoothed or teacher soft labels.

The same student (same initialisation, training images, data order and recipe) is trained
once per label mode, so the accuracy differences come from the labels alone. With
``images_per_class`` the students see only a few random images per class while the teacher
learns from the whole training set: the setting where soft labels carry the most knowledge.

- ``hard``: one-hot labels.
- ``smooth``: label smoothing ``(1 - eps) * one_hot + eps / C``.
- ``teacher``: ``softmax(teacher_logits / T)`` from a teacher trained on hard labels, learnt
  with Hinton's distillation loss at the same T (:func:`~softlabels.losses.kd_loss`); the
  labels are kept in a :class:`~softlabels.store.LabelStore` in the output folder.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from .._checks import check_choice, check_range
from ..configuration import field_help
from ..data import (
    ImageDataset,
    augmentation,
    list_augmentations,
    load_dataset,
    sample_per_class,
)
from ..engine import TrainConfig, evaluate, fit, predict_logits
from ..labels import smooth, soften
from ..losses import kd_loss, soft_cross_entropy
from ..models import create_model
from ..results import ResultsLog
from ..runtime import seed_everything
from ..store import LabelMetadata, LabelStore
from .run_folder import prepare_run_folder

__all__ = ["LABEL_MODES", "TrainStudyConfig", "run"]

LABEL_MODES = ("hard", "smooth", "teacher")


@dataclass(frozen=True)
class TrainStudyConfig:
    """Settings of ``softlabels train``; each field is the CLI flag of the same name."""

    dataset: str = field(default="digits", metadata=field_help("dataset name (see list_datasets)"))
    data_root: str | None = field(default=None, metadata=field_help(
        "folder holding the dataset files (not needed for embedded data)"))
    model: str = field(default="convnet", metadata=field_help("student model name"))
    model_args: tuple[str, ...] = field(default=("width=64",), metadata=field_help(
        "student model options as KEY=VALUE"))
    labels: tuple[str, ...] = field(default=LABEL_MODES, metadata=field_help(
        "label modes to train with", choices=LABEL_MODES))
    smoothing: float = field(default=0.1, metadata=field_help("label-smoothing eps"))
    temperature: float = field(default=4.0, metadata=field_help("teacher softmax temperature T"))
    teacher_model: str = field(default="convnet", metadata=field_help("teacher model name"))
    teacher_args: tuple[str, ...] = field(default=("width=128",), metadata=field_help(
        "teacher model options as KEY=VALUE"))
    epochs: int = field(default=30, metadata=field_help("student training epochs"))
    teacher_epochs: int | None = field(default=None, metadata=field_help(
        "teacher training epochs (default: the student's)"))
    batch_size: int = field(default=64, metadata=field_help("batch size"))
    optimizer: str = field(default="sgd", metadata=field_help("sgd or adamw",
                                                          choices=("sgd", "adamw")))
    lr: float = field(default=0.1, metadata=field_help("initial learning rate"))
    weight_decay: float = field(default=5e-4, metadata=field_help("weight decay"))
    schedule: str = field(default="cosine", metadata=field_help(
        "learning-rate schedule", choices=("cosine", "step", "constant")))
    augment: str = field(default="none", metadata=field_help("batch augmentation"))
    images_per_class: int | None = field(default=None, metadata=field_help(
        "students train on this many random images per class (the teacher on all)"))
    checkpoint_every: int = field(default=0, metadata=field_help("keep weights every N epochs"))
    seed: int = field(default=0, metadata=field_help("random seed"))
    device: str = field(default="auto", metadata=field_help("auto, cpu or cuda"))
    out: str = field(default="runs/train", metadata=field_help("output folder"))

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError(f"labels must name at least one of {list(LABEL_MODES)}")
        for mode in self.labels:
            check_choice("labels", mode, LABEL_MODES)
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must not repeat a mode, got {list(self.labels)}")
        check_choice("augment", self.augment, list_augmentations())
        check_range("smoothing", self.smoothing, 0.0, 1.0)
        TrainConfig(**self.train_config_fields())  # validates the shared training fields
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.teacher_epochs is not None and self.teacher_epochs <= 0:
            raise ValueError(f"teacher_epochs must be > 0, got {self.teacher_epochs}")
        if self.images_per_class is not None and self.images_per_class <= 0:
            raise ValueError(f"images_per_class must be > 0, got {self.images_per_class}")
        parse_model_args(self.model_args)
        parse_model_args(self.teacher_args)

    def train_config_fields(self) -> dict[str, Any]:
        """The fields shared with :class:`~softlabels.engine.TrainConfig`."""
        return {"epochs": self.epochs, "batch_size": self.batch_size,
                "optimizer": self.optimizer, "lr": self.lr, "weight_decay": self.weight_decay,
                "schedule": self.schedule, "checkpoint_every": self.checkpoint_every,
                "seed": self.seed}


#: Applied by ``--quick`` before the config file and flags: a run of a few seconds.
QUICK = {"out": "runs/train-quick", "images_per_class": 5, "epochs": 300, "teacher_epochs": 10,
         "teacher_args": ("width=64",)}


def parse_model_args(items: tuple[str, ...]) -> dict[str, Any]:
    """Turn ``("width=64", "norm=batchnorm")`` into ``{"width": 64, "norm": "batchnorm"}``."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"model options must look like KEY=VALUE, got {item!r}")
        parsed[key.replace("-", "_")] = yaml.safe_load(value)
    return parsed


def run(config: TrainStudyConfig, *, show_progress: bool | None = None) -> list[dict[str, Any]]:
    """Train one student per label mode and return one result row per mode.

    Results already in ``config.out/results.jsonl`` are reused (the run resumes); each row has
    ``labels``, ``seed``, ``accuracy``, ``worst_class_accuracy``, ``nsd``,
    ``classwise_accuracy`` and ``seconds``. The teacher's own test scores are in the row with
    ``labels = "teacher-model"`` when the ``teacher`` mode is used.
    """
    folder = prepare_run_folder(config, config.out, sweep_fields=("labels",))
    log = ResultsLog(folder / "results.jsonl", key_fields=("labels", "seed"))
    done = {row["labels"]: row for row in log.rows() if row["seed"] == config.seed}
    full = load_dataset(config.dataset, config.data_root, split="train")
    test = load_dataset(config.dataset, config.data_root, split="test")
    train = full
    if config.images_per_class is not None:
        train = full.subset(sample_per_class(full.labels, config.images_per_class, config.seed))
    augment = augmentation(config.augment, min(full.image_size))
    train_config = TrainConfig(**config.train_config_fields())

    def build(name: str, args: tuple[str, ...]) -> nn.Module:
        seed_everything(config.seed)
        return create_model(name, full.num_classes, full.in_channels, full.image_size,
                            mean=full.info.mean, std=full.info.std, **parse_model_args(args))

    def train_one(mode: str, model: nn.Module, data: ImageDataset,
                  targets: torch.Tensor) -> dict[str, Any]:
        began = time.perf_counter()
        recipe = train_config
        if mode == "teacher-model" and config.teacher_epochs is not None:
            recipe = dataclasses.replace(train_config, epochs=config.teacher_epochs)
        loss_fn = soft_cross_entropy
        if mode == "teacher":
            loss_fn = functools.partial(kd_loss, temperature=config.temperature,
                                        teacher_kind="probs")
        fit(model, data.images, targets, recipe, loss_fn=loss_fn, augment=augment,
            checkpoint_dir=folder / "checkpoints" / mode, device=config.device,
            show_progress=show_progress)
        result = evaluate(model, test.images, test.labels, device=config.device)
        row = {"labels": mode, "seed": config.seed, "train_images": len(data),
               "accuracy": result.accuracy,
               "worst_class_accuracy": result.worst_class_accuracy, "nsd": result.nsd,
               "classwise_accuracy": result.classwise_accuracy.tolist(),
               "seconds": time.perf_counter() - began}
        if mode not in done:  # a teacher retrained only to rebuild a lost label store
            log.append(row)
        return row

    rows: list[dict[str, Any]] = []
    for mode in config.labels:
        if mode in done:
            if mode == "teacher" and "teacher-model" in done:
                rows.append(done["teacher-model"])
            rows.append(done[mode])
            continue
        if mode == "hard":
            targets = train.labels
        elif mode == "smooth":
            targets = smooth(train.labels, train.num_classes, config.smoothing)
        else:
            store = _teacher_labels(config, folder, full, build, train_one, done, rows)
            targets = store.labels_for(train.indices)
        rows.append(train_one(mode, build(config.model, config.model_args), train, targets))
    return rows


def _teacher_labels(config: TrainStudyConfig, folder: Path, full: ImageDataset, build: Any,
                    train_one: Any, done: dict[str, Any], rows: list[dict[str, Any]]
                    ) -> LabelStore:
    """Train (or reuse) the teacher on all training images and return its soft labels."""
    path = folder / "labels" / f"teacher_T{config.temperature:g}.safetensors"
    if path.exists() and "teacher-model" in done:
        rows.append(done["teacher-model"])
        return LabelStore.load(path)
    teacher = build(config.teacher_model, config.teacher_args)
    rows.append(train_one("teacher-model", teacher, full, full.labels))
    logits = predict_logits(teacher, full.images, device=config.device)
    store = LabelStore(full.indices, soften(logits, config.temperature), LabelMetadata(
        source="teacher", dataset=config.dataset, split="train",
        temperature=config.temperature, class_names=full.info.class_names,
        extra={"teacher_model": config.teacher_model, "seed": config.seed}))
    store.save(path, mode="fp32")
    return store
