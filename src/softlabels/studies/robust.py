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

import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import check_choice
from .._io import torch_save, write_json
from ..attacks import robust_evaluate, standard_attacks
from ..configuration import field_help
from ..data import ImageDataset, augmentation, list_augmentations, load_dataset
from ..data.split import sample_per_class, train_val_split
from ..engine import TrainConfig, fit, load_epoch_checkpoint
from ..models import create_model
from ..results import ResultsLog
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
from .robust_report import write_report
from .run_folder import prepare_run_folder
from .train import parse_model_args

__all__ = ["METHODS", "QUICK", "TEACHER_METHODS", "RobustStudyConfig", "run"]

METHODS = ("rslad", "absld", "ard")
TEACHER_METHODS = ("trades", "pgd_at", "natural")


@dataclass(frozen=True)
class RobustStudyConfig:
    """Settings of ``softlabels robust``; each field is the CLI flag of the same name."""

    dataset: str = field(default="digits", metadata=field_help("dataset name"))
    data_root: str | None = field(default=None, metadata=field_help("dataset folder"))
    source_split: str | None = field(default=None, metadata=field_help(
        "split both parts come from (e.g. test for the MNIST test set); default: the "
        "dataset's own train and test splits"))
    test_fraction: float = field(default=0.2, metadata=field_help(
        "share of --source-split held out as the test part"))
    val_fraction: float = field(default=0.1, metadata=field_help(
        "share of the training part held out to choose each student's checkpoint"))
    eps: float = field(default=0.3, metadata=field_help("L-inf radius in pixel units"))
    alpha: float = field(default=0.01, metadata=field_help("PGD step used in training"))
    train_steps: int = field(default=10, metadata=field_help("PGD steps used in training"))
    eval_steps: int = field(default=20, metadata=field_help("PGD/CW steps used in evaluation"))
    eval_alpha: float | None = field(default=None, metadata=field_help(
        "PGD/CW step used in evaluation (default eps / 4)"))
    autoattack: bool = field(default=True, metadata=field_help(
        "also evaluate AutoAttack when torchattacks is installed"))
    autoattack_images: int = field(default=500, metadata=field_help(
        "test images (the same number per class) AutoAttack runs on; its Square attack "
        "costs thousands of forward passes per image"))
    teacher_method: str = field(default="trades", metadata=field_help(
        "how the teacher is trained", choices=TEACHER_METHODS))
    teacher_model: str = field(default="convnet", metadata=field_help("teacher model"))
    teacher_args: tuple[str, ...] = field(default=("width=64",), metadata=field_help(
        "teacher model options as KEY=VALUE"))
    teacher_epochs: int = field(default=20, metadata=field_help("teacher epochs"))
    model: str = field(default="convnet", metadata=field_help("student model"))
    model_args: tuple[str, ...] = field(default=("width=16",), metadata=field_help(
        "student model options as KEY=VALUE"))
    methods: tuple[str, ...] = field(default=METHODS, metadata=field_help(
        "distillation methods", choices=METHODS))
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=field_help("student seeds"))
    epochs: int = field(default=20, metadata=field_help("student epochs"))
    batch_size: int = field(default=128, metadata=field_help("batch size"))
    lr: float = field(default=0.05, metadata=field_help("SGD learning rate (teacher and student)"))
    weight_decay: float = field(default=2e-4, metadata=field_help("weight decay"))
    augment: str = field(default="none", metadata=field_help("batch augmentation"))
    select_every: int = field(default=2, metadata=field_help(
        "keep and score a student checkpoint every N epochs (and the last)"))
    tau_min: float = field(default=0.5, metadata=field_help("ABSLD temperature lower bound"))
    tau_max: float = field(default=5.0, metadata=field_help("ABSLD temperature upper bound"))
    tau_rate: float = field(default=0.1, metadata=field_help("ABSLD temperature step"))
    official_product: bool = field(default=False, metadata=field_help(
        "ABSLD as the official code: both labels divided by tau_adv * tau_nat"))
    ard_temperature: float = field(default=30.0, metadata=field_help("ARD temperature"))
    ard_alpha: float = field(default=1.0, metadata=field_help("ARD distillation weight"))
    trades_beta: float = field(default=6.0, metadata=field_help("TRADES beta"))
    device: str = field(default="auto", metadata=field_help("auto, cpu or cuda"))
    out: str = field(default="runs/robust", metadata=field_help("output folder"))

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError(f"methods must name at least one of {list(METHODS)}")
        for method in self.methods:
            check_choice("methods", method, METHODS)
        for name in ("methods", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{name} is empty")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat a value, got {list(values)}")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1, got {self.eval_steps}")
        if self.eval_alpha is not None and self.eval_alpha <= 0:
            raise ValueError(f"eval_alpha must be > 0, got {self.eval_alpha}")
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min must be <= tau_max, got tau_min={self.tau_min} > "
                             f"tau_max={self.tau_max}")
        for name in ("test_fraction", "val_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.autoattack_images < 1:
            raise ValueError(f"autoattack_images must be >= 1, got {self.autoattack_images}")
        if self.select_every < 1:
            raise ValueError(f"select_every must be >= 1, got {self.select_every}")
        check_choice("augment", self.augment, list_augmentations())
        self.attack()
        self.train_config(0, self.epochs)
        self.train_config(0, self.teacher_epochs)
        parse_model_args(self.model_args)
        parse_model_args(self.teacher_args)

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
                           checkpoint_every=self.select_every, seed=seed)


#: ``--quick``: digits, small models, a few epochs; well under a minute.
QUICK: dict[str, Any] = {
    "out": "runs/robust-quick", "eps": 0.1, "alpha": 0.025, "train_steps": 3,
    "eval_steps": 5, "teacher_epochs": 6, "epochs": 6, "seeds": (0, 1),
    "teacher_args": ("width=32", "depth=2"), "model_args": ("width=8", "depth=2"),
    "batch_size": 64, "select_every": 2, "autoattack": False,
}


@dataclass
class _Data:
    train: ImageDataset
    val: ImageDataset
    test: ImageDataset


def run(config: RobustStudyConfig, *, show_progress: bool | None = None
        ) -> list[dict[str, Any]]:
    """Train the teacher and every (method, seed) student; write results, report, figures."""
    folder = prepare_run_folder(config, config.out, sweep_fields=("methods", "seeds",
                                                                  "autoattack"))
    log = ResultsLog(folder / "results.jsonl", key_fields=("method", "seed"))
    done = {log.key(row): row for row in log.rows()}
    data = _load(config)
    attacks = _attacks(config)
    teacher = _teacher(config, folder, data, show_progress)
    teacher_row = _teacher_scores(config, folder, teacher, data, attacks)
    rows: list[dict[str, Any]] = []
    for seed in config.seeds:
        for method in config.methods:
            key = log.key({"method": method, "seed": seed})
            if key not in done:
                done[key] = _student_cell(config, folder, data, teacher, attacks, method,
                                          seed, show_progress)
                log.append(done[key])
                write_report(folder, config, [*rows, done[key]], teacher_row)
            rows.append(done[key])
    write_report(folder, config, rows, teacher_row, figures=True)
    return rows


def _load(config: RobustStudyConfig) -> _Data:
    if config.source_split is not None:
        source = load_dataset(config.dataset, config.data_root, split=config.source_split)
        train_part, test_part = train_val_split(source.labels, config.test_fraction, seed=0)
        train, test = source.subset(train_part), source.subset(test_part)
    else:
        train = load_dataset(config.dataset, config.data_root, split="train")
        test = load_dataset(config.dataset, config.data_root, split="test")
    fit_part, val_part = train_val_split(train.labels, config.val_fraction, seed=1)
    return _Data(train.subset(fit_part), train.subset(val_part), test)


def _attacks(config: RobustStudyConfig) -> dict[str, Any]:
    with_autoattack = config.autoattack and importlib.util.find_spec("torchattacks") is not None
    return standard_attacks(config.eps, pgd_steps=config.eval_steps, alpha=config.eval_alpha,
                            include_autoattack=with_autoattack)


def _build(config: RobustStudyConfig, data: _Data, name: str, args: tuple[str, ...],
           seed: int) -> nn.Module:
    torch.manual_seed(seed)
    info = data.train.info
    return create_model(name, data.train.num_classes, data.train.in_channels,
                        data.train.image_size, mean=info.mean, std=info.std,
                        **parse_model_args(args))


def _teacher(config: RobustStudyConfig, folder: Path, data: _Data,
             show_progress: bool | None) -> nn.Module:
    teacher = _build(config, data, config.teacher_model, config.teacher_args, 0)
    generator = torch.Generator().manual_seed(0)
    objective = {"trades": lambda: TRADESObjective(config.attack(), config.trades_beta,
                                                   generator),
                 "pgd_at": lambda: PGDATObjective(config.attack(), generator),
                 "natural": NaturalObjective}[config.teacher_method]()
    fit(teacher, data.train.images, data.train.labels,
        config.train_config(0, config.teacher_epochs), objective=objective,
        augment=augmentation(config.augment, min(data.train.image_size)),
        checkpoint_dir=folder / "checkpoints" / "teacher", device=config.device,
        show_progress=show_progress)
    return teacher.eval()


def _teacher_scores(config: RobustStudyConfig, folder: Path, teacher: nn.Module, data: _Data,
                    attacks: dict[str, Any]) -> dict[str, Any]:
    path = folder / "teacher_scores.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    scores = _scores(teacher, data.test, attacks, config)
    row = {"method": f"teacher ({config.teacher_method})", "scores": scores}
    write_json(path, row)
    return row


def _scores(model: nn.Module, data: ImageDataset, attacks: dict[str, Any],
            config: RobustStudyConfig) -> dict[str, dict[str, Any]]:
    """Scores under every attack; AutoAttack on a class-balanced subset of the images."""
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


def _student_cell(config: RobustStudyConfig, folder: Path, data: _Data, teacher: nn.Module,
                  attacks: dict[str, Any], method: str, seed: int,
                  show_progress: bool | None) -> dict[str, Any]:
    began = time.perf_counter()
    student = _build(config, data, config.model, config.model_args, seed)
    distiller = _distiller(config, method, student, teacher, data.train.num_classes, seed)
    recipe = config.train_config(seed, config.epochs)
    checkpoints = folder / "checkpoints" / f"{method}-s{seed}"
    fit(student, data.train.images, data.train.labels, recipe, objective=distiller.objective,
        hooks=[distiller], augment=augmentation(config.augment, min(data.train.image_size)),
        checkpoint_dir=checkpoints, device=config.device, show_progress=show_progress)
    final = checkpoints / f"epoch_{config.epochs:04d}.pt"
    if not final.exists():  # the last epoch is a candidate even off the select_every grid
        torch_save(final, student.state_dict())
    selection = _select_checkpoint(config, data, student, checkpoints, attacks)
    student.load_state_dict(load_epoch_checkpoint(checkpoints, selection["epoch"]))
    row: dict[str, Any] = {"method": method, "seed": seed, "selected_epoch": selection["epoch"],
                           "selection": selection["scores"],
                           "scores": _scores(student, data.test, attacks, config),
                           "seconds": time.perf_counter() - began}
    if isinstance(distiller, ABSLD):
        row["temperatures"] = {"adv": distiller.adv_temperatures.history,
                               "nat": distiller.nat_temperatures.history}
    return row


def _select_checkpoint(config: RobustStudyConfig, data: _Data, student: nn.Module,
                       checkpoints: Path, attacks: dict[str, Any]) -> dict[str, Any]:
    """The saved epoch with the best validation PGD average + worst-class accuracy."""
    pgd_name = next(name for name in attacks if name.startswith("pgd"))
    epochs = sorted(set(range(config.select_every, config.epochs + 1,
                                      config.select_every)) | {config.epochs})
    scores = {}
    for epoch in epochs:
        student.load_state_dict(load_epoch_checkpoint(checkpoints, epoch))
        result = robust_evaluate(student, data.val.images, data.val.labels,
                                 {pgd_name: attacks[pgd_name]},
                                 num_classes=data.val.num_classes, device=config.device)
        scores[str(epoch)] = result[pgd_name].accuracy + result[pgd_name].worst_class_accuracy
    best = max(scores, key=lambda e: (scores[e], int(e)))
    return {"epoch": int(best), "scores": scores}

