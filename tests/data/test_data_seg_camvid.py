"""CamVid (SegNet layout): the real folder, and synthetic folders for the error paths."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from softlabels.data import list_segmentation_datasets, load_segmentation
from softlabels.data.segmentation import CAMVID_CLASSES, camvid

RNG = np.random.default_rng(7)


def _fail(*args, **kwargs):
    raise AssertionError("decoded again although the cache should have been used")


# ---------------------------------------------------------------------------------------------
# The real folder (../shared/data/camvid), skipped with a reason when absent.


@pytest.fixture(scope="module")
def camvid_root(test_data_root: Path) -> Path:
    root = test_data_root / "camvid"
    if not (root / "train.txt").is_file():
        pytest.skip(f"CamVid not found at {root} (expected train.txt, val.txt, test.txt)")
    return root


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One cache for the module: val/test take the training statistics from the train entry.
    return tmp_path_factory.mktemp("camvid-cache")


@pytest.fixture(scope="module")
def real_train(camvid_root: Path, real_cache: Path):
    return load_segmentation("camvid", camvid_root, "train", cache_dir=real_cache)


@pytest.mark.data
def test_real_train_split(real_train, camvid_root: Path):
    data = real_train
    assert len(data) == 367
    assert data.images.shape == (367, 3, 180, 240)
    assert data.masks.shape == (367, 180, 240)
    assert data.images.dtype == torch.float32
    assert data.masks.dtype == torch.int64
    assert data.ignore_index == 255
    assert data.info.class_names == CAMVID_CLASSES
    assert data.info.class_names[:4] == ("sky", "building", "pole", "road")
    assert data.num_classes == 11
    values = set(data.masks.unique().tolist())
    assert values <= set(range(11)) | {255}
    assert 255 in values, "CamVid has void pixels: they must appear as the ignore index"
    assert data.info.mean == pytest.approx(data.images.mean((0, 2, 3)).tolist(), abs=1e-5)


@pytest.mark.data
def test_real_pixels_and_void_mapping_match_the_files(real_train, camvid_root: Path):
    first = (camvid_root / "train.txt").read_text().split()[:2]
    image = np.asarray(Image.open(camvid_root / first[0]).convert("RGB"))
    label = np.asarray(Image.open(camvid_root / first[1]))
    assert (label == 11).any(), "the first CamVid training mask holds void pixels"
    np.testing.assert_array_equal(
        (real_train.images[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), image
    )
    expected = np.where(label == 11, 255, label).astype(np.int64)
    np.testing.assert_array_equal(real_train.masks[0].numpy(), expected)


@pytest.mark.data
@pytest.mark.parametrize(("split", "size"), [("val", 101), ("test", 233)])
def test_real_other_splits(real_train, camvid_root: Path, real_cache: Path, split, size):
    data = load_segmentation("camvid", camvid_root, split, cache_dir=real_cache)
    assert len(data) == size
    assert data.image_size == (180, 240)
    assert set(data.masks.unique().tolist()) <= set(range(11)) | {255}
    assert data.info.mean == real_train.info.mean  # training statistics for every split


@pytest.mark.data
def test_real_cache_hit_equals_first_load(real_train, camvid_root, real_cache, monkeypatch):
    assert len(list(real_cache.glob("seg_camvid-train-*.masks.npy"))) == 1
    monkeypatch.setattr(camvid, "_decode", _fail)
    again = load_segmentation("camvid", camvid_root, "train", cache_dir=real_cache)
    assert torch.equal(again.images, real_train.images)
    assert torch.equal(again.masks, real_train.masks)
    assert again.info == real_train.info


# ---------------------------------------------------------------------------------------------
# Synthetic SegNet-layout folders.


def _write_png(path: Path, array: np.ndarray, *, palette: bool = False) -> None:
    """Grey, RGB or (``palette``) palette PNG: palette indices are the labels, as in VOC."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if palette:
        # A full 256-entry palette: with none, PIL writes a 1-bit PNG and loses the indices.
        image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        assert image.mode == "P"
    image.save(path)


def _make_folder(root: Path, splits: dict[str, int], h: int = 4, w: int = 5) -> dict:
    """Write a tiny CamVid-layout folder; returns {split: [(image, label), ...]} arrays."""
    written = {}
    for split, n in splits.items():
        lines, pairs = [], []
        for i in range(n):
            image = RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            label = RNG.integers(0, 12, size=(h, w), dtype=np.uint8)  # 0..10 and void 11
            _write_png(root / split / f"{i}.png", image)
            _write_png(root / f"{split}annot" / f"{i}.png", label)
            lines.append(f"{split}/{i}.png {split}annot/{i}.png")
            pairs.append((image, label))
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
        written[split] = pairs
    return written


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "camvid"
    return root, _make_folder(root, {"train": 3, "val": 2})


def test_synthetic_values_order_and_void(folder, cache_dir: Path):
    root, written = folder
    assert "camvid" in list_segmentation_datasets()
    data = load_segmentation("camvid", root, "train", cache_dir=cache_dir)
    images = np.stack([p[0] for p in written["train"]]).transpose(0, 3, 1, 2)
    labels = np.stack([p[1] for p in written["train"]]).astype(np.int64)
    np.testing.assert_array_equal((data.images * 255).round().to(torch.uint8).numpy(), images)
    np.testing.assert_array_equal(data.masks.numpy(), np.where(labels == 11, 255, labels))
    assert data.indices.tolist() == [0, 1, 2]
    assert data.info.source == str(root.resolve())
    val = load_segmentation("camvid", root, "val", cache_dir=cache_dir)
    assert val.info.mean == pytest.approx(tuple(images.mean((0, 2, 3)) / 255))


def test_root_from_environment(folder, monkeypatch, cache_dir: Path):
    root, _ = folder
    with pytest.raises(FileNotFoundError, match="SOFTLABELS_DATA"):
        load_segmentation("camvid", cache_dir=False)
    monkeypatch.setenv("SOFTLABELS_DATA", str(root.parent))
    assert len(load_segmentation("camvid", split="val", cache_dir=False)) == 2


def test_missing_list_file_names_it(folder):
    root, _ = folder
    with pytest.raises(FileNotFoundError, match=r"test\.txt.*train\.txt, val\.txt, test\.txt"):
        load_segmentation("camvid", root, "test", cache_dir=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_segmentation("camvid", root / "nowhere", "train", cache_dir=False)


def test_missing_image_names_the_file(folder):
    root, _ = folder
    (root / "train" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"train\.txt.*1\.png"):
        load_segmentation("camvid", root, "train", cache_dir=False)


def test_mask_of_another_size_names_the_file(folder):
    root, _ = folder
    _write_png(root / "trainannot" / "2.png", np.zeros((4, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"trainannot/2\.png' is 6x4 pixels but its image"):
        load_segmentation("camvid", root, "train", cache_dir=False)


def test_image_of_another_size_names_the_file(folder):
    root, _ = folder
    _write_png(root / "train" / "1.png", np.zeros((5, 5, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"train/1\.png"):
        load_segmentation("camvid", root, "train", cache_dir=False)


def test_label_above_void_names_the_file_and_value(folder):
    root, written = folder
    label = written["train"][1][1].copy()
    label[0, :2] = 12
    _write_png(root / "trainannot" / "1.png", label)
    with pytest.raises(ValueError, match=r"trainannot/1\.png' holds label values \[12\]"):
        load_segmentation("camvid", root, "train", cache_dir=False)


def test_colour_mask_and_bad_list_line_are_rejected(folder):
    root, _ = folder
    _write_png(root / "trainannot" / "0.png", np.zeros((4, 5, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"trainannot/0\.png' is a 'RGB' image"):
        load_segmentation("camvid", root, "train", cache_dir=False)
    (root / "val.txt").write_text("val/0.png\n")
    with pytest.raises(ValueError, match="line 1 must hold two paths"):
        load_segmentation("camvid", root, "val", cache_dir=False)


def test_palette_masks_and_segnet_absolute_paths(tmp_path: Path):
    root = tmp_path / "camvid"
    label = np.array([[0, 11], [3, 10]], dtype=np.uint8)
    _write_png(root / "train" / "a.png", np.zeros((2, 2, 3), dtype=np.uint8))
    _write_png(root / "trainannot" / "a.png", label, palette=True)
    (root / "train.txt").write_text("/SegNet/CamVid/train/a.png /SegNet/CamVid/trainannot/a.png\n")
    data = load_segmentation("camvid", root, "train", cache_dir=False)
    assert data.masks[0].tolist() == [[0, 255], [3, 10]]


def test_changed_mask_invalidates_the_cache(folder, cache_dir: Path):
    root, _ = folder
    load_segmentation("camvid", root, "train", cache_dir=cache_dir)
    mask_file = root / "trainannot" / "0.png"
    _write_png(mask_file, np.full((4, 5), 7, dtype=np.uint8))
    os.utime(mask_file, ns=(10**18, 10**18))  # a distinct mtime even on coarse file systems
    data = load_segmentation("camvid", root, "train", cache_dir=cache_dir)
    assert bool((data.masks[0] == 7).all())
    assert len(list(cache_dir.glob("seg_camvid-train-*.json"))) == 1, "stale entry not removed"


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "bad_json"])
def test_corrupt_cache_entry_is_detected_and_rebuilt(folder, cache_dir, damage, caplog):
    root, _ = folder
    first = load_segmentation("camvid", root, "train", cache_dir=cache_dir)
    masks_file = next(cache_dir.glob("seg_camvid-train-*.masks.npy"))
    if damage == "flip_byte":
        raw = bytearray(masks_file.read_bytes())
        raw[-3] ^= 0x01  # a label, not the header: only the checksum can notice
        masks_file.write_bytes(bytes(raw))
    elif damage == "truncate":
        masks_file.write_bytes(masks_file.read_bytes()[:-5])
    else:
        next(cache_dir.glob("seg_camvid-train-*.json")).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        again = load_segmentation("camvid", root, "train", cache_dir=cache_dir)
    assert "unusable" in caplog.text
    assert torch.equal(again.masks, first.masks)
    assert torch.equal(again.images, first.images)
    # Rebuilt: the next load is a clean hit.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_segmentation("camvid", root, "train", cache_dir=cache_dir)
    assert not caplog.text


def test_cache_default_folder_and_opt_out(folder, tmp_path: Path):
    root, _ = folder
    load_segmentation("camvid", root, "val", cache_dir=False)
    default = Path(os.environ["SOFTLABELS_CACHE"])  # set per test by tests/data/conftest.py
    assert not list(default.glob("seg_camvid-*"))
    load_segmentation("camvid", root, "val")
    assert list(default.glob("seg_camvid-val-*.masks.npy"))


def test_unknown_names_splits_and_options(folder):
    root, _ = folder
    with pytest.raises(ValueError, match="valid names"):
        load_segmentation("camvid2", root)
    with pytest.raises(ValueError, match="valid splits"):
        load_segmentation("camvid", root, "trainval")
    with pytest.raises(ValueError, match="does not take"):
        load_segmentation("camvid", root, num_images=3)
