"""Plain ``.npz`` files holding ``x`` (images), ``y`` (labels) and optionally ``class_names``.

``root`` is either a ``.npz`` file -- loaded whatever ``split`` says, since the file *is* the
split -- or a folder holding ``<split>.npz`` files (``train.npz``, ``test.npz``...).

Arrays:

* ``x``: ``(N, H, W)`` grey, ``(N, H, W, C)`` or ``(N, C, H, W)`` with ``C`` in {1, 3}; the layout
  is channels-last when the last axis has 1 or 3 entries, else channels-first. ``uint8`` values
  are read as 0..255; float values must already lie in [0, 1]. Other dtypes are refused rather
  than guessed (an ``int64`` array could hold 0..255 or 0..65535).
* ``y``: ``(N,)`` non-negative integers.
* ``class_names`` (optional): strings, one per class. Without it, the names of ``train.npz`` in
  the same folder are used if present, else ``"0", "1", ...`` up to the largest label.

Files are opened with ``allow_pickle=False``: a ``.npz`` with object arrays is refused.
``DatasetInfo`` mean/std come from ``train.npz`` of the same folder when it exists, else from the
loaded file itself. Not cached: reading an ``.npz`` is already as fast as reading the cache.
"""

from __future__ import annotations

import zipfile
from functools import partial
from pathlib import Path

import numpy as np

from .base import RawSplit, Source, SplitPlan, listing, need_root, plain_split_name


def _open(path: Path) -> np.lib.npyio.NpzFile:
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is not a readable .npz file: {err}") from err


def _get(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as err:  # object arrays need pickle, which is disabled
        raise ValueError(
            f"{str(path)!r}: array {key!r} holds Python objects (saved with pickle), which are "
            "refused; store numbers and strings only"
        ) from err
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{str(path)!r}: array {key!r} is corrupt: {err}") from err


def _class_names(path: Path) -> tuple[str, ...] | None:
    with _open(path) as archive:
        if "class_names" not in archive.files:
            return None
        names = _get(archive, "class_names", path)
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise ValueError(
            f"{str(path)!r}: class_names must be a 1-D array of strings, got {names.dtype} "
            f"{names.shape}"
        )
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())


def _images(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[3] in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        elif x.shape[1] not in (1, 3):
            raise ValueError(
                f"{str(path)!r}: x of shape {x.shape} has no channel axis of size 1 or 3 "
                "(expected (N, H, W, C) or (N, C, H, W))"
            )
    else:
        raise ValueError(
            f"{str(path)!r}: x must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape "
            f"{x.shape}"
        )
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind != "f":
        raise ValueError(
            f"{str(path)!r}: x must be uint8 (0..255) or float in [0, 1], got dtype {x.dtype}"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        raise ValueError(f"{str(path)!r}: x holds NaN or infinite values")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(
            f"{str(path)!r}: float x must lie in [0, 1], got range [{x.min()}, {x.max()}]"
        )
    return x


def _labels(y: np.ndarray, n: int, path: Path) -> np.ndarray:
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{str(path)!r}: y must have shape ({n},) to match x, got {y.shape}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"{str(path)!r}: y must hold integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"{str(path)!r}: y must be >= 0, got {int(y.min())}")
    return y


def read_npz(path: Path, fallback_names: Path | None = None) -> RawSplit:
    """Read and validate one ``.npz`` file (see the module docstring for the format).

    Args:
        path: the file.
        fallback_names: a file whose ``class_names`` are used when ``path`` has none.

    Raises:
        ValueError: naming the file and the array that is missing or malformed.
    """
    with _open(path) as archive:
        missing = [k for k in ("x", "y") if k not in archive.files]
        if missing:
            raise ValueError(
                f"{str(path)!r} lacks array(s) {missing}; it holds {sorted(archive.files)} "
                "(expected x: images, y: labels, optional class_names)"
            )
        x = _images(_get(archive, "x", path), path)
        y = _labels(_get(archive, "y", path), x.shape[0], path)
    names = _class_names(path)
    if names is None and fallback_names is not None and fallback_names.is_file():
        names = _class_names(fallback_names)
    if names is None:
        names = tuple(str(i) for i in range(int(y.max()) + 1 if y.size else 1))
    if y.size and int(y.max()) >= len(names):
        raise ValueError(
            f"{str(path)!r}: y holds label {int(y.max())} but there are only {len(names)} "
            "class names"
        )
    return RawSplit(images=x, labels=y, class_names=names)


def _locate(root: Path | None, split: str) -> SplitPlan:
    root = need_root(root, "npz")
    if root.is_file():
        return SplitPlan(origin=str(root), files=(root,), read=partial(read_npz, root))
    plain_split_name(split)
    path = root / f"{split}.npz"
    if not path.is_file():
        present = (
            [n[: -len(".npz")] for n in listing(root, dirs=False) if n.endswith(".npz")]
            if root.is_dir()
            else []
        )
        where = "folder" if root.is_dir() else "missing folder"
        raise FileNotFoundError(
            f"{str(path)!r} not found: npz root {str(root)!r} ({where}) must be a .npz file or "
            f"a folder of <split>.npz files; splits present: {present}"
        )
    return SplitPlan(
        origin=str(path), files=(path,), read=partial(read_npz, path, root / "train.npz")
    )


NPZ = Source(
    name="npz",
    description="a .npz file (or folder of <split>.npz) with arrays x, y[, class_names]",
    locate=_locate,
    splits=None,
    cacheable=False,
)
