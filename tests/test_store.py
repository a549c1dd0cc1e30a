"""Tests of softlabels.store.LabelStore: round trips, sizes, errors and corrupt files."""

import dataclasses
import json
import struct
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softlabels.store import LabelMetadata, LabelStore

sys.path.insert(0, str(Path(__file__).parent))
from devices import device_fixture, gen, off_cpu  # noqa: F401


def make_store(n: int = 50, c: int = 10, seed: int = 0) -> LabelStore:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, c, generator=g) * 3, dim=1)
    indices = torch.randperm(10 * n, generator=g)[:n]
    meta = LabelMetadata(source="expert", dataset="cifar10", split="train", expert_epoch=7,
                         temperature=2.0, class_names=tuple(f"c{i}" for i in range(c)),
                         extra={"seed": 3})
    return LabelStore(indices, probs, meta)


@pytest.mark.parametrize(("mode", "k", "bytes_per_image"),
                         [("fp32", None, 40), ("fp16", None, 20), ("topk", 3, 9)])
def test_round_trip_and_exact_sizes(tmp_path: Path, mode: str, k: int | None,
                                    bytes_per_image: int) -> None:
    store = make_store()
    report = store.save(tmp_path / "s.safetensors", mode=mode, k=k)
    # 10 classes: fp32 4 B, fp16 2 B per class; top-3: 3 * (2 B value + 1 B uint8 index).
    assert report.bytes_per_image == bytes_per_image
    assert report.label_bytes == bytes_per_image * 50
    assert report.index_bytes == 8 * 50
    assert report.file_bytes == (tmp_path / "s.safetensors").stat().st_size
    loaded = LabelStore.load(tmp_path / "s.safetensors")
    assert torch.equal(loaded.indices, store.indices)
    assert loaded.metadata == store.metadata
    error = (loaded.labels - store.labels).abs()
    assert error.max().item() == pytest.approx(report.max_abs_error, abs=1e-7)
    assert error.mean().item() == pytest.approx(report.mean_abs_error, abs=1e-7)


def test_error_levels_by_mode() -> None:
    store = make_store()
    assert store.report("fp32").max_abs_error == 0.0
    fp16 = store.report("fp16").max_abs_error
    assert 0 < fp16 < 1e-3  # half precision has 11 significant bits
    top3 = store.report("topk", 3)
    dropped = store.labels - store.labels * (store.labels >= store.labels.topk(3, 1).values[:, -1:])
    assert top3.max_abs_error == pytest.approx(float(dropped.max()), abs=1e-3)


def test_topk_of_sparse_labels_is_exact_up_to_fp16() -> None:
    probs = torch.zeros(4, 300)
    probs[torch.arange(4), torch.tensor([0, 299, 150, 7])] = 1.0
    store = LabelStore(torch.arange(4), probs)
    report = store.report("topk", 1)
    assert report.max_abs_error == 0.0
    # 300 classes need int16 class indices: 2 B value + 2 B index.
    assert report.bytes_per_image == 4


@given(st.integers(1, 20), st.integers(2, 30), st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_property_round_trip_every_mode(n: int, c: int, seed: int) -> None:
    import tempfile

    store = make_store(n, c, seed)
    with tempfile.TemporaryDirectory() as folder:
        for mode, k in (("fp32", None), ("fp16", None), ("topk", min(3, c))):
            path = Path(folder) / f"{mode}.safetensors"
            report = store.save(path, mode=mode, k=k)
            loaded = LabelStore.load(path)
            assert torch.equal(loaded.indices, store.indices)
            assert float((loaded.labels - store.labels).abs().max()) <= report.max_abs_error + 1e-7


def test_labels_for_looks_up_by_dataset_index() -> None:
    store = make_store()
    wanted = store.indices[[4, 0, 9]]
    assert torch.equal(store.labels_for(wanted), store.labels[[4, 0, 9]])
    missing = torch.tensor([10**6])
    with pytest.raises(ValueError, match="not in the store"):
        store.labels_for(missing)


def test_save_is_atomic_and_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    make_store(seed=1).save(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="k is required"):
        make_store(seed=2).save(path, mode="topk")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"indices": torch.arange(3.0)}, TypeError, "indices must be a 1-D int64"),
        ({"indices": torch.tensor([0, 0, 1])}, ValueError, "indices must be distinct"),
        ({"indices": torch.tensor([0, -1, 1])}, ValueError, "indices must be >= 0"),
        ({"indices": torch.arange(4)}, ValueError, "labels has 3 rows but indices has 4"),
        ({"labels": torch.tensor([[0.5, 0.6]] * 3)}, ValueError, "rows must sum"),
        ({"labels": torch.tensor([[-0.5, 1.5]] * 3)}, ValueError, "non-negative"),
    ],
)
def test_construction_errors(kwargs, error, message) -> None:
    args = {"indices": torch.arange(3), "labels": torch.full((3, 2), 0.5)}
    args.update(kwargs)
    with pytest.raises(error, match=message):
        LabelStore(**args)


def test_metadata_errors() -> None:
    with pytest.raises(ValueError, match="class_names has 3 names but labels have 2"):
        LabelStore(torch.arange(1), torch.full((1, 2), 0.5),
                   LabelMetadata(class_names=("a", "b", "c")))
    with pytest.raises(ValueError, match="expert_epoch"):
        LabelMetadata(expert_epoch=-1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        LabelMetadata(temperature=0.0)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        LabelMetadata(extra={"x": object()})


@pytest.mark.parametrize(("mode", "k", "message"),
                         [("int8", None, "mode must be one of"), ("topk", 11, "k must be <="),
                          ("fp16", 2, "k applies only")])
def test_bad_modes(mode: str, k: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_store().report(mode, k)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LabelStore.load(tmp_path / "nope.safetensors")


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    make_store().save(path)
    data = path.read_bytes()
    for cut in (4, 100, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"truncated|corrupt"):
            LabelStore.load(path)


def test_flipped_byte_in_data_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    make_store().save(path, mode="fp32")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        LabelStore.load(path)


def test_foreign_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="not a softlabels label store"):
        LabelStore.load(path)


def test_non_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.bin"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\x00" * 50)
    with pytest.raises(ValueError, match="not a softlabels label store"):
        LabelStore.load(path)
    torch.save({"a": 1}, path)  # a pickle must never be executed or accepted
    with pytest.raises(ValueError, match=r"truncated|not a softlabels"):
        LabelStore.load(path)


def test_future_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    make_store().save(path)
    tensors = safetensors.torch.load_file(str(path))
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(json.loads(data[8:8 + length])["__metadata__"]["softlabels"])
    header["format_version"] = 99
    safetensors.torch.save_file(tensors, str(path), metadata={"softlabels": json.dumps(header)})
    with pytest.raises(ValueError, match="format version 99"):
        LabelStore.load(path)


@pytest.mark.parametrize(("mode", "k"), [("fp32", None), ("fp16", None), ("topk", 3)])
def test_round_trip_of_device_tensors(device: str, mode: str, k: int | None,
                                      tmp_path: Path) -> None:
    """A LabelStore built from device probabilities saves, loads and looks up with device
    indices (a GPU training loop holds its batch there): the labels are the originals up to
    the mode's rounding, and (off the CPU) the report is the CPU store's."""
    g = gen(1)
    probs = torch.softmax(2 * torch.randn(20, 6, generator=g), 1)
    indices = torch.randperm(50, generator=g)[:20]
    metadata = LabelMetadata(source="expert", expert_epoch=3, temperature=2.0)
    store = LabelStore(indices.to(device), probs.to(device), metadata)
    path = tmp_path / "labels.safetensors"
    report = store.save(path, mode=mode, k=k)
    assert report.file_bytes == path.stat().st_size
    assert dataclasses.replace(report, file_bytes=None) == store.report(mode, k)
    if off_cpu(device):
        assert report == LabelStore(indices, probs, metadata).save(tmp_path / "cpu.safetensors",
                                                                   mode=mode, k=k)
    loaded = LabelStore.load(path)
    lookup = loaded.labels_for(indices[[3, 0, 7]].to(device))
    if mode == "topk":  # the 3 largest (in fp16), the rest dropped
        values, classes = probs.topk(3, 1)
        reference, bound = torch.zeros_like(probs).scatter(1, classes, values.half().float()), 0.0
    else:
        reference, bound = probs, {"fp32": 0.0, "fp16": 1e-3}[mode]
    assert torch.equal(loaded.indices.cpu(), indices)
    assert loaded.metadata == metadata
    torch.testing.assert_close(loaded.labels.cpu(), reference, atol=bound, rtol=0)
    torch.testing.assert_close(lookup.cpu(), reference[[3, 0, 7]], atol=bound, rtol=0)
