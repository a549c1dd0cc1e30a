"""``softlabels robust``: adversarial robustness distillation with anti-bias soft labels.

One robust teacher (TRADES by default) is trained once; then, for every (method, seed) cell, a
student is distilled with ARD, RSLAD or ABSLD. Each student keeps a checkpoint every
``select_every`` epochs; the one with the best average + worst-class PGD accuracy on a
validation split (carved from the training images) is scored on the test split under clean,
FGSM, PGD, CW and (with torchattacks installed) AutoAttack inputs: overall accuracy,
worst-class accuracy and NSD (sample std / mean of the class-wise accuracies).

Datasets with only one usable split (the MNIST test set of the reproduction) can be split
into training and test parts with ``source_split`` and ``test_fraction``.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import torch_save
from ..attacks import robust_evaluate, standard_attacks
from ..configuration import field_help
from ..data import ImageDataset, augmentation, list_augmentations, load_dataset
from ..data.split import sample_per_class, train_val_split
from ..engine import TrainConfig, fit, load_epoch_checkpoint
from ..models import MODEL_SPEC_HELP
from ..results import Table
from ..robust import (
    ABSLD,
    ARD,
    RSLAD,
    AttackConfig,
    Distiller,
    NaturalObjective,
    PGDATObjective,
    TRADESObjective,
)
from .common import StudyConfig, build_model, like
from .robust_report import attack_order, method_summary, write_report
from .sweep import Cell, Stage, Study

__all__ = ["METHODS", "QUICK", "STUDY", "TEACHER_METHODS", "RobustStudyConfig"]

METHODS = ("rslad", "absld", "ard")
TEACHER_METHODS = ("trades", "pgd_at", "natural")


@dataclass(frozen=True)
class RobustStudyConfig(StudyConfig):
    """Settings of ``softlabels robust``; each field is the CLI flag of the same name."""

    source_split: str | None = field(default=None, metadata=field_help(
        "split both parts come from (e.g. test for the MNIST test set); default: the "
        "dataset's own train and test splits"))
    test_fraction: float = field(default=0.2, metadata=field_help(
        "share of --source-split held out as the test part", low=0.0, high=1.0,
        low_open=True, high_open=True))
    val_fraction: float = field(default=0.1, metadata=field_help(
        "share of the training part held out to choose each student's checkpoint", low=0.0,
        high=1.0, low_open=True, high_open=True))
    eps: float = field(default=0.3, metadata=field_help(
        "L-inf attack radius in pixel units of [0, 1] images (fractions such as 8/255 work)",
        low=0.0))
    alpha: float = field(default=0.01, metadata=field_help("PGD step used in training"))
    train_steps: int = field(default=10, metadata=field_help("PGD steps used in training"))
    eval_steps: int = field(default=20, metadata=field_help(
        "PGD/CW steps used in evaluation", low=1))
    eval_alpha: float | None = field(default=None, metadata=field_help(
        "PGD/CW step used in evaluation (default eps / 4)", low=0.0, low_open=True))
    autoattack: bool = field(default=True, metadata=field_help(
        "also evaluate AutoAttack when torchattacks is installed"))
    autoattack_images: int = field(default=500, metadata=field_help(
        "test images (the same number per class) AutoAttack runs on; its Square attack "
        "costs thousands of forward passes per image", low=1))
    teacher_method: str = field(default="trades", metadata=field_help(
        "how the teacher is trained", choices=TEACHER_METHODS))
    teacher_model: str = field(default="convnet", metadata=field_help(
        "teacher model (as --model)"))
    teacher_args: tuple[str, ...] = field(default=("width=64",), metadata=field_help(
        "teacher model options as KEY=VALUE"))
    teacher_epochs: int = field(default=20, metadata=field_help("teacher epochs", low=1))
    model: str = like("model", "convnet", "student model: " + MODEL_SPEC_HELP)
    model_args: tuple[str, ...] = like("model_args", ("width=16",),
                                       "student model options as KEY=VALUE")
    methods: tuple[str, ...] = field(default=METHODS, metadata=field_help(
        "distillation methods", choices=METHODS, nonempty=True, unique=True))
    seeds: tuple[int, ...] = like("seeds", (0, 1, 2), "student seeds, one cell each")
    epochs: int = field(default=20, metadata=field_help("student epochs", low=1))
    batch_size: int = field(default=128, metadata=field_help("batch size", low=1))
    lr: float = field(default=0.05, metadata=field_help(
        "SGD learning rate (teacher and student)", low=0.0, low_open=True))
    weight_decay: float = field(default=2e-4, metadata=field_help("weight decay", low=0.0))
    augment: str = field(default="none", metadata=field_help(
        "batch augmentation", choices=tuple(list_augmentations())))
    select_every: int = field(default=2, metadata=field_help(
        "keep and score a student checkpoint every N epochs (and the last)", low=1))
    tau_min: float = field(default=0.5, metadata=field_help(
        "ABSLD temperature lower bound", low=0.0, low_open=True))
    tau_max: float = field(default=5.0, metadata=field_help("ABSLD temperature upper bound"))
    tau_rate: float = field(default=0.1, metadata=field_help("ABSLD temperature step",
                                                             low=0.0))
    official_product: bool = field(default=False, metadata=field_help(
        "ABSLD as the official code: both labels divided by tau_adv * tau_nat"))
    ard_temperature: float = field(default=30.0, metadata=field_help(
        "ARD temperature", low=0.0, low_open=True))
    ard_alpha: float = field(default=1.0, metadata=field_help(
        "ARD distillation weight", low=0.0, high=1.0))
    trades_beta: float = field(default=6.0, metadata=field_help("TRADES beta", low=0.0))
    out: str = like("out", "runs/robust")

    def check(self) -> None:
        self.no_streaming("robust distillation scores every checkpoint under attack on held-"
                          "out splits it carves from memory")
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min must be <= tau_max, got tau_min={self.tau_min} > "
                             f"tau_max={self.tau_max}")
        self.attack()
        self.train_config(0, self.epochs)
        self.train_config(0, self.teacher_epochs)

    def attack(self) -> AttackConfig:
        """The PGD used inside training."""
        return AttackConfig(self.eps, self.alpha, self.train_steps)

    def train_config(self, seed: int, epochs: int) -> TrainConfig:
        """SGD with momentum 0.9 and steps x0.1 at 3/4 and 9/10 of training (as RSLAD's
        215/260 of 300, rounded to this length); a checkpoint every ``select_every`` epochs."""
        milestones = tuple(sorted({m for m in (round(0.75 * epochs), round(0.9 * epochs))
                                   if 0 < m < epochs}))
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, optimizer="sgd",
                           lr=self.lr, momentum=0.9, weight_decay=self.weight_decay,
                           schedule="step", milestones=milestones,
                           checkpoint_every=self.select_every, seed=seed, **self.engine())


#: ``--quick``: digits, small models, a few epochs; well under a minute.
QUICK: dict[str, Any] = {
    "out": "runs/robust-quick", "eps": 0.1, "alpha": 0.025, "train_steps": 3,
    "eval_steps": 5, "teacher_epochs": 6, "epochs": 6, "seeds": (0, 1),
    "teacher_args": ("width=32", "depth=2"), "model_args": ("width=8", "depth=2"),
    "batch_size": 64, "select_every": 2, "autoattack": False,
}

#: ``reproduce --full``: the MNIST run of ``docs/results.md``.
FULL: tuple[str, tuple[dict[str, Any], ...]] = ("mnist", (
    {"dataset": "mnist", "source_split": "test", "test_fraction": 0.2, "eps": 0.3,
     "alpha": 0.04, "train_steps": 10, "eval_steps": 20, "eval_alpha": 0.03,
     "teacher_args": ("width=32",), "model_args": ("width=16",), "teacher_epochs": 10,
     "epochs": 10, "select_every": 2, "seeds": (0, 1, 2), "autoattack_images": 100},
))

# Seed of the teacher's initialisation and of its attacks, apart from the students' seeds.
_TEACHER_SEED = 0


@dataclass
class _Data:
    train: ImageDataset
    val: ImageDataset
    test: ImageDataset


def plan(config: RobustStudyConfig, rows: Sequence[dict[str, Any]]) -> list[Stage]:
    """The teacher, then every (method, seed) student."""
    students = tuple(Cell({"method": method, "seed": seed}, f"{method}-s{seed}")
                     for seed in config.seeds for method in config.methods)
    return [Stage("teacher", (Cell({"phase": "teacher"}, "teacher"),)),
            Stage("students", students)]


def run_cell(config: RobustStudyConfig, cell: Cell, folder: Path, *,
             show_progress: bool | None = None) -> dict[str, Any]:
    """Train (or load) the teacher and score it, or distil and score one student."""
    began = time.perf_counter()
    data = _load(config)
    teacher = _teacher(config, folder, data, show_progress)
    if cell.key.get("phase") == "teacher":
        return {"teacher_method": config.teacher_method,
                "scores": _scores(teacher, data.test, config, _TEACHER_SEED),
                "seconds": time.perf_counter() - began}
    return {**_student(config, folder, data, teacher, cell.key["method"], cell.key["seed"],
                       show_progress), "seconds": time.perf_counter() - began}


@functools.lru_cache(maxsize=4)
def _load_parts(dataset: str, data_root: str | None, source_split: str | None,
                test_fraction: float, val_fraction: float) -> _Data:
    if source_split is not None:
        source = load_dataset(dataset, data_root, split=source_split)
        train_part, test_part = train_val_split(source.labels, test_fraction, seed=0)
        train, test = source.subset(train_part), source.subset(test_part)
    else:
        train = load_dataset(dataset, data_root, split="train")
        test = load_dataset(dataset, data_root, split="test")
    fit_part, val_part = train_val_split(train.labels, val_fraction, seed=1)
    return _Data(train.subset(fit_part), train.subset(val_part), test)


def _load(config: RobustStudyConfig) -> _Data:
    """Training, validation and test parts, loaded once per process."""
    return _load_parts(config.dataset, config.data_root, config.source_split,
                       config.test_fraction, config.val_fraction)


def _attacks(config: RobustStudyConfig, seed: int) -> dict[str, Any]:
    """The evaluation attacks, their random starts drawn from ``seed`` alone: a score does not
    depend on which evaluations ran before it in the process."""
    with_autoattack = config.autoattack and importlib.util.find_spec("torchattacks") is not None
    return standard_attacks(config.eps, pgd_steps=config.eval_steps, alpha=config.eval_alpha,
                            seed=seed, include_autoattack=with_autoattack)


def _teacher(config: RobustStudyConfig, folder: Path, data: _Data,
             show_progress: bool | None) -> nn.Module:
    """The robust teacher, trained once (a finished one loads from its checkpoint)."""
    teacher = build_model(config.teacher_model, config.teacher_args, data.train, _TEACHER_SEED)
    generator = torch.Generator().manual_seed(_TEACHER_SEED)
    objective = {"trades": lambda: TRADESObjective(config.attack(), config.trades_beta,
                                                   generator),
                 "pgd_at": lambda: PGDATObjective(config.attack(), generator),
                 "natural": NaturalObjective}[config.teacher_method]()
    fit(teacher, data.train.images, data.train.labels,
        config.train_config(_TEACHER_SEED, config.teacher_epochs), objective=objective,
        hooks=[objective], augment=augmentation(config.augment, min(data.train.image_size)),
        checkpoint_dir=folder / "checkpoints" / "teacher", device=config.device,
        logger=config.logger,
        show_progress=show_progress)
    return teacher.eval()


def _scores(model: nn.Module, data: ImageDataset, config: RobustStudyConfig, seed: int
            ) -> dict[str, dict[str, Any]]:
    """Scores under every attack; AutoAttack on a class-balanced subset of the images."""
    attacks = _attacks(config, seed)
    cheap = {name: attack for name, attack in attacks.items() if name != "autoattack"}
    results = robust_evaluate(model, data.images, data.labels, cheap,
                              num_classes=data.num_classes, device=config.device)
    scores = {name: result.as_dict() for name, result in results.items()}
    if "autoattack" in attacks:
        per_class = max(1, config.autoattack_images // data.num_classes)
        counts = torch.bincount(data.labels, minlength=data.num_classes)
        subset = data.subset(sample_per_class(data.labels, min(per_class, int(counts.min())),
                                              seed=0))
        result = robust_evaluate(model, subset.images, subset.labels,
                                 {"autoattack": attacks["autoattack"]},
                                 num_classes=data.num_classes, device=config.device)
        scores["autoattack"] = {**result["autoattack"].as_dict(), "images": len(subset)}
    return scores


def _distiller(config: RobustStudyConfig, method: str, student: nn.Module,
               teacher: nn.Module, num_classes: int, seed: int) -> Distiller:
    generator = torch.Generator().manual_seed(seed)
    attack = config.attack()
    if method == "ard":
        return ARD(student, teacher, attack, temperature=config.ard_temperature,
                   alpha=config.ard_alpha, generator=generator)
    if method == "rslad":
        return RSLAD(student, teacher, attack, generator=generator)
    milestones = config.train_config(seed, config.epochs).resolved_milestones()
    return ABSLD(student, teacher, attack, num_classes, low=config.tau_min,
                 high=config.tau_max, rate=config.tau_rate, decay_epochs=milestones,
                 official_product=config.official_product, generator=generator)


def _student(config: RobustStudyConfig, folder: Path, data: _Data, teacher: nn.Module,
             method: str, seed: int, show_progress: bool | None) -> dict[str, Any]:
    """Distil, choose the checkpoint on validation PGD, score it on the test part."""
    student = build_model(config.model, config.model_args, data.train, seed)
    distiller = _distiller(config, method, student, teacher, data.train.num_classes, seed)
    recipe = config.train_config(seed, config.epochs)
    checkpoints = folder / "checkpoints" / f"{method}-s{seed}"
    fit(student, data.train.images, data.train.labels, recipe, objective=distiller.objective,
        hooks=[distiller], augment=augmentation(config.augment, min(data.train.image_size)),
        checkpoint_dir=checkpoints, device=config.device, logger=config.logger,
        show_progress=show_progress)
    final = checkpoints / f"epoch_{config.epochs:04d}.pt"
    if not final.exists():  # the last epoch is a candidate even off the select_every grid
        torch_save(final, student.state_dict())
    selection = _select_checkpoint(config, data, student, checkpoints, seed)
    student.load_state_dict(load_epoch_checkpoint(checkpoints, selection["epoch"]))
    row: dict[str, Any] = {"selected_epoch": selection["epoch"],
                           "selection": selection["scores"],
                           "scores": _scores(student, data.test, config, seed)}
    if isinstance(distiller, ABSLD):
        row["temperatures"] = {"adv": distiller.adv_temperatures.history,
                               "nat": distiller.nat_temperatures.history}
    return row


def _select_checkpoint(config: RobustStudyConfig, data: _Data, student: nn.Module,
                       checkpoints: Path, seed: int) -> dict[str, Any]:
    """The saved epoch with the best validation PGD average + worst-class accuracy; every
    candidate meets the same attack starts (drawn from ``seed``)."""
    pgd_name = f"pgd{config.eval_steps}"
    epochs = sorted(set(range(config.select_every, config.epochs + 1,
                              config.select_every)) | {config.epochs})
    scores = {}
    for epoch in epochs:
        student.load_state_dict(load_epoch_checkpoint(checkpoints, epoch))
        attack = _attacks(config, seed)[pgd_name]
        result = robust_evaluate(student, data.val.images, data.val.labels,
                                 {pgd_name: attack}, num_classes=data.val.num_classes,
                                 device=config.device)
        scores[str(epoch)] = result[pgd_name].accuracy + result[pgd_name].worst_class_accuracy
    best = max(scores, key=lambda e: (scores[e], int(e)))
    return {"epoch": int(best), "scores": scores}


def summary(config: RobustStudyConfig, rows: Sequence[dict[str, Any]]) -> list[Table]:
    """Accuracy / worst class / NSD under each attack, mean over seeds, per method."""
    methods = method_summary(rows)
    scored = [r for r in rows if "method" in r]
    attacks = attack_order(list(scored[0]["scores"])) if scored else []
    table = Table(f"{config.dataset}: accuracy (%) / worst class (%) / NSD, mean over seeds",
                  ("method", *attacks), notes=[f"report: {config.out}/report.md"])
    for method, per_attack in methods.items():
        table.rows.append((method, *(f"{100 * per_attack[a]['accuracy'][0]:.1f} / "
                                     f"{100 * per_attack[a]['worst_class_accuracy'][0]:.1f} / "
                                     f"{per_attack[a]['nsd'][0]:.3f}" for a in attacks)))
    return [table]


def headline(rows: Sequence[dict[str, Any]]) -> list[str]:
    """PGD accuracy, worst class and NSD of each method."""
    lines = []
    for method, per_attack in method_summary(rows).items():
        name = next(a for a in per_attack if a.startswith("pgd"))
        score = per_attack[name]
        lines.append(f"{method}: {name} {100 * score['accuracy'][0]:.1f}%, worst class "
                     f"{100 * score['worst_class_accuracy'][0]:.1f}%, NSD "
                     f"{score['nsd'][0]:.3f}")
    return lines


STUDY = Study(name="robust",
              help="adversarial robustness distillation: ARD, RSLAD and anti-bias ABSLD",
              config_cls=RobustStudyConfig, quick=QUICK, plan=plan, run_cell=run_cell,
              report=write_report, summary=summary, headline=headline,
              sweep_fields=("methods", "seeds", "autoattack"), full=FULL)
