"""The cells of a distillation sweep: which (images, IPC, label mode, expert epoch, T, k) to run.

A label mode only varies along the axes it uses (``hard`` ignores the expert epoch, ``teacher``
ignores k, ...), so the grid never trains two students on identical labels. An unused axis is
``None`` in the cell, which is also how it is written to ``results.jsonl``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AXES", "Cell", "cells_for"]

#: Label mode -> the expert-related axes it varies along.
AXES: dict[str, tuple[str, ...]] = {
    "hard": (),
    "file": (),
    "learned": (),
    "teacher": ("expert_epoch", "temperature"),
    "smooth": ("expert_epoch", "temperature"),
    "shuffle": ("expert_epoch", "temperature"),
    "topk": ("expert_epoch", "temperature", "k"),
    "swap": ("expert_epoch", "temperature", "k"),
}


@dataclass(frozen=True)
class Cell:
    """One student cell of the sweep.

    Attributes:
        phase: ``"select"`` (scored on the validation split to choose the expert epoch) or
            ``"test"`` (scored on the test split).
        images: ``"random"`` (selected real images), ``"dm"`` (Distribution Matching) or
            ``"file"`` (the user's own images).
        ipc: images per class.
        labels: the label mode.
        expert_epoch, temperature, k: the expert settings the mode uses, else None.
    """

    phase: str
    images: str
    ipc: int
    labels: str
    expert_epoch: float | None = None
    temperature: float | None = None
    k: int | None = None

    def key(self) -> dict[str, Any]:
        """The fields that identify the cell in ``results.jsonl``."""
        return asdict(self)

    def name(self) -> str:
        """A file-name-safe label, e.g. ``test-random-ipc10-topk-e20-T1-k3``."""
        parts = [self.phase, self.images, f"ipc{self.ipc}", self.labels]
        if self.expert_epoch is not None:
            parts.append(f"e{self.expert_epoch}")
        if self.temperature is not None:
            parts.append(f"T{self.temperature:g}")
        if self.k is not None:
            parts.append(f"k{self.k}")
        return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts))


def cells_for(phase: str, images: str, ipc: int, labels: Sequence[str],
              epochs: Sequence[int], temperatures: Sequence[float],
              ks: Sequence[int]) -> list[Cell]:
    """Every cell of one (phase, images, IPC), label modes in order, axes as in :data:`AXES`.

    Example:
        >>> [c.name() for c in cells_for("test", "random", 1, ["hard", "topk"], [5], [1.0], [2])]
        ['test-random-ipc1-hard', 'test-random-ipc1-topk-e5-T1-k2']
    """
    cells: list[Cell] = []
    for mode in labels:
        axes = AXES[mode]
        for epoch in (epochs if "expert_epoch" in axes else [None]):
            for temperature in (temperatures if "temperature" in axes else [None]):
                for k in (ks if "k" in axes else [None]):
                    cells.append(Cell(phase, images, ipc, mode, epoch,
                                      None if temperature is None else float(temperature), k))
    return cells
