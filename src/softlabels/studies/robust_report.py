"""The report of ``softlabels robust``: robustness and fairness per method, and figures.

Per attack and method: average accuracy, worst-class accuracy and NSD (sample std / mean of the
class-wise accuracies), each as mean ± sample std over seeds; the teacher's own scores for
reference. Figures: class-wise PGD accuracy per method, and the ABSLD temperature
trajectories of the first seed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .._io import write_text
from .markdown import config_block, definitions, rule

__all__ = ["attack_order", "method_summary", "write_report"]

Row = dict[str, Any]
_MEASURES = (("accuracy", "Avg"), ("worst_class_accuracy", "Worst"), ("nsd", "NSD"))


def attack_order(names: Sequence[str]) -> list[str]:
    """Attacks from weakest to strongest: clean, FGSM, PGD, CW, AutoAttack (JSON files do not
    keep the order the attacks ran in)."""
    rank = {"clean": 0, "fgsm": 1, "cw": 3, "autoattack": 4}
    return sorted(names, key=lambda name: (rank.get(name, 2), name))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def method_summary(rows: Sequence[Row]) -> dict[str, dict[str, dict[str, tuple[float, float]]]]:
    """``{method: {attack: {measure: (mean, std)}}}`` over the seeds of each method (the
    student rows; the teacher's row has no method)."""
    by_method: dict[str, list[Row]] = {}
    for row in rows:
        if "method" in row:
            by_method.setdefault(row["method"], []).append(row)
    summary: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
    for method, members in by_method.items():
        attacks = members[0]["scores"]
        summary[method] = {
            attack: {key: _mean_std([m["scores"][attack][key] for m in members])
                     for key, _ in _MEASURES}
            for attack in attacks}
    return summary


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
    for method, per_attack in method_summary(rows).items():
        cells = []
        for attack in attacks:
            for key, _ in _MEASURES:
                mean, std = per_attack[attack][key]
                cells.append(f"{mean:.3f} ± {std:.3f}" if key == "nsd"
                             else f"{100 * mean:.1f} ± {100 * std:.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Selected student epochs (validation PGD average + worst): "
              + ", ".join(f"{r['method']} s{r['seed']}: {r['selected_epoch']}" for r in rows), ""]
    lines += [f"![{_FIGURE_TITLES[name]}]({name})" for name in made]
    lines += ["", "Measures:", "", *definitions("Worst", "NSD"), ""]
    lines += config_block(config)
    write_text(folder / "report.md", "\n".join(lines))


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
