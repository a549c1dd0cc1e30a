"""A distilled dataset as one file: images, soft labels, class names, normalisation, provenance.

``softlabels export`` writes one cell of a distillation run in this form, ``softlabels distill
--images file --image-file F`` scores one (a user's own distilled images too), and
:func:`ddranking_inputs` hands one to DD-Ranking. Two containers hold the same content:

* ``.npz`` (numpy, no pickle): ``x`` float32 ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``,
  ``class_names``, and, when known, ``soft_labels`` float32 ``(N, K)``, ``mean`` and ``std``
  (per channel), ``provenance`` (JSON text) and ``zca_<name>`` arrays. ``x``, ``y`` and
  ``class_names`` are what ``load_dataset("npz", root=FILE)`` reads, so the file is also a
  plain labelled dataset (the hard labels); :func:`load_distilled` reads the rest.
* ``.safetensors``: tensors ``images``, ``labels``, optionally ``soft_labels``, ``mean``,
  ``std`` and ``zca_<name>``; the class names and provenance as JSON in the header metadata.

Each file carries a SHA-256 ``checksum`` (an ``.npz`` array, a safetensors header field) over
every array (name, dtype, shape, bytes) and header field; :func:`load_distilled` refuses a file
whose content no longer matches it, since neither container notices damage itself. Files of a
release before the checksum (no ``format_version`` in their provenance) and foreign files load
unverified.

Images are stored class-major (every image of class 0, then of class 1, ...; stable within a
class), the order DD-Ranking assumes when it builds its hard labels as ``[c] * ipc``.

The ZCA whitening of a run whose models saw whitened images travels in ``zca``: the named
tensors of :meth:`softlabels.data.zca.ZCA.state_dict`, stored as ``zca_<name>`` and restored
by the reader (``ZCA.from_state(data.zca)`` whitens the images as the run's models saw them);
empty for a run on raw pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ._io import atomic_write
from .data.sources.npz import read_npz

__all__ = ["FORMATS", "DistilledSet", "ddranking_inputs", "load_distilled", "save_distilled"]

FORMATS = ("npz", "safetensors")
_FORMAT = "softlabels.distilled_set"
# Soft labels kept without renormalisation (top-k) sum to less than 1; stored fp16 ones may
# round a little above it.
_SUM_TOLERANCE = 2.0 ** -7


@dataclass(frozen=True)
class DistilledSet:
    """A distilled dataset.

    Attributes:
        images: float32 ``(N, C, H, W)`` in [0, 1].
        labels: int64 ``(N,)`` class of each image, in ``[0, K)``.
        class_names: K names.
        soft_labels: float32 ``(N, K)`` non-negative rows summing to at most 1, or ``None``.
        mean, std: the dataset's per-channel normalisation (length C), or ``None``.
        provenance: JSON-serialisable facts about where the set came from.
        zca: the state of the ZCA whitening the run's models saw the images through (empty
            for raw pixels).
    """

    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    soft_labels: Tensor | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    zca: Mapping[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        images, labels, soft = self.images, self.labels, self.soft_labels
        if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"images must be a float (N, C, H, W) tensor, got "
                             f"{_describe(images)}")
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64 \
                or labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be int64 ({images.shape[0]},) to match the images, "
                             f"got {_describe(labels)}")
        count = len(self.class_names)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= count):
            raise ValueError(f"labels must lie in [0, {count}) for {count} class names, got "
                             f"range [{int(labels.min())}, {int(labels.max())}]")
        if images.numel() and not bool(((images >= 0) & (images <= 1)).all()):
            raise ValueError("images must lie in [0, 1] (pixel space, un-normalised)")
        if soft is not None:
            if not isinstance(soft, Tensor) or soft.shape != (images.shape[0], count):
                raise ValueError(f"soft_labels must be ({images.shape[0]}, {count}): one row "
                                 f"per image, one column per class; got {_describe(soft)}")
            sums = soft.sum(1)
            if not bool(torch.isfinite(soft).all()) or bool((soft < 0).any()) \
                    or bool((sums > 1 + _SUM_TOLERANCE).any()):
                raise ValueError("soft_labels must be finite, non-negative, with rows summing "
                                 "to at most 1")
        for name, stats in (("mean", self.mean), ("std", self.std)):
            if stats is not None and len(stats) != images.shape[1]:
                raise ValueError(f"{name} must have one value per channel ({images.shape[1]}), "
                                 f"got {len(stats)}")

    @property
    def num_classes(self) -> int:
        """K."""
        return len(self.class_names)

    def class_major(self) -> DistilledSet:
        """The same set ordered by class (stable within a class)."""
        order = torch.sort(self.labels, stable=True).indices
        return DistilledSet(self.images[order], self.labels[order], self.class_names,
                            None if self.soft_labels is None else self.soft_labels[order],
                            self.mean, self.std, self.provenance, self.zca)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} of shape {tuple(value.shape)}"
    return type(value).__name__


def _format(path: Path, format: str | None) -> str:
    chosen = format or path.suffix.lstrip(".")
    if chosen not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)} (or a path ending in .npz / "
                         f".safetensors), got {format or str(path)!r}")
    return chosen


def save_distilled(path: str | os.PathLike[str], data: DistilledSet,
                   format: str | None = None) -> Path:
    """Write ``data`` class-major to ``path`` (atomically); ``format`` defaults to the suffix.

    Returns:
        The path written.
    """
    target = Path(path)
    chosen = _format(target, format)
    data = data.class_major()
    extras = {"soft_labels": data.soft_labels,
              "mean": None if data.mean is None else torch.tensor(data.mean),
              "std": None if data.std is None else torch.tensor(data.std)}
    tensors = {k: v.detach().cpu().float().contiguous() for k, v in extras.items()
               if v is not None}
    # The whitening keeps its dtypes: its eps (float64) and shape (int64) are its identity.
    tensors.update({f"zca_{k}": v.detach().cpu().contiguous() for k, v in data.zca.items()})
    # format_version 2: the file carries a checksum (version 1 files, without it, still load).
    provenance = json.dumps({"format": _FORMAT, "format_version": 2, **data.provenance},
                            sort_keys=True)
    images = data.images.detach().cpu().float().contiguous()
    if chosen == "npz":
        arrays = {"x": images.numpy(), "y": data.labels.numpy(),
                  "class_names": np.array(data.class_names, dtype=str),
                  "provenance": np.array(provenance),
                  **{k: v.numpy() for k, v in tensors.items()}}
        arrays["checksum"] = np.array(_checksum(arrays))

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a file object: numpy adds no second suffix
                np.savez_compressed(handle, **arrays)
    else:
        metadata = {"class_names": json.dumps(list(data.class_names)),
                    "provenance": provenance}
        content = {"images": images, "labels": data.labels.contiguous(), **tensors}
        metadata["checksum"] = _checksum({k: v.numpy() for k, v in content.items()}, metadata)

        def write(tmp: Path) -> None:
            save_file(content, str(tmp), metadata=metadata)
    atomic_write(target, write)
    return target


def load_distilled(path: str | os.PathLike[str], num_classes: int | None = None
                   ) -> DistilledSet:
    """Read a distilled set written by :func:`save_distilled`, or any ``.npz`` that
    ``load_dataset("npz")`` reads (``x``, ``y``; optional ``class_names``, ``soft_labels``).

    A file that names no classes has as many as its soft labels have columns, else
    ``num_classes`` (the dataset it belongs to), else ``max label + 1``; they are called
    ``"0"``, ``"1"``, ...

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable ``.npz`` / safetensors file, or its arrays break
            the contracts of :class:`DistilledSet`; the message names the file.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"distilled set {str(source)!r} does not exist")
    try:
        if _format(source, None) == "npz":
            return _read_npz(source, num_classes)
        return _read_safetensors(source)
    except ValueError as err:
        if str(source) in str(err):
            raise
        raise ValueError(f"distilled set {str(source)!r}: {err}") from err
    # A damaged archive: zipfile and zlib raise these (NotImplementedError: a flipped
    # compression method).
    except (zlib.error, zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as err:
        raise ValueError(f"distilled set {str(source)!r} is damaged: {type(err).__name__}: "
                         f"{err}") from err


def _checksum(arrays: Mapping[str, np.ndarray], text: Mapping[str, str] | None = None) -> str:
    """SHA-256 of every array (name, dtype, shape, bytes) and text field but the checksum.

    Written into each file, since neither format notices damage on its own: numpy reads an
    ``.npz`` member without checking its CRC, and safetensors has no checksum.
    """
    digest = hashlib.sha256()
    for name in sorted(k for k in arrays if k != "checksum"):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.tobytes())
    for name in sorted(k for k in (text or {}) if k != "checksum"):
        digest.update(json.dumps([name, text[name]]).encode())  # type: ignore[index]
    return digest.hexdigest()


def _verify(stored: str | None, actual: str, provenance: str) -> None:
    """Refuse a file whose checksum differs, or that this module wrote with one (its
    provenance says so) but that has lost it; a foreign file, or one of a release before the
    checksum, is read as it is."""
    try:
        version = json.loads(provenance).get("format_version") if provenance else None
    except (json.JSONDecodeError, AttributeError):
        version = None  # _assemble names the broken provenance
    if stored is None and version is not None:
        raise ValueError("is damaged: a softlabels distilled set without its checksum")
    if stored is not None and stored != actual:
        raise ValueError("is damaged: its content does not match the checksum it was written "
                         "with")


def _read_npz(path: Path, num_classes: int | None) -> DistilledSet:
    raw = read_npz(path)  # x, y and class names, with the loader's own checks
    with np.load(path, allow_pickle=False) as archive:
        _verify(str(archive["checksum"]) if "checksum" in archive.files else None,
                _checksum({k: archive[k] for k in archive.files}),
                str(archive["provenance"]) if "provenance" in archive.files else "")
        extra = {k: torch.from_numpy(np.asarray(archive[k], dtype=np.float32))
                 for k in archive.files if k in ("soft_labels", "mean", "std")}
        # The whitening keeps its dtypes (its eps and shape are part of its identity).
        extra.update({k: torch.from_numpy(np.array(archive[k])) for k in archive.files
                      if k.startswith("zca_")})
        has_names = "class_names" in archive.files
        provenance = str(archive["provenance"]) if "provenance" in archive.files else "{}"
    images = torch.from_numpy(raw.images)
    images = images.float().div_(255.0) if raw.images.dtype == np.uint8 else images.float()
    names = tuple(raw.class_names)
    soft = extra.pop("soft_labels", None)
    count = soft.shape[1] if soft is not None and soft.ndim == 2 else num_classes
    if not has_names and count is not None:
        names = tuple(str(c) for c in range(max(len(names), count)))
    return _assemble(images, torch.from_numpy(raw.labels), names, soft, extra, provenance)


def _read_safetensors(path: Path) -> DistilledSet:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(f"not a readable safetensors file: {err}") from err
    _verify(metadata.get("checksum"),
            _checksum({k: v.numpy() for k, v in tensors.items()}, metadata),
            metadata.get("provenance", ""))
    missing = [k for k in ("images", "labels") if k not in tensors]
    if missing or "class_names" not in metadata:
        raise ValueError(f"not a softlabels distilled set: lacks {missing or 'class_names'}")
    try:
        names = tuple(str(n) for n in json.loads(metadata["class_names"]))
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"class_names in the header is not a JSON list: {err}") from err
    images, labels = tensors.pop("images"), tensors.pop("labels")
    return _assemble(images.float(), labels.long(), names, tensors.pop("soft_labels", None),
                     tensors, metadata.get("provenance", "{}"))


def _assemble(images: Tensor, labels: Tensor, names: tuple[str, ...], soft: Tensor | None,
              extra: dict[str, Tensor], provenance_text: str) -> DistilledSet:
    try:
        provenance = json.loads(provenance_text)
    except json.JSONDecodeError as err:
        raise ValueError(f"provenance is not JSON: {err}") from err
    provenance = provenance if isinstance(provenance, dict) else {}
    provenance.pop("format", None)
    provenance.pop("format_version", None)
    mean, std = extra.pop("mean", None), extra.pop("std", None)
    zca = {k[len("zca_"):]: v for k, v in extra.items() if k.startswith("zca_")}
    return DistilledSet(images, labels, names, soft,
                        None if mean is None else tuple(mean.tolist()),
                        None if std is None else tuple(std.tolist()), provenance, zca)


def ddranking_inputs(data: DistilledSet) -> tuple[Tensor, Tensor]:
    """``(image_tensor, soft_labels)`` as DD-Ranking's ``compute_metrics`` takes them.

    DD-Ranking builds the hard labels itself as ``[c] * ipc`` for each class ``c``, so the
    images must be class-major with the same number per class; its models have no
    normalisation layer, so the images are normalised with the set's mean and std.

    Raises:
        ValueError: the classes hold different numbers of images, the set has no soft labels
            or no normalisation, or it is ZCA-whitened (not supported yet).
    """
    counts = torch.bincount(data.labels, minlength=data.num_classes)
    if data.labels.numel() == 0 or bool((counts != counts[0]).any()):
        raise ValueError(f"DD-Ranking needs the same number of images in every class, got "
                         f"{counts.tolist()}")
    if data.soft_labels is None:
        raise ValueError("DD-Ranking's soft-label score needs soft labels; this set has none")
    if data.mean is None or data.std is None:
        raise ValueError("the set records no normalisation (mean, std) to give DD-Ranking")
    if data.zca:
        raise ValueError("ZCA-whitened sets are not supported by ddranking_inputs yet")
    ordered = data.class_major()
    mean = torch.tensor(ordered.mean).view(1, -1, 1, 1)
    std = torch.tensor(ordered.std).view(1, -1, 1, 1)
    assert ordered.soft_labels is not None  # checked above, class_major keeps it
    return (ordered.images - mean) / std, ordered.soft_labels
