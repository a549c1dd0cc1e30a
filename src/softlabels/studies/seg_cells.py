"""The cells of ``softlabels seg``: its data splits, and training and scoring one model.

:func:`run_cell` computes one cell of :func:`softlabels.studies.seg.plan` from the config and
the cell's key alone (its seeds, and the boundary-smoothing eps when the plan chose one), so
a row is the same in any process and after a resume. Three kinds of cells:

- ``phase = "select"``: a CE + JML student on boundary-smoothed labels with one candidate eps,
  trained on the training images without the validation ones and scored on those;
- ``phase = "teacher"``: a teacher (for the label modes ``teacher`` and ``semi``), scored on
  the test split;
- students (``loss``, ``labels``, ``seed``): scored on the test split.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..data import PairedAugment, SegmentationDataset, load_segmentation, stream_segmentation
from ..data.segmentation import PairedFlip, PairedRandomCrop, PairedRandomScale
from ..engine import FitResult, fit
from ..seg import UNLABELLED, SegLoss, SegObjective, evaluate_segmentation
from .common import build_model
from .sweep import Cell

if TYPE_CHECKING:
    from .seg import SegStudyConfig

__all__ = ["HOLDOUT", "OLD_LABELS", "TEACHER_MODES", "cell_name", "checkpoints", "old_label",
           "run_cell", "selection_data", "teacher_name", "test_data", "training_data"]

#: Old spelling -> label mode, still accepted for one release. The old spellings are also the
#: names :class:`~softlabels.seg.SegObjective` (a building block) gives these modes.
OLD_LABELS = {"ls": "smooth", "kd": "teacher"}
#: Label modes whose students learn from a teacher.
TEACHER_MODES = ("teacher", "semi")
#: ``--val-split`` value that holds out a fixed share of the training images instead of
#: naming a split.
HOLDOUT = "holdout"
_HOLDOUT_SHARE = 0.2
_SELECTION_LOSS = "ce+jml"  # the paper's loss; the eps it prefers is the one the study tests


@functools.lru_cache(maxsize=8)
def _split(dataset: str, data_root: str | None, stream: bool, split: str) -> Any:
    """One split, loaded once per process: a :class:`SegmentationDataset`, or a streamed
    folder with ``stream``."""
    if stream:
        return stream_segmentation(dataset, data_root, split)
    options = {"num_images": 256} if dataset == "digit_scenes" and split == "train" else {}
    return load_segmentation(dataset, data_root, split, **options)


def _concat(parts: list[Any]) -> Any:
    """The images of several splits as one dataset (normalisation statistics are the
    training split's in every split, so the first part's info holds for all)."""
    if len(parts) == 1:
        return parts[0]
    return SegmentationDataset(torch.cat([p.images for p in parts]),
                               torch.cat([p.masks for p in parts]), parts[0].info,
                               ignore_index=parts[0].ignore_index)


def training_data(config: SegStudyConfig) -> Any:
    """The images of ``config.train_splits``, which teachers and students train on."""
    return _concat([_split(config.dataset, config.data_root, config.stream, s)
                    for s in config.train_splits])


def test_data(config: SegStudyConfig) -> Any:
    """The test split every teacher and student is scored on."""
    return _split(config.dataset, config.data_root, config.stream, "test")


def _holdout(count: int) -> Tensor:
    """bool (count,): the held-out validation images of ``--val-split holdout``; one fixed
    draw, so every seed and every process selects on the same images."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    held = torch.zeros(count, dtype=torch.bool)
    held[order[:max(1, round(_HOLDOUT_SHARE * count))]] = True
    return held


def selection_data(config: SegStudyConfig) -> tuple[Any, Any]:
    """(train, validation) of the selection cells: the training images without the
    validation ones, and the validation images (``config.val_split``)."""
    if config.val_split == HOLDOUT:
        data = training_data(config)
        held = _holdout(len(data))
        return (data.subset(torch.nonzero(~held).flatten()),
                data.subset(torch.nonzero(held).flatten()))
    parts = [_split(config.dataset, config.data_root, config.stream, s)
             for s in config.train_splits if s != config.val_split]
    return _concat(parts), _split(config.dataset, config.data_root, config.stream,
                                  config.val_split)


def run_cell(config: SegStudyConfig, cell: Cell, folder: Path, *,
             show_progress: bool | None = None) -> dict[str, Any]:
    """Train and score one selection student, teacher or student; returns its row."""
    began = time.perf_counter()
    key = cell.key
    seed = key["seed"]
    eps = key.get("smoothing", config.smoothing)
    if key.get("phase") == "select":
        train, val = selection_data(config)
        model, result = _student(config, folder, cell.name, cell.name, train, _SELECTION_LOSS,
                                 "smooth", seed, eps, None, show_progress)
        return {**evaluate_segmentation(model, val, device=config.device),
                "train_loss": result.history[-1]["loss"], "seconds": time.perf_counter() - began}
    train, test = training_data(config), test_data(config)
    labels = key["labels"]
    if key.get("phase") == "teacher":
        teacher = _teacher(config, folder, train, labels, seed, eps, show_progress)
        return {**evaluate_segmentation(teacher, test, device=config.device),
                "seconds": time.perf_counter() - began}
    loss = key["loss"]
    teacher = (_teacher(config, folder, train, labels, seed, eps, show_progress)
               if labels in TEACHER_MODES else None)
    model, result = _student(config, folder, cell.name,
                             cell_name(loss, old_label(labels), seed, key.get("smoothing")),
                             train, loss, labels, seed, eps, teacher, show_progress)
    return {**evaluate_segmentation(model, test, device=config.device),
            "train_loss": result.history[-1]["loss"], "seconds": time.perf_counter() - began}


def _student(config: SegStudyConfig, folder: Path, name: str, legacy: str, train: Any,
             loss: str, labels: str, seed: int, eps: float, teacher: nn.Module | None,
             show_progress: bool | None) -> tuple[nn.Module, FitResult]:
    """Train (or resume) one student in ``checkpoints/<name>``."""
    masks = None  # the dataset's own
    if labels == "semi":
        labelled = _labelled_split(train, config.labeled_fraction, seed)
        masks = torch.where(labelled[:, None, None], train.masks, UNLABELLED)
    objective = SegObjective(_seg_loss(config, train, loss), old_label(labels), teacher=teacher,
                             eps=eps, kernel=config.kernel, temperature=config.temperature,
                             confidence=config.confidence)
    model = build_model(config.model, config.model_args, train, seed)
    result = fit(model, train, masks, config.train_config(seed), objective=objective,
                 paired_augment=_augment(config, train),
                 checkpoint_dir=checkpoints(folder, name, legacy), device=config.device,
                 num_workers=config.data_workers, logger=config.logger,
                 show_progress=show_progress)
    return model, result


def _augment(config: SegStudyConfig, data: Any) -> PairedAugment:
    """Flip, then (with ``scale``) one random rescale per batch, then (with ``crop``) a random
    crop per image; the flip comes first so that a run without scale and crop draws the same
    random numbers as before they existed."""
    steps: list[Any] = [PairedFlip()]
    if config.scale:
        steps.append(PairedRandomScale((config.scale[0], config.scale[1])))
    if config.crop:
        steps.append(PairedRandomCrop(config.crop, pad_value_mask=data.ignore_index))
    return PairedAugment(*steps)


def _seg_loss(config: SegStudyConfig, data: Any, loss: str) -> SegLoss:
    return SegLoss(loss, data.num_classes, data.ignore_index, config.w_ce, config.w_metric,
                   config.metric_smooth)


def _labelled_split(data: Any, fraction: float, seed: int) -> Tensor:
    """bool (N,): which training images keep their annotation in semi-supervised mode."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator)
    keep = torch.zeros(len(data), dtype=torch.bool)
    keep[order[:max(1, round(fraction * len(data)))]] = True
    return keep


def _teacher(config: SegStudyConfig, folder: Path, train: Any, labels: str, seed: int,
             eps: float, show_progress: bool | None) -> nn.Module:
    """Train (or resume) the teacher of ``teacher`` (all training images) or ``semi``
    (the labelled ones): CE + JML on labels boundary-smoothed with ``eps``."""
    data = train
    if labels == "semi":
        data = train.subset(torch.nonzero(_labelled_split(train, config.labeled_fraction,
                                                          seed)).flatten())
    teacher = build_model(config.teacher_model, config.teacher_args, train, seed)
    objective = SegObjective(_seg_loss(config, train, "ce+jml"), old_label("smooth"),
                             eps=eps, kernel=config.kernel)
    name = teacher_name(labels, seed, eps if config.selects_smoothing() else None)
    # Only a teacher of a run without selection may resume a folder of the previous release.
    legacy = name if config.selects_smoothing() else f"teacher-{old_label(labels)}-s{seed}"
    fit(teacher, data, None, config.train_config(seed, config.teacher_epochs),
        objective=objective, paired_augment=_augment(config, train),
        checkpoint_dir=checkpoints(folder, name, legacy),
        device=config.device, num_workers=config.data_workers, logger=config.logger,
        show_progress=show_progress)
    return teacher


def _eps_suffix(eps: float | None) -> str:
    return "" if eps is None else f"-eps{eps:g}"


def teacher_name(labels: str, seed: int, eps: float | None = None) -> str:
    """Cell (and checkpoint folder) name of a teacher; ``eps`` when the plan chose it."""
    base = f"teacher-s{seed}" if labels == "teacher" else f"teacher-{labels}-s{seed}"
    return base + _eps_suffix(eps)


def cell_name(loss: str, labels: str, seed: int, eps: float | None = None) -> str:
    """Cell (and checkpoint folder) name of a student; ``eps`` when the plan chose it."""
    return f"{loss.replace('+', '_')}-{labels}-s{seed}" + _eps_suffix(eps)


def old_label(labels: str) -> str:
    """The spelling a label mode had in the previous release (in its run folders' cell
    names, and in :class:`~softlabels.seg.SegObjective`)."""
    return next((old for old, new in OLD_LABELS.items() if new == labels), labels)


def checkpoints(folder: Path, name: str, legacy: str) -> Path:
    """``checkpoints/<name>``, or the folder of the same cell named before the label modes
    were renamed, so that a run of the previous release resumes its half-trained models."""
    path, old = folder / "checkpoints" / name, folder / "checkpoints" / legacy
    return old if not path.exists() and old.exists() else path
