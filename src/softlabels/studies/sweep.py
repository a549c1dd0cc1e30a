"""The one sweep mechanism: a study plans cells, a pure ``run_cell`` computes one, a driver
owns the run folder.

A :class:`Study` declares itself once: its config class, ``--quick`` preset, ``plan``,
``run_cell``, report, summary tables and headline. :func:`run_sweep` is the only code that
writes a run folder's ``config.json``, ``results.jsonl``, report and failure logs, and holds
its lock; cells write only their own artifacts (checkpoints, label stores, images) under the
folder. Resuming is the same operation as running: the driver submits exactly the cells of
the plan that have no row in ``results.jsonl`` yet.

The plan is a list of :class:`Stage` objects run in order; a stage's cells are independent of
each other, so an executor may run them in parallel. ``plan(config, rows)`` is re-evaluated
after every stage with the rows finished so far, so a later stage can depend on earlier
results (the expert epoch chosen on the validation cells decides the test cells).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import write_text
from ..distributed import World, barrier, check_same_on_every_rank, init_from_environment
from ..progress import progress
from ..results import ResultsLog, Table
from .executors import CellTask, ExecutorConfig, make_executor
from .run_folder import prepare_run_folder, read_rows, release_run_folder

__all__ = ["Cell", "Recipe", "Results", "RowIndex", "Stage", "Study", "SweepFailedError",
           "run_sweep"]

Row = dict[str, Any]

#: Row fields that measure time, and differ between two runs of the same cell.
TIMING_FIELDS = frozenset({"seconds"})


@dataclass(frozen=True)
class Cell:
    """One unit of work of a sweep.

    Attributes:
        key: JSON values that identify the cell; its row in ``results.jsonl`` holds them.
        name: short, file-name-safe label (progress lines, checkpoint folders, failure logs).
    """

    key: Mapping[str, Any]
    name: str

    def __post_init__(self) -> None:
        try:
            json.dumps(dict(self.key))
        except TypeError as err:
            raise TypeError(f"cell {self.name!r} has a key that is not JSON: {err}") from None


@dataclass(frozen=True)
class Stage:
    """Cells that may run in any order or in parallel; stages run one after the other.

    Attributes:
        name: e.g. ``"experts"``, ``"select"``, ``"test"``.
        cells: the cells known now.
        pending: cells this stage will hold once earlier stages have finished (their keys
            depend on earlier rows); counted in the progress total only.
    """

    name: str
    cells: tuple[Cell, ...]
    pending: int = 0


@dataclass(frozen=True)
class Recipe:
    """A named preset of a study: ``softlabels <study> --recipe NAME`` applies ``fields``;
    ``softlabels reproduce --full --recipe NAME`` runs ``full`` (dataset folder, config
    layers) instead of the study's CPU-scale ``full``.

    Attributes:
        help: one line for ``--help`` and the report.
        fields: config field values (after ``--quick``, before ``--config`` and flags).
        full: the reproduction of this recipe, or None.
    """

    help: str
    fields: Mapping[str, Any]
    full: tuple[str, tuple[Mapping[str, Any], ...]] | None = None


@dataclass(frozen=True)
class Study:
    """Everything the CLI, ``reproduce`` and the executors need to know about one study.

    Attributes:
        name: the subcommand (``softlabels <name>``).
        help: one line for ``--help``.
        config_cls: the frozen config dataclass (one field = one flag).
        quick: field overrides of ``--quick``.
        plan: ``plan(config, rows) -> [Stage]``, pure and cheap; ``rows`` are the rows in the
            folder so far.
        run_cell: ``run_cell(config, cell, folder, show_progress=...) -> row``: computes one
            cell from the config, the cell's key and the artifacts of earlier stages. Its
            randomness comes from the cell's own seeds, so it gives the same row in any
            process, in any order, and after a resume.
        report: ``report(config, folder, rows, figures) -> None`` writes ``report.md`` (and
            figures) from rows alone.
        summary: ``summary(config, rows) -> [Table]`` for the terminal.
        headline: ``headline(rows) -> [str]`` one-line findings for ``reproduce``.
        sweep_fields: config fields that only extend the grid (a folder resumes when they
            change).
        check: ``check(config) -> config or None`` validates the config against the data
            before any cell runs; it may return the config with fields derived from the data
            filled in (the run then uses that one).
        full: ``(dataset folder, config layers)`` of ``softlabels reproduce --full``.
        recipes: named presets (:class:`Recipe`), e.g. the paper's recipe at full scale.
        label_modes: ``{label mode: what it is}`` of the study's ``--labels`` (for
            ``softlabels list label-modes``).
    """

    name: str
    help: str
    config_cls: type
    quick: Mapping[str, Any]
    plan: Callable[[Any, Sequence[Row]], list[Stage]]
    run_cell: Callable[..., Row]
    report: Callable[[Any, Path, Sequence[Row], bool], None]
    summary: Callable[[Any, Sequence[Row]], list[Table]]
    headline: Callable[[Sequence[Row]], list[str]]
    sweep_fields: tuple[str, ...] = ()
    check: Callable[[Any], Any] | None = None
    full: tuple[str, tuple[Mapping[str, Any], ...]] | None = None
    label_modes: Mapping[str, str] = field(default_factory=dict)
    recipes: Mapping[str, Recipe] = field(default_factory=dict)


@dataclass
class Results:
    """What a study run returns: the rows of its cells, in plan order, and how to show them.

    Attributes:
        study: the study's name.
        config: its config.
        folder: the run folder.
        rows: one row per planned cell (a subset of ``results.jsonl`` when the folder also
            holds rows of earlier, wider sweeps).
        tables: the study's summary tables.
        headline: one-line findings.
        seconds: wall time of this call.
        cells_run: cells computed by this call (the others were already in the folder).
    """

    study: str
    config: Any
    folder: Path
    rows: list[Row]
    tables: list[Table] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cells_run: int = 0


class SweepFailedError(ValueError):
    """Some cells failed (after their retries); every other row was written.

    Attributes:
        failed: ``{cell name: error text}``.
    """

    def __init__(self, message: str, failed: Mapping[str, str]) -> None:
        super().__init__(message)
        self.failed = dict(failed)


class RowIndex:
    """Rows of ``results.jsonl`` looked up by any cell's key."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self.rows: list[Row] = list(rows)
        self._tables: dict[tuple[str, ...], dict[tuple[str, ...], Row]] = {}

    @staticmethod
    def _ident(mapping: Mapping[str, Any], fields: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(json.dumps(mapping[f], sort_keys=True) for f in fields)

    def _table(self, fields: tuple[str, ...]) -> dict[tuple[str, ...], Row]:
        if fields not in self._tables:
            self._tables[fields] = {self._ident(r, fields): r for r in self.rows
                                    if all(f in r for f in fields)}
        return self._tables[fields]

    def find(self, cell: Cell) -> Row | None:
        fields = tuple(sorted(cell.key))
        return self._table(fields).get(self._ident(cell.key, fields))

    def add(self, row: Row) -> None:
        self.rows.append(row)
        for fields, table in self._tables.items():
            if all(f in row for f in fields):
                table[self._ident(row, fields)] = row


def run_sweep(study: Study, config: Any, executor: ExecutorConfig | None = None, *,
              show_progress: bool | None = None, overwrite: bool = False) -> Results:
    """Run (or resume) every cell of ``study``'s plan for ``config`` in ``config.out``.

    Args:
        study: the study.
        config: an instance of ``study.config_cls``.
        executor: where cells run (default: serially in this process).
        show_progress: see :func:`softlabels.progress.progress`; the driver's bar counts
            cells, and serial cells show their own bars beneath it.
        overwrite: start afresh: a run already in ``config.out`` is renamed aside to
            ``<out>.replaced-<date>-<time>`` (never deleted) instead of being resumed.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank runs the same cells in the same order,
    each training step split across the ranks (:mod:`softlabels.distributed`); rank 0 alone
    holds the lock and writes ``config.json``, the rows, the report and the checkpoints.

    Raises:
        ValueError: the folder holds another run, is in use, or the config does not fit the
            data (``study.check``); under ``torchrun``, an executor other than ``serial`` or a
            config that differs between ranks (raised on every rank).
        SweepFailedError: cells failed after their retries; the message names them, the
            other rows are written, and a rerun runs only the missing cells.
    """
    began = time.perf_counter()
    executor = executor if executor is not None else ExecutorConfig()
    ranks = init_from_environment(config.device)
    if ranks.size > 1:
        if executor.executor != "serial":
            raise ValueError(f"under torchrun the ranks share each cell: use --executor serial, "
                             f"not {executor.executor!r}")
        check_same_on_every_rank("the study config", json.dumps(dataclasses.asdict(config),
                                                                 sort_keys=True, default=str))
        show_progress = show_progress if ranks.is_main else False
    folder = Path(config.out)
    if not ranks.is_main:
        return _drive(study, config, executor, folder, ranks, show_progress, began)
    folder = prepare_run_folder(config, config.out, study.sweep_fields, study.name,
                                overwrite=overwrite)
    try:
        return _drive(study, config, executor, folder, ranks, show_progress, began)
    finally:
        release_run_folder(folder)  # a later run in this process, or another, may resume it


def _drive(study: Study, config: Any, executor: ExecutorConfig, folder: Path, ranks: World,
           show_progress: bool | None, began: float) -> Results:
    """The body of :func:`run_sweep` once rank 0 holds the prepared ``folder``."""
    if ranks.is_main:
        ResultsLog(folder / "results.jsonl").rows()  # a torn last line is repaired here
    barrier()  # the folder is ready before any other rank reads it
    log = ResultsLog(folder / "results.jsonl")
    index = RowIndex(read_rows(study.config_cls, folder))
    if study.check is not None:
        # A check may fill in fields that come from the data (config.json keeps the request).
        config = study.check(config) or config
    stages = _plan(study, config, index)
    total = sum(len(s.cells) + s.pending for s in stages)
    done_before = sum(index.find(c) is not None for s in stages for c in s.cells)
    if done_before:
        _say(f"[{study.name}] {done_before} of {total} cells done, running "
             f"{total - done_before}", show_progress)
    failed: dict[str, str] = {}
    cells_run = 0
    with make_executor(executor) as pool, \
            progress(total, f"{study.name} cells", show_progress, start=done_before) as bar:
        while not failed:
            stage = next((s for s in stages if any(index.find(c) is None for c in s.cells)),
                         None)
            if stage is None:
                break
            todo = [c for c in stage.cells if index.find(c) is None]

            def finished(cell: Cell, result: Row | None, error: str | None,
                         running: Sequence[str]) -> None:
                nonlocal cells_run
                if result is not None:
                    row = _merge(cell, result)
                    # Every rank computed the same row; rank 0 writes it.
                    row = log.append(row) if ranks.is_main else json.loads(json.dumps(row))
                    index.add(row)
                    cells_run += 1
                    if ranks.is_main:
                        study.report(config, folder, index.rows, False)
                else:
                    failed[cell.name] = error or "unknown error"
                    _say(f"[{study.name}] cell {cell.name} failed: {failed[cell.name]}",
                         show_progress)
                bar.advance(_status(running, failed))

            tasks = [CellTask(study, config, cell, str(folder)) for cell in todo]
            errors = pool.run(tasks, finished, retries=executor.retries,
                              show_progress=show_progress)
            for name, text in errors.items():
                if ranks.is_main:
                    write_text(folder / "failures" / f"{name}.log", text)
            stages = _plan(study, config, index)
            bar.set_total(sum(len(s.cells) + s.pending for s in stages))
    if ranks.is_main:
        study.report(config, folder, index.rows, True)
    barrier()
    planned = [index.find(c) for s in stages for c in s.cells]
    rows = [r for r in planned if r is not None]
    results = Results(study.name, config, folder, rows, study.summary(config, rows),
                      study.headline(rows), time.perf_counter() - began, cells_run)
    if failed:
        listing = "; ".join(f"{name}: {text}" for name, text in failed.items())
        raise SweepFailedError(
            f"{len(failed)} cell(s) of {study.name} failed: {listing}. The other finished "
            f"cells are in {str(folder / 'results.jsonl')!r}, tracebacks in "
            f"{str(folder / 'failures')!r}; rerun the same command to run only the missing "
            "cells", failed)
    return results


def _plan(study: Study, config: Any, index: RowIndex) -> list[Stage]:
    stages = study.plan(config, index.rows)
    names = [c.name for s in stages for c in s.cells]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RuntimeError(f"study {study.name!r} planned cells with the same name: "
                           f"{repeated}")
    return stages


def _merge(cell: Cell, result: Mapping[str, Any]) -> Row:
    """The row of ``cell``: its key, then what ``run_cell`` returned (which must agree)."""
    clash = sorted(k for k, v in cell.key.items() if k in result
                   and json.dumps(result[k], sort_keys=True) != json.dumps(v, sort_keys=True))
    if clash:
        raise RuntimeError(f"cell {cell.name!r} returned a row that contradicts its key in "
                           f"{clash}")
    return {**result, **cell.key}


def _status(running: Sequence[str], failed: Mapping[str, str]) -> str:
    parts = []
    if running:
        shown = ", ".join(running[:3]) + (f" +{len(running) - 3}" if len(running) > 3 else "")
        parts.append(f"running {shown}")
    if failed:
        parts.append(f"failed {', '.join(failed)}")
    return "; ".join(parts)


def _say(text: str, show_progress: bool | None) -> None:
    if show_progress is not False:
        print(text, file=sys.stderr, flush=True)

