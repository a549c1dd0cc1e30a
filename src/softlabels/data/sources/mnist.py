"""MNIST-style IDX files: MNIST and Fashion-MNIST.

Expected files (each either raw or gzipped with a ``.gz`` suffix)::

    train-images-idx3-ubyte  train-labels-idx1-ubyte     split "train" (60000 images)
    t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte      split "test"  (10000 images)

They are looked for in ``root``, ``root/raw`` and torchvision's ``root/MNIST/raw``
(``root/FashionMNIST/raw`` for Fashion-MNIST). Images are ``(N, 1, 28, 28)``.

The IDX format (http://yann.lecun.com/exdb/mnist/) is a 4-byte magic number -- two zero bytes,
a type code (0x08 = unsigned byte) and the number of dimensions -- then one big-endian uint32 per
dimension, then the data. :func:`read_idx` checks all of it, so a truncated download or a
swapped file is reported with its name instead of producing garbage images.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from functools import partial
from pathlib import Path

import numpy as np

from .base import RawSplit, Source, SplitPlan, need_root

_IDX_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def _read_bytes(path: Path) -> bytes:
    """Return the (decompressed) content of ``path``; gzip is detected by its magic bytes."""
    data = path.read_bytes()
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:  # bad header, truncated stream, bad CRC
        raise ValueError(f"{str(path)!r} is a corrupt or truncated gzip file: {err}") from err


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions.

    Args:
        path: the file, raw or gzip-compressed.
        ndim: the number of dimensions it must have (3 for images, 1 for labels).

    Returns:
        A ``uint8`` array of the shape stored in the header.

    Raises:
        ValueError: naming the file, if the magic number, the type code, the number of
            dimensions or the data length (truncated or trailing bytes) is wrong.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{str(path)!r} is too short ({len(data)} bytes) to be an IDX file")
    magic = int.from_bytes(data[:4], "big")
    expected_magic = (_IDX_UBYTE << 8) | ndim
    if magic != expected_magic:
        raise ValueError(
            f"{str(path)!r} has magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(IDX unsigned bytes with {ndim} dimension{'s' if ndim > 1 else ''}); "
            "is it the right file, or a corrupt one?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{str(path)!r} is truncated inside its IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(
            f"{str(path)!r} is {what}: header {dims} needs {expected} bytes, file has {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _file_names(split: str) -> tuple[str, str]:
    prefix = _SPLIT_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read(images_path: Path, labels_path: Path, class_names: tuple[str, ...]) -> RawSplit:
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{str(labels_path)!r} holds {labels.shape[0]} labels but {str(images_path)!r} "
            f"holds {images.shape[0]} images"
        )
    if labels.size and int(labels.max()) >= len(class_names):
        raise ValueError(
            f"{str(labels_path)!r} holds label {int(labels.max())}, expected values in "
            f"[0, {len(class_names)})"
        )
    return RawSplit(
        images=np.ascontiguousarray(images[:, None, :, :]),
        labels=labels.astype(np.int64),
        class_names=class_names,
    )


def _locate(root: Path | None, split: str, *, torchvision_dir: str,
            class_names: tuple[str, ...]) -> SplitPlan:
    root = need_root(root, torchvision_dir)
    folders = [root, root / "raw", root / torchvision_dir / "raw"]
    names = _file_names(split)
    for folder in folders:
        found = [_find(folder, name) for name in names]
        if all(found):
            images_path, labels_path = found  # type: ignore[misc]
            return SplitPlan(
                origin=str(folder),
                files=(images_path, labels_path),
                read=partial(_read, images_path, labels_path, class_names),
            )
    searched = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(
        f"split {split!r} needs the IDX files {names[0]}[.gz] and {names[1]}[.gz]; "
        f"not found in {searched}"
    )


MNIST = Source(
    name="mnist",
    description="MNIST handwritten digits, IDX files (28x28 grey, 10 classes)",
    locate=partial(_locate, torchvision_dir="MNIST", class_names=MNIST_CLASSES),
    mean=(0.1307,),
    std=(0.3081,),
)

FASHION_MNIST = Source(
    name="fashion_mnist",
    description="Fashion-MNIST clothing images, IDX files (28x28 grey, 10 classes)",
    locate=partial(_locate, torchvision_dir="FashionMNIST", class_names=FASHION_MNIST_CLASSES),
    mean=(0.2860,),
    std=(0.3530,),
)
