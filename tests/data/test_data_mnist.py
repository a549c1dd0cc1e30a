"""MNIST-style IDX files: synthetic files of every kind, plus the real MNIST test set."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels.data import load_dataset
from softlabels.data.sources.mnist import read_idx

RNG = np.random.default_rng(0)


def _images(n: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("gz", [False, True])
def test_reads_raw_and_gzipped_files(tmp_path: Path, writers, gz: bool):
    images, labels = _images(5), np.array([0, 9, 3, 3, 1], dtype=np.uint8)
    writers.mnist(tmp_path, "train", images, labels, gz=gz)
    data = load_dataset("mnist", tmp_path, split="train", cache_dir=False)
    assert data.images.shape == (5, 1, 28, 28)
    assert data.images.dtype == torch.float32
    torch.testing.assert_close(
        data.images, torch.from_numpy(images.astype(np.float32) / 255)[:, None], rtol=0, atol=0
    )
    assert data.labels.tolist() == [0, 9, 3, 3, 1]
    assert data.info.mean == (0.1307,)
    assert data.info.std == (0.3081,)
    assert data.info.class_names == tuple(str(d) for d in range(10))


def test_torchvision_layout_is_found(tmp_path: Path, writers):
    writers.mnist(tmp_path / "MNIST" / "raw", "test", _images(2), np.array([1, 2]), gz=True)
    data = load_dataset("mnist", tmp_path, split="test", cache_dir=False)
    assert data.labels.tolist() == [1, 2]


def test_fashion_mnist_class_names(tmp_path: Path, writers):
    writers.mnist(tmp_path, "test", _images(3), np.array([0, 8, 9]))
    data = load_dataset("fashion_mnist", tmp_path, split="test", cache_dir=False)
    assert data.info.class_names[0] == "T-shirt/top"
    assert data.info.class_names[9] == "Ankle boot"
    assert len(data.info.class_names) == 10


def test_missing_files_name_them_and_suggest_download(tmp_path: Path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", tmp_path, split="train")
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message
    assert "train-labels-idx1-ubyte" in message
    assert str(tmp_path.resolve()) in message
    assert "download=True" in message


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file_is_reported_by_name(tmp_path: Path, writers, gz: bool):
    suffix = ".gz" if gz else ""
    writers.idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", _images(4), gz=gz, cut=100)
    writers.idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.arange(4), gz=gz)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*truncated"):
        load_dataset("mnist", tmp_path, split="test", cache_dir=False)


def test_wrong_magic_number_is_reported(tmp_path: Path, writers):
    writers.idx(tmp_path / "t10k-images-idx3-ubyte", _images(2))
    # A labels file whose header claims 3 dimensions (an image file in the labels' place).
    writers.idx(tmp_path / "t10k-labels-idx1-ubyte", _images(2))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*magic number 0x00000803"):
        load_dataset("mnist", tmp_path, split="test", cache_dir=False)


def test_wrong_type_code_is_reported(tmp_path: Path, writers):
    path = writers.idx(tmp_path / "x-idx3-ubyte", _images(1), magic=0x0D03)  # 0x0D = float
    with pytest.raises(ValueError, match="magic number 0x00000d03"):
        read_idx(path, 3)


def test_trailing_bytes_are_reported(tmp_path: Path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]))  # header says 2 labels, holds 3
    with pytest.raises(ValueError, match="longer than its header says"):
        read_idx(path, 1)


def test_corrupt_gzip_is_reported(tmp_path: Path, writers):
    writers.idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(3), gz=True)
    good = gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 100)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz.*corrupt or truncated gzip"):
        load_dataset("mnist", tmp_path, split="test", cache_dir=False)


def test_label_count_mismatch_is_reported(tmp_path: Path, writers):
    writers.idx(tmp_path / "t10k-images-idx3-ubyte", _images(3))
    writers.idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(2))
    with pytest.raises(ValueError, match=r"holds 2 labels but .* holds 3 images"):
        load_dataset("mnist", tmp_path, split="test", cache_dir=False)


def test_label_out_of_range_is_reported(tmp_path: Path, writers):
    writers.idx(tmp_path / "t10k-images-idx3-ubyte", _images(2))
    writers.idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([1, 10]))
    with pytest.raises(ValueError, match="label 10"):
        load_dataset("mnist", tmp_path, split="test", cache_dir=False)


# --- real data ---------------------------------------------------------------------------


def test_real_mnist_test_set(test_data_root: Path, cache_dir: Path):
    root = test_data_root / "mnist"
    if not (root / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST test files not found in {root}")
    data = load_dataset("mnist", root, split="test", cache_dir=cache_dir)
    assert data.images.shape == (10000, 1, 28, 28)
    assert data.images.dtype == torch.float32
    assert float(data.images.min()) == 0.0
    assert float(data.images.max()) == 1.0
    counts = torch.bincount(data.labels, minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # Mean pixel of the MNIST test set, a published figure (~0.1325), close to the train 0.1307.
    assert float(data.images.mean()) == pytest.approx(0.1325, abs=2e-3)
    again = load_dataset("mnist", root, split="test", cache_dir=cache_dir)
    assert torch.equal(data.images, again.images)
    assert torch.equal(data.labels, again.labels)
