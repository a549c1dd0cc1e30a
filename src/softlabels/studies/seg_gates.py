"""Checks of a segmentation run before its comparisons are read: classes never learned, the
sanity gate, and whether the KD teacher is strong enough to teach.

All of them read the rows of ``results.jsonl`` alone (mIoU as a fraction, ``iou_per_class`` a
list of C fractions), so ``softlabels report`` rebuilds them from a copied folder.

- **Classes at IoU 0**: a class with no true-positive pixel on the test split, per seed.
- **Sanity gate**: the CE + hard-label students learn every class (IoU > 0 for all of them in
  every seed) and the sample std of their mIoU^D over seeds is at most :data:`GATE_STD`
  points. Below that, differences of a few points between losses or label modes are noise.
- **Teacher margin**: KD only counts when the teacher of a seed beats the students of that
  seed trained on hard labels by at least :data:`TEACHER_MARGIN` points of mIoU^D.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..data.segmentation import CAMVID_CLASSES, DIGIT_SCENE_CLASSES

__all__ = ["GATE_STD", "TEACHER_MARGIN", "Gate", "Margin", "class_names", "gate_notes",
           "margin_verdicts", "pick_smoothing", "sanity_gate", "student_groups",
           "teacher_margins", "zero_classes"]

Row = dict[str, Any]
#: A group of students: (loss, label mode, the selected eps or None).
Group = tuple[str, str, Any]

#: Largest seed std (points of mIoU^D) of the CE + hard-label students the gate accepts.
GATE_STD = 1.0
#: Points of mIoU^D by which a teacher must beat the hard-label students for KD to count.
TEACHER_MARGIN = 5.0

# Class names of the built-in datasets, so that a report needs no data files.
_CLASS_NAMES: dict[str, tuple[str, ...]] = {"camvid": CAMVID_CLASSES,
                                            "digit_scenes": DIGIT_SCENE_CLASSES}


def class_names(dataset: str, count: int) -> list[str]:
    """Names of the ``count`` classes of ``dataset`` (``class i`` for data of a user's own)."""
    names = _CLASS_NAMES.get(dataset, ())
    return list(names) if len(names) == count else [f"class {i}" for i in range(count)]


def _students(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if "loss" in r and "iou_per_class" in r]


def student_groups(rows: Sequence[Row]) -> dict[Group, list[Row]]:
    """The student rows by (loss, labels, selected eps or None), in the order first met."""
    groups: dict[Group, list[Row]] = {}
    for row in rows:
        if "loss" in row:
            groups.setdefault((row["loss"], row["labels"], row.get("smoothing")),
                              []).append(row)
    return groups


def pick_smoothing(candidates: Sequence[Row]) -> Row:
    """The selection row whose validation mIoU^D is highest (the first one on a tie)."""
    return max(candidates, key=lambda row: row["miou_dataset"])


def zero_classes(dataset: str, rows: Sequence[Row]) -> dict[Group, dict[str, list[int]]]:
    """``{(loss, labels, smoothing or None): {class name: [seeds at IoU 0]}}`` of the students,
    only groups and classes with a zero."""
    found: dict[Group, dict[str, list[int]]] = {}
    for row in _students(rows):
        names = class_names(dataset, len(row["iou_per_class"]))
        for name, iou in zip(names, row["iou_per_class"], strict=True):
            if iou <= 0.0:
                group = found.setdefault((row["loss"], row["labels"], row.get("smoothing")), {})
                group.setdefault(name, []).append(row["seed"])
    return found


@dataclass(frozen=True)
class Gate:
    """The sanity gate of a run.

    Attributes:
        passed: every condition holds (and there are two seeds or more to judge the std);
            False without CE + hard-label students (``seeds`` 0: not checked).
        seeds: CE + hard-label students found.
        mean, std: mIoU^D over those seeds in points (std: sample std, ``None`` below 2 seeds).
        zeros: ``{seed: class names at IoU 0}`` for the seeds that miss a class.
        reason: why it failed, or ``""``.
    """

    passed: bool
    seeds: int
    mean: float | None
    std: float | None
    zeros: dict[int, list[str]]
    reason: str

    def line(self) -> str:
        """One line: PASS or FAIL with the numbers."""
        if not self.seeds:
            return "not checked: no CE + hard-label students in this run"
        verdict = "PASS" if self.passed else "FAIL"
        std = "n/a" if self.std is None else f"{self.std:.2f}"
        zeros = "; ".join(f"seed {s}: {', '.join(n)}" for s, n in sorted(self.zeros.items()))
        text = (f"{verdict}: CE + hard labels, {self.seeds} seed(s), mIoU^D {self.mean:.2f} "
                f"(std {std}, limit {GATE_STD:g}); classes at IoU 0: {zeros or 'none'}")
        return text + (f" ({self.reason})" if self.reason else "")


def sanity_gate(dataset: str, rows: Sequence[Row]) -> Gate:
    """The gate on the CE + hard-label students of ``rows`` (see the module docstring)."""
    members = [r for r in _students(rows) if r["loss"] == "ce" and r["labels"] == "hard"]
    if not members:
        return Gate(False, 0, None, None, {}, "no CE + hard-label students")
    values = [100.0 * r["miou_dataset"] for r in members]
    std = statistics.stdev(values) if len(values) > 1 else None
    zeros = {r["seed"]: [n for n, iou in zip(class_names(dataset, len(r["iou_per_class"])),
                                              r["iou_per_class"], strict=True) if iou <= 0.0]
             for r in members}
    zeros = {seed: names for seed, names in zeros.items() if names}
    reasons = []
    if zeros:
        reasons.append("a class is never predicted right")
    if std is None:
        reasons.append("one seed: the std needs two or more")
    elif std > GATE_STD:
        reasons.append(f"seed std {std:.2f} > {GATE_STD:g}")
    return Gate(not reasons, len(members), statistics.mean(values), std, zeros,
                "; ".join(reasons))


@dataclass(frozen=True)
class Margin:
    """A teacher against one hard-label student of its seed, mIoU^D in points."""

    seed: int
    teacher: float
    loss: str
    student: float

    @property
    def margin(self) -> float:
        return self.teacher - self.student

    @property
    def holds(self) -> bool:
        return self.margin >= TEACHER_MARGIN


def teacher_margins(rows: Sequence[Row]) -> list[Margin]:
    """Each KD teacher (label mode ``teacher``) against each hard-label student of its seed."""
    hard = [r for r in _students(rows) if r["labels"] == "hard"]
    margins = []
    for row in rows:
        if row.get("phase") == "teacher" and row.get("labels") == "teacher":
            margins += [Margin(row["seed"], 100.0 * row["miou_dataset"], s["loss"],
                               100.0 * s["miou_dataset"])
                        for s in hard if s["seed"] == row["seed"]]
    return margins


def margin_verdicts(margins: Sequence[Margin]) -> dict[int, bool]:
    """``{seed: the margin holds against every hard-label student of the seed}``."""
    verdicts: dict[int, bool] = {}
    for m in margins:
        verdicts[m.seed] = verdicts.get(m.seed, True) and m.holds
    return verdicts


def gate_notes(dataset: str, rows: Sequence[Row]) -> list[str]:
    """Terminal lines: classes at IoU 0, the sanity gate, and the teachers' margins."""
    notes = []
    for (loss, labels, eps), classes in zero_classes(dataset, rows).items():
        mode = labels if eps is None else f"{labels} (eps {eps:g})"
        listing = ", ".join(f"{name} (seed {', '.join(map(str, seeds))})"
                            for name, seeds in classes.items())
        notes.append(f"IoU 0 on test: {loss} {mode}: {listing}")
    gate = sanity_gate(dataset, rows)
    if gate.seeds:  # a sweep of soft labels alone (its hard students in an earlier part)
        notes.append("sanity gate: " + gate.line())
    verdicts = margin_verdicts(teacher_margins(rows))
    if verdicts:
        notes.append(f"teacher beats the hard-label students by >= {TEACHER_MARGIN:g} points "
                     "(KD counts): " + ", ".join(f"seed {s} {'yes' if ok else 'no'}"
                                                 for s, ok in sorted(verdicts.items())))
    return notes
