"""Generic ImageFolder trees of PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels.data import load_dataset
from softlabels.data.sources import imagefolder

RNG = np.random.default_rng(2)


def _rgb(h: int = 6, w: int = 5) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _as_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] back to (N, H, W, C) bytes."""
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_tree_order_labels_and_values(tmp_path: Path, writers):
    files = {("dog", "b.png"): _rgb(), ("cat", "z.png"): _rgb(), ("dog", "a.png"): _rgb(),
             ("cat", "a.png"): _rgb()}  # fmt: skip
    for (cls, name), image in files.items():
        writers.png(tmp_path / "train" / cls / name, image)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    data = load_dataset("imagefolder", tmp_path, split="train", cache_dir=False)
    assert data.info.class_names == ("cat", "dog")
    assert data.labels.tolist() == [0, 0, 1, 1]
    order = [("cat", "a.png"), ("cat", "z.png"), ("dog", "a.png"), ("dog", "b.png")]
    np.testing.assert_array_equal(_as_uint8(data.images), np.stack([files[k] for k in order]))
    assert data.image_size == (6, 5)
    assert data.in_channels == 3
    assert data.info.source == str((tmp_path / "train").resolve())


def test_stats_are_computed_from_train_and_shared_by_test(tmp_path: Path, writers, cache_dir):
    train = [_rgb(), _rgb(), _rgb()]
    for i, image in enumerate(train):
        writers.png(tmp_path / "train" / "a" / f"{i}.png", image)
    writers.png(tmp_path / "test" / "a" / "0.png", np.zeros((6, 5, 3), dtype=np.uint8))
    pixels = np.stack(train).reshape(-1, 3).astype(np.float64) / 255
    expected_mean, expected_std = pixels.mean(axis=0), pixels.std(axis=0)
    for split in ("train", "test"):
        info = load_dataset("imagefolder", tmp_path, split=split, cache_dir=cache_dir).info
        assert info.mean == pytest.approx(tuple(expected_mean), abs=1e-12)
        assert info.std == pytest.approx(tuple(expected_std), abs=1e-12)


def test_class_missing_from_a_split_keeps_labels_aligned(tmp_path: Path, writers):
    for cls in ("ant", "bee", "cow"):
        writers.png(tmp_path / "train" / cls / "0.png", _rgb())
    writers.png(tmp_path / "test" / "cow" / "0.png", _rgb())
    test = load_dataset("imagefolder", tmp_path, split="test", cache_dir=False)
    assert test.info.class_names == ("ant", "bee", "cow")
    assert test.labels.tolist() == [2]


def test_all_grey_gives_one_channel(tmp_path: Path, writers):
    grey = RNG.integers(0, 256, size=(4, 4), dtype=np.uint8)
    writers.png(tmp_path / "train" / "x" / "0.png", grey)
    data = load_dataset("imagefolder", tmp_path, cache_dir=False)
    assert data.images.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(_as_uint8(data.images)[0, :, :, 0], grey)


def test_mixed_grey_and_rgb_gives_rgb(tmp_path: Path, writers):
    grey = RNG.integers(0, 256, size=(4, 4), dtype=np.uint8)
    colour = _rgb(4, 4)
    writers.png(tmp_path / "train" / "x" / "0.png", grey)
    writers.png(tmp_path / "train" / "x" / "1.png", colour)
    data = load_dataset("imagefolder", tmp_path, cache_dir=False)
    assert data.images.shape == (2, 3, 4, 4)
    decoded = _as_uint8(data.images)
    np.testing.assert_array_equal(decoded[0], np.repeat(grey[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(decoded[1], colour)


def test_different_sizes_name_the_offending_file(tmp_path: Path, writers):
    writers.png(tmp_path / "train" / "x" / "0.png", _rgb(8, 8))
    writers.png(tmp_path / "train" / "x" / "1.png", _rgb(8, 9))
    with pytest.raises(ValueError, match=r"1\.png' is 9x8 pixels but .*0\.png' is 8x8"):
        load_dataset("imagefolder", tmp_path, cache_dir=False)


def test_corrupt_image_is_named(tmp_path: Path, writers):
    writers.png(tmp_path / "train" / "x" / "0.png", _rgb())
    (tmp_path / "train" / "x" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=r"1\.png' cannot be decoded as an image"):
        load_dataset("imagefolder", tmp_path, cache_dir=False)


def test_missing_split_lists_present_ones(tmp_path: Path, writers):
    writers.png(tmp_path / "train" / "x" / "0.png", _rgb())
    with pytest.raises(FileNotFoundError, match=r"split folders present .*\['train'\]"):
        load_dataset("imagefolder", tmp_path, split="val")


def test_missing_root_and_empty_split(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_dataset("imagefolder", tmp_path / "nowhere")
    (tmp_path / "train" / "x").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no image files"):
        load_dataset("imagefolder", tmp_path)


def test_split_cannot_escape_the_root(tmp_path: Path):
    with pytest.raises(ValueError, match="plain folder or file name"):
        load_dataset("imagefolder", tmp_path, split="../etc")


def test_worker_pool_gives_the_serial_result(tmp_path: Path, writers, monkeypatch):
    paths = []
    for i in range(40):
        path = tmp_path / f"{i:02d}.png"
        writers.png(path, _rgb(3, 3) if i % 3 else RNG.integers(0, 256, (3, 3), dtype=np.uint8))
        paths.append(path)
    serial = imagefolder.decode_images(paths, workers=1)
    monkeypatch.setattr(imagefolder, "_CHUNK_FILES", 7)  # several chunks for the pool
    pooled = imagefolder.decode_images(paths, workers=2)
    assert serial.shape == (40, 3, 3, 3)
    np.testing.assert_array_equal(serial, pooled)


def test_size_mismatch_across_worker_chunks_is_named(tmp_path: Path, writers, monkeypatch):
    paths = [writers.png(tmp_path / f"{i}.png", _rgb(4, 4)) for i in range(4)]
    paths.append(writers.png(tmp_path / "9.png", _rgb(5, 4)))
    monkeypatch.setattr(imagefolder, "_CHUNK_FILES", 2)
    with pytest.raises(ValueError, match=r"9\.png' is 4x5 pixels"):
        imagefolder.decode_images(paths, workers=2)
