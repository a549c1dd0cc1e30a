"""The registry: names, splits, root resolution and the digits source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from softlabels.data import ImageDataset, list_datasets, load_dataset

EXPECTED_NAMES = ["cifar10", "cifar100", "digits", "fashion_mnist", "imagefolder", "mnist", "npz"]


def test_list_datasets_is_sorted_and_complete():
    assert list_datasets() == EXPECTED_NAMES


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'") as info:
        load_dataset("cifar11")
    for name in EXPECTED_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize(("name", "splits"), [("digits", ["train", "test", "all"]),
                                              ("mnist", ["train", "test"]),
                                              ("cifar100", ["train", "test"])])  # fmt: skip
def test_bad_split_lists_valid_splits(name: str, splits: list[str], tmp_path: Path):
    with pytest.raises(ValueError, match="unknown split 'validation'") as info:
        load_dataset(name, tmp_path, split="validation")
    assert str(splits) in str(info.value)


def test_split_must_be_a_string():
    with pytest.raises(TypeError, match="split must be a string"):
        load_dataset("digits", split=1)  # type: ignore[arg-type]


def test_missing_root_without_env_explains_both_options():
    with pytest.raises(FileNotFoundError, match="SOFTLABELS_DATA") as info:
        load_dataset("mnist", split="test")
    assert "root=" in str(info.value)


def test_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writers):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    writers.mnist(tmp_path / "mnist", "test", images, np.array([3, 4]))
    monkeypatch.setenv("SOFTLABELS_DATA", str(tmp_path))
    data = load_dataset("mnist", split="test", cache_dir=False)
    assert data.labels.tolist() == [3, 4]
    assert data.info.source == str((tmp_path / "mnist").resolve())


def test_download_refused_for_local_only_source(tmp_path: Path):
    with pytest.raises(ValueError, match="download=True is not available for 'imagefolder'"):
        load_dataset("imagefolder", tmp_path, download=True)


def test_cache_dir_type_is_checked(tmp_path: Path):
    with pytest.raises(TypeError, match="cache_dir"):
        load_dataset("mnist", tmp_path, split="test", cache_dir=True)  # type: ignore[arg-type]


# --- digits (embedded) -------------------------------------------------------------------


def test_digits_all_matches_sklearn():
    reference = load_digits()
    data = load_dataset("digits", split="all")
    assert isinstance(data, ImageDataset)
    assert data.images.shape == (1797, 1, 8, 8)
    assert data.images.dtype == torch.float32
    assert data.labels.dtype == torch.int64
    expected = torch.from_numpy(reference.images.astype(np.float32) / 16.0)[:, None]
    torch.testing.assert_close(data.images, expected, rtol=0, atol=0)
    assert data.labels.tolist() == reference.target.tolist()
    assert data.info.class_names == tuple("0123456789")
    assert float(data.images.min()) == 0.0
    assert float(data.images.max()) == 1.0


def test_digits_train_test_split_is_stratified_80_20_and_disjoint():
    target = load_digits().target
    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test")
    assert len(train) + len(test) == 1797
    for cls in range(10):
        n = int((target == cls).sum())
        expected_test = int(0.2 * n + 0.5)
        assert int((test.labels == cls).sum()) == expected_test
        assert int((train.labels == cls).sum()) == n - expected_test
    # Disjoint and covering: every image of "all" appears exactly once across both parts.
    everything = load_dataset("digits", split="all").images.reshape(1797, -1)
    combined = torch.cat([train.images, test.images]).reshape(1797, -1)
    assert sorted(map(tuple, everything.tolist())) == sorted(map(tuple, combined.tolist()))


def test_digits_split_is_deterministic():
    first = load_dataset("digits", split="test")
    second = load_dataset("digits", split="test")
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)


def test_digits_stats_come_from_the_train_split():
    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test")
    pixels = train.images.double()
    assert train.info.mean == pytest.approx((float(pixels.mean()),), rel=1e-9)
    assert train.info.std == pytest.approx((float(pixels.std(unbiased=False)),), rel=1e-9)
    assert test.info.mean == train.info.mean
    assert test.info.std == train.info.std
    assert test.info.mean != pytest.approx((float(test.images.double().mean()),), rel=1e-6)
