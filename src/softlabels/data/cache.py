"""On-disk cache of decoded splits, so that a second load skips decoding.

Layout, one entry per (dataset, split, root) in the cache folder::

    <name>-<split>-<root digest>-<content key>.images.npy   (N, C, H, W) uint8 or float32
    <name>-<split>-<root digest>-<content key>.labels.npy   (N,) int64
    <name>-<split>-<root digest>-<content key>.json         meta: shapes, SHA-256s, class
                                                            names, channel mean/std, source

* The content key hashes the cache format version, the dataset name, the split, the resolved
  root, anything else the source says changes the result (class order), and a fingerprint of
  the source files: their relative paths, sizes and modification times. Editing, adding,
  removing or renaming a file gives a new key; the entry of the old key is then deleted.
* Every file is written atomically (temporary file + rename) and the meta last, so a reader
  never sees a half-written entry. The meta holds the SHA-256 of both arrays and a SHA-256 of
  itself (class names and statistics included), and a served entry must also meet the data
  contracts (labels in [0, C), float images finite and in [0, 1], one finite mean and std >= 0
  per channel). A truncated, altered or impossible entry, or one whose ``.npy`` header numpy
  cannot parse, is detected, logged, deleted and rebuilt, never returned.
* A checksum detects damage and edits, not a deliberate forgery: whoever can write the cache
  folder can write a consistent entry. Keep the folder as private as the data it caches.
* Folder: the ``cache_dir`` argument; ``None`` means ``$SOFTLABELS_CACHE`` if set and non-empty,
  else ``~/.cache/softlabels``; ``False`` disables caching.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._io import atomic_path, write_json
from .sources.base import RawSplit

logger = logging.getLogger(__name__)

# 2: SHA-256 of the arrays and of the meta (1 had CRC32s of the arrays only).
CACHE_FORMAT = 2
CACHE_ENV = "SOFTLABELS_CACHE"

CacheDir = str | os.PathLike[str] | Literal[False] | None


def default_cache_dir() -> Path:
    """``$SOFTLABELS_CACHE`` if set and non-empty, else ``~/.cache/softlabels``."""
    env = os.environ.get(CACHE_ENV, "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "softlabels"


def resolve_cache_dir(cache_dir: CacheDir) -> Path | None:
    """Turn the ``cache_dir`` argument into a folder, or ``None`` when caching is off."""
    if cache_dir is False:
        return None
    if cache_dir is None:
        return default_cache_dir()
    if cache_dir is True or not isinstance(cache_dir, str | os.PathLike):
        raise TypeError(
            f"cache_dir must be a path, None (default folder) or False (no cache), got "
            f"{cache_dir!r}"
        )
    return Path(cache_dir).expanduser()


def fingerprint(files: tuple[str | Path, ...], root: str | Path) -> str:
    """Hash of the paths (relative to ``root`` where possible), sizes and mtimes of ``files``.

    Reads no file content: for 50000 images this is one ``stat`` each (~0.1 s), against seconds
    for decoding. A change that keeps both size and modification time is not detected.
    """
    digest = hashlib.sha256()
    digest.update(f"{len(files)}\n".encode())
    prefix = os.path.join(os.fspath(root), "")
    # Strings and os.stat rather than pathlib: this runs on every load of 50000-file trees.
    for path in files:
        name = os.fspath(path)
        stat = os.stat(name)
        if name.startswith(prefix):
            name = name[len(prefix) :]
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40] or "_"


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


def _meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the meta without its own ``sha256`` field, as canonical JSON."""
    body = {key: value for key, value in meta.items() if key != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_array(path: Path, spec: object) -> np.ndarray:
    """The array at ``path`` if it matches ``spec`` (shape, dtype, SHA-256), else ``ValueError``.

    numpy's header parser raises ``tokenize.TokenError`` or ``SyntaxError`` for some damaged
    headers; every failure to parse becomes a ``ValueError`` so that the caller rebuilds.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except OSError:
        raise
    except Exception as err:
        raise ValueError(f"{path.name} is not a readable .npy file ({type(err).__name__}: "
                         f"{err})") from err
    if not isinstance(array, np.ndarray) or _spec(array) != spec:
        raise ValueError(f"{path.name}: shape, dtype or checksum differs from the meta")
    return array


@dataclass(frozen=True)
class CacheEntry:
    """One cached split: three files sharing ``stem`` in ``folder``."""

    folder: Path
    stem: str  # <name>-<split>-<root digest>-<content key>
    group: str  # <name>-<split>-<root digest>-: older versions of the same source share it
    key: str

    @classmethod
    def create(
        cls, folder: Path, name: str, split: str, root: str, files: tuple[str | Path, ...],
        extra: tuple[str, ...] = (),
    ) -> CacheEntry:  # fmt: skip
        """Entry of a split read from ``files`` under the (resolved) ``root``."""
        root_digest = hashlib.sha256(root.encode()).hexdigest()[:10]
        payload = json.dumps(
            [CACHE_FORMAT, name, split, root, list(extra), fingerprint(files, root)]
        )
        key = hashlib.sha256(payload.encode()).hexdigest()[:20]
        group = f"{_slug(name)}-{_slug(split)}-{root_digest}-"
        return cls(folder=folder, stem=group + key, group=group, key=key)

    @property
    def images_path(self) -> Path:
        return self.folder / f"{self.stem}.images.npy"

    @property
    def labels_path(self) -> Path:
        return self.folder / f"{self.stem}.labels.npy"

    @property
    def meta_path(self) -> Path:
        return self.folder / f"{self.stem}.json"

    def read_meta(self) -> dict[str, Any] | None:
        """The entry's meta if it exists and belongs to this key, else ``None``."""
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            self._discard(f"unreadable meta ({err})")
            return None
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or (
            meta.get("key") != self.key
        ):
            self._discard("meta of another format or key")
            return None
        return meta

    def load(self) -> tuple[RawSplit, dict[str, Any]] | None:
        """Return the cached split and its meta, or ``None`` (missing or corrupt entry)."""
        meta = self.read_meta()
        if meta is None:
            return None
        try:
            if meta.get("sha256") != _meta_digest(meta):
                raise ValueError("the meta does not match its checksum")
            images = read_array(self.images_path, meta["images"])
            labels = read_array(self.labels_path, meta["labels"])
            raw = RawSplit(images=images, labels=labels,
                           class_names=_class_names(meta["class_names"]))
            _check_contents(raw, meta)
        except (OSError, ValueError, TypeError, KeyError, EOFError) as err:
            self._discard(f"corrupt entry ({err})")
            return None
        return raw, meta

    def store(self, raw: RawSplit, extra_meta: dict[str, Any]) -> None:
        """Write the entry atomically (arrays first, meta last) and drop stale versions."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for path, array in ((self.images_path, raw.images), (self.labels_path, raw.labels)):
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                # Through a handle: np.save would append ".npy" to the temporary name.
                np.save(handle, array, allow_pickle=False)
        meta = {
            "format": CACHE_FORMAT,
            "key": self.key,
            "images": _spec(raw.images),
            "labels": _spec(raw.labels),
            "class_names": list(raw.class_names),
            **extra_meta,
        }
        # Through JSON first, so that the digest is of exactly what a reader will parse.
        meta = json.loads(json.dumps(meta, default=str))
        meta["sha256"] = _meta_digest(meta)
        write_json(self.meta_path, meta)
        self._remove_stale()

    def _files(self) -> tuple[Path, Path, Path]:
        return self.meta_path, self.images_path, self.labels_path

    def _discard(self, why: str) -> None:
        logger.warning("cache entry %s is unusable (%s); rebuilding it", self.stem, why)
        for path in self._files():  # meta first: without it the entry is invisible
            # OSError: e.g. the cache "folder" is a file; there is then nothing to delete.
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def _remove_stale(self) -> None:
        """Delete entries of the same dataset, split and root with another content key."""
        for path in self.folder.glob(f"{self.group}*"):
            if not path.name.startswith(self.stem + ".") and not path.name.startswith("."):
                path.unlink(missing_ok=True)


def _spec(array: np.ndarray) -> dict[str, Any]:
    return {"shape": list(array.shape), "dtype": str(array.dtype), "sha256": _sha256(array)}


def _class_names(names: object) -> tuple[str, ...]:
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"class_names must be a non-empty list of strings, got {names!r}")
    return tuple(names)


def _check_contents(raw: RawSplit, meta: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless the entry meets the data contracts of a decoded split."""
    num_classes = len(raw.class_names)
    if raw.labels.size and (raw.labels.min() < 0 or raw.labels.max() >= num_classes):
        raise ValueError(f"labels outside [0, {num_classes})")
    if raw.images.dtype == np.float32 and raw.images.size and not (
        np.isfinite(raw.images).all() and raw.images.min() >= 0 and raw.images.max() <= 1
    ):
        raise ValueError("float images not finite or outside [0, 1]")
    channels = raw.images.shape[1]
    for name in ("mean", "std"):
        if name not in meta:
            continue
        values = meta[name]
        if not isinstance(values, list) or len(values) != channels or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            raise ValueError(f"{name} must be {channels} finite numbers, got {values!r}")
        if name == "std" and min(values) < 0:
            raise ValueError(f"std must be >= 0, got {values!r}")
