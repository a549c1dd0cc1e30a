"""The report of ``softlabels seg``: scores by loss and label mode, the teachers', a figure.

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

__all__ = ["REPORT_COLUMNS", "draw_predictions", "summary_rows", "write_report"]

Row = dict[str, Any]

#: (row key, column title) of the report's score columns.
REPORT_COLUMNS = (("miou_dataset", "mIoU^D"), ("miou_image", "mIoU^I"),
                  ("miou_class", "mIoU^C"), ("miou_image_worst", "worst-5% mIoU^I"),
                  ("ece_dataset", "ECE^D"), ("ece_image", "ECE^I"))


def _scale(key: str) -> float:
    """Rows hold mIoU as a fraction and ECE in %; reports show both in %."""
    return 1.0 if key.startswith("ece") else 100.0


def summary_rows(rows: Sequence[Row]) -> list[Row]:
    """Mean and sample std over seeds per (loss, labels) of the student rows; mIoU and ECE
    in %."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if "loss" in row:
            groups.setdefault((row["loss"], row["labels"]), []).append(row)
    summary = []
    for (loss, labels), members in groups.items():
        entry: Row = {"loss": loss, "labels": labels, "seeds": len(members)}
        for key, _ in REPORT_COLUMNS:
            values = [_scale(key) * m[key] for m in members]
            entry[key] = (statistics.mean(values),
                          statistics.stdev(values) if len(values) > 1 else 0.0)
        entry["seconds"] = statistics.mean(m["seconds"] for m in members)
        summary.append(entry)
    return summary


def write_report(config: Any, folder: Path, rows: Sequence[Row]) -> None:
    """Write ``report.md``: the students' scores by loss and labels, the teachers', the
    figure when it exists, the measures' definitions and the config."""
    lines = [f"# Segmentation study on {config.dataset}", "",
             "Mean ± sample std over seeds; mIoU in %, ECE in % (10 bins).", "",
             "| loss | labels | seeds | " + " | ".join(t for _, t in REPORT_COLUMNS)
             + " | s / cell |", rule("ll" + "r" * (len(REPORT_COLUMNS) + 2))]
    for entry in summary_rows(rows):
        cells = [f"{entry[k][0]:.2f} ± {entry[k][1]:.2f}" for k, _ in REPORT_COLUMNS]
        lines.append(f"| {entry['loss']} | {entry['labels']} | {entry['seeds']} | "
                     + " | ".join(cells) + f" | {entry['seconds']:.0f} |")
    teachers = [r for r in rows if r.get("phase") == "teacher"]
    if teachers:
        lines += ["", "Teachers (CE + JML on boundary-smoothed labels), test scores in %:", "",
                  "| labels | seed | " + " | ".join(t for _, t in REPORT_COLUMNS) + " |",
                  rule("lr" + "r" * len(REPORT_COLUMNS))]
        for row in teachers:
            lines.append(f"| {row['labels']} | {row['seed']} | " + " | ".join(
                f"{_scale(k) * row[k]:.2f}" for k, _ in REPORT_COLUMNS) + " |")
    if (folder / "predictions.png").exists():
        lines += ["", "![Test images, ground truth and each model's prediction (first seed)]"
                      "(predictions.png)"]
    lines += ["", "Measures:", "", *definitions("mIoU^D", "mIoU^I", "mIoU^C",
                                                "worst-5% mIoU^I", "ECE"), ""]
    lines += config_block(config)
    write_text(folder / "report.md", "\n".join(lines))


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
