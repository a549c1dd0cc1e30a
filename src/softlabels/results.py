"""Sweep results as JSON lines: append one row per finished cell, resume by skipping them.

A row is written with a single ``write`` followed by ``fsync``, so a killed run can leave at
most a torn last line; :class:`ResultsLog` drops such a line (rewriting the file atomically)
before appending, so earlier rows are never lost or damaged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._io import write_text

__all__ = ["ResultsLog"]


class ResultsLog:
    """A ``results.jsonl`` file of finished sweep cells.

    Args:
        path: the JSON-lines file (created on first append).
        key_fields: the row fields that identify a cell (e.g. ``("ipc", "labels", "seed")``).
    """

    def __init__(self, path: str | os.PathLike[str], key_fields: Iterable[str]) -> None:
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        if not self.key_fields:
            raise ValueError("key_fields must name at least one field")

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row in file order; a torn final line is removed from the file."""
        if not self.path.exists():
            return []
        text = self.path.read_text(encoding="utf-8")
        lines = text.splitlines()
        rows: list[dict[str, Any]] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                if number == len(lines) and not text.endswith("\n"):
                    # A run killed mid-write: keep the complete rows, drop the torn one.
                    write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
                    break
                raise ValueError(f"{str(self.path)!r} line {number} is not valid JSON: "
                                 f"{err}") from err
        return rows

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        """The identifying tuple of ``row``."""
        missing = [f for f in self.key_fields if f not in row]
        if missing:
            raise ValueError(f"row lacks key fields {missing}")
        return tuple(json.dumps(row[f], sort_keys=True) for f in self.key_fields)

    def done(self) -> set[tuple[Any, ...]]:
        """Keys of the finished cells."""
        return {self.key(r) for r in self.rows()}

    def append(self, row: dict[str, Any]) -> None:
        """Durably add one row (validated as JSON before anything is written)."""
        self.key(row)
        line = json.dumps(row, sort_keys=True) + "\n"
        self.rows()  # repairs a torn tail so the new row starts on its own line
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
