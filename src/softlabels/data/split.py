"""Seeded, stratified subsets of a labelled dataset: train/validation splits, k per class."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._checks import check_positive_int, check_range


def train_val_split(
    labels: Tensor | np.ndarray, val_fraction: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Split positions ``0..N-1`` into a training and a validation part, class by class.

    Each class with ``n`` images sends ``floor(val_fraction * n + 0.5)`` of them to validation, but
    at least one and at most ``n - 1`` when ``n >= 2`` (so every class is seen in both parts);
    a class with a single image stays in training. Which images go where is drawn from a local
    ``torch.Generator`` seeded with ``seed``: same labels and seed, same split, and the global
    RNG is untouched.

    Args:
        labels: ``(N,)`` integer class labels (tensor or array; any non-negative values).
        val_fraction: share of each class that goes to validation, strictly in (0, 1).
        seed: integer seed of the permutation.

    Returns:
        ``(train_positions, val_positions)``: sorted ``int64`` tensors that are disjoint and
        together cover ``0..N-1``.

    Example:
        >>> train, val = train_val_split(torch.tensor([0, 0, 0, 0, 1, 1]), 0.5, seed=0)
        >>> len(train), len(val)
        (3, 3)
    """
    tensor = _integer_labels(labels)
    fraction = check_range("val_fraction", val_fraction, 0.0, 1.0)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")
    _check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_parts: list[Tensor] = []
    val_parts: list[Tensor] = []
    # Classes in sorted order so that the sequence of random draws, hence the split, depends
    # only on the labels and the seed.
    for cls in torch.unique(tensor, sorted=True).tolist():
        positions = torch.nonzero(tensor == cls, as_tuple=False).flatten()
        count = positions.numel()
        n_val = 0
        if count >= 2:
            # Round half up (not Python's half-to-even) so the count is easy to predict.
            n_val = min(max(int(fraction * count + 0.5), 1), count - 1)
        order = positions[torch.randperm(count, generator=generator)]
        val_parts.append(order[:n_val])
        train_parts.append(order[n_val:])
    train = torch.sort(torch.cat(train_parts)).values if train_parts else tensor.new_empty(0)
    val = torch.sort(torch.cat(val_parts)).values if val_parts else tensor.new_empty(0)
    return train, val


def sample_per_class(labels: Tensor | np.ndarray, per_class: int, seed: int) -> Tensor:
    """Draw ``per_class`` random positions of every class (the "random real images" selection).

    Args:
        labels: ``(N,)`` integer class labels.
        per_class: images per class, k >= 1.
        seed: integer seed of the draw; the global RNG is untouched.

    Returns:
        Sorted ``int64`` positions, ``k`` per class present in ``labels``.

    Raises:
        ValueError: a class has fewer than ``per_class`` images (the message names it).

    Example:
        >>> sample_per_class(torch.tensor([0, 1, 0, 1, 0]), 2, seed=0).shape
        torch.Size([4])
    """
    tensor = _integer_labels(labels)
    check_positive_int("per_class", per_class)
    _check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    chosen: list[Tensor] = []
    for cls in torch.unique(tensor, sorted=True).tolist():
        positions = torch.nonzero(tensor == cls, as_tuple=False).flatten()
        if positions.numel() < per_class:
            raise ValueError(f"per_class={per_class} but class {cls} has only "
                             f"{positions.numel()} images")
        chosen.append(positions[torch.randperm(positions.numel(), generator=generator)[:per_class]])
    return torch.sort(torch.cat(chosen)).values if chosen else tensor.new_empty(0)


def _integer_labels(labels: Tensor | np.ndarray) -> Tensor:
    tensor = torch.as_tensor(labels)
    if tensor.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {tuple(tensor.shape)}")
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"labels must hold integers, got dtype {tensor.dtype}")
    return tensor.to(torch.int64).cpu()


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
