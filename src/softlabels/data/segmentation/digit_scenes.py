"""Digit scenes: an embedded segmentation dataset composed from scikit-learn's 8x8 digits.

Needs no files and builds in milliseconds, so segmentation code can be tested and demonstrated
on a fresh machine. Each scene is a grey canvas (default 32x32, one channel) holding 1 to
``max_digits`` digits:

* Source digits: scikit-learn's 1797 digits (intensities 0..16, divided by 16). The ``"train"``
  split draws only from the first half (positions 0..898), ``"test"`` only from the second
  (899..1796), so test scenes are made of unseen digit images. sklearn's order groups digits by
  writer, so the halves also roughly separate writers. Both halves hold 86-92 images of every
  digit.
* Each digit is upsampled by an integer factor drawn from ``scales`` (nearest neighbour: each
  pixel becomes an ``s x s`` block) and pasted at a uniformly random position where it fits
  entirely.
* Image: the pixel-wise maximum of the pasted intensities, so a digit never erases the strokes
  of another one (an overwrite would leave a dark box over earlier digits that the mask would
  not show).
* Mask: ``digit + 1`` where the pasted digit's intensity is above ``threshold``, ``0``
  (background) elsewhere; digits are painted in order, so where strokes overlap the later
  digit's class wins. Faint pixels (``0 < intensity <= threshold``) are background. The last
  digit is never overwritten and every sklearn digit has at least 16 pixels above 0.25, so
  every scene holds at least one digit class.
* Classes: ``"background", "0", ..., "9"`` (11). No pixel is void, but ``ignore_index`` is 255
  as for CamVid so that padding by :func:`paired_random_crop` stays valid.
* Randomness: a NumPy ``Generator`` seeded with ``(seed, split)``: the same arguments give the
  same scenes on every machine, and train and test layouts differ even for one seed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..._checks import check_positive_int, check_range
from ..types import DatasetInfo
from .types import IGNORE_INDEX, SegmentationDataset

DIGIT_SCENE_CLASSES = ("background", *(str(d) for d in range(10)))
DIGIT_SCENE_SPLITS = ("train", "test")
DEFAULT_NUM_IMAGES = {"train": 512, "test": 128}
DIGIT_SIDE = 8
# Splits seed different streams: (seed, split code) feeds NumPy's SeedSequence.
_SPLIT_CODES = {"train": 0, "test": 1}
_PLACEMENT_FIELDS = ("source", "digit", "scale", "top", "left")


@functools.lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) float32 intensities in [0, 1] and (1797,) int64 digits, read-only."""
    # Imported here: scikit-learn takes most of a second to import and only this needs it.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / np.float32(16.0)).copy()
    labels = bunch.target.astype(np.int64)
    images.flags.writeable = False  # shared by every call through the cache
    labels.flags.writeable = False
    return images, labels


def digit_pool(split: str) -> np.ndarray:
    """Positions into ``sklearn.datasets.load_digits()`` that ``split`` may draw digits from.

    ``"train"``: 0..898, ``"test"``: 899..1796 (disjoint halves).
    """
    if split not in DIGIT_SCENE_SPLITS:
        raise ValueError(f"split must be one of {list(DIGIT_SCENE_SPLITS)}, got {split!r}")
    total = len(_sklearn_digits()[0])
    half = (total + 1) // 2
    return np.arange(0, half) if split == "train" else np.arange(half, total)


@dataclass(frozen=True)
class DigitScenes:
    """Scenes as built, with a record of what was pasted where.

    Attributes:
        images: float32 ``(N, 1, H, W)`` in [0, 1].
        masks: int64 ``(N, H, W)`` in 0..10 (0 = background, ``d + 1`` = digit ``d``).
        placements: int64 ``(N, max_digits, 5)``, one row per pasted digit in paste order:
            ``(source, digit, scale, top, left)`` with ``source`` a position into
            ``load_digits()``; rows of digits not pasted are ``-1``.
    """

    images: Tensor
    masks: Tensor
    placements: Tensor


def _image_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, tuple | list)
        or len(image_size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in image_size)
    ):
        raise TypeError(f"image_size must be an int or a pair of ints, got {image_size!r}")
    h, w = image_size
    if min(h, w) < DIGIT_SIDE:
        raise ValueError(f"image_size must be at least {DIGIT_SIDE} on both sides, got {(h, w)}")
    return h, w


def build_digit_scenes(
    split: str = "train",
    *,
    num_images: int | None = None,
    image_size: int | tuple[int, int] = 32,
    seed: int = 0,
    max_digits: int = 4,
    scales: tuple[int, ...] = (1, 2, 3),
    threshold: float = 0.25,
) -> DigitScenes:
    """Compose digit scenes (see the module docstring for the rules).

    Args:
        split: ``"train"`` or ``"test"``: which half of the sklearn digits to draw from.
        num_images: scenes N; ``None`` = 512 for train, 128 for test.
        image_size: canvas side, or ``(H, W)``; at least 8.
        seed: int seed; with ``split``, fixes every random choice.
        max_digits: digits per scene are uniform in ``1..max_digits``.
        scales: integer upsampling factors to choose from uniformly; factors whose
            ``8 * s`` exceeds the canvas are left out (at least one must fit).
        threshold: intensity in [0, 1) above which a pasted pixel gets the digit's class.

    Returns:
        :class:`DigitScenes` with images ``(N, 1, H, W)``, masks ``(N, H, W)`` and placements.

    Example:
        >>> scenes = build_digit_scenes("test", num_images=4, seed=1)
        >>> scenes.images.shape, scenes.masks.shape
        (torch.Size([4, 1, 32, 32]), torch.Size([4, 32, 32]))
    """
    pool = digit_pool(split)
    n = DEFAULT_NUM_IMAGES[split] if num_images is None else check_positive_int(
        "num_images", num_images
    )
    h, w = _image_size(image_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    check_positive_int("max_digits", max_digits)
    threshold = check_range("threshold", threshold, 0.0, 1.0)
    if threshold >= 1.0:
        raise ValueError(f"threshold must be < 1 (no pixel exceeds 1), got {threshold}")
    if not scales or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                             for s in scales):  # fmt: skip
        raise ValueError(f"scales must be a non-empty tuple of ints > 0, got {scales!r}")
    fitting = np.array(sorted({s for s in scales if DIGIT_SIDE * s <= min(h, w)}))
    if not fitting.size:
        raise ValueError(
            f"no scale in {tuple(scales)} fits a {h}x{w} canvas (a digit is {DIGIT_SIDE}*scale "
            "pixels wide)"
        )

    digits, targets = _sklearn_digits()
    rng = np.random.default_rng([seed, _SPLIT_CODES[split]])
    # All draws up front with fixed shapes: the stream does not depend on branching below.
    counts = rng.integers(1, max_digits + 1, size=n)
    sources = pool[rng.integers(0, len(pool), size=(n, max_digits))]
    chosen = fitting[rng.integers(0, len(fitting), size=(n, max_digits))]
    sides = DIGIT_SIDE * chosen
    tops = np.floor(rng.random((n, max_digits)) * (h - sides + 1)).astype(np.int64)
    lefts = np.floor(rng.random((n, max_digits)) * (w - sides + 1)).astype(np.int64)

    images = np.zeros((n, h, w), dtype=np.float32)
    masks = np.zeros((n, h, w), dtype=np.int64)
    placements = np.full((n, max_digits, len(_PLACEMENT_FIELDS)), -1, dtype=np.int64)
    # Upsampled digits, computed once per (source, scale) actually used.
    patches: dict[tuple[int, int], np.ndarray] = {}
    for i in range(n):
        for j in range(counts[i]):
            src, s, top, left = int(sources[i, j]), int(chosen[i, j]), tops[i, j], lefts[i, j]
            patch = patches.get((src, s))
            if patch is None:
                patch = np.kron(digits[src], np.ones((s, s), dtype=np.float32))
                patches[(src, s)] = patch
            side = DIGIT_SIDE * s
            window = (i, slice(top, top + side), slice(left, left + side))
            np.maximum(images[window], patch, out=images[window])
            masks[window][patch > threshold] = targets[src] + 1
            placements[i, j] = (src, targets[src], s, top, left)
    return DigitScenes(
        images=torch.from_numpy(images[:, None]),
        masks=torch.from_numpy(masks),
        placements=torch.from_numpy(placements),
    )


def load_digit_scenes(
    split: str = "train",
    *,
    num_images: int | None = None,
    image_size: int | tuple[int, int] = 32,
    seed: int = 0,
    max_digits: int = 4,
    scales: tuple[int, ...] = (1, 2, 3),
    threshold: float = 0.25,
) -> SegmentationDataset:
    """:func:`build_digit_scenes` as a :class:`SegmentationDataset` (``ignore_index=255``).

    ``info.mean``/``info.std`` are those of the train split built with the same arguments
    (and the default 512 scenes when ``split="test"``), as for every other dataset.
    """
    options = {
        "image_size": image_size,
        "seed": seed,
        "max_digits": max_digits,
        "scales": scales,
        "threshold": threshold,
    }
    scenes = build_digit_scenes(split, num_images=num_images, **options)
    train = scenes if split == "train" else build_digit_scenes("train", **options)
    pixels = train.images.to(torch.float64)
    info = DatasetInfo(
        name="digit_scenes",
        class_names=DIGIT_SCENE_CLASSES,
        mean=(float(pixels.mean()),),
        std=(float(pixels.std(unbiased=False)),),
        source="embedded (scenes of sklearn.datasets.load_digits)",
    )
    return SegmentationDataset(scenes.images, scenes.masks, info, ignore_index=IGNORE_INDEX)
