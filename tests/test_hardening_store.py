"""Label-store files that are damaged, forged or old: the header is checksummed (format 2), the
tensors are checked against it, and format-1 files load with a warning.

The checksums are recomputed here from the documented format, not with the store's own
functions, so a store that checksummed less than documented would fail these tests.
"""

from __future__ import annotations

import hashlib
import json
import struct
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch

from softlabels.store import LabelMetadata, LabelStore, UnverifiedHeaderWarning


def _store(n: int = 6, c: int = 10) -> LabelStore:
    probs = torch.softmax(torch.randn(n, c, generator=torch.Generator().manual_seed(0)), 1)
    meta = LabelMetadata(source="expert", dataset="cifar10", split="train", expert_epoch=7,
                         class_names=tuple(f"c{i}" for i in range(c)))
    return LabelStore(torch.arange(n) * 3, probs, meta)


def _header(path: Path) -> dict:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(json.loads(data[8:8 + length])["__metadata__"]["softlabels"])


def _bytes_digest(tensors: dict[str, torch.Tensor]) -> str:
    """Format 1: SHA-256 over each tensor's name and raw bytes, in name order."""
    sha = hashlib.sha256()
    for name in sorted(tensors):
        sha.update(name.encode())
        sha.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def _v2_digest(header: dict, tensors: dict[str, torch.Tensor]) -> str:
    """Format 2: canonical JSON of [header without sha256, {name: [dtype, shape]}], a newline,
    then the format-1 digest of the bytes."""
    body = {key: value for key, value in header.items() if key != "sha256"}
    layout = {name: [str(t.dtype), list(t.shape)] for name, t in tensors.items()}
    canonical = json.dumps([body, layout], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{canonical}\n{_bytes_digest(tensors)}".encode()).hexdigest()


def _write(path: Path, tensors: dict[str, torch.Tensor], header: dict, *,
           version: int = 2) -> None:
    """Write a store file by hand, with a valid checksum of the given format version."""
    header = {**header, "format_version": version}
    header["sha256"] = _bytes_digest(tensors) if version == 1 else _v2_digest(header, tensors)
    safetensors.torch.save_file(tensors, str(path), metadata={"softlabels": json.dumps(header)})


def _saved(tmp_path: Path, mode: str = "fp32", k: int | None = None):
    path = tmp_path / "s.safetensors"
    _store().save(path, mode=mode, k=k)
    return path, _header(path), safetensors.torch.load_file(str(path))


def test_a_provenance_edit_in_the_header_is_detected(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    data = path.read_bytes()
    assert data.count(b"cifar10") == 1
    path.write_bytes(data.replace(b"cifar10", b"cifar11"))  # same length: framing stays valid
    with pytest.raises(ValueError, match="header and tensors do not match the checksum"):
        LabelStore.load(path)


@pytest.mark.parametrize("field", ["num_classes", "num_images", "expert_epoch", "mode"])
def test_every_header_field_is_under_the_checksum(tmp_path: Path, field: str) -> None:
    path, header, tensors = _saved(tmp_path)
    if field == "expert_epoch":
        header["metadata"]["expert_epoch"] = 8
    else:
        header[field] = {"num_classes": 11, "num_images": 5, "mode": "fp16"}[field]
    # The old checksum kept: a bit flip or an edit that did not recompute it.
    safetensors.torch.save_file(tensors, str(path), metadata={"softlabels": json.dumps(header)})
    with pytest.raises(ValueError, match="checksum"):
        LabelStore.load(path)


def test_tensor_shapes_are_under_the_checksum(tmp_path: Path) -> None:
    path, header, tensors = _saved(tmp_path)
    # Same bytes, another shape: a digest of the bytes alone would not notice.
    tensors["values"] = tensors["values"].reshape(10, 6).contiguous()
    safetensors.torch.save_file(tensors, str(path), metadata={"softlabels": json.dumps(header)})
    with pytest.raises(ValueError, match="checksum"):
        LabelStore.load(path)


def test_class_count_is_checked_against_the_tensors(tmp_path: Path) -> None:
    _, header, tensors = _saved(tmp_path)
    forged = tmp_path / "forged.safetensors"
    _write(forged, tensors, {**header, "num_classes": 12,
                             "metadata": {**header["metadata"], "class_names": []}})
    with pytest.raises(ValueError, match=r"needs torch.float32 values of shape \(6, 12\)"):
        LabelStore.load(forged)


@pytest.mark.parametrize(("classes", "message"), [
    (lambda c: c.masked_fill(c == c[0, 0], 10), r"must lie in \[0, 10\)"),
    (lambda c: torch.cat([c[:, :1], c[:, :1], c[:, 2:]], 1), "same top-k class twice"),
    (lambda c: c.to(torch.int16), "must be torch.uint8"),
])
def test_top_k_classes_with_a_valid_checksum_are_checked(tmp_path: Path, classes,
                                                         message: str) -> None:
    _, header, tensors = _saved(tmp_path, "topk", 3)
    tensors["classes"] = classes(tensors["classes"]).contiguous()
    forged = tmp_path / "forged.safetensors"
    _write(forged, tensors, header)
    with pytest.raises(ValueError, match=message):
        LabelStore.load(forged)


@pytest.mark.parametrize(("edit", "message"), [
    ({"k": 11}, "top-k mode with k=11"),
    ({"k": 2}, r"top-2 classes must be torch.uint8 \(6, 2\)"),
    ({"num_images": 7}, r"indices must be int64 \(7,\)"),
    ({"num_classes": True}, "invalid class count True"),
    ({"metadata": {"source": 3}}, "source must be a str"),
    ({"metadata": {"class_names": "abc"}}, "class_names must be a sequence"),
    ({"metadata": {"surprise": 1}}, "unexpected keyword"),
    ({"metadata": [1, 2]}, "metadata is not a JSON object"),
])
def test_impossible_headers_with_valid_checksums_are_refused(tmp_path: Path, edit: dict,
                                                             message: str) -> None:
    _, header, tensors = _saved(tmp_path, "topk", 3)
    forged = tmp_path / "forged.safetensors"
    _write(forged, tensors, {**header, **edit})
    with pytest.raises(ValueError, match=message):
        LabelStore.load(forged)


def test_a_bool_format_version_is_not_version_1(tmp_path: Path) -> None:
    path, header, tensors = _saved(tmp_path)
    header["format_version"] = True  # True == 1 in Python
    safetensors.torch.save_file(tensors, str(path), metadata={"softlabels": json.dumps(header)})
    with pytest.raises(ValueError, match="format version True"):
        LabelStore.load(path)


def test_format_1_files_load_with_a_warning_and_resave_as_format_2(tmp_path: Path) -> None:
    original = _store()
    _, header, tensors = _saved(tmp_path, "fp32")
    old = tmp_path / "old.safetensors"
    _write(old, tensors, header, version=1)
    with pytest.warns(UnverifiedHeaderWarning, match="format version 1.*not verified"):
        loaded = LabelStore.load(old)
    assert torch.equal(loaded.labels, original.labels)
    assert torch.equal(loaded.indices, original.indices)
    assert loaded.metadata == original.metadata
    loaded.save(old, mode="fp32")
    assert _header(old)["format_version"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LabelStore.load(old)


def test_format_1_files_still_have_their_tensors_checked(tmp_path: Path) -> None:
    _, header, tensors = _saved(tmp_path, "topk", 3)
    tensors["classes"] = tensors["classes"].masked_fill(tensors["classes"] == 0, 200)
    old = tmp_path / "old.safetensors"
    _write(old, tensors, header, version=1)
    with pytest.warns(UnverifiedHeaderWarning), pytest.raises(ValueError, match="must lie in"):
        LabelStore.load(old)
    tensors = _saved(tmp_path, "topk", 3)[2]
    _write(old, tensors, header, version=1)
    data = bytearray(old.read_bytes())
    data[-3] ^= 0x01  # a label byte: format 1 still checksums the tensors
    old.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="tensor bytes do not match"):
        LabelStore.load(old)


def test_labels_for_refuses_float_and_bool_indices() -> None:
    store = _store()
    with pytest.raises(TypeError, match=r"indices must hold integer positions.*float32"):
        store.labels_for(torch.tensor([3.7]))
    with pytest.raises(TypeError, match=r"indices must hold integer positions.*bool"):
        store.labels_for(torch.tensor([True, False]))
    with pytest.raises(ValueError, match="indices must be 1-D"):
        store.labels_for(torch.tensor([[3]]))
    # Lists of ints and narrower integer dtypes are fine.
    assert torch.equal(store.labels_for([3, 0]), store.labels[[1, 0]])
    assert torch.equal(store.labels_for(torch.tensor([3], dtype=torch.int32)), store.labels[[1]])


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"source": None}, TypeError, "source must be a str"),
    ({"dataset": 10}, TypeError, "dataset must be a str or None"),
    ({"class_names": "abc"}, TypeError, "class_names must be a sequence"),
    ({"temperature": float("inf")}, ValueError, "temperature must be a finite number"),
    ({"temperature": float("nan")}, ValueError, "temperature must be a finite number"),
    ({"extra": [1]}, TypeError, "extra must be a dict"),
    ({"extra": {1: "a"}}, TypeError, "round trip"),
    ({"extra": {"a": (1, 2)}}, TypeError, "round trip"),
    ({"extra": {"a": float("nan")}}, TypeError, "JSON-serialisable"),
])
def test_metadata_types_are_checked(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        LabelMetadata(**kwargs)


@pytest.mark.parametrize(("mode", "k"), [("fp32", None), ("fp16", None), ("topk", 1)])
def test_an_empty_store_round_trips(tmp_path: Path, mode: str, k: int | None) -> None:
    # An empty tensor counts as contiguous whatever its strides (a broadcast one has a zero
    # last stride), and viewing its bytes for the checksum used to raise a RuntimeError.
    labels = torch.empty(0, 3, dtype=torch.float32).as_strided((0, 3), (1, 0))
    empty = LabelStore(torch.zeros(0, dtype=torch.int64), labels)
    empty.save(tmp_path / "e.safetensors", mode=mode, k=k)
    loaded = LabelStore.load(tmp_path / "e.safetensors")
    assert loaded.labels.shape == (0, 3)
    assert len(loaded) == 0


def test_bfloat16_labels_that_can_be_saved_load_again(tmp_path: Path) -> None:
    # 1/3 rounds to 0.3340 in bfloat16: the rows sum to 1.002, above float32's 1e-3.
    labels = torch.full((2, 3), 1 / 3, dtype=torch.bfloat16)
    store = LabelStore(torch.arange(2), labels)
    for mode in ("fp32", "fp16"):
        store.save(tmp_path / f"{mode}.safetensors", mode=mode)
        loaded = LabelStore.load(tmp_path / f"{mode}.safetensors")
        torch.testing.assert_close(loaded.labels, labels.float(), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match=r"labels rows must sum to <= 1"):
        LabelStore(torch.arange(2), torch.full((2, 3), 0.34))
