"""Tests of the classification metrics."""

import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion

from softlabels.metrics import (
    accuracy,
    classwise_accuracy,
    confusion_matrix,
    nsd,
    worst_class_accuracy,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import device_fixture, gen  # noqa: F401


def test_accuracy_from_classes_and_scores() -> None:
    targets = torch.tensor([0, 1, 2, 2])
    assert accuracy(torch.tensor([0, 1, 1, 2]), targets) == 0.75
    scores = torch.tensor([[9.0, 0, 0], [0, 9, 0], [0, 9, 0], [0, 0, 9]])
    assert accuracy(scores, targets) == 0.75


@given(st.integers(1, 60), st.integers(2, 7), st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_confusion_matches_sklearn(n: int, c: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    preds, targets = torch.randint(0, c, (n,), generator=g), torch.randint(0, c, (n,), generator=g)
    ours = confusion_matrix(preds, targets, c).numpy()
    assert np.array_equal(ours, sk_confusion(targets, preds, labels=list(range(c))))


def test_classwise_and_worst() -> None:
    targets = torch.tensor([0, 0, 1, 1, 1, 1, 2])
    preds = torch.tensor([0, 1, 1, 1, 1, 0, 0])
    cw = classwise_accuracy(preds, targets, 4)
    assert cw[:3].tolist() == [0.5, 0.75, 0.0]
    assert math.isnan(cw[3].item())
    assert worst_class_accuracy(cw) == 0.0


def test_nsd_sample_and_population_std() -> None:
    acc = torch.tensor([0.2, 0.4, 0.6, 0.8])
    sample = np.std([0.2, 0.4, 0.6, 0.8], ddof=1) / 0.5
    population = np.std([0.2, 0.4, 0.6, 0.8], ddof=0) / 0.5
    assert nsd(acc) == pytest.approx(sample)
    assert nsd(acc, correction=0) == pytest.approx(population)
    assert nsd(torch.full((10,), 0.7)) == pytest.approx(0.0)
    assert math.isnan(nsd(torch.zeros(3)))


def test_nsd_ratio_for_ten_classes() -> None:
    acc = torch.rand(10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values = acc.tolist()
    assert nsd(acc) == pytest.approx(statistics.stdev(values) / statistics.mean(values))
    assert nsd(acc, correction=0) == pytest.approx(statistics.pstdev(values)
                                                   / statistics.mean(values))
    assert nsd(acc) / nsd(acc, correction=0) == pytest.approx(math.sqrt(10 / 9))


def test_nsd_ignores_absent_classes() -> None:
    # The two present classes: sample std |1.0 - 0.5| / sqrt(2) over the mean 0.75.
    expected = statistics.stdev([0.5, 1.0]) / statistics.mean([0.5, 1.0])
    assert expected == pytest.approx(math.sqrt(2) / 3)
    assert nsd(torch.tensor([0.5, math.nan, 1.0])) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: accuracy(torch.tensor([0, 1]), torch.tensor([0])), ValueError, "preds holds"),
        (lambda: accuracy(torch.tensor([0.0, 1.0]), torch.tensor([0, 1])), ValueError,
         "preds must have 2 dimensions"),
        (lambda: accuracy(torch.tensor([0, 1]), torch.tensor([0.0, 1.0])), TypeError,
         "targets must be a 1-D int64"),
        (lambda: confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3), ValueError,
         "preds must hold class indices"),
        (lambda: confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), 3), ValueError,
         "targets must hold class indices"),
        (lambda: worst_class_accuracy(torch.tensor([math.nan])), ValueError, "no class"),
        (lambda: nsd(torch.tensor([0.5])), ValueError, "more than 1 classes"),
        (lambda: nsd(torch.tensor([0.5, 0.2]), correction=2), ValueError, "correction"),
        (lambda: accuracy(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)),
         ValueError, "empty"),
    ],
)
def test_errors(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("targets_on", ["device", "cpu"])
def test_metrics_of_device_scores(device: str, targets_on: str) -> None:
    """accuracy, confusion_matrix, classwise_accuracy, worst-class accuracy and NSD of device
    scores and class maps, with the labels on the device or left on the CPU (an evaluation
    loop that moves only the images): sklearn's counts and the formulas by hand."""
    g = gen(5)
    scores_cpu = torch.randn(40, 5, generator=g)
    targets_cpu = torch.randint(0, 4, (40,), generator=g)  # class 4 never occurs: NaN row
    targets = targets_cpu.to(device) if targets_on == "device" else targets_cpu
    counts = torch.from_numpy(sk_confusion(targets_cpu, scores_cpu.argmax(1),
                                           labels=list(range(5))))
    per_class = counts.diag()[:4].double() / counts.sum(1)[:4]
    for preds in (scores_cpu.to(device), scores_cpu.argmax(1).to(device)):
        assert accuracy(preds, targets) == pytest.approx(counts.trace().item() / 40)
        assert torch.equal(confusion_matrix(preds, targets, 5).cpu(), counts)
        classwise = classwise_accuracy(preds, targets, 5)
        torch.testing.assert_close(classwise.cpu()[:4], per_class.to(classwise.dtype))
        assert math.isnan(float(classwise[4]))
        assert worst_class_accuracy(classwise) == pytest.approx(float(per_class.min()))
        assert nsd(classwise) == pytest.approx(statistics.stdev(per_class.tolist())
                                               / statistics.mean(per_class.tolist()))
