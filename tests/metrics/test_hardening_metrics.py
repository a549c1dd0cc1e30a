"""Classification metrics refuse labels and scores that would make them silently wrong."""

from __future__ import annotations

import math

import pytest
import torch

from softlabels.metrics import (
    CalibrationError,
    accuracy,
    confusion_matrix,
    expected_calibration_error,
    nsd,
    worst_class_accuracy,
)

TARGETS = torch.tensor([0, 1, 2])


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: accuracy(torch.tensor([5, -1, 2]), TARGETS), ValueError,
     r"preds must hold class indices >= 0, got \[-1\]"),
    (lambda: accuracy(torch.tensor([0, 1, 2]), torch.tensor([0, -3, 2])), ValueError,
     "targets must hold class indices >= 0"),
    (lambda: accuracy(torch.tensor([5, 1, 2]), TARGETS, num_classes=3), ValueError,
     r"preds must hold class indices in \[0, 3\)"),
    (lambda: accuracy(torch.zeros(3, 2), TARGETS), ValueError,
     r"targets must hold class indices in \[0, 2\)"),
    (lambda: accuracy(torch.zeros(3, 4), TARGETS, num_classes=3), ValueError,
     "preds scores must have num_classes=3 columns"),
    (lambda: accuracy(torch.tensor([[math.nan, 0.0]] * 3), TARGETS.clamp_max(1)), ValueError,
     "preds must be finite"),
    (lambda: accuracy(torch.zeros(3, 0), TARGETS), ValueError, "preds must have at least one"),
    (lambda: confusion_matrix(torch.full((3, 3), math.inf), TARGETS, 3), ValueError,
     "preds must be finite"),
    (lambda: worst_class_accuracy(torch.tensor([0.5, math.inf])), ValueError,
     "classwise_acc .* must be finite"),
    (lambda: worst_class_accuracy(torch.tensor([0.5, 1.5])), ValueError,
     r"accuracies in \[0, 1\]"),
    (lambda: nsd(torch.tensor([1, 0])), TypeError, "classwise_acc must be a floating-point"),
    (lambda: nsd(torch.tensor([0.5, 0.2]), correction=True), ValueError, "correction"),
])
def test_bad_inputs(call, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call()


def test_valid_calls_still_count_correctly() -> None:
    # 2 of 3 right, whichever way the classes are given.
    assert accuracy(torch.tensor([0, 1, 0]), TARGETS) == pytest.approx(2 / 3)
    assert accuracy(torch.tensor([0, 1, 0]), TARGETS, num_classes=3) == pytest.approx(2 / 3)
    scores = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [2.0, 0, 0]])
    assert accuracy(scores, TARGETS) == pytest.approx(2 / 3)
    # A prediction of a class the targets never use is wrong, not an error, without C.
    assert accuracy(torch.tensor([7, 1, 2]), TARGETS) == pytest.approx(2 / 3)


def test_calibration_refuses_an_ignore_index_inside_the_classes() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(ValueError, match="ignore_index must lie outside"):
        expected_calibration_error(probs, torch.tensor([0, 1]), ignore_index=0)
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        CalibrationError(ignore_index=0.5)


def test_calibration_bins_are_bounded() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(ValueError, match="bins must be <= 10000"):
        expected_calibration_error(probs, torch.tensor([0, 1]), bins=10**9)
    with pytest.raises(ValueError, match="bins must be <= 10000"):
        CalibrationError(bins=10**5)
