"""A study whose cells do nothing: what an executor costs per cell, and nothing else.

A module of its own (not the benchmark script) so that worker processes and Ray workers can
import it by name, as they import a user's registered study.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softlabels.configuration import field_help
from softlabels.results import Table
from softlabels.studies.common import StudyConfig, like
from softlabels.studies.sweep import Cell, Stage, Study


@dataclass(frozen=True)
class NoopConfig(StudyConfig):
    """``cells`` empty cells in one stage."""

    cells: int = field(default=50, metadata=field_help("cells", low=1))
    out: str = like("out", "runs/noop")


def plan(config: NoopConfig, rows: Sequence[dict[str, Any]]) -> list[Stage]:
    return [Stage("noop", tuple(Cell({"i": i}, f"noop-{i}") for i in range(config.cells)))]


def run_cell(config: NoopConfig, cell: Cell, folder: Path, *,
             show_progress: bool | None = None) -> dict[str, Any]:
    return {"seconds": 0.0}


def report(config: NoopConfig, folder: Path, rows: Sequence[dict[str, Any]],
           figures: bool) -> None:
    """No report: the benchmark measures the scheduling alone."""


def summary(config: NoopConfig, rows: Sequence[dict[str, Any]]) -> list[Table]:
    return []


def headline(rows: Sequence[dict[str, Any]]) -> list[str]:
    return []


STUDY = Study(name="noop", help="cells that do nothing", config_cls=NoopConfig, quick={},
              plan=plan, run_cell=run_cell, report=report, summary=summary, headline=headline,
              sweep_fields=("cells",))
