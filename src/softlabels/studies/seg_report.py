"""The report of ``softlabels seg``: scores by loss and label mode, the sanity gate, IoU per
class, the eps selection, the teachers' scores and margins, a figure.

Everything in ``report.md`` is computed from the rows of ``results.jsonl``; the figure needs
the first seed's student checkpoints (``softlabels seg`` passes their predictions in).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from .._io import write_text
from ..data import SegmentationDataset
from .markdown import config_block, definitions, rule
from .seg_gates import (
    GATE_STD,
    TEACHER_MARGIN,
    class_names,
    margin_verdicts,
    pick_smoothing,
    sanity_gate,
    student_groups,
    teacher_margins,
    zero_classes,
)

__all__ = ["REPORT_COLUMNS", "draw_predictions", "labels_title", "summary_rows",
           "write_report"]

Row = dict[str, Any]

#: (row key, column title) of the report's score columns.
REPORT_COLUMNS = (("miou_dataset", "mIoU^D"), ("miou_image", "mIoU^I"),
                  ("miou_class", "mIoU^C"), ("miou_image_worst", "worst-5% mIoU^I"),
                  ("ece_dataset", "ECE^D"), ("ece_image", "ECE^I"))


def _scale(key: str) -> float:
    """Rows hold mIoU as a fraction and ECE in %; reports show both in %."""
    return 1.0 if key.startswith("ece") else 100.0


def labels_title(entry: Row) -> str:
    """The label mode of a row, summary entry or cell key, with the eps the plan selected."""
    eps = entry.get("smoothing")
    return entry["labels"] if eps is None else f"{entry['labels']} (eps {eps:g})"


def summary_rows(rows: Sequence[Row]) -> list[Row]:
    """Mean and sample std over seeds per (loss, labels, selected eps) of the student rows;
    mIoU and ECE in %. ``smoothing`` is the selected eps, or ``None`` (``--smoothing``)."""
    summary = []
    for (loss, labels, eps), members in student_groups(rows).items():
        entry: Row = {"loss": loss, "labels": labels, "smoothing": eps, "seeds": len(members)}
        for key, _ in REPORT_COLUMNS:
            entry[key] = _mean_std([_scale(key) * m[key] for m in members])
        entry["seconds"] = statistics.mean(m["seconds"] for m in members)
        summary.append(entry)
    return summary


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_report(config: Any, folder: Path, rows: Sequence[Row]) -> None:
    """Write ``report.md``: the students' scores by loss and labels, the sanity gate, the
    per-class IoU, the eps selection, the teachers' scores and margins, the figure when it
    exists, the measures' definitions and the config."""
    lines = [f"# Segmentation study on {config.dataset}", "",
             "Mean ± sample std over seeds; mIoU in %, ECE in % (10 bins).", "",
             "| loss | labels | seeds | " + " | ".join(t for _, t in REPORT_COLUMNS)
             + " | s / cell |", rule("ll" + "r" * (len(REPORT_COLUMNS) + 2))]
    for entry in summary_rows(rows):
        cells = [f"{entry[k][0]:.2f} ± {entry[k][1]:.2f}" for k, _ in REPORT_COLUMNS]
        lines.append(f"| {entry['loss']} | {labels_title(entry)} | {entry['seeds']} | "
                     + " | ".join(cells) + f" | {entry['seconds']:.0f} |")
    if any("loss" in r for r in rows):
        lines += ["", f"**Sanity gate** (CE + hard labels learn every class, IoU > 0, and the "
                      f"seed std of mIoU^D is at most {GATE_STD:g} point): "
                      + sanity_gate(config.dataset, rows).line()]
    lines += _per_class(config.dataset, rows)
    lines += _selection(rows)
    lines += _teachers(rows)
    if (folder / "predictions.png").exists():
        lines += ["", "![Test images, ground truth and each model's prediction (first seed)]"
                      "(predictions.png)"]
    lines += ["", "Measures:", "", *definitions("mIoU^D", "mIoU^I", "mIoU^C",
                                                "worst-5% mIoU^I", "ECE"), ""]
    lines += config_block(config)
    write_text(folder / "report.md", "\n".join(lines))


def _per_class(dataset: str, rows: Sequence[Row]) -> list[str]:
    """Test IoU per class (mean over seeds, %), with the seeds where a class is at 0."""
    students = [r for r in rows if "loss" in r and "iou_per_class" in r]
    if not students:
        return []
    names = class_names(dataset, len(students[0]["iou_per_class"]))
    zeros = zero_classes(dataset, rows)
    lines = ["", "Test IoU per class, mean over seeds (%); **0 in k/n** marks a class at IoU 0 "
                 "(no pixel of it predicted right) in k of n seeds:", "",
             "| loss | labels | " + " | ".join(names) + " |", rule("ll" + "r" * len(names))]
    for (loss, labels, eps), members in student_groups(students).items():
        at_zero = zeros.get((loss, labels, eps), {})
        cells = []
        for number, name in enumerate(names):
            mean = statistics.mean(100.0 * m["iou_per_class"][number] for m in members)
            count = len(at_zero.get(name, []))
            cells.append(f"{mean:.1f}" + (f" **0 in {count}/{len(members)}**" if count else ""))
        title = labels_title({"labels": labels, "smoothing": eps})
        lines.append(f"| {loss} | {title} | " + " | ".join(cells) + " |")
    return lines


def _selection(rows: Sequence[Row]) -> list[str]:
    """The eps candidates' validation scores, the chosen one marked."""
    chosen = [r for r in rows if r.get("phase") == "select"]
    if not chosen:
        return []
    best = pick_smoothing(chosen)
    lines = ["", "Boundary-smoothing eps chosen on the validation images (CE + JML, smooth "
                 "labels, one seed; the highest mIoU^D wins):", "",
             "| eps | seed | val mIoU^D | val mIoU^I | val ECE^D | chosen |", rule("rrrrrl")]
    for row in chosen:
        lines.append(f"| {row['smoothing']:g} | {row['seed']} | {100 * row['miou_dataset']:.2f} "
                     f"| {100 * row['miou_image']:.2f} | {row['ece_dataset']:.2f} | "
                     f"{'yes' if row is best else ''} |")
    return lines


def _teachers(rows: Sequence[Row]) -> list[str]:
    """The teachers' test scores, then each KD teacher's margin over the hard-label
    students of its seed."""
    teachers = [r for r in rows if r.get("phase") == "teacher"]
    if not teachers:
        return []
    lines = ["", "Teachers (CE + JML on boundary-smoothed labels), test scores in %:", "",
             "| labels | seed | " + " | ".join(t for _, t in REPORT_COLUMNS) + " |",
             rule("lr" + "r" * len(REPORT_COLUMNS))]
    for row in teachers:
        lines.append(f"| {labels_title(row)} | {row['seed']} | " + " | ".join(
            f"{_scale(k) * row[k]:.2f}" for k, _ in REPORT_COLUMNS) + " |")
    margins = teacher_margins(rows)
    if not margins:
        return lines
    lines += ["", f"KD only counts where the teacher beats the students of its seed trained on "
                  f"hard labels by at least {TEACHER_MARGIN:g} points of mIoU^D:", "",
              "| seed | teacher mIoU^D | hard-label student | student mIoU^D | margin | holds |",
              rule("rrlrrl")]
    for m in margins:
        lines.append(f"| {m.seed} | {m.teacher:.2f} | {m.loss} | {m.student:.2f} | "
                     f"{m.margin:+.2f} | {'yes' if m.holds else 'no'} |")
    verdicts = margin_verdicts(margins)
    lines += ["", "KD counts for seed(s): " + (", ".join(
        str(s) for s, ok in sorted(verdicts.items()) if ok) or "none") + "."]
    return lines


def draw_predictions(path: Path, test: SegmentationDataset, count: int,
                     columns: Sequence[tuple[str, Tensor]]) -> None:
    """Image, ground truth and each model's predicted classes for the first ``count`` test
    images, with a legend of the class colours.

    Args:
        path: the PNG to write.
        test: the test split (images (N, C, H, W), masks (N, H, W)).
        count: images shown, one per row.
        columns: (title, predicted classes int64 (count, H, W)) of each model.
    """
    cmap = matplotlib.colormaps["tab20"]
    top = max(test.num_classes - 1, 1)
    # Void pixels are left blank (masked), not drawn in the colour of class 0.
    masks = np.ma.masked_equal(test.masks[:count].numpy(), test.ignore_index)
    width = 2 + len(columns)
    names = test.info.class_names
    # The class legend and the title get their own bands (inches) below and above the panels.
    ncol = min(len(names), max(3, int(1.8 * width / 1.2)))
    legend_band, title_band = 0.3 + 0.2 * math.ceil(len(names) / ncol), 0.35
    height = 1.6 * count + legend_band + title_band
    # A bare Figure needs no GUI backend, so this works on any machine.
    fig = Figure(figsize=(1.8 * width, height))
    axes = fig.subplots(count, width, squeeze=False)
    for row in range(count):
        image = test.images[row].permute(1, 2, 0).squeeze(-1).numpy()
        panels = [("image", image), ("ground truth", masks[row])]
        panels += [(title, pred[row].numpy()) for title, pred in columns]
        for col, (title, panel) in enumerate(panels):
            ax = axes[row][col]
            if col == 0:
                ax.imshow(panel, cmap="gray")
            else:
                ax.imshow(panel, cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=8)
    handles = [Patch(color=cmap(c / top), label=name) for c, name in enumerate(names)]
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False,
               title="classes (void pixels blank)", title_fontsize=7)
    fig.suptitle("Test images, ground truth and each model's prediction (first seed)",
                 fontsize=9)
    fig.tight_layout(rect=(0, legend_band / height, 1, 1 - title_band / height))
    fig.savefig(path, dpi=100)
