"""Where the cells of a sweep run: in this process, in local worker processes, or on Ray.

Every executor runs the same :class:`CellTask` through :func:`execute_cell` and reports each
outcome back to the driver, which alone writes the run folder. Cells write their checkpoints
under the run folder, so the folder must be on a filesystem every worker sees (a local disk
for ``serial`` and ``processes``; a shared mount such as NFS for a Ray cluster). A cell that
fails is resubmitted up to ``retries`` times and resumes from its own checkpoints.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..configuration import check_fields, field_help
from ..progress import labelled

if TYPE_CHECKING:
    from .sweep import Cell, Study

__all__ = ["EXECUTORS", "CellTask", "ExecutorConfig", "ExecutorUnavailableError",
           "execute_cell", "make_executor"]

EXECUTORS = ("serial", "processes", "ray")

#: ``finished(cell, row or None, error summary or None, names of the cells still running)``.
Finished = Callable[["Cell", "dict[str, Any] | None", "str | None", Sequence[str]], None]


class ExecutorUnavailableError(ImportError):
    """The chosen executor needs a package that is not installed."""


@dataclass(frozen=True)
class ExecutorConfig:
    """How a sweep's cells are run; none of it changes a row, so none of it is in
    ``config.json``."""

    executor: str = field(default="serial", metadata=field_help(
        "where cells run: serial (this process), processes (local worker processes) or ray "
        "(a Ray cluster; pip install 'softlabels[ray]')", choices=EXECUTORS))
    workers: int | None = field(default=None, metadata=field_help(
        "cells run at once (processes: worker processes, default CPUs // cell-cpus; ray "
        "without --address: the local cluster's CPUs = workers x cell-cpus)", low=1))
    address: str | None = field(default=None, metadata=field_help(
        "Ray cluster address, e.g. HOST:6379 or auto (ray; default: start a local cluster)"))
    cell_cpus: int | None = field(default=None, metadata=field_help(
        "CPU threads of each cell (default: torch's default for serial, CPUs // workers for "
        "processes, 1 for ray)", low=1))
    cell_gpus: float = field(default=0.0, metadata=field_help(
        "GPUs reserved by each cell (ray)", low=0.0))
    retries: int = field(default=0, metadata=field_help(
        "times a failed cell is resubmitted; it resumes from its checkpoints", low=0))
    connect_timeout: float = field(default=10.0, metadata=field_help(
        "seconds to wait for a Ray cluster at --address", low=0.0, low_open=True))

    def __post_init__(self) -> None:
        check_fields(self)
        if self.executor != "ray":
            ray_only = [name for name, value in (("address", self.address),
                                                 ("cell_gpus", self.cell_gpus)) if value]
            if ray_only:
                raise ValueError(f"{', '.join(ray_only)} only applies to --executor ray, not "
                                 f"{self.executor!r}")
        if self.workers is not None and (self.executor == "serial" or self.address):
            raise ValueError("workers applies to --executor processes and to a local Ray "
                             "cluster (no --address)")


@dataclass(frozen=True)
class CellTask:
    """One cell to compute: the study, its config, the cell and the run folder."""

    study: Study
    config: Any
    cell: Cell
    folder: str


def execute_cell(task: CellTask, cpus: int | None, show_progress: bool | None
                 ) -> dict[str, Any]:
    """Compute one cell's result in the current process (any executor's worker).

    The row records the cell's thread count: float sums, and so a trained model, depend on
    it, so rows are bit-identical across executors only with the same ``--cell-cpus``.
    """
    before = torch.get_num_threads()
    if cpus is not None:
        torch.set_num_threads(cpus)
    try:
        with labelled(task.cell.name):
            row = task.study.run_cell(task.config, task.cell, Path(task.folder),
                                      show_progress=show_progress)
        return {**row, "threads": torch.get_num_threads()}
    finally:
        torch.set_num_threads(before)  # a serial cell leaves the driver as it found it


def format_failure(error: BaseException) -> str:
    """The full traceback of a failed cell, for its log file."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def make_executor(config: ExecutorConfig) -> _Executor:
    """The executor ``config`` names; use it as a context manager."""
    if config.executor == "serial":
        return _Serial(config)
    if config.executor == "processes":
        return _Processes(config)
    return _Ray(config)


class _Executor:
    """Runs tasks, at most ``slots`` at a time, retrying failures; subclasses submit and wait."""

    slots = 1
    remote = True  # cells run elsewhere: their own bars would interleave, so they are silent

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config

    def __enter__(self) -> _Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _submit(self, task: CellTask, show_progress: bool | None) -> Any:
        raise NotImplementedError

    def _wait(self, handles: list[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(handle, row or exception)`` for at least one finished handle."""
        raise NotImplementedError

    def run(self, tasks: Sequence[CellTask], finished: Finished, *, retries: int,
            show_progress: bool | None) -> dict[str, str]:
        """Run ``tasks``; call ``finished`` once per task; return ``{name: traceback}`` of the
        tasks that failed ``retries + 1`` times."""
        queue, attempts = deque(tasks), Counter[str]()
        running: dict[Any, CellTask] = {}
        errors: dict[str, str] = {}
        cell_progress = False if self.remote else show_progress
        while queue or running:
            while queue and len(running) < self.slots:
                task = queue.popleft()
                running[self._submit(task, cell_progress)] = task
            for handle, outcome in self._wait(list(running)):
                task = running.pop(handle)
                names = [t.cell.name for t in running.values()]
                if not isinstance(outcome, BaseException):
                    finished(task.cell, outcome, None, names)
                    continue
                attempts[task.cell.name] += 1
                summary = f"{type(outcome).__name__}: {outcome}".splitlines()[0]
                if attempts[task.cell.name] <= retries:
                    if show_progress is not False:
                        print(f"[sweep] cell {task.cell.name} failed ({summary}); retry "
                              f"{attempts[task.cell.name]} of {retries}", file=sys.stderr,
                              flush=True)
                    queue.appendleft(task)
                    continue
                errors[task.cell.name] = format_failure(outcome)
                finished(task.cell, None, summary, names)
        return errors


@dataclass(eq=False)
class _Pending:
    """A serial cell not yet run (hashed by identity: it is a dict key of the running set)."""

    task: CellTask
    show_progress: bool | None


class _Serial(_Executor):
    """Cells one after another in this process (the default)."""

    remote = False

    def _submit(self, task: CellTask, show_progress: bool | None) -> Any:
        return _Pending(task, show_progress)

    def _wait(self, handles: list[Any]) -> Iterator[tuple[Any, Any]]:
        handle = handles[0]
        try:
            outcome: Any = execute_cell(handle.task, self.config.cell_cpus, handle.show_progress)
        except Exception as err:  # reported as the cell's failure, never stops the sweep
            outcome = err
        yield handle, outcome


def _init_worker(cpus: int) -> None:
    """Worker start: its thread count, and death with the driver (Linux), so that a killed
    driver leaves no worker writing checkpoints into a folder a rerun then uses."""
    torch.set_num_threads(cpus)
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


class _Processes(_Executor):
    """A pool of local worker processes (started with ``spawn``: torch is not fork-safe)."""

    def __init__(self, config: ExecutorConfig) -> None:
        super().__init__(config)
        cpus_total = os.cpu_count() or 1
        if config.workers is not None:
            self.slots = config.workers
        else:
            self.slots = max(1, cpus_total // (config.cell_cpus or 1))
        self.cpus = config.cell_cpus or max(1, cpus_total // self.slots)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.slots, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(self.cpus,))

    def __enter__(self) -> _Processes:
        self._pool = self._new_pool()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, task: CellTask, show_progress: bool | None) -> Any:
        assert self._pool is not None, "use the executor as a context manager"
        return self._pool.submit(execute_cell, task, self.cpus, False)

    def _wait(self, handles: list[Any]) -> Iterator[tuple[Any, Any]]:
        done, _ = concurrent.futures.wait(handles, return_when=concurrent.futures.FIRST_COMPLETED)
        broken = False
        for future in done:
            error = future.exception()
            broken |= isinstance(error, concurrent.futures.process.BrokenProcessPool)
            yield future, error if error is not None else future.result()
        if broken:
            # A worker died (killed, out of memory): the pool is unusable; a new one takes
            # the retries and the cells still to come.
            assert self._pool is not None
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()


class _Ray(_Executor):
    """Ray core tasks, on a local cluster or the one at ``--address``."""

    def __init__(self, config: ExecutorConfig) -> None:
        super().__init__(config)
        self.cpus = config.cell_cpus or 1
        self._started = False
        self._remote: Any = None

    def __enter__(self) -> _Ray:
        try:
            import ray
        except ImportError as err:
            raise ExecutorUnavailableError(
                "--executor ray needs Ray, an optional extra: pip install 'softlabels[ray]'"
            ) from err
        address = self.config.address
        if address not in (None, "auto", "local"):
            _check_reachable(address, self.config.connect_timeout)
        if ray.is_initialized() and address is not None:
            raise ValueError("a Ray session is already open in this process: omit --address "
                             "to use it, or call ray.shutdown() first")
        # A session this process opened itself (a notebook, a test) is used and left open.
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, logging_level="ERROR",
                         log_to_driver=False,
                         **({} if address else {"num_cpus": self._local_cpus()}),
                         runtime_env=runtime_env(sys.path))
            except (ConnectionError, RuntimeError, TimeoutError) as err:
                raise ValueError(f"cannot connect to the Ray cluster at {address!r}: {err}"
                                 ) from err
            self._started = True
        resources = ray.cluster_resources()
        slots = int(resources.get("CPU", 1) // self.cpus)
        if self.config.cell_gpus:
            slots = min(slots, int(resources.get("GPU", 0) // self.config.cell_gpus))
            if slots == 0:
                self.__exit__()
                raise ValueError(f"--cell-gpus {self.config.cell_gpus}: the Ray cluster has "
                                 f"{resources.get('GPU', 0)} GPUs")
        self.slots = max(1, slots)
        self._remote = ray.remote(execute_cell).options(
            num_cpus=self.cpus, num_gpus=self.config.cell_gpus, max_retries=0)
        return self

    def _local_cpus(self) -> int:
        if self.config.workers is not None:
            return self.config.workers * self.cpus
        return os.cpu_count() or 1

    def __exit__(self, *exc: object) -> None:
        if self._started:
            import ray

            ray.shutdown()

    def _submit(self, task: CellTask, show_progress: bool | None) -> Any:
        return self._remote.remote(task, self.cpus, False)

    def _wait(self, handles: list[Any]) -> Iterator[tuple[Any, Any]]:
        import ray

        ready, _ = ray.wait(handles, num_returns=1)
        for ref in ready:
            try:
                outcome = ray.get(ref)
            except Exception as err:  # the cell's error (RayTaskError) or a lost worker
                outcome = getattr(err, "cause", None) or err
            yield ref, outcome


def _check_reachable(address: str, timeout: float) -> None:
    """Fail within ``timeout`` seconds when nothing listens at ``address`` (HOST:PORT)."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--address must look like HOST:PORT (or auto), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ValueError(f"cannot reach a Ray cluster at {address!r} within {timeout:g} s "
                         f"({err}); start one with `ray start --head` and pass its address"
                         ) from None


def runtime_env(paths: Sequence[str]) -> dict[str, Any]:
    """Ray's ``runtime_env`` for the workers: they import studies (and user-registered ones)
    from the driver's import path ``paths``, which must exist on every node."""
    existing = [p for p in paths if p and Path(p).is_dir()]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(existing)}}
