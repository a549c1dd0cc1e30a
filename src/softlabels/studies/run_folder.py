"""The output folder of a study: its effective config, guarded against mixing runs."""

from __future__ import annotations

import dataclasses
import fcntl
import json
from pathlib import Path
from typing import Any

from .. import __version__
from .._io import write_json

__all__ = ["FolderInUseError", "prepare_run_folder", "read_run_config"]


class FolderInUseError(ValueError):
    """Another live process is running a study in this output folder."""


# Locks held for the life of the process, by folder: two runs resuming one folder at once
# would train the same cells twice and interleave their checkpoints.
_LOCKS: dict[Path, Any] = {}


def _lock(folder: Path) -> None:
    key = folder.resolve()
    if key in _LOCKS:
        return  # this process already holds it (a study rerun in the same interpreter)
    handle = open(key / ".lock", "a+")  # noqa: SIM115 - held open for the process lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FolderInUseError(
            f"output folder {str(folder)!r} is in use by another running softlabels process; "
            "wait for it to finish or choose another --out") from None
    _LOCKS[key] = handle

# Fields that may change between a run and its resumption without changing its results
# (a dataset moved to another folder is still the same dataset).
_RESUMABLE_CHANGES = frozenset({"device", "out", "data_root"})


def prepare_run_folder(config: Any, out: str | Path, sweep_fields: tuple[str, ...] = (),
                       study: str | None = None) -> Path:
    """Create ``out`` and write ``config.json``; refuse a folder that holds another run.

    The folder is locked (``flock`` on ``.lock``) for the rest of this process, so a second
    process pointed at it fails with :class:`FolderInUseError` instead of corrupting it.
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
    folder.mkdir(parents=True, exist_ok=True)
    _lock(folder)
    current = dataclasses.asdict(config)
    path = folder / "config.json"
    if path.exists():
        stored_file = read_run_config(folder)
        stored = stored_file["config"]
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
                f"{differing}); use a new --out folder or delete that one")
    record: dict[str, Any] = {"softlabels_version": __version__, "config": current}
    if study is not None:
        record["study"] = study
    write_json(path, record)
    return folder


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
