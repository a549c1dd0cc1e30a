"""``softlabels seg``: metric losses and soft labels for semantic segmentation.

One cell = (loss, label mode, seed): a segmentation model trained with
``w_ce * CE + w_metric * metric loss`` on hard, boundary-smoothed (``smooth``), distilled
(``teacher``) or semi-supervised (``semi``) labels, then scored on the test split with mIoU at
dataset, image and class level, worst-case mIoU, and ECE. Teachers (for ``teacher`` and
``semi``) are
trained once per seed with boundary-smoothed labels and CE + JML, as in the paper, in a
first stage of cells (their test scores are rows with ``phase = "teacher"``). Finished cells
are read back from ``results.jsonl``; interrupted training resumes from its checkpoint.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .._io import torch_load
from ..configuration import field_help
from ..data import PairedAugment, SegmentationDataset, load_segmentation, stream_segmentation
from ..data.segmentation import PairedFlip, PairedRandomCrop, list_segmentation_datasets
from ..engine import OPTIMIZERS, TrainConfig, fit
from ..models import MODEL_SPEC_HELP
from ..results import Table
from ..seg import (
    LOSSES,
    UNLABELLED,
    SegLoss,
    SegObjective,
    evaluate_segmentation,
    predict_segmentation,
)
from .common import StudyConfig, build_model, like
from .seg_report import draw_predictions, summary_rows, write_report
from .sweep import Cell, Stage, Study

__all__ = ["LABEL_MODES", "QUICK", "STUDY", "SegStudyConfig"]

#: The label modes of ``softlabels seg`` and what each trains on.
LABEL_MODES: dict[str, str] = {
    "hard": "the annotation (one class per pixel)",
    "smooth": "label smoothing at class boundaries: (1 - eps) * one_hot + eps / C on pixels "
              "whose k x k neighbourhood holds another class (eps --smoothing, k --kernel)",
    "teacher": "knowledge distillation: half the hard-label loss, half KL + metric loss to a "
               "teacher's softmax(logits / T) (T --temperature)",
    "semi": "semi-supervised: --labeled-fraction of the images keep their annotation, the "
            "others get the teacher's confident pixels (--confidence) as pseudo-labels",
}
#: Old spelling -> label mode, still accepted for one release. The old spellings are also the
#: names :class:`~softlabels.seg.SegObjective` (a building block) gives these modes.
_OLD_LABELS = {"ls": "smooth", "kd": "teacher"}


@dataclass(frozen=True)
class SegStudyConfig(StudyConfig):
    """Settings of ``softlabels seg``; each field is the CLI flag of the same name."""

    RENAMED: ClassVar[dict[str, str]] = {**StudyConfig.RENAMED, "eps": "smoothing"}
    RENAMED_VALUES: ClassVar[dict[str, dict[str, str]]] = {"labels": _OLD_LABELS}

    dataset: str = like("dataset", "digit_scenes",
                        "segmentation dataset: " + ", ".join(list_segmentation_datasets())
                        + " (softlabels list datasets)")
    model: str = like("model", "unet", "student model: " + MODEL_SPEC_HELP)
    model_args: tuple[str, ...] = like("model_args", ("base_width=16",),
                                       "student model options as KEY=VALUE")
    teacher_model: str = field(default="unet", metadata=field_help(
        "teacher model of the label modes teacher and semi (as --model)"))
    teacher_args: tuple[str, ...] = field(default=("base_width=32",), metadata=field_help(
        "teacher model options as KEY=VALUE"))
    losses: tuple[str, ...] = field(default=("ce", "ce+jml"), metadata=field_help(
        "losses to compare", choices=LOSSES, nonempty=True, unique=True))
    labels: tuple[str, ...] = field(default=("hard", "smooth", "teacher"), metadata=field_help(
        "label modes (softlabels list label-modes)", choices=tuple(LABEL_MODES),
        nonempty=True, unique=True))
    epochs: int = field(default=30, metadata=field_help("student epochs", low=1))
    teacher_epochs: int | None = field(default=None, metadata=field_help(
        "teacher epochs (default: the student's)", low=1))
    batch_size: int = field(default=8, metadata=field_help("batch size", low=1))
    optimizer: str = field(default="adamw", metadata=field_help("optimiser",
                                                            choices=OPTIMIZERS))
    lr: float = field(default=3e-3, metadata=field_help(
        "initial learning rate", low=0.0, low_open=True))
    weight_decay: float = field(default=1e-4, metadata=field_help("weight decay", low=0.0))
    w_ce: float = field(default=0.25, metadata=field_help("weight of cross-entropy", low=0.0))
    w_metric: float = field(default=0.75, metadata=field_help(
        "weight of the metric loss", low=0.0))
    smoothing: float = field(default=0.5, metadata=field_help(
        "label-smoothing eps of the smooth labels (at class boundaries)", low=0.0, high=1.0))
    kernel: int = field(default=3, metadata=field_help(
        "boundary neighbourhood size of the smooth labels, odd", low=1))
    temperature: float = field(default=1.0, metadata=field_help(
        "distillation temperature", low=0.0, low_open=True))
    labeled_fraction: float = field(default=0.25, metadata=field_help(
        "share of training images that keep their annotation (semi)", low=0.0, high=1.0,
        low_open=True, high_open=True))
    confidence: float = field(default=0.5, metadata=field_help(
        "minimum teacher confidence for a pseudo-labelled pixel (semi)", low=0.0, high=1.0))
    crop: int = field(default=0, metadata=field_help(
        "random square crop size (0 = none)", low=0))
    figure_images: int = field(default=4, metadata=field_help(
        "test images in the figure", low=0))
    out: str = like("out", "runs/seg")

    def check(self) -> None:
        if self.stream and "semi" in self.labels:
            raise ValueError("label mode semi rewrites the training masks in memory; drop "
                             "--stream or semi")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd int >= 1, got {self.kernel}")
        self.train_config(0)  # validates the training fields
        SegLoss(w_ce=self.w_ce, w_metric=self.w_metric)

    def train_config(self, seed: int, epochs: int | None = None) -> TrainConfig:
        """The engine's recipe for one model."""
        return TrainConfig(epochs=epochs if epochs is not None else self.epochs,
                           batch_size=self.batch_size,
                           optimizer=self.optimizer, lr=self.lr,
                           weight_decay=self.weight_decay, schedule="cosine", seed=seed,
                           **self.engine())


#: ``--quick``: a run of well under a minute on digit scenes.
QUICK: dict[str, Any] = {"out": "runs/seg-quick", "epochs": 4, "teacher_epochs": 4,
                         "labels": ("hard", "smooth", "teacher", "semi"),
                         "model_args": ("base_width=8",), "teacher_args": ("base_width=8",),
                         "batch_size": 16, "figure_images": 3}

#: ``reproduce --full``: the CamVid run of ``docs/results.md``.
FULL: tuple[str, tuple[dict[str, Any], ...]] = ("camvid", (
    {"dataset": "camvid", "losses": ("ce", "ce+jml", "ce+sjl"),
     "labels": ("hard", "smooth", "teacher"), "seeds": (0, 1, 2), "epochs": 8, "crop": 128,
     "teacher_args": ("base_width=24",)},
))

_TEACHER_MODES = ("teacher", "semi")


def plan(config: SegStudyConfig, rows: Sequence[dict[str, Any]]) -> list[Stage]:
    """Teachers (teacher, semi) first, then every (loss, label mode, seed) student."""
    teachers = tuple(Cell({"phase": "teacher", "labels": labels, "seed": seed},
                          _teacher_name(labels, seed))
                     for seed in config.seeds for labels in config.labels
                     if labels in _TEACHER_MODES)
    students = tuple(Cell({"loss": loss, "labels": labels, "seed": seed},
                          _cell_name(loss, labels, seed))
                     for seed in config.seeds for labels in config.labels
                     for loss in config.losses)
    return [Stage("teachers", teachers), Stage("students", students)]


@functools.lru_cache(maxsize=4)
def _cached(dataset: str, data_root: str | None, stream: bool) -> tuple[Any, Any]:
    if stream:
        return (stream_segmentation(dataset, data_root, "train"),
                stream_segmentation(dataset, data_root, "test"))
    options = {"num_images": 256} if dataset == "digit_scenes" else {}
    return (load_segmentation(dataset, data_root, "train", **options),
            load_segmentation(dataset, data_root, "test"))


def _load(config: SegStudyConfig) -> tuple[Any, Any]:
    """(train, test): :class:`SegmentationDataset` objects, or streamed folders with
    ``stream``; loaded once per process."""
    return _cached(config.dataset, config.data_root, config.stream)


def run_cell(config: SegStudyConfig, cell: Cell, folder: Path, *,
             show_progress: bool | None = None) -> dict[str, Any]:
    """Train and score one teacher or one student; returns its row."""
    began = time.perf_counter()
    train, test = _load(config)
    labels, seed = cell.key["labels"], cell.key["seed"]
    if cell.key.get("phase") == "teacher":
        teacher = _teacher(config, folder, train, labels, seed, show_progress)
        return {**evaluate_segmentation(teacher, test, device=config.device),
                "seconds": time.perf_counter() - began}
    loss = cell.key["loss"]
    teacher = (_teacher(config, folder, train, labels, seed, show_progress)
               if labels in _TEACHER_MODES else None)
    masks = None  # the dataset's own
    if labels == "semi":
        labelled = _labelled_split(train, config.labeled_fraction, seed)
        masks = torch.where(labelled[:, None, None], train.masks, UNLABELLED)
    objective = SegObjective(_seg_loss(config, train, loss), _old(labels), teacher=teacher,
                             eps=config.smoothing, kernel=config.kernel,
                             temperature=config.temperature, confidence=config.confidence)
    model = build_model(config.model, config.model_args, train, seed)
    result = fit(model, train, masks, config.train_config(seed), objective=objective,
                 paired_augment=_augment(config, train),
                 checkpoint_dir=_checkpoints(folder, cell.name,
                                             _cell_name(loss, _old(labels), seed)),
                 device=config.device, num_workers=config.data_workers,
                 logger=config.logger, show_progress=show_progress)
    scores = evaluate_segmentation(model, test, device=config.device)
    return {**scores, "train_loss": result.history[-1]["loss"],
            "seconds": time.perf_counter() - began}


def _augment(config: SegStudyConfig, data: SegmentationDataset) -> PairedAugment:
    steps: list[Any] = [PairedFlip()]
    if config.crop:
        steps.append(PairedRandomCrop(config.crop, pad_value_mask=data.ignore_index))
    return PairedAugment(*steps)


def _seg_loss(config: SegStudyConfig, data: SegmentationDataset, loss: str) -> SegLoss:
    return SegLoss(loss, data.num_classes, data.ignore_index, config.w_ce, config.w_metric)


def _labelled_split(data: SegmentationDataset, fraction: float, seed: int) -> Tensor:
    """bool (N,): which training images keep their annotation in semi-supervised mode."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator)
    keep = torch.zeros(len(data), dtype=torch.bool)
    keep[order[:max(1, round(fraction * len(data)))]] = True
    return keep


def _teacher(config: SegStudyConfig, folder: Path, train: SegmentationDataset, labels: str,
             seed: int, show_progress: bool | None) -> nn.Module:
    """Train (or resume) the teacher of ``teacher`` (all images) or ``semi`` (labelled
    images)."""
    data = train
    if labels == "semi":
        data = train.subset(torch.nonzero(_labelled_split(train, config.labeled_fraction,
                                                          seed)).flatten())
    teacher = build_model(config.teacher_model, config.teacher_args, train, seed)
    objective = SegObjective(_seg_loss(config, train, "ce+jml"), _old("smooth"),
                             eps=config.smoothing, kernel=config.kernel)
    fit(teacher, data, None, config.train_config(seed, config.teacher_epochs),
        objective=objective, paired_augment=_augment(config, train),
        checkpoint_dir=_checkpoints(folder, _teacher_name(labels, seed),
                                    f"teacher-{_old(labels)}-s{seed}"),
        device=config.device, num_workers=config.data_workers, logger=config.logger,
        show_progress=show_progress)
    return teacher


def _teacher_name(labels: str, seed: int) -> str:
    return f"teacher-s{seed}" if labels == "teacher" else f"teacher-{labels}-s{seed}"


def _cell_name(loss: str, labels: str, seed: int) -> str:
    return f"{loss.replace('+', '_')}-{labels}-s{seed}"


def _old(labels: str) -> str:
    """The spelling a label mode had in the previous release (in its run folders' cell
    names, and in :class:`~softlabels.seg.SegObjective`)."""
    return next((old for old, new in _OLD_LABELS.items() if new == labels), labels)


def _checkpoints(folder: Path, name: str, legacy: str) -> Path:
    """``checkpoints/<name>``, or the folder of the same cell named before the label modes
    were renamed, so that a run of the previous release resumes its half-trained models."""
    path, old = folder / "checkpoints" / name, folder / "checkpoints" / legacy
    return old if not path.exists() and old.exists() else path


def report(config: SegStudyConfig, folder: Path, rows: Sequence[dict[str, Any]],
           figures: bool) -> None:
    """``report.md`` (see :func:`~softlabels.studies.seg_report.write_report`) and, with
    ``figures`` and student checkpoints in the folder, the prediction figure."""
    found = _figure_checkpoints(config, folder) if figures and config.figure_images else []
    if found:
        test = _load(config)[1]
        count = min(config.figure_images, len(test))
        test = test.subset(torch.arange(count))  # in memory, also for a streamed split
        columns = []
        for title, path in found:
            model = build_model(config.model, config.model_args, test, config.seeds[0])
            model.load_state_dict(torch_load(path)["model"])
            probs = predict_segmentation(model, test.images[:count], device=config.device)
            columns.append((title, probs.argmax(1)))
        draw_predictions(folder / "predictions.png", test, count, columns)
    write_report(config, folder, rows)


_SUMMARY_COLUMNS = (("miou_dataset", "mIoU^D"), ("miou_image", "mIoU^I"),
                    ("miou_class", "mIoU^C"), ("miou_image_worst", "worst-5% mIoU^I"),
                    ("ece_dataset", "ECE^D"))


def summary(config: SegStudyConfig, rows: Sequence[dict[str, Any]]) -> list[Table]:
    """Test scores by (loss, labels), mean ± std over seeds."""
    table = Table(f"{config.dataset}: test scores, mean ± std over seeds (%)",
                  ("loss", "labels", *(t for _, t in _SUMMARY_COLUMNS)), text_columns=2,
                  notes=[f"report: {config.out}/report.md, figure: "
                         f"{config.out}/predictions.png"])
    for entry in summary_rows(rows):
        table.rows.append((entry["loss"], entry["labels"],
                           *(f"{entry[k][0]:.1f} ± {entry[k][1]:.1f}"
                             for k, _ in _SUMMARY_COLUMNS)))
    return [table]


def headline(rows: Sequence[dict[str, Any]]) -> list[str]:
    """mIoU^D of each (labels, loss)."""
    return [f"{e['labels']} {e['loss']}: mIoU^D {e['miou_dataset'][0]:.1f}%"
            for e in summary_rows(rows)]


def _figure_checkpoints(config: SegStudyConfig, folder: Path) -> list[tuple[str, Path]]:
    """(column title, checkpoint) of each first-seed student trained in ``folder`` (none when
    only the rows of a run were kept, as in ``docs/runs``)."""
    seed = config.seeds[0]
    found = []
    for labels in config.labels:
        for loss in config.losses:
            path = _checkpoints(folder, _cell_name(loss, labels, seed),
                                _cell_name(loss, _old(labels), seed)) / "last.pt"
            if path.exists():
                found.append((f"{loss}\n{labels}", path))
    return found


STUDY = Study(name="seg", help="segmentation with Jaccard/Dice metric losses and soft labels",
              config_cls=SegStudyConfig, quick=QUICK, plan=plan, run_cell=run_cell,
              report=report, summary=summary, headline=headline,
              sweep_fields=("losses", "labels", "seeds", "figure_images"), full=FULL,
              label_modes=LABEL_MODES)
