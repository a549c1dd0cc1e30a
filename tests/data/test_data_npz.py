"""``.npz`` sources: layouts, dtypes and every validation error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels.data import load_dataset

RNG = np.random.default_rng(3)


def _save(path: Path, **arrays) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def test_channels_last_uint8_file(tmp_path: Path):
    x = RNG.integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
    path = _save(tmp_path / "data.npz", x=x, y=np.array([0, 1, 2, 1]),
                 class_names=np.array(["a", "b", "c"]))  # fmt: skip
    data = load_dataset("npz", path, cache_dir=False)
    assert data.images.shape == (4, 3, 5, 6)
    expected = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    torch.testing.assert_close(data.images, expected, rtol=0, atol=0)
    assert data.labels.dtype == torch.int64
    assert data.labels.tolist() == [0, 1, 2, 1]
    assert data.info.class_names == ("a", "b", "c")
    pixels = x.reshape(-1, 3).astype(np.float64) / 255
    assert data.info.mean == pytest.approx(tuple(pixels.mean(0)), abs=1e-12)


def test_channels_first_float_and_grey_layouts(tmp_path: Path):
    x = RNG.random((3, 1, 7, 7)).astype(np.float64)
    data = load_dataset("npz", _save(tmp_path / "a.npz", x=x, y=np.array([2, 0, 1])))
    torch.testing.assert_close(data.images, torch.from_numpy(x).float(), rtol=0, atol=0)
    assert data.info.class_names == ("0", "1", "2")
    grey = RNG.integers(0, 256, size=(2, 4, 4), dtype=np.uint8)
    data = load_dataset("npz", _save(tmp_path / "b.npz", x=grey, y=np.array([0, 0])))
    assert data.images.shape == (2, 1, 4, 4)


def test_folder_of_splits_uses_train_names_and_stats(tmp_path: Path):
    train_x = RNG.integers(0, 256, size=(5, 4, 4), dtype=np.uint8)
    _save(tmp_path / "train.npz", x=train_x, y=np.array([0, 1, 2, 0, 1]),
          class_names=np.array(["r", "s", "t"]))  # fmt: skip
    _save(tmp_path / "test.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([1, 1]))
    test = load_dataset("npz", tmp_path, split="test")
    assert test.info.class_names == ("r", "s", "t")
    assert test.info.mean == pytest.approx((train_x.mean() / 255,), abs=1e-12)
    with pytest.raises(FileNotFoundError, match=r"splits present: \['test', 'train'\]"):
        load_dataset("npz", tmp_path, split="val")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y": np.array([0])}, r"lacks array\(s\) \['x'\]"),
        ({"x": np.zeros((1, 2, 2), np.uint8)}, r"lacks array\(s\) \['y'\]"),
        ({"x": np.zeros((2, 2, 2), np.uint8), "y": np.array([0])}, r"y must have shape \(2,\)"),
        ({"x": np.zeros((1, 2, 2), np.int64), "y": np.array([0])}, "got dtype int64"),
        ({"x": np.full((1, 2, 2), 1.5), "y": np.array([0])}, r"must lie in \[0, 1\]"),
        ({"x": np.full((1, 2, 2), np.nan), "y": np.array([0])}, "NaN or infinite"),
        ({"x": np.zeros((1, 4), np.uint8), "y": np.array([0])}, "x must be"),
        ({"x": np.zeros((1, 5, 5, 5), np.uint8), "y": np.array([0])}, "no channel axis"),
        ({"x": np.zeros((1, 2, 2), np.uint8), "y": np.array([-1])}, "y must be >= 0"),
        ({"x": np.zeros((1, 2, 2), np.uint8), "y": np.array([0.0])}, "y must hold integers"),
        ({"x": np.zeros((1, 2, 2), np.uint8), "y": np.array([3]),
          "class_names": np.array(["a", "b"])}, "only 2 class names"),
        ({"x": np.zeros((1, 2, 2), np.uint8), "y": np.array([0]),
          "class_names": np.array([1, 2])}, "class_names must be a 1-D array of strings"),
    ],
)  # fmt: skip
def test_bad_arrays_are_reported(tmp_path: Path, arrays: dict, message: str):
    path = _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message) as info:
        load_dataset("npz", path)
    assert "bad.npz" in str(info.value)


def test_object_arrays_are_refused(tmp_path: Path):
    path = _save(tmp_path / "obj.npz", x=np.zeros((1, 2, 2), np.uint8), y=np.array([0]),
                 class_names=np.array(["a", None], dtype=object))  # fmt: skip
    with pytest.raises(ValueError, match="holds Python objects"):
        load_dataset("npz", path)


def test_corrupt_and_missing_files(tmp_path: Path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=r"broken\.npz' is not a readable \.npz file"):
        load_dataset("npz", path)
    with pytest.raises(FileNotFoundError, match=r"train\.npz"):
        load_dataset("npz", tmp_path / "nothing-here")
