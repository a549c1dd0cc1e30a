"""``softlabels seg``: metric losses and soft labels for semantic segmentation.

One cell = (loss, label mode, seed): a segmentation model trained with
``w_ce * CE + w_metric * metric loss`` on hard, boundary-smoothed (``ls``), distilled (``kd``)
or semi-supervised (``semi``) labels, then scored on the test split with mIoU at dataset,
image and class level, worst-case mIoU, and ECE. Teachers (for ``kd`` and ``semi``) are
trained once per seed with boundary-smoothed labels and CE + JML, as in the paper. Finished
cells are read back from ``results.jsonl``; interrupted training resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .._checks import check_choice, check_range
from .._io import torch_load, write_text
from ..configuration import field_help
from ..data import PairedAugment, SegmentationDataset, load_segmentation
from ..data.segmentation import PairedFlip, PairedRandomCrop
from ..engine import TrainConfig, fit
from ..models import create_model
from ..results import ResultsLog
from ..runtime import seed_everything
from ..seg import (
    LABEL_MODES,
    LOSSES,
    UNLABELLED,
    SegLoss,
    SegObjective,
    evaluate_segmentation,
    predict_segmentation,
)
from .run_folder import prepare_run_folder
from .train import parse_model_args

__all__ = ["QUICK", "SegStudyConfig", "run"]


@dataclass(frozen=True)
class SegStudyConfig:
    """Settings of ``softlabels seg``; each field is the CLI flag of the same name."""

    dataset: str = field(default="digit_scenes", metadata=field_help(
        "segmentation dataset: digit_scenes (embedded) or camvid"))
    data_root: str | None = field(default=None, metadata=field_help("dataset folder (camvid)"))
    model: str = field(default="unet", metadata=field_help("student model"))
    model_args: tuple[str, ...] = field(default=("base_width=16",), metadata=field_help(
        "student model options as KEY=VALUE"))
    teacher_model: str = field(default="unet", metadata=field_help("teacher model (kd, semi)"))
    teacher_args: tuple[str, ...] = field(default=("base_width=32",), metadata=field_help(
        "teacher model options as KEY=VALUE"))
    losses: tuple[str, ...] = field(default=("ce", "ce+jml"), metadata=field_help(
        "losses to compare", choices=LOSSES))
    labels: tuple[str, ...] = field(default=("hard", "ls", "kd"), metadata=field_help(
        "label modes", choices=LABEL_MODES))
    seeds: tuple[int, ...] = field(default=(0,), metadata=field_help("seeds, one cell each"))
    epochs: int = field(default=30, metadata=field_help("student epochs"))
    teacher_epochs: int | None = field(default=None, metadata=field_help(
        "teacher epochs (default: the student's)"))
    batch_size: int = field(default=8, metadata=field_help("batch size"))
    optimizer: str = field(default="adamw", metadata=field_help("sgd or adamw",
                                                            choices=("sgd", "adamw")))
    lr: float = field(default=3e-3, metadata=field_help("initial learning rate"))
    weight_decay: float = field(default=1e-4, metadata=field_help("weight decay"))
    w_ce: float = field(default=0.25, metadata=field_help("weight of cross-entropy"))
    w_metric: float = field(default=0.75, metadata=field_help("weight of the metric loss"))
    eps: float = field(default=0.5, metadata=field_help("boundary label smoothing eps (ls)"))
    kernel: int = field(default=3, metadata=field_help("boundary neighbourhood size (ls)"))
    temperature: float = field(default=1.0, metadata=field_help("distillation temperature"))
    labeled_fraction: float = field(default=0.25, metadata=field_help(
        "share of training images that keep their annotation (semi)"))
    confidence: float = field(default=0.5, metadata=field_help(
        "minimum teacher confidence for a pseudo-labelled pixel (semi)"))
    crop: int = field(default=0, metadata=field_help("random square crop size (0 = none)"))
    figure_images: int = field(default=4, metadata=field_help("test images in the figure"))
    device: str = field(default="auto", metadata=field_help("auto, cpu or cuda"))
    out: str = field(default="runs/seg", metadata=field_help("output folder"))

    def __post_init__(self) -> None:
        for name, values, choices in (("losses", self.losses, LOSSES),
                                      ("labels", self.labels, LABEL_MODES)):
            if not values:
                raise ValueError(f"{name} must name at least one of {list(choices)}")
            for value in values:
                check_choice(name, value, choices)
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed")
        for name in ("losses", "labels", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat a value, got {list(values)}")
        if self.teacher_epochs is not None and self.teacher_epochs <= 0:
            raise ValueError(f"teacher_epochs must be > 0, got {self.teacher_epochs}")
        check_range("eps", self.eps, 0.0, 1.0)
        check_range("confidence", self.confidence, 0.0, 1.0)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd int >= 1, got {self.kernel}")
        if self.figure_images < 0:
            raise ValueError(f"figure_images must be >= 0, got {self.figure_images}")
        check_range("labeled_fraction", self.labeled_fraction, 0.0, 1.0)
        if not 0 < self.labeled_fraction < 1:
            raise ValueError(f"labeled_fraction must be in (0, 1), got {self.labeled_fraction}")
        if self.crop < 0:
            raise ValueError(f"crop must be >= 0, got {self.crop}")
        self.train_config(0)  # validates the training fields
        SegLoss(w_ce=self.w_ce, w_metric=self.w_metric)
        parse_model_args(self.model_args)
        parse_model_args(self.teacher_args)

    def train_config(self, seed: int, epochs: int | None = None) -> TrainConfig:
        """The engine's recipe for one model."""
        return TrainConfig(epochs=epochs if epochs is not None else self.epochs,
                           batch_size=self.batch_size,
                           optimizer=self.optimizer, lr=self.lr,
                           weight_decay=self.weight_decay, schedule="cosine", seed=seed)


#: ``--quick``: a run of well under a minute on digit scenes.
QUICK: dict[str, Any] = {"out": "runs/seg-quick", "epochs": 4, "teacher_epochs": 4,
                         "model_args": ("base_width=8",), "teacher_args": ("base_width=8",),
                         "batch_size": 16, "figure_images": 3}


def run(config: SegStudyConfig, *, show_progress: bool | None = None) -> list[dict[str, Any]]:
    """Train and score every (loss, label mode, seed) cell; write results, report, figure."""
    folder = prepare_run_folder(config, config.out,
                                sweep_fields=("losses", "labels", "seeds", "figure_images"))
    log = ResultsLog(folder / "results.jsonl", key_fields=("loss", "labels", "seed"))
    done = {log.key(row): row for row in log.rows()}
    options = {"num_images": 256} if config.dataset == "digit_scenes" else {}
    train = load_segmentation(config.dataset, config.data_root, "train", **options)
    test = load_segmentation(config.dataset, config.data_root, "test")
    rows: list[dict[str, Any]] = []
    for seed in config.seeds:
        for labels in config.labels:
            for loss in config.losses:
                key = log.key({"loss": loss, "labels": labels, "seed": seed})
                if key not in done:
                    done[key] = _run_cell(config, folder, train, test, loss, labels, seed,
                                          show_progress)
                    log.append(done[key])
                    # Kept current after every cell, so a sweep cut short still reports.
                    write_text(folder / "report.md", _report(config, list(done.values())))
                rows.append(done[key])
    write_text(folder / "report.md", _report(config, rows))
    if config.figure_images:
        _figure(config, folder, test)
    return rows


def _build(config: SegStudyConfig, data: SegmentationDataset, name: str,
           args: tuple[str, ...], seed: int) -> nn.Module:
    seed_everything(seed)
    return create_model(name, data.num_classes, data.in_channels, data.image_size,
                        mean=data.info.mean, std=data.info.std, **parse_model_args(args))


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
    """Train (or resume) the teacher of ``kd`` (all images) or ``semi`` (labelled images)."""
    data = train
    if labels == "semi":
        data = train.subset(torch.nonzero(_labelled_split(train, config.labeled_fraction,
                                                          seed)).flatten())
    teacher = _build(config, train, config.teacher_model, config.teacher_args, seed)
    objective = SegObjective(_seg_loss(config, train, "ce+jml"), "ls", eps=config.eps,
                             kernel=config.kernel)
    fit(teacher, data.images, data.masks, config.train_config(seed, config.teacher_epochs),
        objective=objective, paired_augment=_augment(config, train),
        checkpoint_dir=folder / "checkpoints" / f"teacher-{labels}-s{seed}",
        device=config.device, show_progress=show_progress)
    return teacher


def _run_cell(config: SegStudyConfig, folder: Path, train: SegmentationDataset,
              test: SegmentationDataset, loss: str, labels: str, seed: int,
              show_progress: bool | None) -> dict[str, Any]:
    began = time.perf_counter()
    teacher = (_teacher(config, folder, train, labels, seed, show_progress)
               if labels in ("kd", "semi") else None)
    masks = train.masks
    if labels == "semi":
        labelled = _labelled_split(train, config.labeled_fraction, seed)
        masks = torch.where(labelled[:, None, None], masks, UNLABELLED)
    objective = SegObjective(_seg_loss(config, train, loss), labels, teacher=teacher,
                             eps=config.eps, kernel=config.kernel,
                             temperature=config.temperature, confidence=config.confidence)
    model = _build(config, train, config.model, config.model_args, seed)
    result = fit(model, train.images, masks, config.train_config(seed), objective=objective,
                 paired_augment=_augment(config, train),
                 checkpoint_dir=folder / "checkpoints" / _cell_name(loss, labels, seed),
                 device=config.device, show_progress=show_progress)
    scores = evaluate_segmentation(model, test, device=config.device)
    return {"loss": loss, "labels": labels, "seed": seed, **scores,
            "train_loss": result.history[-1]["loss"],
            "seconds": time.perf_counter() - began}


def _cell_name(loss: str, labels: str, seed: int) -> str:
    return f"{loss.replace('+', '_')}-{labels}-s{seed}"


_REPORT_COLUMNS = (("miou_dataset", "mIoU^D"), ("miou_image", "mIoU^I"),
                   ("miou_class", "mIoU^C"), ("miou_image_worst", "worst-5% mIoU^I"),
                   ("ece_dataset", "ECE^D"), ("ece_image", "ECE^I"))


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds per (loss, labels); mIoU in %, ECE in %."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["loss"], row["labels"]), []).append(row)
    summary = []
    for (loss, labels), members in groups.items():
        entry: dict[str, Any] = {"loss": loss, "labels": labels, "seeds": len(members)}
        for key, _ in _REPORT_COLUMNS:
            scale = 1.0 if key.startswith("ece") else 100.0
            values = [scale * m[key] for m in members]
            entry[key] = (statistics.mean(values),
                          statistics.stdev(values) if len(values) > 1 else 0.0)
        entry["seconds"] = statistics.mean(m["seconds"] for m in members)
        summary.append(entry)
    return summary


def _report(config: SegStudyConfig, rows: list[dict[str, Any]]) -> str:
    header = "| loss | labels | seeds | " + " | ".join(t for _, t in _REPORT_COLUMNS) + \
        " | s / cell |"
    lines = [f"# Segmentation study on {config.dataset}", "",
             "Mean ± sample std over seeds; mIoU in %, ECE in % (10 bins).", "", header,
             "|" + "---|" * (len(_REPORT_COLUMNS) + 4)]
    for entry in summary_rows(rows):
        cells = [f"{entry[k][0]:.2f} ± {entry[k][1]:.2f}" for k, _ in _REPORT_COLUMNS]
        lines.append(f"| {entry['loss']} | {entry['labels']} | {entry['seeds']} | "
                     + " | ".join(cells) + f" | {entry['seconds']:.0f} |")
    lines += ["", "![predictions](predictions.png)", "", "Config:", "", "```json",
              json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def _figure(config: SegStudyConfig, folder: Path, test: SegmentationDataset) -> None:
    """Image, ground truth and each first-seed model's prediction for a few test images."""
    count = min(config.figure_images, len(test))
    seed = config.seeds[0]
    columns: list[tuple[str, torch.Tensor]] = []
    for labels in config.labels:
        for loss in config.losses:
            path = folder / "checkpoints" / _cell_name(loss, labels, seed) / "last.pt"
            if not path.exists():
                continue
            model = _build(config, test, config.model, config.model_args, seed)
            model.load_state_dict(torch_load(path)["model"])
            probs = predict_segmentation(model, test.images[:count], device=config.device)
            columns.append((f"{loss}\n{labels}", probs.argmax(1)))
    # Void pixels are left blank (masked), not drawn in the colour of class 0.
    masks = np.ma.masked_equal(test.masks[:count].numpy(), test.ignore_index)
    width = 2 + len(columns)
    # A bare Figure needs no GUI backend, so this works on any machine.
    fig = Figure(figsize=(1.8 * width, 1.6 * count))
    axes = fig.subplots(count, width, squeeze=False)
    for row in range(count):
        image = test.images[row].permute(1, 2, 0).squeeze(-1).numpy()
        panels = [("image", image, "gray"), ("ground truth", masks[row], "tab20")]
        panels += [(title, pred[row].numpy(), "tab20") for title, pred in columns]
        for col, (title, panel, cmap) in enumerate(panels):
            ax = axes[row][col]
            if cmap == "gray":
                ax.imshow(panel, cmap=cmap)
            else:
                ax.imshow(panel, cmap=cmap, vmin=0, vmax=max(test.num_classes - 1, 1),
                          interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "predictions.png", dpi=100)
