"""The papers' claims, what the committed full runs measured, and the verdicts.

Each :class:`Claim` names the paper's number, a ``measure`` that reads the same quantity from a
study's rows, and a verdict judged on the committed full runs of ``docs/runs`` (CIFAR-10,
CamVid, MNIST on two CPU cores): ``reproduces``, ``in direction only`` (the sign holds, the
size is not comparable or within the noise) or ``not at this scale``. ``reproduce`` applies
the same ``measure`` to the rows it just made, so a quick run on embedded data shows its
numbers beside them as a smoke test.

The committed numbers ship inside the package (``claims_committed.json``), so an installed
package needs no ``docs/`` folder; ``python -m softlabels.studies.claims docs/runs`` rewrites
the file from the run folders, and a test checks that it matches them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .distill import DistillStudyConfig
from .distill_report import chosen_epoch_row
from .robust import RobustStudyConfig
from .robust_report import attack_order, method_summary
from .run_folder import read_rows
from .seg import SegStudyConfig
from .seg_report import summary_rows

__all__ = ["CLAIMS", "VERDICTS", "Claim", "committed", "committed_values", "show"]

Row = dict[str, Any]
#: ``{group: {label: value}}``, e.g. ``{"IPC 1": {"teacher": 19.2, "hard": 14.4}}``.
Values = dict[str, dict[str, float]]
VERDICTS = ("reproduces", "in direction only", "not at this scale")
COMMITTED_FILE = "claims_committed.json"

#: Study -> (its folder under docs/runs, its config class).
RUNS: dict[str, tuple[str, type]] = {"distill": ("distill-cifar10", DistillStudyConfig),
                                     "seg": ("camvid", SegStudyConfig),
                                     "robust": ("robust-mnist", RobustStudyConfig)}


@dataclass(frozen=True)
class Claim:
    """One claim of a paper and how the runs test it.

    Attributes:
        key: a stable identifier (the key in ``claims_committed.json``).
        study: the study whose rows test it.
        text: the claim, in one sentence.
        paper: the paper's number(s), or what the paper states.
        measure: ``measure(rows) -> Values`` in % (NSD as a ratio); empty when the rows do
            not hold the cells it needs.
        verdict: one of :data:`VERDICTS`, on the committed full run.
        digits: decimals shown (NSD always 3).
    """

    key: str
    study: str
    text: str
    paper: str
    measure: Callable[[Sequence[Row]], Values]
    verdict: str
    digits: int = 1


def _distill_tests(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.get("phase") == "test"]


def _best(rows: Sequence[Row], images: str, labels: str, ipc: int,
          k: int | None = None) -> float | None:
    found = next((r for r in _distill_tests(rows) if r["images"] == images
                  and r["labels"] == labels and r["ipc"] == ipc
                  and (k is None or r.get("k") == k)), None)
    return None if found is None else 100 * found["best_mean"]


def _per_ipc(rows: Sequence[Row], curves: dict[str, tuple[str, str, int | None]]) -> Values:
    """Best accuracy of each named (images, labels, k) at every IPC where all exist."""
    values: Values = {}
    for ipc in sorted({r["ipc"] for r in _distill_tests(rows)}):
        found = {name: _best(rows, images, labels, ipc, k)
                 for name, (images, labels, k) in curves.items()}
        if all(v is not None for v in found.values()):
            values[f"IPC {ipc}"] = found  # type: ignore[assignment]
    return values


def _chosen_epochs(rows: Sequence[Row]) -> Values:
    selects = [r for r in rows if r.get("phase") == "select" and r["labels"] != "hard"]
    return {f"IPC {ipc}": {"epoch": float(chosen_epoch_row(
        [r for r in selects if r["ipc"] == ipc])["expert_epoch"])}
        for ipc in sorted({r["ipc"] for r in selects})}


def _swaps(rows: Sequence[Row]) -> Values:
    values: Values = {}
    for ipc in sorted({r["ipc"] for r in _distill_tests(rows)}):
        found = {f"k{k}": _best(rows, "random", "swap", ipc, k) for k in (1, 2, 3, 5)}
        found = {name: v for name, v in found.items() if v is not None}
        teacher = _best(rows, "random", "teacher", ipc)
        if len(found) >= 2 and teacher is not None:
            values[f"IPC {ipc}"] = {"teacher": teacher, **found}  # type: ignore[dict-item]
    return values


def _seg_pairs(pairs: dict[str, tuple[str, str]]) -> Callable[[Sequence[Row]], Values]:
    """mIoU^D of named (loss, labels) cells, grouped by label mode."""
    def measure(rows: Sequence[Row]) -> Values:
        scores = {(e["loss"], e["labels"]): e["miou_dataset"][0] for e in summary_rows(rows)}
        found = {name: scores.get(cell) for name, cell in pairs.items()}
        return {"mIoU^D": found} if all(v is not None for v in found.values()) else {}
    return measure  # type: ignore[return-value]


def _robust(methods: Sequence[str], measures: dict[str, str]
            ) -> Callable[[Sequence[Row]], Values]:
    """PGD scores of ``methods`` (mean over seeds; accuracies in %), one group per measure."""
    def measure(rows: Sequence[Row]) -> Values:
        summary = method_summary(rows)
        if not all(m in summary for m in methods):
            return {}
        pgd = next(a for a in attack_order(list(summary[methods[0]])) if a.startswith("pgd"))
        return {f"{title} ({pgd})": {m: (1.0 if key == "nsd" else 100.0)
                                      * summary[m][pgd][key][0] for m in methods}
                for key, title in measures.items()}
    return measure


def _teacher_autoattack(rows: Sequence[Row]) -> Values:
    teacher = next((r for r in rows if r.get("phase") == "teacher"), None)
    if teacher is None or "autoattack" not in teacher["scores"]:
        return {}
    score = teacher["scores"]["autoattack"]
    return {f"AutoAttack, {score.get('images', '?')} images": {
        "accuracy": 100 * score["accuracy"]}}


CLAIMS: tuple[Claim, ...] = (
    Claim("distill-soft-beats-hard", "distill",
          "Teacher soft labels beat hard labels on random real images",
          "CIFAR-10: IPC 1: 21.1 vs 15.4; IPC 10: 46.3 vs 31.0; IPC 50: 62.1 vs 50.6",
          lambda rows: _per_ipc(rows, {"teacher": ("random", "teacher", None),
                                       "hard": ("random", "hard", None)}), "reproduces"),
    Claim("distill-epoch-grows", "distill",
          "The best expert epoch grows with IPC",
          "CIFAR-10: epoch 20 / 44 / 128 at IPC 1 / 10 / 50", _chosen_epochs, "reproduces",
          digits=0),
    Claim("distill-random-rivals-dm", "distill",
          "Random real images with teacher labels rival synthetic images (DM, hard labels)",
          "CIFAR-10: IPC 1: 21.1 vs DM 26.0; IPC 10: 46.3 vs 48.9; IPC 50: 62.1 vs 63.0",
          lambda rows: _per_ipc(rows, {"random + teacher": ("random", "teacher", None),
                                       "DM + hard": ("dm", "hard", None)}), "reproduces"),
    Claim("distill-entropy-not-enough", "distill",
          "Entropy alone does not explain the gain: smoothing to the teacher's entropy is no "
          "better than hard labels",
          "stated in the paper (no number)",
          lambda rows: _per_ipc(rows, {"smooth": ("random", "smooth", None),
                                       "hard": ("random", "hard", None),
                                       "teacher": ("random", "teacher", None)}),
          "reproduces"),
    Claim("distill-top-rank-matters", "distill",
          "The top of the teacher's ranking matters most: swapping rank k with the least "
          "likely class hurts most at k = 1",
          "stated in the paper (no number)", _swaps, "reproduces"),
    Claim("seg-jml-beats-ce", "seg",
          "CE + JML beats CE with hard labels",
          "gains in every setting of the paper (no CamVid experiment)",
          _seg_pairs({"CE + JML": ("ce+jml", "hard"), "CE": ("ce", "hard")}),
          "in direction only"),
    Claim("seg-soft-labels-help-jml", "seg",
          "Soft labels help a JML-trained model: knowledge distillation beats hard labels",
          "Cityscapes, DeepLabV3-R18: JML-KD 78.14 vs SKD 75.42 mIoU",
          _seg_pairs({"teacher labels": ("ce+jml", "teacher"), "hard": ("ce+jml", "hard")}),
          "not at this scale"),
    Claim("seg-jml-beats-sjl-soft", "seg",
          "Under soft labels JML beats the soft Jaccard loss (SJL is not minimised at x = y)",
          "follows from the paper's analysis (no matching number)",
          _seg_pairs({"JML": ("ce+jml", "smooth"), "SJL": ("ce+sjl", "smooth")}),
          "in direction only"),
    Claim("robust-absld-fairer", "robust",
          "ABSLD raises the worst-class robustness over RSLAD and lowers NSD",
          "CIFAR-10 (ResNet-18 / MobileNetV2 students): higher worst-class accuracy, lower NSD",
          _robust(("absld", "rslad"), {"worst_class_accuracy": "Worst", "nsd": "NSD"}),
          "not at this scale"),
    Claim("robust-rslad-fairer-than-ard", "robust",
          "Soft labels of clean inputs (RSLAD) spread robustness more evenly than ARD",
          "the premise of RSLAD and ABSLD (no single number)",
          _robust(("rslad", "ard"), {"worst_class_accuracy": "Worst", "nsd": "NSD"}),
          "reproduces"),
    Claim("robust-trades-teacher", "robust",
          "A TRADES teacher is robust on MNIST (eps 0.3)",
          "TRADES: 92-94% under AutoAttack", _teacher_autoattack, "not at this scale"),
)


def show(claim: Claim, values: Values | None) -> str:
    """``"IPC 1: teacher 19.2 vs hard 14.4; ..."``, or ``n/a`` without values."""
    if not values:
        return "n/a"
    parts = []
    for group, items in values.items():
        digits = 3 if group.startswith("NSD") else claim.digits
        parts.append(f"{group}: " + " vs ".join(f"{label} {value:.{digits}f}"
                                                for label, value in items.items()))
    return "; ".join(parts)


def committed_values(runs: str | Path) -> dict[str, Values]:
    """Every claim's values measured on the committed run folders under ``runs``."""
    rows = {}
    for study, (name, config_cls) in RUNS.items():
        folder = Path(runs) / name
        rows[study] = read_rows(config_cls, folder)
        teacher = folder / "teacher_scores.json"  # the robust teacher, kept beside the rows
        if teacher.is_file():
            rows[study].append({"phase": "teacher",
                                **json.loads(teacher.read_text(encoding="utf-8"))})
    return {c.key: c.measure(rows[c.study]) for c in CLAIMS}


def committed() -> dict[str, Values]:
    """The values of ``claims_committed.json`` shipped with the package."""
    text = resources.files(__package__).joinpath(COMMITTED_FILE).read_text(encoding="utf-8")
    return json.loads(text)


if __name__ == "__main__":  # python -m softlabels.studies.claims docs/runs
    if len(sys.argv) != 2:
        sys.exit("usage: python -m softlabels.studies.claims RUNS_FOLDER")
    target = Path(__file__).with_name(COMMITTED_FILE)
    rounded = {key: {group: {label: round(v, 6) for label, v in items.items()}
                     for group, items in values.items()}
               for key, values in committed_values(sys.argv[1]).items()}
    target.write_text(json.dumps(rounded, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {target}")
