"""Presets of ``softlabels seg``: ``--quick``, the first CamVid run of ``docs/results.md``, and
the CamVid recipe of the official JDTLosses code (``--recipe converge`` on a CPU, ``--recipe
paper`` on one GPU).

The paper has no CamVid experiment; the official code has a CamVid config, whose recipe
(facts in the project's reference notes) these presets follow at 180x240: train on train +
val (468 images here; the official split has 469) and test on test, random scale then random
crops, AdamW with weight decay 0.01 on weights only, a 1% linear warm-up then per-step poly
decay, ``smooth`` 1, eps of the boundary smoothing chosen among 0.1, 0.25 and 0.5 on the val
split, and a teacher of twice the students' width and epochs. Two differences are kept on
purpose: U-Nets from scratch (no ImageNet backbone), and scale 0.75-1.5 rather than 0.5-2.0
(at 180x240 a factor below 0.71 leaves the image smaller than the 128 crop, padded with void).
"""

from __future__ import annotations

from typing import Any

from .sweep import Recipe

__all__ = ["CONVERGE", "CONVERGE_GPU", "FULL", "QUICK", "RECIPES", "SOFT_PARTS"]

#: ``--quick``: a run of well under a minute on digit scenes.
QUICK: dict[str, Any] = {"out": "runs/seg-quick", "epochs": 4, "teacher_epochs": 4,
                         "labels": ("hard", "smooth", "teacher", "semi"),
                         "model_args": ("base_width=8",), "teacher_args": ("base_width=8",),
                         "batch_size": 16, "figure_images": 3}

#: ``reproduce --full``: the first CamVid run of ``docs/results.md``.
FULL: tuple[str, tuple[dict[str, Any], ...]] = ("camvid", (
    {"dataset": "camvid", "losses": ("ce", "ce+jml", "ce+sjl"),
     "labels": ("hard", "smooth", "teacher"), "seeds": (0, 1, 2), "epochs": 8, "crop": 128,
     "teacher_args": ("base_width=24",)},
))

#: ``--recipe converge``: the official recipe on a CPU, depth-4 U-Nets (1.8 M parameters at
#: width 16, the teacher 7.2 M at width 32), 16 epochs (944 steps) and a 32-epoch teacher.
#: Measured with one thread while other jobs shared the two cores (docs/results.md): 72 s per
#: student epoch and 283 s per teacher epoch, so 16-20 min per student, 1.7-2.6 h per teacher
#: and 14-21 h for the whole grid. Alone it runs the first part of the grid: CE and CE + JML on
#: hard labels, the cells of the sanity gate.
CONVERGE: dict[str, Any] = {
    "dataset": "camvid", "out": "runs/camvid-converge",
    "model_args": ("base_width=16", "depth=4"), "teacher_args": ("base_width=32", "depth=4"),
    "losses": ("ce", "ce+jml"), "labels": ("hard",), "seeds": (0, 1, 2),
    "train_splits": ("train", "val"), "val_split": "val", "select_smoothing": (0.1, 0.25, 0.5),
    "epochs": 16, "teacher_epochs": 32, "batch_size": 8, "optimizer": "adamw", "lr": 3e-3,
    "weight_decay": 0.01, "decay_norms": False, "schedule": "poly", "schedule_unit": "step",
    "warmup": 0.01, "metric_smooth": 1.0, "scale": (0.75, 1.5), "crop": 128,
}

#: The other parts of the grid, each on top of a preset and into the same folder: CE, CE + JML
#: and CE + SJL on boundary-smoothed labels (with the eps selection), then under KD (with the
#: teachers). A config crosses losses with label modes; one config of three losses and three
#: label modes would add three CE + SJL hard-label cells, and separate parts let the costly KD
#: part (the teachers) be run, or dropped, on its own.
SOFT_PARTS: tuple[dict[str, Any], ...] = (
    {"losses": ("ce", "ce+jml", "ce+sjl"), "labels": ("smooth",)},
    {"losses": ("ce", "ce+jml", "ce+sjl"), "labels": ("teacher",)},
)

#: ``--recipe paper``: :data:`CONVERGE` on one GPU, bf16 autocast and channels-last, the same
#: epochs. An estimate, not a measurement (docs/results.md): the whole grid is about 30,500
#: optimiser steps of small, launch-bound kernels, about 6-10 min on an H200 at an assumed
#: 10-15 ms per step.
CONVERGE_GPU: dict[str, Any] = {
    **CONVERGE, "out": "runs/camvid-converge-gpu", "device": "cuda", "precision": "bf16",
    "channels_last": True,
}


def _parts(preset: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    return (preset, *({**preset, **part} for part in SOFT_PARTS))


RECIPES: dict[str, Recipe] = {
    "converge": Recipe(
        help="the official CamVid recipe on a CPU (hard labels: the sanity gate; add --losses "
             "ce ce+jml ce+sjl --labels smooth, then teacher, for the rest of the grid)",
        fields=CONVERGE, full=("camvid", _parts(CONVERGE))),
    "paper": Recipe(
        help="the official CamVid recipe on one GPU (the same parts as converge)",
        fields=CONVERGE_GPU, full=("camvid", _parts(CONVERGE_GPU))),
}
