"""Tests of softlabels.distill.analysis: scaling law, Pareto frontier, dataset size, LRS."""

import itertools
import math

import numpy as np
import pytest
import torch

from softlabels.distill import (
    ScalingFit,
    dataset_bytes,
    fit_scaling_law,
    label_robust_score,
    pareto_frontier,
)

PAPER_IPCS = [1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 40]


@pytest.mark.parametrize(("a", "b", "c", "ipcs"), [
    (0.75, 0.55, 0.6, PAPER_IPCS),
    (0.6, 0.4, 1.5, PAPER_IPCS),
    (0.9, 0.1, 0.2, [1, 5, 50]),          # exactly three points: as many as parameters
    (1.2, 1.0, 0.05, [1, 2, 4, 8, 16, 32, 64, 128]),  # slow decay, asymptote above 1
])
def test_fit_recovers_known_parameters_from_noiseless_data(a, b, c, ipcs):
    acc = [a - b * x ** (-c) for x in ipcs]
    fit = fit_scaling_law(ipcs, acc)
    assert fit.a == pytest.approx(a, abs=1e-3)
    assert fit.b == pytest.approx(b, abs=1e-3)
    assert fit.c == pytest.approx(c, abs=1e-3)
    assert fit.rmse < 1e-6
    assert fit.num_points == len(ipcs)
    assert fit.at_bound == ()


def test_fit_without_saturation_is_flagged():
    # Gains that grow per decade of IPC (convex in log IPC), as in our CIFAR-10 IPC 1/10/50
    # sweep: no a - b * IPC^(-c) curve bends that way, so the asymptote runs to its bound.
    fit = fit_scaling_law([1, 10, 50], [0.144, 0.300, 0.452])
    assert fit.at_bound == ("a",)
    assert fit.a == pytest.approx(1.5)


def test_fit_accepts_repeated_ipcs_tensors_and_arrays():
    ipcs = np.repeat([1.0, 2.0, 4.0, 10.0], 3)
    noise = np.tile([-0.01, 0.0, 0.01], 4)
    acc = 0.7 - 0.5 * ipcs ** -0.8 + noise
    fit = fit_scaling_law(torch.from_numpy(ipcs), acc)
    assert fit.a == pytest.approx(0.7, abs=0.02)
    # the per-IPC noise averages to zero, so the residual is the noise's RMS
    assert fit.rmse == pytest.approx(math.sqrt(2 / 3) * 0.01, rel=0.05)


def test_scaling_fit_predict_and_as_dict():
    fit = ScalingFit(a=0.8, b=0.5, c=0.5, rmse=0.0, num_points=4)
    assert fit.predict(4) == pytest.approx(0.8 - 0.5 / 2)
    np.testing.assert_allclose(fit.predict([1, 100]), [0.3, 0.75])
    assert fit.as_dict() == {"a": 0.8, "b": 0.5, "c": 0.5, "rmse": 0.0, "num_points": 4,
                             "at_bound": []}
    with pytest.raises(ValueError, match="ipc must be > 0"):
        fit.predict(0)
    with pytest.raises(ValueError, match="ipc must be > 0"):
        fit.predict([1, -2])


@pytest.mark.parametrize(("ipc", "acc", "error", "match"), [
    ([1, 2], [0.3, 0.4], ValueError, "at least 3 distinct ipc values"),
    ([1, 1, 2, 2, 2], [0.3, 0.31, 0.4, 0.41, 0.42], ValueError, "got 2"),
    ([1, 2, 3], [0.3, 0.4], ValueError, "same length"),
    ([1, 2, 3], [30.0, 40.0, 45.0], ValueError, "percentages"),
    ([0, 2, 3], [0.3, 0.4, 0.45], ValueError, "ipc must be > 0"),
    ([1, 2, 3], [0.3, float("nan"), 0.45], ValueError, "finite"),
    ([[1, 2, 3]], [[0.3, 0.4, 0.45]], ValueError, "1-D"),
    ("123", [0.3, 0.4, 0.45], TypeError, "sequence"),
])
def test_fit_rejects_bad_inputs(ipc, acc, error, match):
    with pytest.raises(error, match=match):
        fit_scaling_law(ipc, acc)


def brute_force_frontier(sizes, accs):
    """The definition, O(M^2): non-dominated points, one per (size, acc) duplicate group."""
    keep = []
    for i, (s, a) in enumerate(zip(sizes, accs, strict=True)):
        dominated = any(
            (s2 <= s and a2 >= a and (s2 < s or a2 > a))
            for j, (s2, a2) in enumerate(zip(sizes, accs, strict=True)) if j != i)
        duplicate_of_earlier = any(
            sizes[j] == s and accs[j] == a for j in range(i))
        if not dominated and not duplicate_of_earlier:
            keep.append(i)
    return sorted(keep, key=lambda i: sizes[i])


@pytest.mark.parametrize(("sizes", "accs", "expected"), [
    ([1, 2, 3], [0.1, 0.2, 0.3], [0, 1, 2]),           # all on the frontier
    ([3, 1, 2], [0.3, 0.1, 0.2], [1, 2, 0]),           # sorted by size
    ([1, 2, 3], [0.3, 0.2, 0.1], [0]),                 # one point dominates all
    ([1, 2, 2, 3], [0.5, 0.4, 0.7, 0.7], [0, 2]),     # equal size / equal accuracy ties
    ([2, 2, 1], [0.5, 0.5, 0.2], [2, 0]),              # exact duplicates: lowest index
    ([5, 1, 5, 1], [0.9, 0.3, 0.9, 0.3], [1, 0]),      # two duplicated pairs
    ([1, 1, 1], [0.2, 0.6, 0.6], [1]),                 # all same size
    ([], [], []),
])
def test_pareto_hand_made(sizes, accs, expected):
    assert pareto_frontier(sizes, accs) == expected
    assert brute_force_frontier(sizes, accs) == expected


def test_pareto_matches_the_definition_on_random_points_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        sizes = rng.integers(0, 6, size=15).tolist()
        accs = (rng.integers(0, 6, size=15) / 10).tolist()
        frontier = pareto_frontier(sizes, accs)
        assert frontier == brute_force_frontier(sizes, accs)
        # strictly increasing in both size and accuracy along the frontier
        for i, j in itertools.pairwise(frontier):
            assert sizes[i] < sizes[j]
            assert accs[i] < accs[j]


def test_pareto_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        pareto_frontier([1, 2], [0.1])
    with pytest.raises(ValueError, match="finite"):
        pareto_frontier([1, 2], [0.1, float("nan")])


def test_dataset_bytes_by_hand():
    # CIFAR-10 IPC 10: 100 images of 3x32x32 bytes + fp32 labels (4 bytes x 10 classes)
    assert dataset_bytes(100, (3, 32, 32), 40.0) == 100 * 3072 + 100 * 40
    # top-3 with fp16 values and uint8 classes: 3 * 2 + 3 = 9 bytes per image
    assert dataset_bytes(20, (1, 28, 28), 9) == 20 * 784 + 180
    assert dataset_bytes(0, (3, 32, 32), 40.0) == 0
    assert dataset_bytes(3, (3, 2, 2), 0.5) == 36 + 2  # 1.5 label bytes rounded to 2


@pytest.mark.parametrize(("args", "error"), [
    ((-1, (3, 32, 32), 4.0), ValueError),
    ((1.0, (3, 32, 32), 4.0), TypeError),
    ((1, (3, 0, 32), 4.0), ValueError),
    ((1, (3, 32.0, 32), 4.0), ValueError),
    ((1, (), 4.0), TypeError),
    ((1, "3x32x32", 4.0), TypeError),
    ((1, (3, 32, 32), -1.0), ValueError),
    ((1, (3, 32, 32), float("inf")), ValueError),
    ((1, (3, 32, 32), "4"), TypeError),
])
def test_dataset_bytes_rejects_bad_arguments(args, error):
    with pytest.raises(error):
        dataset_bytes(*args)


@pytest.mark.parametrize(("accs", "hlr", "ior", "lrs"), [
    # a = 0: LRS = (1 - 1/e) / (e - 1/e) = 1 / (1 + e)
    ((0.8, 0.6, 0.7, 0.5), 0.2, 0.2, 1 / (1 + math.e)),
    # a = 1 (best possible): LRS = 1
    ((0.0, 1.0, 1.0, 0.0), -1.0, 1.0, 1.0),
    # a = -1 (worst possible): LRS = 0
    ((1.0, 0.0, 0.0, 1.0), 1.0, -1.0, 0.0),
    # a = (0.1 - 0.5) / 2 = -0.2: LRS = (e^-0.2 - e^-1) / (e - e^-1) = 0.191819 (calculator)
    ((0.8, 0.3, 0.6, 0.5), 0.5, 0.1, 0.1918188),
])
def test_label_robust_score_by_hand(accs, hlr, ior, lrs):
    out = label_robust_score(*accs)
    assert out["hlr"] == pytest.approx(hlr)
    assert out["ior"] == pytest.approx(ior)
    assert out["a"] == pytest.approx((ior - hlr) / 2)
    assert out["lrs"] == pytest.approx(lrs, abs=1e-6)


@pytest.mark.parametrize(("accs", "error", "name"), [
    ((81.5, 0.3, 0.6, 0.5), ValueError, "acc_real_hard"),
    ((0.8, -0.1, 0.6, 0.5), ValueError, "acc_distilled_hard"),
    ((0.8, 0.3, float("nan"), 0.5), ValueError, "acc_distilled_any"),
    ((0.8, 0.3, 0.6, "0.5"), TypeError, "acc_random_any"),
])
def test_label_robust_score_rejects_non_fractions(accs, error, name):
    with pytest.raises(error, match=name):
        label_robust_score(*accs)
