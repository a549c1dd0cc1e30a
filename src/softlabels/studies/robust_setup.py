"""What every cell of ``softlabels robust`` shares: the data parts, the robust teacher and the
cache of its logits.

The teacher's cell trains the teacher and computes the cache; each student's cell loads both
from the run folder (a finished teacher loads from its last checkpoint, the cache from its
file when its fingerprint matches), so a cell gives the same row in any process.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..data import augmentation, load_dataset
from ..data.split import train_val_split
from ..engine import fit
from ..robust import NaturalObjective, PGDATObjective, TeacherLogitCache, TRADESObjective
from ..robust.splits import StudyParts, study_parts
from .common import build_model

if TYPE_CHECKING:
    from .robust import RobustStudyConfig

__all__ = ["TEACHER_SEED", "check_data", "load_parts", "study_augment", "teacher_cache",
           "train_teacher"]

#: Seed of the teacher's initialisation and of its attacks, apart from the students' seeds.
TEACHER_SEED = 0


@functools.lru_cache(maxsize=4)
def _load_parts(dataset: str, data_root: str | None, source_split: str | None,
                test_fraction: float, val_fraction: float, per_class: int | None,
                val_per_class: int | None, test_per_class: int | None) -> StudyParts:
    if source_split is not None:
        source = load_dataset(dataset, data_root, split=source_split)
        train_part, test_part = train_val_split(source.labels, test_fraction, seed=0)
        train, test = source.subset(train_part), source.subset(test_part)
    else:
        train = load_dataset(dataset, data_root, split="train")
        test = load_dataset(dataset, data_root, split="test")
    return study_parts(train, test, val_fraction=val_fraction, per_class=per_class,
                       val_per_class=val_per_class, test_per_class=test_per_class)


def load_parts(config: RobustStudyConfig) -> StudyParts:
    """Training, validation and test parts, loaded once per process."""
    return _load_parts(config.dataset, config.data_root, config.source_split,
                       config.test_fraction, config.val_fraction, config.per_class,
                       config.val_per_class, config.test_per_class)


def check_data(config: RobustStudyConfig) -> None:
    """The balanced parts fit the data, before any cell runs (a run without them needs no
    data to resume a finished folder).

    Raises:
        ValueError: a class has fewer images than ``per_class`` (and the rest) asks for.
    """
    if (config.per_class, config.val_per_class, config.test_per_class) != (None,) * 3:
        load_parts(config)


def study_augment(config: RobustStudyConfig, data: StudyParts) -> Any:
    """The training augmentation of teacher and students (``config.augment``)."""
    return augmentation(config.augment, min(data.train.image_size))


def train_teacher(config: RobustStudyConfig, folder: Path, data: StudyParts,
                  show_progress: bool | None) -> nn.Module:
    """The robust teacher in eval mode, trained once (a finished one loads from its
    checkpoint under ``folder``)."""
    teacher = build_model(config.teacher_model, config.teacher_args, data.train, TEACHER_SEED)
    generator = torch.Generator().manual_seed(TEACHER_SEED)
    objective = {"trades": lambda: TRADESObjective(config.attack(), config.trades_beta,
                                                   generator),
                 "pgd_at": lambda: PGDATObjective(config.attack(), generator),
                 "natural": NaturalObjective}[config.teacher_method]()
    fit(teacher, data.train.images, data.train.labels,
        config.train_config(TEACHER_SEED, config.teacher_epochs), objective=objective,
        hooks=[objective], augment=study_augment(config, data),
        checkpoint_dir=folder / "checkpoints" / "teacher", device=config.device,
        logger=config.logger, show_progress=show_progress)
    return teacher.eval()


def teacher_cache(config: RobustStudyConfig, folder: Path, data: StudyParts,
                  teacher: nn.Module) -> TeacherLogitCache | None:
    """The teacher's float (N, V, K) logits of every augmented training image (with
    ``config.teacher_cache``; else None), computed by the teacher's cell and read by every
    student's."""
    if not config.teacher_cache:
        return None
    return TeacherLogitCache.load_or_compute(
        folder / "checkpoints" / "teacher" / "logits.pt", teacher, data.train.images,
        study_augment(config, data), device=config.device, precision=config.precision)
