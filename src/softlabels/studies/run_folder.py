"""The output folder of a study: its effective config, guarded against mixing runs."""

from __future__ import annotations

import dataclasses
import fcntl
import json
from pathlib import Path
from typing import Any

from .. import __version__
from .._io import write_json

__all__ = ["FolderInUseError", "prepare_run_folder"]


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


def prepare_run_folder(config: Any, out: str | Path,
                       sweep_fields: tuple[str, ...] = ()) -> Path:
    """Create ``out`` and write ``config.json``; refuse a folder that holds another run.

    The folder is locked (``flock`` on ``.lock``) for the rest of this process, so a second
    process pointed at it fails with :class:`FolderInUseError` instead of corrupting it.
    Resuming is allowed when the stored config equals ``config`` up to the device, the folders,
    fields the stored config predates (when they hold their default) and the ``sweep_fields``
    (the axes of a sweep, such as seeds or label modes: extending them adds cells next to the
    finished ones, whose settings are unchanged). Any other difference
    would mix results of different settings, so it raises ``ValueError`` naming the fields.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    _lock(folder)
    current = dataclasses.asdict(config)
    path = folder / "config.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))["config"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{str(path)!r} is not a softlabels config file; use another "
                             "--out folder") from err
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
    write_json(path, {"softlabels_version": __version__, "config": current})
    return folder
