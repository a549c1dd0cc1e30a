"""SegmentationDataset: construction checks, properties and subsets."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from softlabels.data import DatasetInfo, SegmentationDataset

INFO = DatasetInfo("toy", ("bg", "a", "b"), (0.5,), (0.25,))


def _data(n: int = 4, h: int = 5, w: int = 6, ignore_index: int | None = 255):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, h, w, generator=g)
    masks = torch.randint(0, 3, (n, h, w), generator=g)
    return images, masks, ignore_index


def test_properties_and_default_indices():
    images, masks, ignore = _data()
    data = SegmentationDataset(images, masks, INFO, ignore)
    assert len(data) == 4
    assert data.num_classes == 3
    assert data.in_channels == 1
    assert data.image_size == (5, 6)
    assert data.ignore_index == 255
    assert data.indices.tolist() == [0, 1, 2, 3]
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.masks = masks  # type: ignore[misc]


def test_subset_keeps_pairs_and_original_positions():
    images, masks, ignore = _data(6)
    data = SegmentationDataset(images, masks, INFO, ignore)
    part = data.subset(torch.tensor([4, 1]))
    assert torch.equal(part.images, images[[4, 1]])
    assert torch.equal(part.masks, masks[[4, 1]])
    assert part.subset(torch.tensor([1])).indices.tolist() == [1]
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        data.subset(torch.tensor([6]))


def test_ignore_index_pixels_are_allowed():
    images, masks, _ = _data()
    masks[0, 0, 0] = 255
    data = SegmentationDataset(images, masks, INFO, 255)
    assert int(data.masks[0, 0, 0]) == 255  # kept, not clamped


@pytest.mark.parametrize(("bad", "ignore"), [(3, 255), (-1, 255), (255, None), (7, None)])
def test_out_of_range_mask_values_are_rejected_with_count_and_examples(bad: int, ignore):
    images, masks, _ = _data()
    masks[1, 2, :3] = bad
    with pytest.raises(ValueError, match=rf"masks .*got 3 values outside \(e\.g\. \[{bad}"):
        SegmentationDataset(images, masks, INFO, ignore)


def test_other_construction_errors():
    images, masks, ignore = _data()
    with pytest.raises(TypeError, match="float32"):
        SegmentationDataset(images.double(), masks, INFO, ignore)
    with pytest.raises(TypeError, match="int64"):
        SegmentationDataset(images, masks.to(torch.int32), INFO, ignore)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SegmentationDataset(images * 2, masks, INFO, ignore)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SegmentationDataset(images.masked_fill(images > 0.9, float("nan")), masks, INFO, ignore)
    with pytest.raises(ValueError, match=r"masks must have shape \(4, 5, 6\)"):
        SegmentationDataset(images, masks[:, :4], INFO, ignore)
    with pytest.raises(ValueError, match=r"C = 1 or 3"):
        SegmentationDataset(images.repeat(1, 2, 1, 1), masks, INFO, ignore)
    with pytest.raises(ValueError, match="outside the classes"):
        SegmentationDataset(images, masks, INFO, 2)
    with pytest.raises(TypeError, match="ignore_index"):
        SegmentationDataset(images, masks, INFO, 255.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="indices"):
        SegmentationDataset(images, masks, INFO, ignore, torch.arange(3))
