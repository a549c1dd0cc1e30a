"""``softlabels robust``: adversarial robustness distillation with anti-bias soft labels.

One robust teacher (TRADES by default) is trained once; then, for every (method, seed) cell, a
student is distilled with ARD, Fair-ARD, RSLAD or ABSLD. Each student keeps a checkpoint every
``select_every`` epochs; the one with the best average + worst-class PGD accuracy on a
validation split (carved from the training images) is scored on the test split under clean,
FGSM, PGD, CW and (with torchattacks installed) AutoAttack inputs: overall accuracy,
worst-class accuracy and NSD (sample std / mean of the class-wise accuracies).

Datasets with only one usable split (the MNIST test set of the reproduction) can be split
into training and test parts with ``source_split`` and ``test_fraction``; ``per_class``,
``val_per_class`` and ``test_per_class`` draw class-balanced parts instead of fractions.

A method of ``methods`` may carry settings of its own, ``NAME:FIELD=VALUE[,FIELD=VALUE]``
(``absld:tau_rate=0.03``, ``absld:official_product=true``): its cells run with those config
fields replaced, beside the plain ``absld`` cells in the same folder, and the method text is
the cell's key, so an ablation is one more entry of the sweep. Rows hold the test scores of
the validation-selected checkpoint (``scores``) and of the last epoch (``last_scores``, all
attacks but AutoAttack), and ABSLD's per-epoch class risks and temperatures.

The presets (``--quick``, ``reproduce --full``, ``--recipe balanced|paper``) live in
:mod:`~softlabels.studies.robust_presets`; the data parts, the teacher and its logit cache,
which every cell shares, in :mod:`~softlabels.studies.robust_setup`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .._checks import check_temperature
from .._io import torch_save
from ..attacks import robust_evaluate, standard_attacks
from ..configuration import build_config, field_help
from ..data import ImageDataset, augmentation, list_augmentations
from ..data.split import sample_per_class
from ..engine import TrainConfig, fit, load_epoch_checkpoint
from ..models import MODEL_SPEC_HELP
from ..robust import (
    ABSLD,
    CLASS_REDUCTIONS,
    KL_REDUCTIONS,
    RATE_DECAYS,
    AttackConfig,
    CropFlipVariants,
    FairARD,
)
from ..robust.methods import (
    METHOD_SETTINGS,
    METHODS,
    build_distiller,
    canonical_entry,
    entry_label,
    parse_entry,
)
from ..robust.splits import StudyParts
from .common import StudyConfig, build_model, like
from .robust_presets import FULL, QUICK, RECIPES
from .robust_report import headline, summary, write_report
from .robust_setup import (
    TEACHER_SEED,
    check_data,
    load_parts,
    study_augment,
    teacher_cache,
    train_teacher,
)
from .sweep import Cell, Stage, Study

__all__ = ["METHODS", "QUICK", "STUDY", "TEACHER_METHODS", "RobustStudyConfig",
           "parse_method"]

TEACHER_METHODS = ("trades", "pgd_at", "natural")


@dataclass(frozen=True)
class RobustStudyConfig(StudyConfig):
    """Settings of ``softlabels robust``; each field is the CLI flag of the same name."""

    MODELS: ClassVar[dict[str, str]] = {**StudyConfig.MODELS, "teacher_model": "teacher_args"}

    source_split: str | None = field(default=None, metadata=field_help(
        "split both parts come from (e.g. test for the MNIST test set); default: the "
        "dataset's own train and test splits"))
    test_fraction: float = field(default=0.2, metadata=field_help(
        "share of --source-split held out as the test part", low=0.0, high=1.0,
        low_open=True, high_open=True))
    val_fraction: float = field(default=0.1, metadata=field_help(
        "share of the training part held out to choose each student's checkpoint", low=0.0,
        high=1.0, low_open=True, high_open=True))
    per_class: int | None = field(default=None, metadata=field_help(
        "use a class-balanced subset of the training part: this many images per class "
        "(validation included); default: all", low=1))
    val_per_class: int | None = field(default=None, metadata=field_help(
        "hold out this many images per class of the training part to choose each student's "
        "checkpoint (replaces --val-fraction)", low=1))
    test_per_class: int | None = field(default=None, metadata=field_help(
        "score on a class-balanced part of the test split, this many images per class; "
        "default: all", low=1))
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
    methods: tuple[str, ...] = field(default=("rslad", "absld", "ard"), metadata=field_help(
        "distillation methods, each " + ", ".join(METHODS) + ", optionally with settings "
        "of its own as NAME:FIELD=VALUE[,FIELD=VALUE] (absld:tau_rate=0.03) that run beside "
        "the others in the same folder", nonempty=True, unique=True))
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
    tau_rate: float = field(default=0.1, metadata=field_help(
        "ABSLD temperature step eta (the paper: 0.1)", low=0.0, low_open=True))
    official_product: bool = field(default=False, metadata=field_help(
        "ABSLD as the official code: both labels divided by tau_adv * tau_nat (a defect of "
        "that code; default: the paper's separate temperatures)"))
    shared_temperatures: bool = field(default=False, metadata=field_help(
        "ABSLD with one temperature vector, updated from the adversarial risk, for both "
        "terms (an ablation; the paper has two)"))
    class_reduction: str = field(default="sum", metadata=field_help(
        "how a class's examples combine over an epoch into ABSLD's class risk and Fair-ARD's "
        "survived steps: sum (the official code of both) or mean", choices=CLASS_REDUCTIONS))
    rate_decay: str = field(default="after", metadata=field_help(
        "when ABSLD's rate is multiplied by 0.1 at a learning-rate decay: after that epoch's "
        "temperature update, or before it (the official code)", choices=RATE_DECAYS))
    kl_reduction: str = field(default="batchmean", metadata=field_help(
        "KL of every distiller: batchmean (summed over classes, averaged over the batch) or "
        "mean (averaged over batch x classes = batchmean / K, the official code of ARD, "
        "Fair-ARD, RSLAD and ABSLD; pair it with a 10x larger lr for the same step)",
        choices=KL_REDUCTIONS))
    fair_beta: float = field(default=2.0, metadata=field_help(
        "Fair-ARD exponent beta of the class weights (1 / kappa_k) ** beta", low=0.0))
    teacher_cache: bool = field(default=False, metadata=field_help(
        "compute the teacher's logits of every crop/flip variant of every training image "
        "once, instead of on every batch of every student (the same targets; pays when "
        "students x epochs exceed the variants, 162 for CIFAR's flip_crop)"))
    ard_temperature: float = field(default=30.0, metadata=field_help(
        "ARD temperature", low=0.0, low_open=True))
    ard_alpha: float = field(default=1.0, metadata=field_help(
        "ARD distillation weight", low=0.0, high=1.0))
    trades_beta: float = field(default=6.0, metadata=field_help("TRADES beta", low=0.0))
    lr_decays: tuple[float, ...] = field(default=(0.75, 0.9), metadata=field_help(
        "shares of training after which the learning rate (teacher and students) and ABSLD's "
        "rate are multiplied by 0.1, rounded to epochs (the official 215, 260, 285 of 300: "
        "0.72 0.87 0.95)", low=0.0, high=1.0, low_open=True, high_open=True, nonempty=True,
        unique=True))
    out: str = like("out", "runs/robust")

    def __post_init__(self) -> None:
        # One spelling per method entry, so that the cell keys of a folder stay the same
        # however a setting was typed (absld:tau_rate=.03 and absld:tau_rate=0.03).
        object.__setattr__(self, "methods", tuple(canonical_entry(m, METHOD_SETTINGS)
                                                  for m in self.methods))
        super().__post_init__()

    def check(self) -> None:
        self.no_streaming("robust distillation scores every checkpoint under attack on held-"
                          "out splits it carves from memory")
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min must be <= tau_max, got tau_min={self.tau_min} > "
                             f"tau_max={self.tau_max}")
        if self.official_product and self.shared_temperatures:
            raise ValueError("official_product multiplies the adversarial and the natural "
                             "temperature vectors, but shared_temperatures keeps only one: "
                             "choose one of them")
        if self.per_class is not None and self.val_per_class is not None \
                and self.val_per_class >= self.per_class:
            raise ValueError(f"val_per_class must be < per_class (some images must remain "
                             f"for training), got {self.val_per_class} >= {self.per_class}")
        # ARD multiplies by T**2, which must stay a normal float32 number.
        check_temperature("ard_temperature", self.ard_temperature, squared=True)
        if self.teacher_cache:
            CropFlipVariants.of(augmentation(self.augment))
        for method in self.methods:
            if parse_method(method)[1]:
                method_config(self, method)  # its own settings must make a valid config
        self.attack()
        self.train_config(0, self.epochs)
        self.train_config(0, self.teacher_epochs)

    def attack(self) -> AttackConfig:
        """The PGD used inside training."""
        return AttackConfig(self.eps, self.alpha, self.train_steps)

    def train_config(self, seed: int, epochs: int) -> TrainConfig:
        """SGD with momentum 0.9 and steps x0.1 after ``lr_decays`` of training (default 3/4
        and 9/10, as RSLAD's 215/260 of 300, rounded to this length); a checkpoint every
        ``select_every`` epochs."""
        milestones = tuple(sorted({m for m in (round(f * epochs) for f in self.lr_decays)
                                   if 0 < m < epochs}))
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, optimizer="sgd",
                           lr=self.lr, momentum=0.9, weight_decay=self.weight_decay,
                           schedule="step", milestones=milestones,
                           checkpoint_every=self.select_every, seed=seed, **self.engine())


def parse_method(entry: str) -> tuple[str, dict[str, Any]]:
    """``"absld:tau_rate=0.03"`` -> ``("absld", {"tau_rate": 0.03})``
    (:func:`~softlabels.robust.methods.parse_entry` with the fields each method reads)."""
    return parse_entry(entry, METHOD_SETTINGS)


def method_config(config: RobustStudyConfig, entry: str) -> RobustStudyConfig:
    """The config a method entry's cells run with: its own settings replace those fields."""
    name, overrides = parse_method(entry)
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return build_config(type(config), fields, {"methods": (name,), **overrides})


def plan(config: RobustStudyConfig, rows: Sequence[dict[str, Any]]) -> list[Stage]:
    """The teacher, then every (method entry, seed) student."""
    students = tuple(Cell({"method": method, "seed": seed},
                          f"{entry_label(method)}-s{seed}")
                     for seed in config.seeds for method in config.methods)
    return [Stage("teacher", (Cell({"phase": "teacher"}, "teacher"),)),
            Stage("students", students)]


def run_cell(config: RobustStudyConfig, cell: Cell, folder: Path, *,
             show_progress: bool | None = None) -> dict[str, Any]:
    """Train (or load) the teacher and score it, or distil and score one student."""
    began = time.perf_counter()
    data = load_parts(config)
    teacher = train_teacher(config, folder, data, show_progress)
    if cell.key.get("phase") == "teacher":
        row: dict[str, Any] = {"teacher_method": config.teacher_method,
                               "scores": _scores(teacher, data.test, config, TEACHER_SEED)}
        cache = teacher_cache(config, folder, data, teacher)  # ready for every student
        if cache is not None:
            row["teacher_cache_variants"] = cache.variants.count
        return {**row, "seconds": time.perf_counter() - began}
    return {**_student(config, folder, data, teacher, cell, show_progress),
            "seconds": time.perf_counter() - began}


def _attacks(config: RobustStudyConfig, seed: int) -> dict[str, Any]:
    """The evaluation attacks, their random starts drawn from ``seed`` alone: a score does not
    depend on which evaluations ran before it in the process."""
    with_autoattack = config.autoattack and importlib.util.find_spec("torchattacks") is not None
    return standard_attacks(config.eps, pgd_steps=config.eval_steps, alpha=config.eval_alpha,
                            seed=seed, include_autoattack=with_autoattack)


def _scores(model: nn.Module, data: ImageDataset, config: RobustStudyConfig, seed: int,
            autoattack: bool = True) -> dict[str, dict[str, Any]]:
    """Scores under every attack; AutoAttack (unless ``autoattack`` is False) on a
    class-balanced subset of the images."""
    attacks = _attacks(config, seed)
    cheap = {name: attack for name, attack in attacks.items() if name != "autoattack"}
    results = robust_evaluate(model, data.images, data.labels, cheap,
                              num_classes=data.num_classes, device=config.device)
    scores = {name: result.as_dict() for name, result in results.items()}
    if "autoattack" in attacks and autoattack:
        per_class = max(1, config.autoattack_images // data.num_classes)
        counts = torch.bincount(data.labels, minlength=data.num_classes)
        subset = data.subset(sample_per_class(data.labels, min(per_class, int(counts.min())),
                                              seed=0))
        result = robust_evaluate(model, subset.images, subset.labels,
                                 {"autoattack": attacks["autoattack"]},
                                 num_classes=data.num_classes, device=config.device)
        scores["autoattack"] = {**result["autoattack"].as_dict(), "images": len(subset)}
    return scores


def _student(config: RobustStudyConfig, folder: Path, data: StudyParts, teacher: nn.Module,
             cell: Cell, show_progress: bool | None) -> dict[str, Any]:
    """Distil; score the last epoch and the checkpoint chosen on validation PGD on the test
    part."""
    entry, seed = cell.key["method"], cell.key["seed"]
    own = method_config(config, entry)
    student = build_model(config.model, config.model_args, data.train, seed)
    cache = teacher_cache(config, folder, data, teacher)
    recipe = config.train_config(seed, config.epochs)
    distiller = build_distiller(parse_method(entry)[0], student, teacher, own.attack(),
                                data.train.num_classes, dataclasses.asdict(own), seed=seed,
                                decay_epochs=recipe.resolved_milestones(),
                                teacher_cache=cache)
    checkpoints = folder / "checkpoints" / cell.name
    labels = data.train.labels
    fit(student, data.train.images, labels if cache is None else cache.targets(labels),
        recipe, objective=distiller.objective, hooks=[distiller],
        augment=study_augment(config, data) if cache is None else cache.augment,
        checkpoint_dir=checkpoints, device=config.device, logger=config.logger,
        show_progress=show_progress)
    final = checkpoints / f"epoch_{config.epochs:04d}.pt"
    if not final.exists():  # the last epoch is a candidate even off the select_every grid
        torch_save(final, student.state_dict())
    selection = _select_checkpoint(config, data, student, checkpoints, seed)
    student.load_state_dict(load_epoch_checkpoint(checkpoints, selection["epoch"]))
    row: dict[str, Any] = {"selected_epoch": selection["epoch"],
                           "selection": selection["scores"],
                           "scores": _scores(student, data.test, config, seed),
                           "last_epoch": config.epochs}
    # The last epoch without AutoAttack, which costs as much as training on a CPU.
    student.load_state_dict(load_epoch_checkpoint(checkpoints, config.epochs))
    row["last_scores"] = ({k: v for k, v in row["scores"].items() if k != "autoattack"}
                          if selection["epoch"] == config.epochs
                          else _scores(student, data.test, config, seed, autoattack=False))
    if isinstance(distiller, ABSLD):
        row["temperatures"] = {"adv": distiller.adv_temperatures.history,
                               "nat": distiller.nat_temperatures.history}
        risks = distiller.risk_history
        row["class_risks"] = {"adv": [r[0] for r in risks], "nat": [r[1] for r in risks]}
    if isinstance(distiller, FairARD):
        row["fair_ard"] = {"kappa": distiller.kappa_history,
                           "weights": distiller.weight_history}
    return row


def _select_checkpoint(config: RobustStudyConfig, data: StudyParts, student: nn.Module,
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


STUDY = Study(name="robust",
              help="adversarial robustness distillation: ARD, RSLAD and anti-bias ABSLD",
              config_cls=RobustStudyConfig, quick=QUICK, plan=plan, run_cell=run_cell,
              report=write_report, summary=summary, headline=headline,
              sweep_fields=("methods", "seeds", "autoattack"), check=check_data, full=FULL,
              recipes=RECIPES)
