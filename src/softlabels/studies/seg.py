"""``softlabels seg``: metric losses and soft labels for semantic segmentation.

One cell = (loss, label mode, seed): a segmentation model trained with
``w_ce * CE + w_metric * metric loss`` on hard, boundary-smoothed (``smooth``), distilled
(``teacher``) or semi-supervised (``semi``) labels, then scored on the test split with mIoU at
dataset, image and class level, worst-case mIoU, and ECE. Teachers (for ``teacher`` and
``semi``) are trained once per seed with boundary-smoothed labels and CE + JML, as in the
paper, in a stage of their own (their test scores are rows with ``phase = "teacher"``). With
``--select-smoothing`` a first stage trains one CE + JML student per candidate eps on the
first seed and scores it on the validation images (``phase = "select"``); the best eps is the
one every smoothed label (students and teachers) then uses. Finished cells are read back from
``results.jsonl``; interrupted training resumes from its checkpoint. The cells themselves are
in :mod:`~softlabels.studies.seg_cells`, the presets (``--quick``, ``--recipe``) in
:mod:`~softlabels.studies.seg_presets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from .._io import torch_load
from ..configuration import field_help
from ..data.segmentation import SEGMENTATION_SOURCES, list_segmentation_datasets
from ..engine import OPTIMIZERS, SCHEDULES, TrainConfig
from ..engine.config import SCHEDULE_UNITS
from ..models import MODEL_SPEC_HELP
from ..results import Table
from ..seg import LOSSES, SegLoss, predict_segmentation
from .common import StudyConfig, build_model, like
from .seg_cells import HOLDOUT, OLD_LABELS, TEACHER_MODES, cell_name, old_label, run_cell, test_data
from .seg_cells import checkpoints as _checkpoints
from .seg_cells import teacher_name as _teacher_name
from .seg_gates import gate_notes, pick_smoothing
from .seg_presets import FULL, QUICK, RECIPES
from .seg_report import draw_predictions, labels_title, summary_rows, write_report
from .sweep import Cell, RowIndex, Stage, Study

__all__ = ["LABEL_MODES", "STUDY", "SegStudyConfig", "chosen_smoothing"]

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
#: Label modes trained on boundary-smoothed labels (``teacher`` and ``semi``: their
#: teachers), so that a selected eps changes their cells.
_SMOOTHED = ("smooth", *TEACHER_MODES)


@dataclass(frozen=True)
class SegStudyConfig(StudyConfig):
    """Settings of ``softlabels seg``; each field is the CLI flag of the same name.

    Every field added since the first CamVid run defaults to what that run did, so its folder
    (``docs/runs/camvid``) resumes and reports the same numbers.
    """

    RENAMED: ClassVar[dict[str, str]] = {**StudyConfig.RENAMED, "eps": "smoothing"}
    RENAMED_VALUES: ClassVar[dict[str, dict[str, str]]] = {"labels": OLD_LABELS}
    MODELS: ClassVar[dict[str, str]] = {**StudyConfig.MODELS, "teacher_model": "teacher_args"}

    dataset: str = like("dataset", "digit_scenes",
                        "segmentation dataset: " + ", ".join(list_segmentation_datasets())
                        + " (softlabels list datasets)")
    model: str = like("model", "unet", "student model: " + MODEL_SPEC_HELP)
    model_args: tuple[str, ...] = like("model_args", ("base_width=16",),
                                       "student model options as KEY=VALUE (U-Net: "
                                       "base_width, depth, norm, upsample)")
    teacher_model: str = field(default="unet", metadata=field_help(
        "teacher model of the label modes teacher and semi (as --model)"))
    teacher_args: tuple[str, ...] = field(default=("base_width=32",), metadata=field_help(
        "teacher model options as KEY=VALUE"))
    losses: tuple[str, ...] = field(default=("ce", "ce+jml"), metadata=field_help(
        "losses to compare", choices=LOSSES, nonempty=True, unique=True))
    labels: tuple[str, ...] = field(default=("hard", "smooth", "teacher"), metadata=field_help(
        "label modes (softlabels list label-modes)", choices=tuple(LABEL_MODES),
        nonempty=True, unique=True))
    train_splits: tuple[str, ...] = field(default=("train",), metadata=field_help(
        "splits the teachers and students train on (the official CamVid recipe: train val); "
        "they are scored on test", nonempty=True, unique=True))
    val_split: str = field(default="val", metadata=field_help(
        "split scoring the --select-smoothing candidates, left out of their training; "
        f"{HOLDOUT}: a fixed fifth of the training images (for data without a validation "
        "split, such as digit_scenes)"))
    epochs: int = field(default=30, metadata=field_help("student epochs", low=1))
    teacher_epochs: int | None = field(default=None, metadata=field_help(
        "teacher epochs (default: the student's)", low=1))
    batch_size: int = field(default=8, metadata=field_help("batch size", low=1))
    optimizer: str = field(default="adamw", metadata=field_help("optimiser",
                                                            choices=OPTIMIZERS))
    lr: float = field(default=3e-3, metadata=field_help(
        "initial learning rate", low=0.0, low_open=True))
    weight_decay: float = field(default=1e-4, metadata=field_help("weight decay", low=0.0))
    decay_norms: bool = field(default=True, metadata=field_help(
        "weight decay on biases and normalisation weights too (--no-decay-norms: on the "
        "weights of convolutions and linear layers only, the official recipe)"))
    schedule: str = field(default="cosine", metadata=field_help(
        "learning-rate schedule (poly: (1 - t)^0.9, the official recipe)", choices=SCHEDULES))
    schedule_unit: str = field(default="epoch", metadata=field_help(
        "when the rate changes: after every epoch, or every optimiser step (the official "
        "recipe)", choices=SCHEDULE_UNITS))
    warmup: float = field(default=0.0, metadata=field_help(
        "share of training with a linear warm-up of the rate (the official recipe: 0.01)",
        low=0.0, high=1.0, high_open=True))
    w_ce: float = field(default=0.25, metadata=field_help("weight of cross-entropy", low=0.0))
    w_metric: float = field(default=0.75, metadata=field_help(
        "weight of the metric loss", low=0.0))
    metric_smooth: float = field(default=1e-3, metadata=field_help(
        "smooth term of the metric loss, added to each class's numerator and denominator "
        "(the official configs: 1.0)", low=0.0))
    smoothing: float = field(default=0.5, metadata=field_help(
        "label-smoothing eps of the smooth labels (at class boundaries)", low=0.0, high=1.0))
    select_smoothing: tuple[float, ...] = field(default=(), metadata=field_help(
        "candidate eps for the smooth labels, chosen on --val-split by one ce+jml student "
        "each (first seed); the best replaces --smoothing for students and teachers (empty: "
        "--smoothing)", low=0.0, high=1.0, unique=True))
    kernel: int = field(default=3, metadata=field_help(
        "boundary neighbourhood size of the smooth labels, odd", low=1))
    temperature: float = field(default=1.0, metadata=field_help(
        "distillation temperature", low=0.0, low_open=True))
    labeled_fraction: float = field(default=0.25, metadata=field_help(
        "share of training images that keep their annotation (semi)", low=0.0, high=1.0,
        low_open=True, high_open=True))
    confidence: float = field(default=0.5, metadata=field_help(
        "minimum teacher confidence for a pseudo-labelled pixel (semi)", low=0.0, high=1.0))
    scale: tuple[float, ...] = field(default=(), metadata=field_help(
        "random rescale LOW HIGH of each training batch before the crop, one factor per "
        "batch (the official recipe: 0.5 2.0; empty: none)", low=0.0, low_open=True))
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
        if self.scale and (len(self.scale) != 2 or self.scale[0] > self.scale[1]):
            raise ValueError(f"scale must be two factors LOW HIGH with LOW <= HIGH, got "
                             f"{list(self.scale)}")
        self._check_splits()
        self.train_config(0)  # validates the training fields
        SegLoss(w_ce=self.w_ce, w_metric=self.w_metric, smooth=self.metric_smooth)

    def _check_splits(self) -> None:
        source = SEGMENTATION_SOURCES.get(self.dataset)
        splits = source.splits if source is not None else None  # an unknown name fails later
        for split in self.train_splits:
            if split == "test" or (splits is not None and split not in splits):
                raise ValueError(f"train_splits must name splits other than test of "
                                 f"{self.dataset} ({list(splits or ())}), got {split!r}")
        if self.stream and len(self.train_splits) > 1:
            raise ValueError("--stream reads one training split; give one --train-splits or "
                             "drop --stream")
        if not self.selects_smoothing():
            return
        if self.val_split == "test" or (self.val_split != HOLDOUT and splits is not None
                                        and self.val_split not in splits):
            raise ValueError(f"val_split must be {HOLDOUT} or a split other than test of "
                             f"{self.dataset} ({list(splits or ())}), got {self.val_split!r}")
        if self.val_split != HOLDOUT and set(self.train_splits) <= {self.val_split}:
            raise ValueError(f"the selection students train on --train-splits without "
                             f"--val-split {self.val_split}, which leaves nothing")
        if self.stream and self.val_split == HOLDOUT:
            raise ValueError(f"--val-split {HOLDOUT} holds images out in memory; name a "
                             "validation split or drop --stream")

    def selects_smoothing(self) -> bool:
        """Whether the plan chooses eps on the validation split (``select_smoothing`` given
        and a label mode that smooths)."""
        return bool(self.select_smoothing) and any(m in _SMOOTHED for m in self.labels)

    def train_config(self, seed: int, epochs: int | None = None) -> TrainConfig:
        """The engine's recipe for one model."""
        return TrainConfig(epochs=epochs if epochs is not None else self.epochs,
                           batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
                           weight_decay=self.weight_decay, decay_norms=self.decay_norms,
                           schedule=self.schedule, schedule_unit=self.schedule_unit,
                           warmup=self.warmup, seed=seed, **self.engine())


def plan(config: SegStudyConfig, rows: Sequence[dict[str, Any]]) -> list[Stage]:
    """Selection of eps (with ``select_smoothing``), then the teachers (teacher, semi), then
    every (loss, label mode, seed) student.

    Cells that train on smoothed labels carry the chosen eps in their key (and name), so a
    different choice never reuses their rows or checkpoints; until the selection rows exist
    they are counted as pending.
    """
    select = _selection_cells(config)
    eps = chosen_smoothing(config, rows)
    pending = config.selects_smoothing() and eps is None
    teachers: list[Cell] = []
    students: list[Cell] = []
    waiting = [0, 0]
    for seed in config.seeds:
        for labels in config.labels:
            smoothed = labels in _SMOOTHED and config.selects_smoothing()
            if smoothed and pending:
                waiting[0] += labels in TEACHER_MODES
                waiting[1] += len(config.losses)
                continue
            extra = {"smoothing": eps} if smoothed else {}
            if labels in TEACHER_MODES:
                teachers.append(Cell({"phase": "teacher", "labels": labels, "seed": seed,
                                      **extra}, _teacher_name(labels, seed, extra.get(
                                          "smoothing"))))
            students += [Cell({"loss": loss, "labels": labels, "seed": seed, **extra},
                              cell_name(loss, labels, seed, extra.get("smoothing")))
                         for loss in config.losses]
    return [Stage("select", tuple(select)), Stage("teachers", tuple(teachers), waiting[0]),
            Stage("students", tuple(students), waiting[1])]


def _selection_cells(config: SegStudyConfig) -> list[Cell]:
    if not config.selects_smoothing():
        return []
    seed = config.seeds[0]
    # float(): a candidate given as an int (1) has the key of the same float (1.0).
    return [Cell({"phase": "select", "smoothing": float(eps), "seed": seed},
                 f"select-smooth-eps{eps:g}-s{seed}") for eps in config.select_smoothing]


def chosen_smoothing(config: SegStudyConfig, rows: Sequence[dict[str, Any]]) -> float | None:
    """The eps of the smooth labels: the candidate whose selection student has the highest
    validation mIoU^D (the first such on a tie), ``None`` while a candidate is unscored, or
    ``config.smoothing`` without selection."""
    if not config.selects_smoothing():
        return config.smoothing
    index = RowIndex(rows)
    scored = [index.find(cell) for cell in _selection_cells(config)]
    if any(row is None for row in scored):
        return None
    return float(pick_smoothing(scored)["smoothing"])  # type: ignore[arg-type]


def report(config: SegStudyConfig, folder: Path, rows: Sequence[dict[str, Any]],
           figures: bool) -> None:
    """``report.md`` (see :func:`~softlabels.studies.seg_report.write_report`) and, with
    ``figures`` and student checkpoints in the folder, the prediction figure."""
    found = _figure_checkpoints(config, folder, rows) if figures and config.figure_images \
        else []
    if found:
        test = test_data(config)
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
    """Test scores by (loss, labels), mean ± std over seeds; the notes flag classes at IoU 0,
    the sanity gate and the teachers' margins."""
    table = Table(f"{config.dataset}: test scores, mean ± std over seeds (%)",
                  ("loss", "labels", *(t for _, t in _SUMMARY_COLUMNS)), text_columns=2,
                  notes=[f"report: {config.out}/report.md, figure: "
                         f"{config.out}/predictions.png", *gate_notes(config.dataset, rows)])
    for entry in summary_rows(rows):
        table.rows.append((entry["loss"], labels_title(entry),
                           *(f"{entry[k][0]:.1f} ± {entry[k][1]:.1f}"
                             for k, _ in _SUMMARY_COLUMNS)))
    return [table]


def headline(rows: Sequence[dict[str, Any]]) -> list[str]:
    """mIoU^D of each (labels, loss)."""
    return [f"{labels_title(e)} {e['loss']}: mIoU^D {e['miou_dataset'][0]:.1f}%"
            for e in summary_rows(rows)]


def _figure_checkpoints(config: SegStudyConfig, folder: Path, rows: Sequence[dict[str, Any]]
                        ) -> list[tuple[str, Path]]:
    """(column title, checkpoint) of each first-seed student trained in ``folder`` (none when
    only the rows of a run were kept, as in ``docs/runs``)."""
    found = []
    for cell in plan(config, rows)[-1].cells:
        key = cell.key
        if key["seed"] != config.seeds[0]:
            continue
        legacy = cell_name(key["loss"], old_label(key["labels"]), key["seed"],
                           key.get("smoothing"))
        path = _checkpoints(folder, cell.name, legacy) / "last.pt"
        if path.exists():
            found.append((f"{key['loss']}\n{labels_title(key)}", path))
    return found


STUDY = Study(name="seg", help="segmentation with Jaccard/Dice metric losses and soft labels",
              config_cls=SegStudyConfig, quick=QUICK, plan=plan, run_cell=run_cell,
              report=report, summary=summary, headline=headline,
              sweep_fields=("losses", "labels", "seeds", "figure_images", "select_smoothing"),
              full=FULL, label_modes=LABEL_MODES, recipes=RECIPES)
