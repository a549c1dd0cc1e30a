"""A registered study for the sweep tests: cheap cells, and failures switched on by files.

Importable by module name (the tests put this folder on ``sys.path``), so the ``processes``
and ``ray`` executors can send it to their workers by reference, as they would a user's own
study. A cell ``c`` fails while ``<out>/fail-<c>`` exists; a file ``fail-<c>.once`` makes it
fail only on its first attempt. Every attempt appends a line to ``<out>/attempts.log``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from softlabels.configuration import field_help
from softlabels.results import Table
from softlabels.studies.common import StudyConfig, like
from softlabels.studies.sweep import Cell, Stage, Study


@dataclass(frozen=True)
class FixtureConfig(StudyConfig):
    """Two stages: ``base`` cells, then ``top`` cells that read the base rows."""

    cells: int = field(default=3, metadata=field_help("cells per stage", low=1))
    seeds: tuple[int, ...] = like("seeds", (0,))
    out: str = like("out", "runs/fixture")


def plan(config: FixtureConfig, rows: Sequence[dict[str, Any]]) -> list[Stage]:
    base = tuple(Cell({"stage": "base", "i": i}, f"base-{i}") for i in range(config.cells))
    done = [r for r in rows if r.get("stage") == "base"]
    if len(done) < config.cells:
        return [Stage("base", base), Stage("top", (), pending=config.cells)]
    total = sum(r["value"] for r in done)
    top = tuple(Cell({"stage": "top", "i": i, "base_total": total}, f"top-{i}")
                for i in range(config.cells))
    return [Stage("base", base), Stage("top", top)]


def run_cell(config: FixtureConfig, cell: Cell, folder: Path, *,
             show_progress: bool | None = None) -> dict[str, Any]:
    with open(folder / "attempts.log", "a", encoding="utf-8") as log:
        log.write(f"{cell.name} {os.getpid()}\n")
    once = folder / f"fail-{cell.name}.once"
    if once.exists():
        once.unlink()
        raise RuntimeError(f"transient failure of {cell.name}")
    if (folder / f"fail-{cell.name}").exists():
        raise RuntimeError(f"permanent failure of {cell.name}")
    value = float(torch.Generator().manual_seed(cell.key["i"]).initial_seed())
    return {"value": value + cell.key.get("base_total", 0.0), "threads": torch.get_num_threads(),
            "seconds": 0.0}


def report(config: FixtureConfig, folder: Path, rows: Sequence[dict[str, Any]],
           figures: bool) -> None:
    (folder / "report.md").write_text(f"{len(rows)} rows\n", encoding="utf-8")


def summary(config: FixtureConfig, rows: Sequence[dict[str, Any]]) -> list[Table]:
    return [Table("fixture", ("cell", "value"), [(str(r["i"]), str(r["value"])) for r in rows])]


def headline(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [f"{len(rows)} rows"]


STUDY = Study(name="fixture", help="test fixture", config_cls=FixtureConfig, quick={},
              plan=plan, run_cell=run_cell, report=report, summary=summary, headline=headline,
              sweep_fields=("cells",))
