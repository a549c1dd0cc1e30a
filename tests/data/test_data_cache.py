"""The decoded-split cache: hits, invalidation, corruption, atomicity, opting out."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels.data import default_cache_dir, load_dataset
from softlabels.data.sources import mnist

RNG = np.random.default_rng(4)


@pytest.fixture
def mnist_root(tmp_path: Path, writers) -> Path:
    root = tmp_path / "mnist"
    images = RNG.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    writers.mnist(root, "test", images, np.array([0, 1, 2, 3, 4, 5]), gz=True)
    return root


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.json"))


def _fail(*args, **kwargs):
    raise AssertionError("decoded again although the cache should have been used")


def test_second_load_reads_the_cache(mnist_root: Path, cache_dir: Path, monkeypatch):
    first = load_dataset("mnist", mnist_root, split="test", cache_dir=cache_dir)
    assert len(_entries(cache_dir)) == 1
    monkeypatch.setattr(mnist, "read_idx", _fail)
    second = load_dataset("mnist", mnist_root, split="test", cache_dir=cache_dir)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    assert second.info == first.info


def test_changed_source_file_invalidates_the_entry(mnist_root: Path, cache_dir: Path, writers):
    load_dataset("mnist", mnist_root, split="test", cache_dir=cache_dir)
    labels = mnist_root / "t10k-labels-idx1-ubyte.gz"
    writers.idx(labels, np.array([9, 9, 9, 9, 9, 9]), gz=True)
    os.utime(labels, ns=(10**18, 10**18))  # a distinct mtime even on coarse file systems
    data = load_dataset("mnist", mnist_root, split="test", cache_dir=cache_dir)
    assert data.labels.tolist() == [9] * 6
    assert len(_entries(cache_dir)) == 1, "the stale entry should have been removed"


def test_renamed_class_folder_invalidates_the_entry(tmp_path: Path, cache_dir: Path, writers):
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    writers.png(tmp_path / "train" / "b" / "0.png", image)
    writers.png(tmp_path / "test" / "b" / "0.png", image)
    assert load_dataset("imagefolder", tmp_path, cache_dir=cache_dir).labels.tolist() == [0]
    # A new class in another split shifts the labels of this one although its files are equal.
    writers.png(tmp_path / "test" / "a" / "0.png", image)
    data = load_dataset("imagefolder", tmp_path, cache_dir=cache_dir)
    assert data.info.class_names == ("a", "b")
    assert data.labels.tolist() == [1]


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "bad_json", "delete_labels"])
def test_corrupt_entry_is_detected_and_rebuilt(
    mnist_root: Path, cache_dir: Path, damage: str, caplog: pytest.LogCaptureFixture
):
    reference = load_dataset("mnist", mnist_root, split="test", cache_dir=False)
    load_dataset("mnist", mnist_root, split="test", cache_dir=cache_dir)
    images_file = next(cache_dir.glob("*.images.npy"))
    if damage == "flip_byte":
        raw = bytearray(images_file.read_bytes())
        raw[-10] ^= 0xFF  # a pixel, not the header: only the checksum can notice
        images_file.write_bytes(bytes(raw))
    elif damage == "truncate":
        images_file.write_bytes(images_file.read_bytes()[:-100])
    elif damage == "bad_json":
        next(cache_dir.glob("*.json")).write_text("{ not json")
    else:
        next(cache_dir.glob("*.labels.npy")).unlink()
    with caplog.at_level(logging.WARNING, logger="softlabels.data.cache"):
        data = load_dataset("mnist", mnist_root, split="test", cache_dir=cache_dir)
    assert torch.equal(data.images, reference.images)
    assert torch.equal(data.labels, reference.labels)
    assert "rebuilding" in caplog.text
    # The rebuilt entry is valid: a third load uses it silently.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="softlabels.data.cache"):
        again = load_dataset("mnist", mnist_root, split="test", cache_dir=cache_dir)
    assert torch.equal(again.images, reference.images)
    assert caplog.text == ""


def test_meta_records_checksums_and_no_temporary_files_remain(mnist_root: Path, cache_dir: Path):
    load_dataset("mnist", mnist_root, split="test", cache_dir=cache_dir)
    meta = json.loads(next(cache_dir.glob("*.json")).read_text())
    assert meta["images"]["shape"] == [6, 1, 28, 28]
    assert meta["images"]["dtype"] == "uint8"
    assert len(meta["images"]["sha256"]) == 64  # SHA-256 in hex
    assert [p.name for p in cache_dir.iterdir() if p.name.startswith(".")] == []
    assert len(list(cache_dir.iterdir())) == 3


def test_cache_can_be_disabled_and_defaults_to_the_env_folder(mnist_root: Path, tmp_path: Path,
                                                              monkeypatch):  # fmt: skip
    default = tmp_path / "env-cache"
    monkeypatch.setenv("SOFTLABELS_CACHE", str(default))
    assert default_cache_dir() == default
    load_dataset("mnist", mnist_root, split="test", cache_dir=False)
    assert not default.exists()
    load_dataset("mnist", mnist_root, split="test")
    assert len(_entries(default)) == 1


def test_default_cache_dir_without_env(monkeypatch):
    monkeypatch.delenv("SOFTLABELS_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "softlabels"


def test_two_roots_get_two_entries(tmp_path: Path, cache_dir: Path, writers):
    for name, label in (("one", 1), ("two", 2)):
        writers.mnist(tmp_path / name, "test", np.zeros((1, 28, 28), np.uint8), np.array([label]))
    assert load_dataset("mnist", tmp_path / "one", "test", cache_dir=cache_dir).labels.tolist() \
        == [1]  # fmt: skip
    assert load_dataset("mnist", tmp_path / "two", "test", cache_dir=cache_dir).labels.tolist() \
        == [2]  # fmt: skip
    assert len(_entries(cache_dir)) == 2


def test_unusable_cache_folder_still_returns_the_data(
    mnist_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with caplog.at_level(logging.WARNING):
        data = load_dataset("mnist", mnist_root, split="test", cache_dir=not_a_folder)
    assert data.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert "could not write the cache entry" in caplog.text
