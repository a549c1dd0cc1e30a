"""ImageFolder trees: ``root/<split>/<class>/<image>.{png,jpg,jpeg,bmp}``.

* Classes: the sorted union of the class folders of the requested split and of the standard
  split folders present beside it (``train``, ``val``, ``validation``, ``test``), so a class
  missing from one split does not shift the labels of the others. A source with a canonical
  class order (CIFAR) uses it when the folder names are exactly its class names.
* Order: by class, then by file name; ``ImageDataset.indices`` refer to this order.
* Images must all have the same size (nothing is resized: silently resizing would change the
  data); a different size is a ``ValueError`` naming the file. Grey and colour may be mixed:
  the split is then RGB with grey images replicated over three channels. A split made only of
  grey images has one channel. Palette, alpha and 1-bit images are converted to RGB or grey.
* Decoding thousands of small files is bound by Python overhead per file, so large splits are
  decoded by a pool of worker processes (threads do not help here: measured slower than one
  process for 32x32 JPEGs because of the GIL).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from .base import RawSplit, Source, SplitPlan, listing, need_root, plain_split_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
STANDARD_SPLITS = ("train", "val", "validation", "test")
# Below this many files, starting worker processes costs more than it saves.
PARALLEL_MIN_FILES = 2048
_CHUNK_FILES = 512


def decode_image(path: str) -> np.ndarray:
    """Decode one file to ``(H, W)`` grey or ``(H, W, 3)`` RGB ``uint8``."""
    # PIL is imported in the worker: the main process may never need it (cache hit).
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode.startswith(("I", "F")):
                array = None
            else:
                if mode not in ("L", "RGB"):
                    image = image.convert("L" if mode in ("1", "L", "LA") else "RGB")
                array = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path!r} cannot be decoded as an image: {err}") from err
    if array is None:
        raise ValueError(
            f"{path!r} has {mode!r} (16/32-bit) pixels; only 8-bit grey or colour images are "
            "supported"
        )
    return array


def _decode_chunk(paths: Sequence[str]) -> np.ndarray:
    """Decode files of one size into ``(n, H, W, C)`` ``uint8`` with C = 1 or 3."""
    arrays = [decode_image(p) for p in paths]
    size = arrays[0].shape[:2]
    for path, array in zip(paths, arrays, strict=True):
        if array.shape[:2] != size:
            raise _size_error(path, array.shape[:2], paths[0], size)
    if any(a.ndim == 3 for a in arrays):
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
        return np.stack(arrays)
    return np.stack(arrays)[..., None]


def _size_error(
    path: str, size: tuple[int, ...], ref: str, ref_size: tuple[int, ...]
) -> ValueError:
    return ValueError(
        f"{path!r} is {size[1]}x{size[0]} pixels but {ref!r} is {ref_size[1]}x{ref_size[0]}: "
        "all images of a split must have the same size (resize them beforehand)"
    )


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def decode_images(paths: Sequence[str | Path], workers: int | None = None) -> np.ndarray:
    """Decode image files of one size into a ``(N, C, H, W)`` ``uint8`` array.

    Args:
        paths: the files, in output order.
        workers: worker processes; ``None`` = one per usable CPU when there are at least
            ``PARALLEL_MIN_FILES`` files. Workers are forked, so only on Linux; elsewhere (or
            with ``workers=1``) files are decoded in this process.

    Returns:
        ``(N, C, H, W)`` ``uint8`` with ``C = 3`` if any image has colour, else ``C = 1``.

    Raises:
        ValueError: naming a file that cannot be decoded or whose size differs.
    """
    names = [str(p) for p in paths]
    if not names:
        raise ValueError("no image files to decode")
    chunks = [names[i : i + _CHUNK_FILES] for i in range(0, len(names), _CHUNK_FILES)]
    if workers is None:
        workers = _usable_cpus() if len(names) >= PARALLEL_MIN_FILES else 1
    # Forked workers start in milliseconds without re-importing torch. Fork only on Linux (on
    # macOS it is unsafe with system frameworks), and not from a daemon process (e.g. a
    # DataLoader worker), which may not start children; otherwise decode in this process.
    can_fork = sys.platform.startswith("linux") and not multiprocessing.current_process().daemon
    if workers > 1 and len(chunks) > 1 and can_fork:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context) as pool:
            decoded = list(pool.map(_decode_chunk, chunks))
    else:
        decoded = [_decode_chunk(chunk) for chunk in chunks]

    size = decoded[0].shape[1:3]
    channels = max(d.shape[3] for d in decoded)
    out = np.empty((len(names), channels, *size), dtype=np.uint8)
    start = 0
    for chunk, block in zip(chunks, decoded, strict=True):
        if block.shape[1:3] != size:
            raise _size_error(chunk[0], block.shape[1:3], chunks[0][0], size)
        # (n, H, W, 1) broadcasts over three channels when the split mixes grey and colour.
        out[start : start + len(block)] = block.transpose(0, 3, 1, 2)
        start += len(block)
    return out


def scan_split(split_dir: Path, class_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """List the image files of ``split_dir/<class>/`` in class, then file-name order.

    Returns:
        ``(paths, labels)``: paths as strings (cheaper than ``Path`` for 50000 files) and an
        ``int64`` array of class positions.
    """
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        folder = os.path.join(split_dir, name)
        if not os.path.isdir(folder):
            continue
        files = [f for f in listing(Path(folder), dirs=False) if f.lower().endswith(IMAGE_SUFFIXES)]
        paths.extend(os.path.join(folder, f) for f in files)
        labels.extend([label] * len(files))
    return paths, np.asarray(labels, dtype=np.int64)


def _read_tree(paths: list[str], labels: np.ndarray, class_names: tuple[str, ...]) -> RawSplit:
    return RawSplit(images=decode_images(paths), labels=labels, class_names=class_names)


def tree_files(
    root: Path, split: str, *, canonical: tuple[str, ...] | None = None, what: str = "ImageFolder"
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """``(paths, labels, class_names)`` of ``root/<split>/<class>/*`` (see the module
    docstring for the rules); nothing is decoded.

    Raises:
        FileNotFoundError: if the root or split folder is missing or holds no images; the message
            lists the splits that do exist.
    """
    plain_split_name(split)
    layout = f"{root}/<split>/<class>/*.png|jpg|jpeg|bmp"
    if not root.is_dir():
        raise FileNotFoundError(f"{what} root {str(root)!r} is not a folder (layout: {layout})")
    split_dir = root / split
    if not split_dir.is_dir():
        present = listing(root, dirs=True)
        raise FileNotFoundError(
            f"{what} split folder {str(split_dir)!r} not found (layout: {layout}); "
            f"split folders present in {str(root)!r}: {present}"
        )
    names: set[str] = set(listing(split_dir, dirs=True))
    for other in STANDARD_SPLITS:
        if other != split and (root / other).is_dir():
            names.update(listing(root / other, dirs=True))
    if not names:
        raise FileNotFoundError(f"{str(split_dir)!r} holds no class folders (layout: {layout})")
    class_names = canonical if canonical is not None and names == set(canonical) else tuple(
        sorted(names)
    )
    paths, labels = scan_split(split_dir, class_names)
    if not paths:
        raise FileNotFoundError(
            f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {str(split_dir)!r}/<class>/"
        )
    return paths, labels, class_names


def locate_tree(
    root: Path, split: str, *, canonical: tuple[str, ...] | None = None, what: str = "ImageFolder"
) -> SplitPlan:
    """The :class:`SplitPlan` of ``root/<split>/<class>/*`` (files from :func:`tree_files`)."""
    paths, labels, class_names = tree_files(root, split, canonical=canonical, what=what)
    return SplitPlan(
        origin=str(root / split),
        files=tuple(paths),
        read=partial(_read_tree, paths, labels, class_names),
        key_extra=class_names,
    )


def _locate(root: Path | None, split: str) -> SplitPlan:
    return locate_tree(need_root(root, "imagefolder"), split)


IMAGEFOLDER = Source(
    name="imagefolder",
    description="any ImageFolder tree root/<split>/<class>/*.png|jpg|jpeg|bmp",
    locate=_locate,
    splits=None,
)
