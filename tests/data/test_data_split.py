"""train_val_split: stratified, seeded, disjoint and covering."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softlabels.data import sample_per_class, train_val_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import device_fixture, off_cpu  # noqa: F401

label_lists = st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=120)
fractions = st.floats(min_value=0.01, max_value=0.99)


@settings(max_examples=150, deadline=None)
@given(labels=label_lists, fraction=fractions, seed=st.integers(0, 2**31 - 1))
def test_disjoint_covering_and_stratified(labels: list[int], fraction: float, seed: int):
    y = torch.tensor(labels)
    train, val = train_val_split(y, fraction, seed)
    assert train.dtype == torch.int64
    assert val.dtype == torch.int64
    both = torch.cat([train, val]).sort().values
    assert both.tolist() == list(range(len(labels))), "parts must be disjoint and cover all"
    assert train.tolist() == sorted(train.tolist())
    assert val.tolist() == sorted(val.tolist())
    for cls in set(labels):
        n = labels.count(cls)
        # The documented count: fraction * n rounded half up, then at least one and at most
        # n - 1, so that a class of two or more is seen in both parts; a single image trains.
        expected = 0 if n == 1 else min(max(math.floor(fraction * n + 0.5), 1), n - 1)
        assert int((y[val] == cls).sum()) == expected, (cls, n)


def test_small_classes_by_hand():
    # Classes of 1 to 5 images. Rounding half up: 0.5 * 3 = 1.5 -> 2 and 0.5 * 5 = 2.5 -> 3
    # (Python's round would give 2 and 2); then at least 1 and at most n - 1 per class.
    labels = torch.tensor([0] + [1] * 2 + [2] * 3 + [3] * 4 + [4] * 5)
    for fraction, counts in ((0.5, [0, 1, 2, 2, 3]), (0.1, [0, 1, 1, 1, 1]),
                             (0.9, [0, 1, 2, 3, 4]), (0.3, [0, 1, 1, 1, 2])):
        val = train_val_split(labels, fraction, seed=0)[1]
        assert torch.bincount(labels[val], minlength=5).tolist() == counts, fraction


@settings(max_examples=50, deadline=None)
@given(labels=label_lists, fraction=fractions, seed=st.integers(0, 1000))
def test_same_seed_same_split(labels: list[int], fraction: float, seed: int):
    first = train_val_split(torch.tensor(labels), fraction, seed)
    second = train_val_split(np.array(labels), fraction, seed)
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


def test_exact_counts_and_seed_dependence():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, val = train_val_split(labels, 0.1, seed=0)
    assert [int((labels[val] == c).sum()) for c in range(3)] == [5, 3, 2]
    assert len(train) == 90
    other = train_val_split(labels, 0.1, seed=1)[1]
    assert not torch.equal(val, other)


def test_global_rng_untouched():
    state = torch.get_rng_state()
    train_val_split(torch.arange(20) % 3, 0.3, seed=5)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_open_interval(fraction: float):
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(torch.tensor([0, 1, 0, 1]), fraction, seed=0)


def test_bad_labels_and_seed():
    with pytest.raises(ValueError, match="1-D"):
        train_val_split(torch.zeros(2, 2, dtype=torch.int64), 0.5, 0)
    with pytest.raises(TypeError, match="integers"):
        train_val_split(torch.tensor([0.5, 1.0]), 0.5, 0)
    with pytest.raises(TypeError, match="seed"):
        train_val_split(torch.tensor([0, 1]), 0.5, 1.5)  # type: ignore[arg-type]


def test_sample_per_class_draws_k_of_each_class_reproducibly() -> None:
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    chosen = sample_per_class(labels, 3, seed=5)
    assert torch.bincount(labels[chosen]).tolist() == [3, 3, 3]
    assert chosen.unique().numel() == 9
    assert torch.equal(chosen, sample_per_class(labels, 3, seed=5))
    draws = {tuple(sample_per_class(labels, 3, seed=s).tolist()) for s in range(10)}
    assert len(draws) > 5


def test_sample_per_class_errors() -> None:
    labels = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match="per_class=2 but class 1 has only 1 images"):
        sample_per_class(labels, 2, seed=0)
    with pytest.raises(ValueError, match="per_class must be > 0"):
        sample_per_class(labels, 0, seed=0)
    with pytest.raises(TypeError, match="labels must hold integers"):
        sample_per_class(torch.tensor([0.0, 1.0]), 1, seed=0)


def test_subsets_of_device_labels(device: str) -> None:
    """sample_per_class and train_val_split of labels on the device: the per-class counts,
    disjoint covering parts, positions that index the device labels, and (off the CPU) the
    CPU's draws."""
    labels_cpu = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    labels = labels_cpu.to(device)
    chosen = sample_per_class(labels, 3, seed=4)
    assert torch.bincount(labels[chosen].cpu()).tolist() == [3, 3, 3]
    assert chosen.unique().numel() == 9
    train, val = train_val_split(labels, 0.2, seed=5)
    # 0.2 * (10, 7, 3) = (2, 1.4, 0.6) -> 2, 1, 1.
    assert torch.bincount(labels[val].cpu()).tolist() == [2, 1, 1]
    assert torch.cat([train, val]).sort().values.tolist() == list(range(20))
    if off_cpu(device):
        assert torch.equal(chosen.cpu(), sample_per_class(labels_cpu, 3, seed=4))
        for part, reference in zip((train, val), train_val_split(labels_cpu, 0.2, seed=5),
                                   strict=True):
            assert torch.equal(part.cpu(), reference)
