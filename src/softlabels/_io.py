"""Atomic file writes: a crash never leaves a half-written result, checkpoint or store."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    The temporary file lives in the same folder so the final ``os.replace`` is atomic on POSIX
    and Windows. On error the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write a UTF-8 text file."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names and raw bytes of ``tensors`` (in name order)."""
    sha = hashlib.sha256()
    for name in sorted(tensors):
        sha.update(name.encode())
        # Flattened first: viewing as bytes needs a unit last stride, which an empty or 0-d
        # tensor may lack even when contiguous. The bytes, and so the digest, are unchanged.
        flat = tensors[name].detach().cpu().contiguous().reshape(-1)
        sha.update(flat.view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def torch_save(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically ``torch.save`` a state dict (or other plain container of tensors)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def torch_load(path: str | os.PathLike[str]) -> Any:
    """Load a checkpoint with ``weights_only=True``: a foreign pickle cannot run code.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for a
    truncated, corrupt or non-checkpoint one.
    """
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"checkpoint {str(target)!r} does not exist")
    try:
        return torch.load(target, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise ValueError(
            f"checkpoint {str(target)!r} is corrupt or not a softlabels checkpoint: {err}"
        ) from err
