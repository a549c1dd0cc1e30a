"""Fixtures for the data tests: an isolated environment and writers of synthetic files.

The writers produce each format from its specification (IDX header bytes, CIFAR pickle dicts
with byte keys, PNG files via PIL), independently of the loaders under test.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test reads the user's data root or writes to the user's cache."""
    monkeypatch.delenv("SOFTLABELS_DATA", raising=False)
    monkeypatch.setenv("SOFTLABELS_CACHE", str(tmp_path_factory.mktemp("default-cache")))


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False, magic: int | None = None,
              cut: int = 0) -> Path:  # fmt: skip
    """Write ``array`` (uint8) as an IDX file; ``magic`` overrides, ``cut`` drops final bytes."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">I", magic if magic is not None else 0x0800 | array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    if cut:
        payload = payload[:-cut]
    if gz:
        payload = gzip.compress(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def write_mnist(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, *,
                gz: bool = False) -> tuple[Path, Path]:  # fmt: skip
    prefix = {"train": "train", "test": "t10k"}[split]
    suffix = ".gz" if gz else ""
    return (
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz),
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz),
    )


def write_pickle(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)
    return path


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], *,
                      label_key: bytes = b"labels") -> Path:  # fmt: skip
    """Official layout: dict with byte keys, data (N, 3072) uint8 rows of R, G, B planes."""
    images = np.asarray(images, dtype=np.uint8)
    obj = {
        b"batch_label": b"synthetic batch",
        label_key: list(labels),
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    if label_key == b"fine_labels":
        obj[b"coarse_labels"] = [0] * len(images)
    return write_pickle(path, obj)


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8 as PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def writers() -> SimpleNamespace:
    """The writer functions of this module, for tests to build fixtures on disk."""
    return SimpleNamespace(
        idx=write_idx,
        mnist=write_mnist,
        pickle=write_pickle,
        cifar_batch=write_cifar_batch,
        png=write_png,
    )


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
