"""Per-class statistics gathered over an epoch: ABSLD's class risks, Fair-ARD's survived steps.

Both methods reweight classes from one number per class computed over the previous epoch.
How a class's examples combine is a choice (:data:`CLASS_REDUCTIONS`): the official code of
both *sums* them, which on imbalanced data counts a big class as harder than it is; ``mean``
divides by the class's count. On a class-balanced subset the two differ by a constant factor
only, which both update rules cancel (ABSLD divides by the largest gap, Fair-ARD rescales its
weights to sum to K).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_positive_int
from ..distributed import all_reduce_sum

__all__ = ["CLASS_REDUCTIONS", "ClassTally"]

#: ``sum`` (the official ABSLD and Fair-ARD code) or ``mean`` over a class's examples.
CLASS_REDUCTIONS = ("sum", "mean")


class ClassTally:
    """Sums of ``rows`` per-example statistics, and example counts, per class.

    Args:
        rows: statistics tracked side by side (ABSLD: adversarial and clean risk).
        num_classes: K.

    Example:
        >>> tally = ClassTally(1, 3)
        >>> tally.add(torch.tensor([0, 0, 2]), torch.tensor([1.0, 3.0, 5.0]))
        >>> values, counts = tally.epoch_values("mean")
        >>> values.tolist(), counts.tolist()
        ([[2.0, 0.0, 5.0]], [2.0, 0.0, 1.0])
    """

    def __init__(self, rows: int, num_classes: int) -> None:
        check_positive_int("rows", rows)
        check_positive_int("num_classes", num_classes)
        self.sums = torch.zeros(rows, num_classes, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.float64)

    def add(self, y: Tensor, *values: Tensor) -> None:
        """Add one batch: int64 (B,) labels and one float (B,) statistic per row."""
        if len(values) != self.sums.shape[0]:
            raise ValueError(f"expected {self.sums.shape[0]} statistics per example, got "
                             f"{len(values)}")
        labels = y.detach().cpu()
        for row, value in enumerate(values):
            self.sums[row].index_add_(0, labels, value.detach().double().cpu())
        self.counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))

    def epoch_values(self, reduction: str) -> tuple[Tensor, Tensor]:
        """float64 (rows, K) values and (K,) example counts of the epoch, then a reset for the
        next one.

        Under data-parallel training each rank has added its shards; the sum over ranks is the
        whole epoch, so every rank returns the same values. ``mean`` gives 0 to a class that
        had no example this epoch.
        """
        check_choice("class reduction", reduction, CLASS_REDUCTIONS)
        both = all_reduce_sum(torch.cat([self.sums, self.counts[None]]))
        sums, counts = both[:-1], both[-1]
        values = sums if reduction == "sum" else sums / counts.clamp(min=1.0)
        self.reset()
        return values, counts

    def reset(self) -> None:
        """Forget every example."""
        self.sums.zero_()
        self.counts.zero_()

    def state_dict(self) -> dict[str, Tensor]:
        """The sums and counts so far (for a checkpoint)."""
        return {"sums": self.sums.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a state without counts (an older checkpoint) has none."""
        sums = state["sums"]
        if sums.shape != self.sums.shape:
            raise ValueError(f"state holds sums of shape {tuple(sums.shape)}, expected "
                             f"{tuple(self.sums.shape)}")
        self.sums = sums.clone().double()
        counts = state.get("counts")
        self.counts = (torch.zeros_like(self.counts) if counts is None
                       else counts.clone().double())
