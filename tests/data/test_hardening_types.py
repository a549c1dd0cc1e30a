"""Dataset positions are integers: floats are refused, not truncated."""

from __future__ import annotations

import pytest
import torch

from softlabels.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", split="test")


@pytest.mark.parametrize("positions", [torch.tensor([1.7, 2.0]), [0.5], torch.tensor([True])])
def test_subset_refuses_non_integer_positions(digits, positions) -> None:
    with pytest.raises(TypeError, match="positions must hold integer positions"):
        digits.subset(positions)


def test_subset_accepts_integer_positions(digits) -> None:
    subset = digits.subset([3, 1])
    assert torch.equal(subset.labels, digits.labels[[3, 1]])
    assert torch.equal(digits.subset(torch.tensor([2], dtype=torch.int32)).indices,
                       torch.tensor([2]))
    with pytest.raises(ValueError, match=r"positions must lie in \[0, "):
        digits.subset([len(digits)])
