"""Damaged, edited and forged cache entries are never served: they are logged and rebuilt.

The digests a consistent forgery needs are computed here from the documented format (SHA-256 of
the array bytes; SHA-256 of the meta's canonical JSON without its own ``sha256``), so these
tests do not rely on the cache's own functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels.data import load_dataset

RNG = np.random.default_rng(7)


@pytest.fixture
def mnist_root(tmp_path: Path, writers) -> Path:
    root = tmp_path / "mnist"
    images = RNG.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    writers.mnist(root, "test", images, np.array([0, 1, 2, 3, 4]))
    return root


def _load(root: Path, cache_dir: Path):
    return load_dataset("mnist", root, split="test", cache_dir=cache_dir)


def _array_sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _reseal(meta: dict) -> dict:
    body = {key: value for key, value in meta.items() if key != "sha256"}
    return {**body, "sha256": hashlib.sha256(json.dumps(body, sort_keys=True).encode())
            .hexdigest()}


def _forge(cache_dir: Path, name: str, array: np.ndarray) -> None:
    """Replace one array of the entry and update the meta so that every checksum matches."""
    meta_path = next(cache_dir.glob("*.json"))
    np.save(next(cache_dir.glob(f"*.{name}.npy")), array)
    meta = json.loads(meta_path.read_text())
    meta[name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                  "sha256": _array_sha(array)}
    meta_path.write_text(json.dumps(_reseal(meta)))


def _rebuilt(root: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture,
             reason: str) -> None:
    reference = load_dataset("mnist", root, split="test", cache_dir=False)
    with caplog.at_level(logging.WARNING, logger="softlabels.data.cache"):
        data = _load(root, cache_dir)
    assert torch.equal(data.images, reference.images)
    assert torch.equal(data.labels, reference.labels)
    assert data.info.class_names == reference.info.class_names
    assert "rebuilding" in caplog.text
    assert reason in caplog.text


def test_meta_holds_sha256_of_the_arrays_and_of_itself(mnist_root: Path, cache_dir: Path):
    _load(mnist_root, cache_dir)
    meta = json.loads(next(cache_dir.glob("*.json")).read_text())
    images = np.load(next(cache_dir.glob("*.images.npy")))
    assert meta["images"]["sha256"] == _array_sha(images)
    assert meta["sha256"] == _reseal(meta)["sha256"]


# Header bytes of a (5, 1, 28, 28) uint8 .npy file, each damaged so that numpy fails in a
# different way: its tokenizer (an unclosed bracket), its literal parser, its key check.
@pytest.mark.parametrize("damage", [
    lambda h: h.replace(b"(5, 1, 28, 28)", b"((5, 1, 28, 2"),
    lambda h: h.replace(b"'descr'", b"'descr"),
    lambda h: h.replace(b"'shape'", b"'shapf'"),
    lambda h: h.replace(b"'|u1'", b"'<f8'"),
])
def test_a_malformed_npy_header_is_rebuilt(mnist_root: Path, cache_dir: Path,
                                           caplog: pytest.LogCaptureFixture,
                                           damage: Callable[[bytes], bytes]):
    _load(mnist_root, cache_dir)
    path = next(cache_dir.glob("*.images.npy"))
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1
    damaged = damage(data[:header_end])
    assert damaged != data[:header_end]
    path.write_bytes(damaged[:header_end].ljust(header_end, b" ")[:header_end - 1] + b"\n"
                     + data[header_end:])
    _rebuilt(mnist_root, cache_dir, caplog, "corrupt entry")


@pytest.mark.parametrize("edit", [
    lambda meta: meta.update(class_names=["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]),
    lambda meta: meta.update(mean=[0.5], std=[0.25]),
    lambda meta: meta["images"].update(sha256="0" * 64),
])
def test_an_edited_meta_is_rebuilt(mnist_root: Path, cache_dir: Path,
                                   caplog: pytest.LogCaptureFixture, edit) -> None:
    _load(mnist_root, cache_dir)
    meta_path = next(cache_dir.glob("*.json"))
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    _rebuilt(mnist_root, cache_dir, caplog, "does not match its checksum")


@pytest.mark.parametrize(("name", "array", "reason"), [
    ("labels", np.array([0, 1, 2, 3, 10]), "labels outside [0, 10)"),
    ("labels", np.array([0, -1, 2, 3, 4]), "labels outside [0, 10)"),
    ("images", np.full((5, 1, 28, 28), np.nan, np.float32), "not finite or outside"),
    ("images", np.full((5, 1, 28, 28), 2.0, np.float32), "not finite or outside"),
    ("images", np.zeros((5, 1, 28, 28), np.int16), "uint8 or float32"),
    ("labels", np.zeros(4, np.int64), "decoded labels must be int64 of shape (5,)"),
])
def test_a_consistently_sealed_but_impossible_entry_is_rebuilt(
    mnist_root: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture, name: str,
    array: np.ndarray, reason: str,
) -> None:
    _load(mnist_root, cache_dir)
    _forge(cache_dir, name, array)
    _rebuilt(mnist_root, cache_dir, caplog, reason)


def test_a_forged_class_count_is_rebuilt(mnist_root: Path, cache_dir: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    _load(mnist_root, cache_dir)
    meta_path = next(cache_dir.glob("*.json"))
    meta = json.loads(meta_path.read_text())
    meta["class_names"] = "0123456789"  # a string, not a list of names
    meta_path.write_text(json.dumps(_reseal(meta)))
    _rebuilt(mnist_root, cache_dir, caplog, "non-empty list of strings")


def test_an_entry_of_the_previous_format_is_not_served(mnist_root: Path, cache_dir: Path,
                                                       caplog: pytest.LogCaptureFixture):
    _load(mnist_root, cache_dir)
    meta_path = next(cache_dir.glob("*.json"))
    meta = json.loads(meta_path.read_text())
    meta["format"] = 1  # CRC32-only entries: the meta itself was not checksummed
    meta_path.write_text(json.dumps(_reseal(meta)))
    _rebuilt(mnist_root, cache_dir, caplog, "another format or key")
