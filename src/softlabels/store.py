"""``LabelStore``: soft labels for a set of dataset images, stored compactly and safely.

A store holds the dataset positions of the labelled images, their soft labels and where the
labels came from. On disk it is one safetensors file (no pickle, so loading never runs code)
whose safetensors metadata carries a JSON header with the format version, storage mode, class
count, provenance and a SHA-256; a truncated, corrupt or foreign file raises ``ValueError`` on
load.

Format versions:

* 2 (written now): the SHA-256 covers the whole header (everything but the checksum itself,
  as canonical JSON), the dtype and shape of every tensor and the tensor bytes, so a changed
  provenance or class count is detected like a changed label.
* 1 (read for old files): the SHA-256 covers only the tensor bytes. Such a file still loads,
  with an :class:`UnverifiedHeaderWarning` saying that its header is not verified; saving the
  loaded store again writes version 2.

A checksum detects damage, not a deliberate forgery (anyone can recompute it), so the tensors
are also checked against the header and the data contracts on every load: the class count
against the label width, top-k class indices in [0, C) and distinct within a row, shapes and
dtypes per mode, and the labels themselves through the constructor.

Storage modes, for N images and C classes (bytes per image of the labels, excluding the
8-byte dataset index):

============  ======================================  ===========================
mode          tensors                                 label bytes per image
============  ======================================  ===========================
``fp32``      values float32 (N, C)                   4 C
``fp16``      values float16 (N, C)                   2 C
``topk``      values float16 (N, k), classes (N, k)   2 k + k * (1, 2 or 4)
============  ======================================  ===========================

Top-k class indices use uint8 when C <= 256, int16 when C <= 32768, else int32.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import _store_format as _format
from ._checks import check_choice, check_indices, check_positive, check_positive_int, check_tensor
from ._io import atomic_write
from ._store_format import UnverifiedHeaderWarning
from .labels import validate

__all__ = [
    "STORAGE_MODES",
    "EncodingReport",
    "LabelMetadata",
    "LabelStore",
    "UnverifiedHeaderWarning",
]

STORAGE_MODES = ("fp32", "fp16", "topk")
# Rows may sum to up to 1 + 2**-7: exact probabilities rounded to bfloat16 (a teacher run in
# bfloat16) miss 1 by up to that much. A loaded store gets 2**-10 more, the float16 rounding
# of storing a row that sums to 1 + 2**-7, so that every store that can be saved loads again.
_SUM_TOLERANCE = 2**-7
_LOAD_TOLERANCE = _SUM_TOLERANCE + 2**-10


@dataclass(frozen=True)
class LabelMetadata:
    """Where a store's labels came from.

    Attributes:
        source: what produced the labels, e.g. ``"expert"``, ``"teacher"``, ``"smooth"``.
        dataset: registry name of the dataset the indices refer to.
        split: the dataset split the indices refer to.
        expert_epoch: epoch of the expert checkpoint that labelled the images, if any.
        temperature: softmax temperature used, if any.
        class_names: one name per class (empty when unknown).
        extra: any further JSON-serialisable provenance (seed, selection rule, ...).
    """

    source: str = "unknown"
    dataset: str | None = None
    split: str | None = None
    expert_epoch: int | None = None
    temperature: float | None = None
    class_names: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise TypeError(f"source must be a str, got {type(self.source).__name__}")
        for name in ("dataset", "split"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
        if self.expert_epoch is not None and (
            isinstance(self.expert_epoch, bool) or not isinstance(self.expert_epoch, int)
            or self.expert_epoch < 0
        ):
            raise ValueError(f"expert_epoch must be an int >= 0 or None, got {self.expert_epoch!r}")
        if self.temperature is not None:
            check_positive("temperature", self.temperature)
        # A bare string is a sequence too: tuple("abc") would be three class names.
        if isinstance(self.class_names, str | bytes) or not isinstance(self.class_names,
                                                                         Sequence):
            raise TypeError(f"class_names must be a sequence of names, got "
                            f"{type(self.class_names).__name__}")
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        if not isinstance(self.extra, dict):
            raise TypeError(f"extra must be a dict, got {type(self.extra).__name__}")
        try:
            text = json.dumps(self.extra, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"extra must be JSON-serialisable: {err}") from err
        # What is saved must be what is loaded: int keys become strings, tuples lists.
        if json.loads(text) != self.extra:
            raise TypeError("extra must survive a JSON round trip unchanged (string keys, lists "
                            f"rather than tuples), got {self.extra!r}")


@dataclass(frozen=True)
class EncodingReport:
    """Size and fidelity of a store in one storage mode.

    Attributes:
        mode: ``"fp32"``, ``"fp16"`` or ``"topk"``.
        k: classes kept per image in top-k mode, else None.
        num_images: N.
        num_classes: C.
        label_bytes: exact bytes of the label tensors (values and top-k class indices).
        index_bytes: bytes of the dataset indices (8 per image).
        bytes_per_image: ``label_bytes / num_images`` (NaN for an empty store: undefined).
        max_abs_error: largest |stored - original| over all N x C entries.
        mean_abs_error: mean |stored - original| over all N x C entries.
        file_bytes: size of the written file (None until saved).
    """

    mode: str
    k: int | None
    num_images: int
    num_classes: int
    label_bytes: int
    index_bytes: int
    bytes_per_image: float
    max_abs_error: float
    mean_abs_error: float
    file_bytes: int | None = None


class LabelStore:
    """Soft labels of a set of dataset images.

    Args:
        indices: int64 (N,) distinct, non-negative positions of the labelled images in the
            dataset split named by ``metadata``.
        labels: float (N, C) probabilities (rows sum to 1, or less for top-k labels kept
            without renormalisation). Kept in memory as float32.
        metadata: provenance; ``LabelMetadata()`` when omitted.
        atol: tolerance above 1 of the row sums, by default 2**-7 (bfloat16 rounding).

    Example:
        >>> import torch
        >>> store = LabelStore(torch.arange(3), torch.full((3, 4), 0.25))
        >>> store.report("fp16").bytes_per_image
        8.0
    """

    def __init__(self, indices: Tensor, labels: Tensor,
                 metadata: LabelMetadata | None = None, *,
                 atol: float = _SUM_TOLERANCE) -> None:
        check_tensor("indices", indices)
        if indices.dtype != torch.int64 or indices.ndim != 1:
            raise TypeError(
                f"indices must be a 1-D int64 tensor, got dtype {indices.dtype} and shape "
                f"{tuple(indices.shape)}"
            )
        validate(labels, name="labels", allow_partial=True, atol=atol)
        if labels.ndim != 2:
            raise ValueError(f"labels must be (N, C), got shape {tuple(labels.shape)}")
        if labels.shape[0] != indices.shape[0]:
            raise ValueError(
                f"labels has {labels.shape[0]} rows but indices has {indices.shape[0]} entries"
            )
        if indices.numel() and int(indices.min()) < 0:
            raise ValueError(f"indices must be >= 0, got {int(indices.min())}")
        if indices.unique().numel() != indices.numel():
            raise ValueError("indices must be distinct: an image can have only one label")
        metadata = metadata if metadata is not None else LabelMetadata()
        if not isinstance(metadata, LabelMetadata):
            raise TypeError(f"metadata must be a LabelMetadata, got {type(metadata).__name__}")
        if metadata.class_names and len(metadata.class_names) != labels.shape[1]:
            raise ValueError(
                f"metadata.class_names has {len(metadata.class_names)} names but labels have "
                f"{labels.shape[1]} classes"
            )
        self.indices = indices.detach().cpu().clone()
        self.labels = labels.detach().cpu().float().clone()
        self.metadata = metadata

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __repr__(self) -> str:
        return (f"LabelStore(num_images={len(self)}, num_classes={self.num_classes}, "
                f"source={self.metadata.source!r})")

    @property
    def num_classes(self) -> int:
        """C."""
        return int(self.labels.shape[1])

    def labels_for(self, indices: Tensor) -> Tensor:
        """Look up labels by dataset index.

        Args:
            indices: integer (K,) dataset positions (a tensor or a list of ints), each present
                in the store. Floats are refused, not truncated.

        Returns:
            float32 (K, C).
        """
        wanted = check_indices("indices", indices).cpu()
        if len(self) == 0:
            if wanted.numel():
                raise ValueError("indices not in the store: the store is empty")
            return self.labels[:0]
        order = self.indices.argsort()
        sorted_indices = self.indices[order]
        slots = torch.searchsorted(sorted_indices, wanted).clamp_max(len(self) - 1)
        found = sorted_indices[slots] == wanted
        if not bool(found.all()):
            raise ValueError(f"indices not in the store (first few): {wanted[~found][:5].tolist()}")
        return self.labels[order[slots]]

    def report(self, mode: str = "fp32", k: int | None = None) -> EncodingReport:
        """Exact size and reconstruction error of this store in ``mode``, without writing."""
        tensors = self._encode(mode, k)
        return self._report(mode, k, tensors)

    def save(self, path: str | os.PathLike[str], mode: str = "fp16",
             k: int | None = None) -> EncodingReport:
        """Atomically write the store to ``path`` (safetensors) and report its size and error.

        Args:
            path: destination file; an existing file is replaced only once the new one is
                complete.
            mode: ``"fp32"``, ``"fp16"`` or ``"topk"``.
            k: classes kept per image, required for ``"topk"`` (1 <= k <= C).
        """
        tensors = self._encode(mode, k)
        header = _format.make_header(tensors, mode=mode, k=k, num_images=len(self),
                                     num_classes=self.num_classes,
                                     metadata=asdict(self.metadata))
        atomic_write(path, lambda tmp: _format.write(tmp, tensors, header))
        report = self._report(mode, k, tensors)
        return EncodingReport(**{**asdict(report), "file_bytes": Path(path).stat().st_size})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LabelStore:
        """Read a store written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is truncated, corrupt, not safetensors, not a label store, or
                its tensors contradict its header or the label contracts.

        Warns:
            UnverifiedHeaderWarning: a format-version-1 file, whose checksum does not cover
                its header (see the module docstring).
        """
        target = Path(path)
        if not target.is_file():
            raise FileNotFoundError(f"label store {str(target)!r} does not exist")
        what = f"label store {str(target)!r}"
        header, tensors, labels = _format.read(target, what)
        raw = header.get("metadata")
        if not isinstance(raw, dict):
            raise ValueError(f"{what} is corrupt: its metadata is not a JSON object")
        try:
            metadata = LabelMetadata(**{**raw, "class_names": raw.get("class_names") or ()})
            return cls(tensors["indices"], labels, metadata, atol=_LOAD_TOLERANCE)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{what} is corrupt or was written by another program: {err}"
                             ) from err

    def _encode(self, mode: str, k: int | None) -> dict[str, Tensor]:
        check_choice("mode", mode, STORAGE_MODES)
        tensors = {"indices": self.indices.contiguous()}
        if mode == "topk":
            if k is None:
                raise ValueError("k is required for mode='topk'")
            check_positive_int("k", k)
            if k > self.num_classes:
                raise ValueError(f"k must be <= the number of classes {self.num_classes}, "
                                 f"got {k}")
            values, classes = self.labels.topk(k, dim=1)
            tensors["values"] = values.half().contiguous()
            index_dtype = _format.class_index_dtype(self.num_classes)
            tensors["classes"] = classes.to(index_dtype).contiguous()
        else:
            if k is not None:
                raise ValueError(f"k applies only to mode='topk', got k={k} with mode={mode!r}")
            dtype = torch.float32 if mode == "fp32" else torch.float16
            tensors["values"] = self.labels.to(dtype).contiguous()
        return tensors

    def _report(self, mode: str, k: int | None, tensors: dict[str, Tensor]) -> EncodingReport:
        decoded = _format.dense(tensors, self.num_classes)
        error = (decoded - self.labels).abs()
        label_bytes = sum(_nbytes(t) for name, t in tensors.items() if name != "indices")
        n = len(self)
        return EncodingReport(
            mode=mode, k=k, num_images=n, num_classes=self.num_classes,
            label_bytes=label_bytes, index_bytes=_nbytes(tensors["indices"]),
            bytes_per_image=label_bytes / n if n else math.nan,
            max_abs_error=float(error.max()) if error.numel() else 0.0,
            mean_abs_error=float(error.mean()) if error.numel() else 0.0,
        )


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()
