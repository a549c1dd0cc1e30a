"""Experiment logs of a training run: ``history.csv`` always, TensorBoard on request.

Both hold the same scalars: one row (or step) per epoch with the loss, each named loss
term, the learning rate, the seconds and whatever the hooks and evaluations logged. The CSV is
rewritten whole after every epoch (atomically), so it matches the resumable checkpoint and a
resumed run continues it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import write_text

__all__ = ["LOGGERS", "HistoryLog"]

#: Extra loggers ``fit(..., logger=...)`` and the ``--logger`` flag accept.
LOGGERS = ("tensorboard",)


class HistoryLog:
    """Writes ``folder/history.csv`` and, with ``logger="tensorboard"``, event files under
    ``folder/tensorboard``.

    Raises:
        ValueError: an unknown ``logger``.
        ImportError: ``"tensorboard"`` without the ``tensorboard`` package (the message says
            how to install it).
    """

    def __init__(self, folder: Path, logger: str | None = None) -> None:
        if logger is not None and logger not in LOGGERS:
            raise ValueError(f"logger must be one of {list(LOGGERS)} or None, got {logger!r}")
        self.path = folder / "history.csv"
        self._writer: Any = None
        self._logged = 0
        if logger == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError("logger 'tensorboard' needs the tensorboard package: pip "
                                  "install tensorboard") from err
            self._writer = SummaryWriter(str(folder / "tensorboard"))

    def write(self, history: Sequence[dict[str, Any]]) -> None:
        """Rewrite the CSV with every epoch so far; send the new epochs to TensorBoard."""
        columns = ["epoch", *sorted({k for record in history for k in record} - {"epoch"})]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for record in history:
            writer.writerow({k: _scalar(record.get(k)) for k in columns})
        write_text(self.path, buffer.getvalue())
        if self._writer is not None:
            for record in history[self._logged:]:
                for name, value in record.items():
                    if name != "epoch" and isinstance(value, int | float):
                        self._writer.add_scalar(name, value, int(record["epoch"]))
            self._writer.flush()
        self._logged = len(history)

    def close(self) -> None:
        """Close the TensorBoard writer (the CSV needs nothing)."""
        if self._writer is not None:
            self._writer.close()


def _scalar(value: Any) -> Any:
    """A CSV cell: lists (one value per student) joined by spaces, None as empty."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in value)
    return value
