"""Pieces every study report writes the same way: table rules, config blocks, definitions.

Reports are Markdown that reads as it is on GitHub and renders to HTML (``reproduce`` builds
``report.html`` with Python-Markdown's ``tables``, ``fenced_code`` and ``md_in_html``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

__all__ = ["DEFINITIONS", "config_block", "definitions", "rule"]

#: What the reports' measures mean, by name; reports list the ones they use.
DEFINITIONS: dict[str, str] = {
    "mIoU^D": "dataset-level mean IoU: per class, true positives, false positives and false "
              "negatives summed over every test image, IoU = TP / (TP + FP + FN), averaged "
              "over the classes",
    "mIoU^I": "image-level mean IoU: per image, the IoU of each class in its ground truth, "
              "averaged over those classes, then over the images",
    "mIoU^C": "class-level mean IoU: per class, the mean IoU over the images that contain it, "
              "then averaged over the classes",
    "worst-5% mIoU^I": "the mean mIoU^I of the 5% of test images where it is lowest",
    "ECE": "expected calibration error in %: confidences (max probability) in 10 equal-width "
           "bins, the size-weighted mean gap between accuracy and confidence; ECE^D pools "
           "every pixel of the test set, ECE^I averages the per-image values",
    "Worst": "worst-class accuracy: the accuracy of the class the model gets most wrong",
    "NSD": "normalized standard deviation of the class-wise accuracies: sample std (n - 1) / "
           "mean; 0 when every class is equally accurate, lower is fairer",
    "best / final": "distillation students: best = the maximum test accuracy over the "
                    "periodic evaluations (the protocol of Qin et al.), final = after the "
                    "last epoch (the DC protocol)",
}


def rule(aligns: str) -> str:
    """The separator line under a Markdown table header: ``l`` (text, left-aligned) or ``r``
    (numbers, right-aligned) per column, e.g. ``rule("llr") == "|:---|:---|---:|"``."""
    if set(aligns) - {"l", "r"}:
        raise ValueError(f"aligns must hold only 'l' and 'r', got {aligns!r}")
    return "|" + "".join(":---|" if a == "l" else "---:|" for a in aligns)


def definitions(*names: str) -> list[str]:
    """Markdown lines defining the measures ``names`` (keys of :data:`DEFINITIONS`)."""
    return [f"- **{name}**: {DEFINITIONS[name]}." for name in names]


def config_block(config: Any) -> list[str]:
    """The run's config as JSON inside a collapsed ``<details>`` block."""
    text = json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)
    return ['<details markdown="1"><summary>Config of this run</summary>', "",
            "```json", text, "```", "", "</details>", ""]
