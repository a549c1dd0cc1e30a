"""digit_scenes: embedded segmentation scenes composed from sklearn's 8x8 digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softlabels.data import list_segmentation_datasets, load_segmentation
from softlabels.data.segmentation import DIGIT_SCENE_CLASSES, build_digit_scenes, digit_pool


@pytest.fixture(scope="module")
def sk_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images / 16.0, bunch.target


def test_registered_with_classes_and_shapes():
    assert "digit_scenes" in list_segmentation_datasets()
    train = load_segmentation("digit_scenes")
    test = load_segmentation("digit_scenes", split="test")
    assert train.images.shape == (512, 1, 32, 32)
    assert test.images.shape == (128, 1, 32, 32)
    assert train.masks.shape == (512, 32, 32)
    assert train.masks.dtype == torch.int64
    assert train.info.class_names == ("background", *"0123456789") == DIGIT_SCENE_CLASSES
    assert train.num_classes == 11
    assert train.ignore_index == 255
    assert int(train.masks.min()) == 0
    assert int(train.masks.max()) == 10
    assert float(train.images.min()) >= 0.0
    assert float(train.images.max()) <= 1.0
    # Normalisation statistics come from the training scenes, for both splits.
    assert test.info.mean == train.info.mean
    assert train.info.mean[0] == pytest.approx(float(train.images.mean()), rel=1e-5)


def test_options_change_size_and_count():
    data = load_segmentation(
        "digit_scenes", split="test", num_images=5, image_size=(24, 40), seed=3
    )
    assert data.images.shape == (5, 1, 24, 40)
    assert data.masks.shape == (5, 24, 40)
    with pytest.raises(ValueError, match="image_size"):
        load_segmentation("digit_scenes", image_size=7)
    with pytest.raises(ValueError, match="does not take"):
        load_segmentation("digit_scenes", num_scenes=5)
    with pytest.raises(ValueError, match="valid splits"):
        load_segmentation("digit_scenes", split="val")


def test_deterministic_by_seed_and_seeds_differ():
    a = build_digit_scenes("train", num_images=64, seed=1)
    b = build_digit_scenes("train", num_images=64, seed=1)
    c = build_digit_scenes("train", num_images=64, seed=2)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.masks, b.masks)
    assert torch.equal(a.placements, b.placements)
    assert not torch.equal(a.masks, c.masks)
    # Train and test use different layouts even for one seed.
    t = build_digit_scenes("test", num_images=64, seed=1)
    assert not torch.equal(a.placements[:, :, 2:], t.placements[:, :, 2:])


def test_each_scene_holds_one_to_four_digits_and_their_classes():
    scenes = build_digit_scenes("train", num_images=200, seed=0)
    placed = scenes.placements[:, :, 0] >= 0
    counts = placed.sum(1)
    assert int(counts.min()) == 1
    assert int(counts.max()) == 4
    assert set(counts.tolist()) == {1, 2, 3, 4}
    for i in range(200):
        rows = scenes.placements[i][placed[i]]
        present = set(scenes.masks[i].unique().tolist())
        assert present - {0}, "every scene shows at least one digit"
        assert present <= {0} | {int(d) + 1 for d in rows[:, 1]}
        # The last digit is painted last, so its class is always visible.
        assert int(rows[-1, 1]) + 1 in present


def test_scenes_are_the_documented_composition_of_their_placements(sk_digits):
    """Rebuild every scene from its placement record with plain loops and compare."""
    images, targets = sk_digits
    scenes = build_digit_scenes("test", num_images=40, image_size=(36, 30), seed=5)
    for i in range(40):
        canvas = np.zeros((36, 30))
        mask = np.zeros((36, 30), dtype=np.int64)
        for source, digit, scale, top, left in scenes.placements[i].tolist():
            if source < 0:
                continue
            assert targets[source] == digit
            assert scale in (1, 2, 3)
            for r in range(8 * scale):
                for c in range(8 * scale):
                    value = images[source][r // scale, c // scale]
                    canvas[top + r, left + c] = max(canvas[top + r, left + c], value)
                    if value > 0.25:
                        mask[top + r, left + c] = digit + 1
        np.testing.assert_allclose(scenes.images[i, 0].numpy(), canvas, atol=1e-6)
        np.testing.assert_array_equal(scenes.masks[i].numpy(), mask)


def test_train_and_test_draw_from_disjoint_digit_images(sk_digits):
    train_pool, test_pool = set(digit_pool("train").tolist()), set(digit_pool("test").tolist())
    assert not train_pool & test_pool
    assert len(train_pool | test_pool) == len(sk_digits[1])
    for split, pool in (("train", train_pool), ("test", test_pool)):
        sources = build_digit_scenes(split, seed=0).placements[:, :, 0]
        used = set(sources[sources >= 0].tolist())
        assert used <= pool
        assert len(used) > 100  # the split really samples across its half
