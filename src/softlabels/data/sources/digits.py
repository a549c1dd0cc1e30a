"""scikit-learn's 8x8 handwritten digits: the embedded dataset that needs no files.

1797 grey images of 8x8 pixels with integer intensities 0..16, divided by 16 so that they lie in
[0, 1]. scikit-learn ships no split, so this module defines one:

* ``"all"``: the 1797 images in scikit-learn's order.
* ``"train"`` / ``"test"``: a stratified 80/20 split computed with
  :func:`softlabels.data.split.train_val_split` (``val_fraction=0.2``, ``seed=0``); "test" is the
  validation part. Each part keeps scikit-learn's order. The seed is fixed so that every user
  and every run sees the same split.

Mean and std in ``DatasetInfo`` are computed from the "train" part (for every split).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..split import train_val_split
from .base import RawSplit, Source, SplitPlan

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
DIGITS_CLASSES = tuple(str(d) for d in range(10))


def _read_all() -> tuple[np.ndarray, np.ndarray]:
    # Imported here: scikit-learn takes a noticeable time to import and only this source needs it.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    return np.ascontiguousarray(images), labels


def _read(split: str) -> RawSplit:
    images, labels = _read_all()
    if split != "all":
        train_pos, test_pos = train_val_split(labels, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
        keep = (train_pos if split == "train" else test_pos).numpy()
        images, labels = images[keep], labels[keep]
    return RawSplit(images=images, labels=labels, class_names=DIGITS_CLASSES)


def _locate(root: Path | None, split: str) -> SplitPlan:
    del root  # embedded: nothing to find
    return SplitPlan(
        origin="embedded (sklearn.datasets.load_digits)", files=(), read=lambda: _read(split)
    )


DIGITS = Source(
    name="digits",
    description="scikit-learn 8x8 digits (embedded, 1797 images, 10 classes)",
    locate=_locate,
    splits=("train", "test", "all"),
    embedded=True,
    cacheable=False,  # decoding takes milliseconds; a cache would only cost disk
)
