"""CIFAR-10/100: synthetic pickles in the official format, ImageFolder trees, the real data."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels.data import load_dataset, registry
from softlabels.data.sources.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES

RNG = np.random.default_rng(1)


def _planes(n: int) -> np.ndarray:
    """(n, 3, 32, 32) uint8 images."""
    return RNG.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def _write_cifar10(folder: Path, writers, per_batch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for i in range(1, 6):
        batch = _planes(per_batch)
        batch_labels = [(i + j) % 10 for j in range(per_batch)]
        writers.cifar_batch(folder / f"data_batch_{i}", batch, batch_labels)
        images.append(batch)
        labels.extend(batch_labels)
    writers.cifar_batch(folder / "test_batch", _planes(3), [9, 0, 5])
    writers.pickle(folder / "batches.meta", {
        b"label_names": [n.encode() for n in CIFAR10_CLASSES], b"num_vis": 3072,
    })  # fmt: skip
    return np.concatenate(images), np.array(labels)


def test_cifar10_pickles_in_their_folder(tmp_path: Path, writers):
    images, labels = _write_cifar10(tmp_path / "cifar-10-batches-py", writers)
    data = load_dataset("cifar10", tmp_path, split="train", cache_dir=False)
    assert data.images.shape == (10, 3, 32, 32)
    torch.testing.assert_close(
        data.images, torch.from_numpy(images.astype(np.float32) / 255), rtol=0, atol=0
    )
    assert data.labels.tolist() == labels.tolist()
    assert data.info.class_names == CIFAR10_CLASSES
    assert data.info.mean == (0.4914, 0.4822, 0.4465)


def test_cifar_row_layout_is_red_green_blue_planes(tmp_path: Path, writers):
    # One image whose flat row is 1024 red values, then green, then blue (official layout).
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)])
    row[5] = 255  # red channel, row 0, column 5
    row[1024 + 32] = 0  # green channel, row 1, column 0
    writers.cifar_batch(tmp_path / "test_batch", row[None].astype(np.uint8), [4])
    data = load_dataset("cifar10", tmp_path, split="test", cache_dir=False)  # pickles at root
    pixels = (data.images[0] * 255).round().to(torch.int64)
    assert pixels[0, 0, 5] == 255
    assert pixels[0, 0, 4] == 10
    assert pixels[1, 1, 0] == 0
    assert pixels[1, 1, 1] == 20
    assert pixels[2].unique().tolist() == [30]
    # Without batches.meta the official class names are used.
    assert data.info.class_names == CIFAR10_CLASSES


def test_cifar100_uses_fine_labels_and_meta(tmp_path: Path, writers):
    folder = tmp_path / "cifar-100-python"
    writers.cifar_batch(folder / "test", _planes(4), [0, 99, 42, 7], label_key=b"fine_labels")
    writers.pickle(folder / "meta", {
        b"fine_label_names": [n.encode() for n in CIFAR100_CLASSES],
        b"coarse_label_names": [b"c"] * 20,
    })  # fmt: skip
    data = load_dataset("cifar100", tmp_path, split="test", cache_dir=False)
    assert data.labels.tolist() == [0, 99, 42, 7]
    assert data.info.class_names[99] == "worm"
    assert data.info.num_classes == 100
    assert data.info.std == (0.2673, 0.2564, 0.2762)


def test_missing_batch_is_named(tmp_path: Path, writers):
    _write_cifar10(tmp_path / "cifar-10-batches-py", writers)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3") as info:
        load_dataset("cifar10", tmp_path, split="train")
    assert "download=True" in str(info.value)


def test_corrupt_pickle_is_reported(tmp_path: Path, writers):
    path = writers.cifar_batch(tmp_path / "test_batch", _planes(2), [1, 2])
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"test_batch.*not a readable CIFAR pickle"):
        load_dataset("cifar10", tmp_path, split="test", cache_dir=False)


def test_pickle_without_data_key_is_reported(tmp_path: Path, writers):
    writers.pickle(tmp_path / "test_batch", {b"labels": [1]})
    with pytest.raises(ValueError, match="lacks the keys 'data' and 'labels'"):
        load_dataset("cifar10", tmp_path, split="test", cache_dir=False)


class _Payload:
    """Unpickling this would create a file: the loader must refuse it instead."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_foreign_pickle_is_refused_not_executed(tmp_path: Path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"data": _Payload(str(marker)), b"labels": [0]}, handle, protocol=2)
    with pytest.raises(ValueError, match="refusing to load global"):
        load_dataset("cifar10", tmp_path, split="test", cache_dir=False)
    assert not marker.exists()


def test_cifar10_imagefolder_with_pngs(tmp_path: Path, writers):
    expected = {}
    for label, name in enumerate(CIFAR10_CLASSES):
        image = RNG.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        writers.png(tmp_path / "test" / name / "0000.png", image)
        expected[label] = image
    data = load_dataset("cifar10", tmp_path, split="test", cache_dir=False)
    assert data.info.class_names == CIFAR10_CLASSES
    assert data.labels.tolist() == list(range(10))
    for label, image in expected.items():
        decoded = (data.images[label] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(decoded, image)


def test_cifar100_imagefolder_prefers_canonical_order(tmp_path: Path, writers):
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    for name in CIFAR100_CLASSES:
        writers.png(tmp_path / "train" / name / "a.png", image)
    data = load_dataset("cifar100", tmp_path, split="train", cache_dir=False)
    assert data.info.class_names == CIFAR100_CLASSES
    assert data.labels.tolist() == list(range(100))


# --- real data ---------------------------------------------------------------------------


def test_real_cifar10_test_split_and_cache(test_data_root: Path, cache_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch):
    root = test_data_root / "cifar10"
    if not (root / "test").is_dir():
        pytest.skip(f"CIFAR-10 ImageFolder not found in {root}")
    first = load_dataset("cifar10", root, split="test", cache_dir=cache_dir)
    assert first.images.shape == (10000, 3, 32, 32)
    assert first.images.dtype == torch.float32
    assert torch.bincount(first.labels, minlength=10).tolist() == [1000] * 10
    assert first.info.class_names == CIFAR10_CLASSES
    assert float(first.images.min()) >= 0.0
    assert float(first.images.max()) <= 1.0
    # JPEG compression moves the statistics a little from the published per-pixel values.
    channel_means = first.images.mean(dim=(0, 2, 3)).tolist()
    assert channel_means == pytest.approx([0.4914, 0.4822, 0.4465], abs=0.01)
    assert len(list(cache_dir.glob("*.json"))) == 1

    def no_decoding() -> None:
        raise AssertionError("a cache hit must not decode the JPEGs")

    locate = registry._locate
    monkeypatch.setattr(registry, "_locate", lambda *args: dataclasses.replace(
        locate(*args), read=no_decoding))
    second = load_dataset("cifar10", root, split="test", cache_dir=cache_dir)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)


def test_numpy1_era_pickle_names_load_without_warning(tmp_path: Path):
    # The official files (Python 2, numpy 1) name numpy.core.multiarray._reconstruct.
    images = _planes(2)
    payload = pickle.dumps({b"data": images.reshape(2, -1), b"labels": [3, 4]}, protocol=2)
    if b"numpy._core.multiarray" in payload:
        payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in payload
    (tmp_path / "test_batch").write_bytes(payload)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_dataset("cifar10", tmp_path, split="test", cache_dir=False)
    assert data.labels.tolist() == [3, 4]
    torch.testing.assert_close(data.images, torch.from_numpy(images / 255).float(), rtol=0, atol=0)
