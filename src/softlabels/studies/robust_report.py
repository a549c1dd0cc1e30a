"""The report of ``softlabels robust``: robustness and fairness per method, and figures.

Per attack and method: average accuracy, worst-class accuracy and NSD (sample std / mean of the
class-wise accuracies), each as mean ± sample std over seeds; the teacher's own scores for
reference; the same for the last epoch when the rows hold it, and each method's PGD scores
minus the reference method's (RSLAD) seed by seed. Figures: class-wise PGD accuracy per
method, and the ABSLD temperature trajectories of the first seed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .._io import write_text
from ..results import Table
from .markdown import config_block, definitions, rule

__all__ = ["attack_order", "headline", "method_summary", "paired_differences", "summary",
           "write_report"]

Row = dict[str, Any]
_MEASURES = (("accuracy", "Avg"), ("worst_class_accuracy", "Worst"), ("nsd", "NSD"))


def attack_order(names: Sequence[str]) -> list[str]:
    """Attacks from weakest to strongest: clean, FGSM, PGD, CW, AutoAttack (JSON files do not
    keep the order the attacks ran in)."""
    rank = {"clean": 0, "fgsm": 1, "cw": 3, "autoattack": 4}
    return sorted(names, key=lambda name: (rank.get(name, 2), name))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _by_method(rows: Sequence[Row], scores: str = "scores") -> dict[str, list[Row]]:
    by_method: dict[str, list[Row]] = {}
    for row in rows:
        if "method" in row and scores in row:
            by_method.setdefault(row["method"], []).append(row)
    return by_method


def method_summary(rows: Sequence[Row], scores: str = "scores"
                   ) -> dict[str, dict[str, dict[str, tuple[float, float]]]]:
    """``{method: {attack: {measure: (mean, std)}}}`` over the seeds of each method (the
    student rows; the teacher's row has no method). ``scores``: ``"scores"`` (the
    validation-selected checkpoint) or ``"last_scores"`` (the last epoch)."""
    summary: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
    for method, members in _by_method(rows, scores).items():
        attacks = members[0][scores]
        summary[method] = {
            attack: {key: _mean_std([m[scores][attack][key] for m in members])
                     for key, _ in _MEASURES}
            for attack in attacks}
    return summary


def paired_differences(rows: Sequence[Row], reference: str = "rslad", scores: str = "scores"
                       ) -> dict[str, dict[int, dict[str, float]]]:
    """``{method: {seed: {measure: method - reference}}}`` under PGD, for the seeds both
    have: a method and the reference share a seed's student initialisation and data order."""
    by_method = _by_method(rows, scores)
    base = {r["seed"]: r[scores] for r in by_method.get(reference, [])}
    found: dict[str, dict[int, dict[str, float]]] = {}
    for method, members in by_method.items():
        if method == reference:
            continue
        for row in members:
            pgd = next((a for a in row[scores] if a.startswith("pgd")), None)
            if row["seed"] in base and pgd in base[row["seed"]]:
                found.setdefault(method, {})[row["seed"]] = {
                    key: row[scores][pgd][key] - base[row["seed"]][pgd][key]
                    for key, _ in _MEASURES}
    return found


def summary(config: Any, rows: Sequence[Row]) -> list[Table]:
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


def headline(rows: Sequence[Row]) -> list[str]:
    """PGD accuracy, worst class and NSD of each method."""
    lines = []
    for method, per_attack in method_summary(rows).items():
        name = next(a for a in per_attack if a.startswith("pgd"))
        score = per_attack[name]
        lines.append(f"{method}: {name} {100 * score['accuracy'][0]:.1f}%, worst class "
                     f"{100 * score['worst_class_accuracy'][0]:.1f}%, NSD "
                     f"{score['nsd'][0]:.3f}")
    return lines


def write_report(config: Any, folder: Path, rows: Sequence[Row], figures: bool) -> None:
    """Write ``report.md`` (and, with ``figures``, the PNG figures) into ``folder`` from the
    rows: the teacher's (``phase = "teacher"``, when present) and the students'."""
    teachers = [r for r in rows if r.get("phase") == "teacher"]
    rows = [r for r in rows if "method" in r]
    made = _figures(folder, rows) if figures else []
    if not teachers and not rows:
        write_text(folder / "report.md", f"# Robust distillation on {config.dataset}\n\n"
                                         "No cell has finished yet.\n")
        return
    scored = teachers[0] if teachers else rows[0]
    attacks = attack_order(list(scored["scores"]))
    lines = [f"# Robust distillation on {config.dataset} (eps = {config.eps:g})", "",
             "Accuracy in %, mean ± sample std over seeds "
             f"{sorted({r['seed'] for r in rows})}; Worst (worst-class accuracy) and NSD "
             "(lower is fairer) are defined below."
             + (f" AutoAttack runs on {scored['scores']['autoattack']['images']} "
                "class-balanced test images, the other attacks on the whole test split."
                if "autoattack" in scored["scores"] else ""), ""]
    header = "| method | " + " | ".join(f"{a} {t}" for a in attacks for _, t in _MEASURES) + " |"
    lines += [header, rule("l" + "r" * (len(attacks) * len(_MEASURES)))]
    for teacher in teachers:
        cells = []
        for attack in attacks:
            score = teacher["scores"][attack]
            cells += [f"{100 * score['accuracy']:.1f}",
                      f"{100 * score['worst_class_accuracy']:.1f}", f"{score['nsd']:.3f}"]
        lines.append(f"| teacher ({teacher['teacher_method']}) | " + " | ".join(cells) + " |")
    lines += _method_lines(rows, attacks, "scores")
    last = next((r["last_scores"] for r in rows if "last_scores" in r), None)
    if last is not None:
        kept = [a for a in attacks if a in last]  # AutoAttack scores the selected one only
        lines += ["", "The same at the last epoch of every student (without AutoAttack):", "",
                  "| method | " + " | ".join(f"{a} {t}" for a in kept for _, t in _MEASURES)
                  + " |", rule("l" + "r" * (len(kept) * len(_MEASURES))),
                  *_method_lines(rows, kept, "last_scores")]
    lines += _paired_lines(rows)
    lines += ["", "Selected student epochs (validation PGD average + worst): "
              + ", ".join(f"{r['method']} s{r['seed']}: {r['selected_epoch']}" for r in rows), ""]
    lines += [f"![{_FIGURE_TITLES[name]}]({name})" for name in made]
    lines += ["", "Measures:", "", *definitions("Worst", "NSD"), ""]
    lines += config_block(config)
    write_text(folder / "report.md", "\n".join(lines))


def _method_lines(rows: Sequence[Row], attacks: Sequence[str], scores: str) -> list[str]:
    lines = []
    for method, per_attack in method_summary(rows, scores).items():
        cells = []
        for attack in attacks:
            for key, _ in _MEASURES:
                mean, std = per_attack[attack][key]
                cells.append(f"{mean:.3f} ± {std:.3f}" if key == "nsd"
                             else f"{100 * mean:.1f} ± {100 * std:.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _paired_lines(rows: Sequence[Row]) -> list[str]:
    """Per seed, each method's PGD scores minus RSLAD's (validation-selected checkpoints)."""
    pairs = paired_differences(rows)
    if not pairs:
        return []
    lines = ["", "PGD scores minus RSLAD's, seed by seed (accuracy points / NSD; "
             "validation-selected checkpoints):", "",
             "| method | seed | Avg | Worst | NSD |", rule("lrrrr")]
    for method, seeds in pairs.items():
        for seed, diff in sorted(seeds.items()):
            lines.append(f"| {method} | {seed} | {100 * diff['accuracy']:+.1f} | "
                         f"{100 * diff['worst_class_accuracy']:+.1f} | {diff['nsd']:+.3f} |")
    return lines


_FIGURE_TITLES = {"classwise_robust.png": "Class-wise PGD accuracy of each method",
                  "temperatures.png": "ABSLD class temperatures over training"}


def _figures(folder: Path, rows: Sequence[Row]) -> list[str]:
    made = []
    pgd = next((a for a in (rows[0]["scores"] if rows else {}) if a.startswith("pgd")), None)
    if pgd is not None:
        fig = Figure(figsize=(7, 3.5))
        ax = fig.subplots()
        methods = sorted({r["method"] for r in rows})
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            per_class = np.nanmean([r["scores"][pgd]["classwise_accuracy"] for r in rows
                                    if r["method"] == method], axis=0)
            ax.bar(np.arange(len(per_class)) + i * width, 100 * per_class, width, label=method)
        ax.set_xticks(np.arange(len(per_class)) + 0.4 - width / 2,
                      [str(c) for c in range(len(per_class))])
        ax.set_xlabel("class")
        ax.set_ylabel(f"{pgd} accuracy (%), mean over seeds")
        ax.set_title(_FIGURE_TITLES["classwise_robust.png"], fontsize=10)
        ax.legend(fontsize=7, title="method", title_fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "classwise_robust.png", dpi=100)
        made.append("classwise_robust.png")
    absld = next((r for r in rows if "temperatures" in r), None)
    if absld is not None:
        fig = Figure(figsize=(8, 3.2))
        for ax, kind in zip(fig.subplots(1, 2), ("adv", "nat"), strict=True):
            history = np.array(absld["temperatures"][kind])
            for c in range(history.shape[1]):
                ax.plot(range(history.shape[0]), history[:, c], label=str(c))
            ax.set_title(f"ABSLD {kind} temperatures (seed {absld['seed']})", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("temperature")
        ax.legend(fontsize=6, ncol=2, title="class", title_fontsize=6)
        fig.tight_layout()
        fig.savefig(folder / "temperatures.png", dpi=100)
        made.append("temperatures.png")
    return made
