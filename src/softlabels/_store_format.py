"""The on-disk format of :class:`softlabels.store.LabelStore` (see that module's docstring).

One safetensors file; its metadata entry ``"softlabels"`` holds the JSON header. Reading checks,
in order: the safetensors framing, the header's format and version, the checksum (version 2:
header and tensors; version 1: tensor bytes only, with an :class:`UnverifiedHeaderWarning`),
and then the tensors against the header, so that a file with a valid checksum but impossible
contents (a top-k class index >= C, a label width other than the class count) is refused too.
"""

from __future__ import annotations

import hashlib
import json
import struct
import warnings
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from . import __version__
from ._io import tensor_digest

FORMAT = "softlabels.label_store"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
HEADER_KEY = "softlabels"
_VALUE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "topk": torch.float16}
_TENSORS = {"fp32": {"indices", "values"}, "fp16": {"indices", "values"},
            "topk": {"indices", "values", "classes"}}


class UnverifiedHeaderWarning(UserWarning):
    """A label store of format version 1 was loaded: its header is outside its checksum."""


def make_header(tensors: dict[str, Tensor], *, mode: str, k: int | None, num_images: int,
                num_classes: int, metadata: dict[str, Any]) -> dict[str, Any]:
    """The version-2 header of ``tensors``, with its checksum."""
    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "softlabels_version": __version__,
        "mode": mode,
        "k": k,
        "num_images": num_images,
        "num_classes": num_classes,
        "metadata": metadata,
    }
    header["sha256"] = store_digest(header, tensors)
    return header


def write(path: Path, tensors: dict[str, Tensor], header: dict[str, Any]) -> None:
    """Write ``tensors`` and ``header`` to ``path`` (not atomically: the caller renames)."""
    safetensors.torch.save_file(tensors, str(path), metadata={HEADER_KEY: json.dumps(header)})


def read(path: Path, what: str) -> tuple[dict[str, Any], dict[str, Tensor], Tensor]:
    """``(header, tensors, labels)`` of the store at ``path``, every check passed.

    ``labels`` are the dense float32 (N, C) labels; ``what`` names the file in errors.
    """
    data = path.read_bytes()
    header = read_header(what, data)
    try:
        tensors = safetensors.torch.load(data)
    except Exception as err:  # safetensors raises its own error type for bad files
        raise ValueError(f"{what} is corrupt: {err}") from err
    if header["format_version"] == 1:
        expected, covered = tensor_digest(tensors), "its tensor bytes do not"
    else:
        expected, covered = store_digest(header, tensors), "its header and tensors do not"
    if header.get("sha256") != expected:
        raise ValueError(f"{what} is corrupt: {covered} match the checksum in its header")
    if header["format_version"] == 1:
        warnings.warn(f"{what} has format version 1, whose checksum covers only the label "
                      "tensors: its header (provenance, class count) is not verified. Save "
                      "the loaded store again to write format version 2.",
                      UnverifiedHeaderWarning, stacklevel=3)
    return header, tensors, decode(tensors, header, what)


def class_index_dtype(num_classes: int) -> torch.dtype:
    if num_classes <= 256:
        return torch.uint8
    return torch.int16 if num_classes <= 32768 else torch.int32


def dense(tensors: dict[str, Tensor], num_classes: int) -> Tensor:
    """Rebuild float32 (N, C) labels from stored tensors."""
    values = tensors["values"].float()
    if "classes" not in tensors:
        return values
    dense = torch.zeros(values.shape[0], num_classes)
    return dense.scatter(1, tensors["classes"].long(), values)


def store_digest(header: dict[str, Any], tensors: dict[str, Tensor]) -> str:
    """Format-2 checksum: SHA-256 of the header without ``sha256`` (canonical JSON), every
    tensor's dtype and shape, and :func:`tensor_digest` of the tensor bytes.

    The layout is included because the byte digest alone cannot tell a (10, 50) tensor from a
    (50, 10) one with the same bytes.
    """
    body = {key: value for key, value in header.items() if key != "sha256"}
    layout = {name: [str(t.dtype), list(t.shape)] for name, t in tensors.items()}
    canonical = json.dumps([body, layout], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{canonical}\n{tensor_digest(tensors)}".encode()).hexdigest()


def read_header(what: str, data: bytes) -> dict[str, Any]:
    """Parse the safetensors JSON header and return our own header from its metadata."""
    if len(data) < 8:
        raise ValueError(f"{what} is truncated or not a safetensors file ({len(data)} bytes)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError(f"{what} is truncated or not a safetensors file (header of {length} "
                         f"bytes announced, {len(data) - 8} present)")
    try:
        outer = json.loads(data[8 : 8 + length])
        header = json.loads(outer["__metadata__"][HEADER_KEY])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{what} is not a softlabels label store (no valid "
                         f"'{HEADER_KEY}' header)") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{what} is not a softlabels label store")
    version = header.get("format_version")
    # bool is an int: True must not pass for version 1.
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        raise ValueError(f"{what} has format version {version}; this softlabels reads "
                         f"versions {readable}")
    return header


def decode(tensors: dict[str, Tensor], header: dict[str, Any], what: str) -> Tensor:
    """Dense float32 (N, C) labels, after checking the tensors against the header."""
    mode = header.get("mode")
    expected = _TENSORS.get(str(mode))
    if expected is None or set(tensors) != expected:
        raise ValueError(f"{what} is corrupt: mode {mode!r} with tensors {sorted(tensors)}")
    num_classes, num_images, k = (header.get(key) for key in ("num_classes", "num_images", "k"))
    for key, value in (("class count", num_classes), ("image count", num_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (
            key == "class count" and value < 1
        ):
            raise ValueError(f"{what} has an invalid {key} {value!r}")
    indices, values = tensors["indices"], tensors["values"]
    if indices.dtype != torch.int64 or indices.shape != (num_images,):
        raise ValueError(f"{what} is corrupt: indices must be int64 ({num_images},) for its "
                         f"{num_images} images, got {indices.dtype} {tuple(indices.shape)}")
    width = num_classes
    if mode == "topk":
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_classes:
            raise ValueError(f"{what} is corrupt: top-k mode with k={k!r} for {num_classes} "
                             f"classes")
        width = k
        _check_topk_classes(tensors["classes"], num_images, k, num_classes, what)
    elif k is not None:
        raise ValueError(f"{what} is corrupt: k={k!r} in mode {mode!r}")
    if values.dtype != _VALUE_DTYPES[mode] or values.shape != (num_images, width):
        raise ValueError(f"{what} is corrupt: mode {mode!r} needs {_VALUE_DTYPES[mode]} values "
                         f"of shape ({num_images}, {width}), got {values.dtype} "
                         f"{tuple(values.shape)}")
    return dense(tensors, num_classes)


def _check_topk_classes(classes: Tensor, num_images: int, k: int, num_classes: int,
                        what: str) -> None:
    """Top-k class indices: the dtype the writer uses, in [0, C), distinct within each row."""
    dtype = class_index_dtype(num_classes)
    if classes.dtype != dtype or classes.shape != (num_images, k):
        raise ValueError(f"{what} is corrupt: top-{k} classes must be {dtype} ({num_images}, "
                         f"{k}) for {num_classes} classes, got {classes.dtype} "
                         f"{tuple(classes.shape)}")
    wide = classes.long()
    if wide.numel() and (int(wide.min()) < 0 or int(wide.max()) >= num_classes):
        raise ValueError(f"{what} is corrupt: top-k class indices must lie in [0, "
                         f"{num_classes}), got values in [{int(wide.min())}, {int(wide.max())}]")
    ordered = wide.sort(dim=1).values
    if bool((ordered[:, 1:] == ordered[:, :-1]).any()):
        # scatter would keep only one of two values written to the same class.
        raise ValueError(f"{what} is corrupt: a row names the same top-k class twice")
