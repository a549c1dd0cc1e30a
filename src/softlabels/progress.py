"""Progress reporting: a live bar with ETA on a terminal, plain log lines otherwise.

Bars nest: a bar opened while another is live (a cell's training epochs under the sweep's
cell count) becomes a second line of the same display, removed when it ends. Inside
:func:`labelled`, every bar's label starts with the name given there (the cell being run).
"""

from __future__ import annotations

import contextvars
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

__all__ = ["ProgressReporter", "labelled", "progress"]

_LOG_EVERY = 10.0
# A bar fits an 80-column terminal: the label (the cell's name first) takes 36 columns, the bar,
# count and ETA 30, and the status what is left (cut with an ellipsis, longer on a wider one).
_LABEL_WIDTH, _STATUS_WIDTH = 36, 60

_PREFIX: contextvars.ContextVar[str] = contextvars.ContextVar("softlabels_progress_prefix",
                                                              default="")
_LIVE: list[Progress] = []  # the display bars of this process share, while one is open


class ProgressReporter:
    """Advance a task and show a status text; see :func:`progress`."""

    def __init__(self, bar: Progress | None, task: int | None, total: int, label: str,
                 start: int = 0) -> None:
        self._bar, self._task, self._total, self._label = bar, task, total, label
        self._first = self._done = start
        self._start = self._last_line = time.perf_counter()

    def set_total(self, total: int) -> None:
        """Change the number of units (a sweep whose later cells became known)."""
        self._total = total
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=total)

    def advance(self, status: str = "") -> None:
        """Mark one unit of work done; ``status`` is shown beside the bar or logged.

        Without a terminal a line is logged for the last unit and otherwise at most every
        ``_LOG_EVERY`` seconds, so a log file stays readable over thousands of epochs.
        """
        self._done += 1
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=1, status=_cut(status, _STATUS_WIDTH))
            return
        now = time.perf_counter()
        if self._done < self._total and now - self._last_line < _LOG_EVERY:
            return
        self._last_line = now
        elapsed = now - self._start
        eta = elapsed / (self._done - self._first) * (self._total - self._done)
        print(f"[{self._label}] {self._done}/{self._total} {status} "
              f"(elapsed {elapsed:.1f}s, eta {eta:.1f}s)", file=sys.stderr, flush=True)


@contextmanager
def labelled(name: str) -> Iterator[None]:
    """Prefix the label of every bar opened inside with ``name`` (e.g. a sweep cell)."""
    token = _PREFIX.set(name)
    try:
        yield
    finally:
        _PREFIX.reset(token)


@contextmanager
def progress(total: int, label: str, enabled: bool | None = None,
             start: int = 0) -> Iterator[ProgressReporter]:
    """Report progress over ``total`` units of work (e.g. epochs).

    Args:
        total: number of units.
        label: short description shown before the bar.
        enabled: ``True`` forces output, ``False`` silences it, ``None`` shows a live bar on a
            terminal and, otherwise, a log line on stderr every 10 s and at the end.
        start: units already done (a resumed run).
    """
    prefix = _PREFIX.get()
    shown = _label(prefix, label)
    label = f"{prefix} {label}" if prefix else label
    if enabled is False:
        yield _Silent(total, label)
        return
    if enabled is None and not sys.stderr.isatty():
        yield ProgressReporter(None, None, total, label, start)
        return
    if _LIVE:
        bar = _LIVE[-1]
        task = bar.add_task(shown, total=total, completed=start, status="")
        try:
            yield ProgressReporter(bar, task, total, label)
        finally:
            bar.remove_task(task)
        return
    with Progress(*_columns(), transient=False, expand=True) as bar:
        _LIVE.append(bar)
        try:
            task = bar.add_task(shown, total=total, completed=start, status="")
            yield ProgressReporter(bar, task, total, label)
        finally:
            _LIVE.pop()


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _label(prefix: str, label: str) -> str:
    """The bar's label: the cell's name whole (cut in the middle only when it alone is too
    long, since both ends tell cells apart), then as much of the task's own label as fits."""
    if not prefix:
        return _cut(label, _LABEL_WIDTH)
    if len(prefix) > _LABEL_WIDTH:
        head = (_LABEL_WIDTH - 1) // 2
        return prefix[:head] + "…" + prefix[len(prefix) - (_LABEL_WIDTH - 1 - head):]
    return _cut(f"{prefix} {label}", _LABEL_WIDTH)


class _Eta(TimeRemainingColumn):
    """``eta 0:01:23`` in one column (two columns would cost a separator)."""

    def render(self, task: Task) -> Text:
        return Text("eta ") + super().render(task)


def _columns() -> tuple[ProgressColumn, ...]:
    """Label, bar, count, ETA and status; only the status gives way on a narrow terminal."""
    def fixed(width: int) -> Column:
        return Column(width=width, no_wrap=True)

    return (TextColumn("[bold]{task.description}", table_column=fixed(_LABEL_WIDTH)),
            BarColumn(bar_width=8, table_column=fixed(8)),
            MofNCompleteColumn(table_column=fixed(9)), _Eta(table_column=fixed(11)),
            TextColumn("{task.fields[status]}",
                       table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)))


class _Silent(ProgressReporter):
    def __init__(self, total: int, label: str) -> None:
        super().__init__(None, None, total, label)

    def advance(self, status: str = "") -> None:
        self._done += 1
