"""The output folder of a study: its effective config, guarded against mixing runs.

Nothing here deletes a user's results: a folder holding another run is refused, and
``--overwrite`` renames it aside (``<out>.replaced-<date>-<time>``) before a fresh run starts.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import sys
import time
from pathlib import Path
from typing import Any

from .. import __version__
from .._io import write_json
from ..configuration import renamed_value, upgrade_fields
from ..results import ResultsLog

__all__ = ["FolderInUseError", "move_aside", "prepare_run_folder", "read_rows",
           "read_run_config", "release_run_folder"]


class FolderInUseError(ValueError):
    """Another live process is running a study in this output folder."""


# Locks this process holds, by folder, from prepare_run_folder to release_run_folder: two
# runs resuming one folder at once would train the same cells twice and interleave their
# checkpoints.
_LOCKS: dict[Path, Any] = {}


def _lock(folder: Path) -> bool:
    """Lock ``folder`` for this process; ``False`` when this process already held it."""
    key = folder.resolve()
    if key in _LOCKS:
        return False
    handle = open(key / ".lock", "a+")  # noqa: SIM115 - held until release_run_folder
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FolderInUseError(
            f"output folder {str(folder)!r} is in use by another running softlabels process; "
            "wait for it to finish or choose another --out") from None
    _LOCKS[key] = handle
    return True


def release_run_folder(folder: str | Path) -> None:
    """Release the lock :func:`prepare_run_folder` took on ``folder`` (nothing if not held)."""
    handle = _LOCKS.pop(Path(folder).resolve(), None)
    if handle is not None:
        handle.close()


def move_aside(folder: str | Path) -> Path | None:
    """Rename the run folder ``folder`` to ``<folder>.replaced-<date>-<time>`` (never delete it).

    Runs still in use are refused: the folder (and each run folder directly inside it, as
    ``reproduce`` keeps one per study) is locked first.

    Returns:
        Where the old folder went, or ``None`` when ``folder`` did not exist or was empty.

    Raises:
        FolderInUseError: another process is running in it.
        ValueError: it holds files but is not a softlabels run folder (no ``config.json``,
            ``results.jsonl`` or ``summary.json``, not even in a sub-folder).
    """
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    markers = ("config.json", "results.jsonl", "summary.json")
    runs = [f for f in (folder, *sorted(p for p in folder.iterdir() if p.is_dir()))
            if any((f / m).exists() for m in markers)]
    if not runs:
        raise ValueError(f"--overwrite replaces only a softlabels run folder, but "
                         f"{str(folder)!r} holds other files; choose another --out")
    for run in runs:
        _lock(run)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = folder.with_name(f"{folder.name}.replaced-{stamp}")
    number = 1
    while aside.exists():
        aside = folder.with_name(f"{folder.name}.replaced-{stamp}-{number}")
        number += 1
    for run in runs:
        release_run_folder(run)  # the locks name the old path; the fresh run takes its own
    folder.rename(aside)
    print(f"softlabels: moved the previous contents of {str(folder)!r} to {str(aside)!r} "
          "(--overwrite deletes nothing)", file=sys.stderr, flush=True)
    return aside

# Fields that may change between a run and its resumption without changing its results
# (a dataset moved to another folder is still the same dataset).
_RESUMABLE_CHANGES = frozenset({"device", "out", "data_root", "logger", "data_workers"})


def prepare_run_folder(config: Any, out: str | Path, sweep_fields: tuple[str, ...] = (),
                       study: str | None = None, *, overwrite: bool = False) -> Path:
    """Create ``out`` and write ``config.json``; refuse a folder that holds another run.

    With ``overwrite`` an existing run folder is first renamed aside (:func:`move_aside`),
    so the run starts afresh and the old results are kept under another name.

    The folder is locked (``flock`` on ``.lock``) until :func:`release_run_folder` (the sweep
    driver releases it when it ends, failed or not), so a second process pointed at it fails
    with :class:`FolderInUseError` instead of corrupting it; a refused folder is not left
    locked.
    Resuming is allowed when the stored config equals ``config`` up to the device, the folders,
    fields the stored config predates (when they hold their default) and the ``sweep_fields``
    (the axes of a sweep, such as seeds or label modes: extending them adds cells next to the
    finished ones, whose settings are unchanged). Any other difference
    would mix results of different settings, so it raises ``ValueError`` naming the fields.
    ``study`` is recorded too (``softlabels report`` reads it), and a folder of another study
    is refused.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output folder {str(folder)!r} is an existing file; choose a folder "
                         "with --out")
    if overwrite:
        move_aside(folder)
    folder.mkdir(parents=True, exist_ok=True)
    locked_here = _lock(folder)
    try:
        _record_config(config, folder, sweep_fields, study)
    except BaseException:
        if locked_here:
            release_run_folder(folder)
        raise
    return folder


def _record_config(config: Any, folder: Path, sweep_fields: tuple[str, ...],
                   study: str | None) -> None:
    """Write ``folder/config.json``, or check that the run already there may be resumed."""
    current = dataclasses.asdict(config)
    path = folder / "config.json"
    if path.exists():
        stored_file = read_run_config(folder)
        # A run of the previous release spells renamed fields and values the old way.
        stored = upgrade_fields(type(config), stored_file["config"], warn=False)
        if study is not None and stored_file.get("study", study) != study:
            raise ValueError(f"output folder {str(folder)!r} holds a run of study "
                             f"{stored_file['study']!r}, not {study!r}; use another --out")
        normalised = json.loads(json.dumps(current))
        free = _RESUMABLE_CHANGES | set(sweep_fields)
        # A field added by a later version is absent from an older run's config; at its
        # default it does not count as a difference, so upgrading does not strand old runs.
        defaults = json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(config)
                                          if f.default is not dataclasses.MISSING}))
        differing = sorted(k for k in set(stored) | set(normalised)
                           if k not in free and stored.get(k, defaults.get(k))
                           != normalised.get(k))
        if differing:
            raise ValueError(
                f"output folder {str(folder)!r} holds a run with a different config (fields "
                f"{differing}); use a new --out folder, or --overwrite to start afresh there "
                "(the old run is renamed aside, not deleted)")
    record: dict[str, Any] = {"softlabels_version": __version__, "config": current}
    if study is not None:
        record["study"] = study
    write_json(path, record)


def read_run_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run folder: ``{"config": {...}, "study": ..., ...}``.

    Raises:
        FileNotFoundError: the folder has no ``config.json``.
        ValueError: the file is not UTF-8 JSON of that shape; the message names it.
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(Path(folder))!r} is not a softlabels run folder (no "
                                "config.json)")
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not a softlabels config file ({err}); use another "
                         "--out folder") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        raise ValueError(f"{str(path)!r} is not a softlabels config file (no 'config' "
                         "mapping); use another --out folder")
    return stored


def read_rows(config_cls: type, folder: str | Path) -> list[dict[str, Any]]:
    """The rows of ``folder/results.jsonl``, with the label modes a previous release spelled
    otherwise (``config_cls.RENAMED_VALUES``) in their current spelling, so that its finished
    cells are found by the current plan. The file itself is left as it is."""
    renamed: dict[str, dict[str, str]] = getattr(config_cls, "RENAMED_VALUES", {})
    rows = ResultsLog(Path(folder) / "results.jsonl").rows()
    for row in rows:
        for name in renamed.keys() & row.keys():
            row[name] = renamed_value(name, renamed[name], row[name], warn=False)
    return rows
