"""Tests of the expected calibration error (ECE^D and ECE^I, in percent)."""

from __future__ import annotations

import doctest
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import softlabels.metrics.calibration as calibration_module
from softlabels.metrics import CalibrationError, expected_calibration_error

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import device_fixture, gen  # noqa: F401

IGNORE = 255

# Four samples, each alone in its bin: (conf, correct) = (.9, 1), (.8, 0), (.65, 1), (.6, 0).
PROBS = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.35, 0.65], [0.6, 0.4]])
LABELS = torch.tensor([0, 1, 1, 1])

# Two 1x2 images, two classes (dim 1 = classes).
#   image 0: pixel 0 conf .9 right (bin (.8, .9]), pixel 1 argmax 1 at .7, label 0: wrong
#            -> ECE_0 = 100 * (|1 - .9| + |0 - .7|) / 2 = 40
#   image 1: pixel 0 argmax 1 at .85, label 0: wrong (bin (.8, .9]); pixel 1 ignored
#            -> ECE_1 = 100 * |0 - .85| = 85
# Pooled: bin (.8, .9] holds (.9, right) and (.85, wrong): |1 - 1.75| = .75; bin (.6, .7]: .7
#            -> ECE^D = 100 * (.75 + .7) / 3
SEG_PROBS = torch.tensor([[[[0.9, 0.3]], [[0.1, 0.7]]],
                          [[[0.15, 0.2]], [[0.85, 0.8]]]])
SEG_TARGET = torch.tensor([[[0, 0]], [[0, IGNORE]]])


def test_classification_by_hand() -> None:
    ece = expected_calibration_error(PROBS, LABELS)
    assert ece == pytest.approx(25 * (0.1 + 0.8 + 0.35 + 0.6))  # 46.25, in percent
    # One bin: 100 * |accuracy - mean confidence| = 100 * |0.5 - 2.95 / 4|.
    assert expected_calibration_error(PROBS, LABELS, bins=1) == pytest.approx(23.75)


def test_samples_in_one_bin_are_pooled_before_the_absolute_value() -> None:
    probs = torch.tensor([[0.85, 0.15], [0.82, 0.18]])  # both in (0.8, 0.9]
    ece = expected_calibration_error(probs, torch.tensor([0, 1]))
    assert ece == pytest.approx(100 * abs(1 - (0.85 + 0.82)) / 2)  # 33.5, not 98.5


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_bins_are_closed_on_the_right(dtype: torch.dtype) -> None:
    # 0.6 belongs to (0.5, 0.6] with 0.55, and 1.0 to (0.9, 1.0] with 0.95.
    probs = torch.tensor([[0.6, 0.4], [0.55, 0.45]], dtype=dtype)
    ece = expected_calibration_error(probs, torch.tensor([0, 1]))
    assert ece == pytest.approx(100 * abs(1 - 1.15) / 2, abs=0.05)  # 7.5, not 47.5
    probs = torch.tensor([[1.0, 0.0], [0.95, 0.05]], dtype=dtype)
    ece = expected_calibration_error(probs, torch.tensor([0, 1]))
    assert ece == pytest.approx(100 * abs(1 - 1.95) / 2, abs=0.05)  # 47.5, not 52.5


def test_segmentation_levels_by_hand() -> None:
    dataset = expected_calibration_error(SEG_PROBS, SEG_TARGET, ignore_index=IGNORE)
    image = expected_calibration_error(SEG_PROBS, SEG_TARGET, ignore_index=IGNORE, level="image")
    assert dataset == pytest.approx(100 * 1.45 / 3)
    assert image == pytest.approx((40 + 85) / 2)
    metric = CalibrationError(ignore_index=IGNORE)
    metric.update(SEG_PROBS[:1], SEG_TARGET[:1])
    metric.update(SEG_PROBS[1:], SEG_TARGET[1:])
    result = metric.compute()
    assert result["ece_dataset"] == pytest.approx(100 * 1.45 / 3)
    assert result["ece_image"] == pytest.approx(62.5)


def test_ignored_pixels_and_fully_ignored_images_change_nothing() -> None:
    metric = CalibrationError(ignore_index=IGNORE)
    metric.update(SEG_PROBS, SEG_TARGET)
    before = metric.compute()
    # An image whose every pixel is ignored, with confident probabilities.
    metric.update(torch.tensor([[[[0.99, 0.5]], [[0.01, 0.5]]]]), torch.full((1, 1, 2), IGNORE))
    assert metric.compute() == before
    # Changing the probabilities of the ignored pixel changes nothing either.
    changed = SEG_PROBS.clone()
    changed[1, :, 0, 1] = torch.tensor([0.99, 0.01])
    for level in ("dataset", "image"):
        assert expected_calibration_error(changed, SEG_TARGET, ignore_index=IGNORE,
                                          level=level) == pytest.approx(
            expected_calibration_error(SEG_PROBS, SEG_TARGET, ignore_index=IGNORE, level=level))


def test_keep_mask_equals_ignore_index() -> None:
    keep = SEG_TARGET != IGNORE
    labels = SEG_TARGET.masked_fill(~keep, 1)
    for level in ("dataset", "image"):
        assert expected_calibration_error(SEG_PROBS, labels, keep=keep, level=level) == (
            pytest.approx(expected_calibration_error(SEG_PROBS, SEG_TARGET,
                                                     ignore_index=IGNORE, level=level)))


def test_confident_and_right_is_perfectly_calibrated() -> None:
    target = torch.tensor([[[0, 1], [2, 0]]])
    probs = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).double()
    assert expected_calibration_error(probs, target) == 0.0
    assert expected_calibration_error(probs, target, level="image") == 0.0
    one_class = torch.ones(3, 1)
    assert expected_calibration_error(one_class, torch.zeros(3, dtype=torch.int64)) == 0.0


def test_empty_or_fully_ignored_is_nan() -> None:
    no_label = torch.zeros(0, dtype=torch.int64)
    assert math.isnan(expected_calibration_error(torch.zeros(0, 3), no_label))
    ignored = torch.full((1, 1, 2), IGNORE)
    probs = SEG_PROBS[:1]
    assert math.isnan(expected_calibration_error(probs, ignored, ignore_index=IGNORE))
    assert math.isnan(expected_calibration_error(probs, ignored, ignore_index=IGNORE,
                                                 level="image"))
    fresh = CalibrationError().compute()
    assert math.isnan(fresh["ece_dataset"])
    assert math.isnan(fresh["ece_image"])


def test_classification_stream_has_no_image_level() -> None:
    metric = CalibrationError()
    metric.update(PROBS[:2], LABELS[:2])
    metric.update(PROBS[2:], LABELS[2:])
    result = metric.compute()
    assert result["ece_dataset"] == pytest.approx(46.25)
    assert math.isnan(result["ece_image"])
    with pytest.raises(ValueError, match="kind of the earlier updates"):
        metric.update(SEG_PROBS, SEG_TARGET.clamp_max(1))
    metric.reset()
    metric.update(SEG_PROBS, SEG_TARGET.clamp_max(1))  # after reset any kind is fine
    with pytest.raises(ValueError, match="level='image' needs"):
        expected_calibration_error(PROBS, LABELS, level="image")


def _naive_ece(conf: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """Textbook loop over bins (lo, hi]."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.sum() / conf.size * abs(correct[inside].mean() - conf[inside].mean())
    return 100 * total


@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 15), st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_matches_naive_loop(b: int, c: int, bins: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    probs = (3 * torch.randn(b, c, 3, 4, generator=g, dtype=torch.float64)).softmax(1)
    target = torch.randint(0, c, (b, 3, 4), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.2] = -1
    conf = probs.max(1).values.numpy()
    correct = (probs.argmax(1) == target).double().numpy()
    kept = target.numpy() != -1
    expected_d = _naive_ece(conf[kept], correct[kept], bins) if kept.any() else math.nan
    per_image = [_naive_ece(conf[i][kept[i]], correct[i][kept[i]], bins)
                 for i in range(b) if kept[i].any()]
    expected_i = float(np.mean(per_image)) if per_image else math.nan

    got_d = expected_calibration_error(probs, target, bins, ignore_index=-1)
    got_i = expected_calibration_error(probs, target, bins, ignore_index=-1, level="image")
    assert got_d == pytest.approx(expected_d, rel=1e-9, abs=1e-9, nan_ok=True)
    assert got_i == pytest.approx(expected_i, rel=1e-9, abs=1e-9, nan_ok=True)
    assert math.isnan(got_d) or 0 <= got_d <= 100

    # Streaming the images one by one gives the same two numbers.
    metric = CalibrationError(bins, ignore_index=-1)
    for i in range(b):
        metric.update(probs[i : i + 1], target[i : i + 1])
    result = metric.compute()
    assert result["ece_dataset"] == pytest.approx(got_d, rel=1e-12, nan_ok=True)
    assert result["ece_image"] == pytest.approx(got_i, rel=1e-12, nan_ok=True)


# ECE in percent: float32 confidences may be summed in another order on a GPU.
ECE_TOL = 1e-5


def _naive_levels(probs: torch.Tensor, target: torch.Tensor, kept: torch.Tensor,
                  bins: int) -> tuple[float, float]:
    """ECE^D and ECE^I of (B, C, H, W) probabilities at the ``kept`` pixels, by _naive_ece."""
    conf = probs.double().max(1).values.numpy()
    correct = (probs.argmax(1) == target).double().numpy()
    kept = kept.numpy()
    per_image = [_naive_ece(conf[i][kept[i]], correct[i][kept[i]], bins)
                 for i in range(len(kept)) if kept[i].any()]
    return _naive_ece(conf[kept], correct[kept], bins), float(np.mean(per_image))


def test_calibration_of_device_probabilities(device: str) -> None:
    """expected_calibration_error and CalibrationError on device probabilities with ignored
    pixels and keep masks (given on the device or left on the CPU, as are the masks of an
    evaluation loop that moves only the images): the naive loop's numbers."""
    g = gen(6)
    # Made on the CPU and moved, so that every device bins the very same numbers.
    dense = torch.softmax(2 * torch.randn(3, 4, 5, 5, generator=g), 1)
    masks = torch.randint(0, 4, (3, 5, 5), generator=g)
    masks[1, :2] = IGNORE
    keep = torch.rand(3, 5, 5, generator=g) > 0.2
    flat = torch.softmax(2 * torch.randn(30, 4, generator=g), 1)
    labels = torch.randint(0, 4, (30,), generator=g)
    on = {name: t.to(device) for name, t in
          (("dense", dense), ("masks", masks), ("keep", keep), ("flat", flat),
           ("labels", labels))}

    expected = _naive_levels(dense, masks, (masks != IGNORE) & keep, 10)
    for level, value in zip(("dataset", "image"), expected, strict=True):
        assert expected_calibration_error(on["dense"], on["masks"], 10, IGNORE, level,
                                          keep=on["keep"]) == pytest.approx(value, abs=ECE_TOL)
    conf, predicted = flat.double().max(1)
    expected_flat = _naive_ece(conf.numpy(), (predicted == labels).double().numpy(), 15)
    assert expected_calibration_error(on["flat"], on["labels"], bins=15) == pytest.approx(
        expected_flat, abs=ECE_TOL)
    classification = CalibrationError(bins=15)
    classification.update(on["flat"], labels)  # labels on the CPU
    assert classification.compute()["ece_dataset"] == pytest.approx(expected_flat, abs=ECE_TOL)

    # Streamed: keep on the CPU for the first two images, none for the third.
    metric = CalibrationError(ignore_index=IGNORE)
    metric.update(on["dense"][:2], on["masks"][:2], keep=keep[:2])
    metric.update(on["dense"][2:], on["masks"][2:])
    streamed_keep = torch.cat([keep[:2], torch.ones(1, 5, 5, dtype=torch.bool)])
    streamed = _naive_levels(dense, masks, (masks != IGNORE) & streamed_keep, 10)
    result = metric.compute()
    assert result["ece_dataset"] == pytest.approx(streamed[0], abs=ECE_TOL)
    assert result["ece_image"] == pytest.approx(streamed[1], abs=ECE_TOL)
    masks_on_cpu = CalibrationError(ignore_index=IGNORE)
    masks_on_cpu.update(on["dense"], masks)
    assert masks_on_cpu.compute()["ece_dataset"] == pytest.approx(
        _naive_levels(dense, masks, masks != IGNORE, 10)[0], abs=ECE_TOL)


# ----------------------------------------------------------------------------- bad input


def test_probabilities_are_validated() -> None:
    with pytest.raises(ValueError, match=r"probs rows must sum to 1 over dim 1 \(within 0\.001\)"):
        expected_calibration_error(torch.rand(4, 3) + 1, LABELS.clamp_max(2))  # scores
    with pytest.raises(ValueError, match="probs rows must sum to 1"):
        expected_calibration_error(PROBS * 0.99, LABELS)
    expected_calibration_error(PROBS * (1 + 5e-4), LABELS)  # within the tolerance
    with pytest.raises(ValueError, match="probs must be non-negative"):
        expected_calibration_error(torch.tensor([[1.2, -0.2]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"probs must be non-negative.*softmax"):
        expected_calibration_error(torch.randn(4, 3) - 5, LABELS.clamp_max(2))  # logits
    with pytest.raises(ValueError, match="probs must be finite"):
        expected_calibration_error(torch.tensor([[math.nan, 1.0]]), torch.tensor([0]))
    with pytest.raises(TypeError, match="probs must be a floating-point tensor"):
        expected_calibration_error(torch.tensor([[1, 0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"probs must have shape \(N, C\) or \(B, C, H, W\)"):
        expected_calibration_error(torch.ones(2, 1, 3), torch.zeros(2, 3, dtype=torch.int64))


def test_targets_are_validated() -> None:
    with pytest.raises(ValueError, match=r"target must have shape \(4,\).*\(4, 2\).*\(3,\)"):
        expected_calibration_error(PROBS, LABELS[:3])
    with pytest.raises(ValueError, match=r"target must have shape \(2, 1, 2\)"):
        expected_calibration_error(SEG_PROBS, SEG_TARGET[:, 0], ignore_index=IGNORE)
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 2\)"):
        expected_calibration_error(PROBS, torch.tensor([0, 1, 2, 1]))  # never clamped
    with pytest.raises(ValueError, match="target must hold class indices"):
        expected_calibration_error(SEG_PROBS, SEG_TARGET)  # 255 without ignore_index
    with pytest.raises(TypeError, match="target must be an int64"):
        expected_calibration_error(PROBS, LABELS.int())
    with pytest.raises(ValueError, match="ignore_index must lie outside"):
        expected_calibration_error(PROBS, LABELS, ignore_index=1)
    with pytest.raises(ValueError, match="ignore_index must lie outside"):
        CalibrationError(ignore_index=0).update(PROBS, LABELS)


@pytest.mark.parametrize("bins", [0, -3])
def test_bins_below_one(bins: int) -> None:
    with pytest.raises(ValueError, match="bins must be > 0"):
        expected_calibration_error(PROBS, LABELS, bins=bins)
    with pytest.raises(ValueError, match="bins must be > 0"):
        CalibrationError(bins=bins)


def test_bins_and_level_types() -> None:
    with pytest.raises(TypeError, match="bins must be an int"):
        expected_calibration_error(PROBS, LABELS, bins=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bins must be an int"):
        CalibrationError(bins=True)
    with pytest.raises(ValueError, match="level must be one of"):
        expected_calibration_error(PROBS, LABELS, level="class")


def test_doctests() -> None:
    failures, tried = doctest.testmod(calibration_module, extraglobs={"torch": torch})
    assert tried > 0
    assert failures == 0
