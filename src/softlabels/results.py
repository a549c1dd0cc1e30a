"""Sweep results: ``results.jsonl`` (one JSON object per finished cell) and summary tables.

A row is written with a single ``write`` followed by ``fsync``, so a killed run can leave at
most a torn last line; :class:`ResultsLog` drops such a line (rewriting the file atomically)
before appending, so earlier rows are never lost or damaged. Any other damage is an error
naming the file and the line, never a silent loss.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import write_text

__all__ = ["ResultsLog", "Table", "json_safe"]


class ResultsLog:
    """A ``results.jsonl`` file of finished sweep cells.

    Args:
        path: the JSON-lines file (created on first append).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row in file order; a torn final line is removed from the file.

        Raises:
            ValueError: the file is not UTF-8, or a line other than a torn last one is not a
                JSON object; the message names the file and the line.
        """
        if not self.path.exists():
            return []
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            line = self.path.read_bytes()[:err.start].count(b"\n") + 1
            raise ValueError(f"{str(self.path)!r} line {line} is not UTF-8 text; it is not a "
                             "softlabels results file (restore it or use another --out)"
                             ) from None
        lines = text.splitlines()
        rows: list[dict[str, Any]] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                if number == len(lines) and not text.endswith("\n"):
                    # A run killed mid-write: keep the complete rows, drop the torn one.
                    write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n"
                                                  for r in rows))
                    break
                raise ValueError(f"{str(self.path)!r} line {number} is not valid JSON: "
                                 f"{err}") from err
            if not isinstance(row, dict):
                raise ValueError(f"{str(self.path)!r} line {number} is a JSON "
                                 f"{type(row).__name__}, not an object (one result row)")
            rows.append(row)
        return rows

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        """Durably add one row (serialised before anything is written); returns the row as it
        reads back (tuples become lists), so a fresh and a resumed run hold equal rows."""
        if not isinstance(row, dict):
            raise TypeError(f"a result row must be a dict, got {type(row).__name__}")
        line = json.dumps(row, sort_keys=True) + "\n"
        self.rows()  # repairs a torn tail so the new row starts on its own line
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return json.loads(line)


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` (JSON has none; a class absent from the
    test set has a NaN accuracy)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@dataclass
class Table:
    """A summary table a study returns for the terminal (the CLI prints any of them).

    Attributes:
        title: one line above the table.
        columns: column headers; the first ``text_columns`` are left-aligned text.
        rows: one tuple of already formatted cells per line.
        text_columns: how many leading columns hold text rather than numbers.
        notes: lines printed below the table.
    """

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    text_columns: int = 1
    notes: Sequence[str] = ()
