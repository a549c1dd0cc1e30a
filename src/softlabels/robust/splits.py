"""The training, validation and test parts of a robust-fairness study, optionally balanced.

Class-wise accuracies and NSD compare classes, so the parts can be drawn with the same number
of images per class: a balanced training subset (ABSLD's summed class risk is then unbiased by
class sizes), a balanced validation part for the checkpoint choice and a balanced test part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import ImageDataset, sample_per_class, train_val_split

__all__ = ["StudyParts", "study_parts"]


@dataclass
class StudyParts:
    """The images a robust study trains on, chooses checkpoints on and scores on."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset


def study_parts(train: ImageDataset, test: ImageDataset, *, val_fraction: float = 0.1,
                per_class: int | None = None, val_per_class: int | None = None,
                test_per_class: int | None = None) -> StudyParts:
    """Split ``train`` into training and validation parts and subsample ``test``.

    Args:
        train, test: the datasets the parts come from.
        val_fraction: share of each class of ``train`` held out (without ``val_per_class``).
        per_class: first draw this many images of every class of ``train`` (seed 0).
        val_per_class: hold out this many images of every class (seed 1) instead of a share.
        test_per_class: draw this many images of every class of ``test`` (seed 0).

    Raises:
        ValueError: a class has too few images for the count asked (the message names the
            argument, the class and its size); the held-out part must leave one image of
            every class for training.
    """
    if per_class is not None:
        train = train.subset(_balanced("per_class", train, per_class, seed=0))
    if test_per_class is not None:
        test = test.subset(_balanced("test_per_class", test, test_per_class, seed=0))
    if val_per_class is None:
        fit_part, val_part = train_val_split(train.labels, val_fraction, seed=1)
    else:
        val_part = _balanced("val_per_class", train, val_per_class, seed=1, keep=1)
        kept = torch.ones(len(train), dtype=torch.bool).index_fill_(0, val_part, False)
        fit_part = kept.nonzero().flatten()
    return StudyParts(train.subset(fit_part), train.subset(val_part), test)


def _balanced(name: str, part: ImageDataset, per_class: int, seed: int, keep: int = 0
              ) -> Tensor:
    counts = torch.bincount(part.labels, minlength=part.num_classes)
    smallest = int(counts.argmin())
    if per_class + keep > int(counts[smallest]):
        spare = f" and keep {keep} for training" if keep else ""
        raise ValueError(f"{name}={per_class}: every class must have {per_class} images"
                         f"{spare}, but class {smallest} has only {int(counts[smallest])} "
                         f"(the smallest); lower {name}")
    return sample_per_class(part.labels, per_class, seed=seed)
