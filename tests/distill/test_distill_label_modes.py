"""Tests of softlabels.distill.label_modes: the study's label modes and their dispatcher."""

import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels import labels as L
from softlabels.distill import (
    LABEL_MODES,
    entropy_matched_smoothing,
    expert_labels,
    hard_labels,
    make_labels,
    shuffle_tail_labels,
    smoothing_for_entropy,
    swap_labels,
    topk_labels,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import assert_close_on, assert_on, device_fixture, off_cpu  # noqa: F401

N, C = 12, 5
GEN = torch.Generator().manual_seed(0)
LOGITS = torch.randn(N, C, generator=GEN) * 2
HARD = torch.randint(0, C, (N,), generator=GEN)


def numpy_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_hard_labels_are_one_hot():
    y = hard_labels(HARD, C)
    assert y.dtype == torch.float32
    expected = np.eye(C, dtype=np.float32)[HARD.numpy()]
    np.testing.assert_array_equal(y.numpy(), expected)


def test_hard_labels_reject_out_of_range_and_wrong_shape():
    with pytest.raises(ValueError, match="class indices"):
        hard_labels(torch.tensor([0, C]), C)
    with pytest.raises(ValueError, match="1 dimensions"):
        hard_labels(HARD.reshape(3, 4), C)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_expert_labels_equal_manual_tempered_softmax(temperature):
    probs = expert_labels(LOGITS, temperature)
    expected = numpy_softmax(LOGITS.double().numpy(), temperature)
    np.testing.assert_allclose(probs.numpy(), expected, atol=1e-6)


def test_expert_ensemble_softmaxes_the_mean_logits():
    other = torch.randn(N, C, generator=torch.Generator().manual_seed(1))
    third = torch.randn(N, C, generator=torch.Generator().manual_seed(2))
    probs = expert_labels([LOGITS, other, third], temperature=2.0)
    mean = (LOGITS.double().numpy() + other.double().numpy() + third.double().numpy()) / 3
    np.testing.assert_allclose(probs.numpy(), numpy_softmax(mean, 2.0), atol=1e-6)
    # averaging probabilities instead would give a different answer
    prob_mean = sum(numpy_softmax(t.double().numpy(), 2.0) for t in (LOGITS, other, third)) / 3
    assert not np.allclose(probs.numpy(), prob_mean, atol=1e-4)


@pytest.mark.parametrize(("logits", "error"), [
    ([], ValueError),
    ("logits", TypeError),
    (LOGITS.reshape(N, C, 1, 1), ValueError),
    ([LOGITS, LOGITS[:, :3]], ValueError),
    ([LOGITS, "x"], TypeError),
])
def test_expert_labels_reject_bad_logits(logits, error):
    with pytest.raises(error):
        expert_labels(logits)


def numpy_entropy(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    safe = np.where(rows > 0, rows, 1.0)
    return -(rows * np.log(safe)).sum(axis=1)


@pytest.mark.parametrize("num_classes", [2, 5, 100])
@pytest.mark.parametrize("fraction", [0.0, 1e-4, 0.1, 0.5, 0.9, 0.999])
def test_entropy_matched_smoothing_hits_the_target_mean_entropy(num_classes, fraction):
    target = fraction * math.log(num_classes)
    hard = torch.arange(30) % num_classes
    y = entropy_matched_smoothing(hard, num_classes, target)
    assert y.shape == (30, num_classes)
    assert float(L.entropy(y).double().mean()) == pytest.approx(target, abs=1e-5)
    assert float(numpy_entropy(y.numpy()).mean()) == pytest.approx(target, abs=1e-5)
    torch.testing.assert_close(y.sum(dim=1), torch.ones(30))
    if target > 0:
        assert torch.equal(y.argmax(dim=1), hard)


def test_smoothing_eps_satisfies_the_closed_form_entropy():
    # Independent check: for C = 2, eps gives probabilities (1 - eps/2, eps/2).
    eps = smoothing_for_entropy(2, 0.5)
    p = 1 - eps / 2
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert entropy == pytest.approx(0.5, abs=1e-9)
    assert smoothing_for_entropy(7, 0.0) == 0.0


@pytest.mark.parametrize(("num_classes", "target", "error"), [
    (5, math.log(5), ValueError),
    (5, 2.0, ValueError),
    (5, -0.1, ValueError),
    (5, float("nan"), ValueError),
    (1, 0.0, ValueError),
    (5, "0.3", TypeError),
])
def test_entropy_matched_smoothing_rejects_targets_outside_range(num_classes, target, error):
    with pytest.raises(error, match=r"target_entropy|num_classes"):
        entropy_matched_smoothing(torch.zeros(3, dtype=torch.int64), num_classes, target)


def test_topk_zero_is_one_hot_of_the_argmax_with_ties_to_lowest_class():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.4, 0.2, 0.4], [0.2, 0.3, 0.5]])
    expected = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])
    assert torch.equal(topk_labels(probs, 0, renormalize=False), expected)
    assert torch.equal(topk_labels(probs, 0, renormalize=True), expected)
    p = expert_labels(LOGITS)
    manual = np.eye(C, dtype=np.float32)[np.argmax(p.numpy(), axis=1)]
    np.testing.assert_array_equal(topk_labels(p, 0).numpy(), manual)


def test_topk_keeps_the_largest_values_with_and_without_renormalisation():
    probs = torch.tensor([[0.1, 0.5, 0.15, 0.25]])
    kept = torch.tensor([[0.0, 0.5, 0.0, 0.25]])
    torch.testing.assert_close(topk_labels(probs, 2, renormalize=False), kept)
    torch.testing.assert_close(topk_labels(probs, 2, renormalize=True), kept / 0.75)
    torch.testing.assert_close(topk_labels(probs, 4, renormalize=False), probs)


@pytest.mark.parametrize(("k", "error"), [(-1, ValueError), (C + 1, ValueError),
                                          (1.0, TypeError), (True, TypeError)])
def test_topk_rejects_bad_k(k, error):
    with pytest.raises(error, match="k"):
        topk_labels(expert_labels(LOGITS), k)


def row_multisets(t: torch.Tensor) -> list[Counter]:
    return [Counter(row) for row in t.tolist()]


@pytest.mark.parametrize("k", [1, 2, C])
def test_swap_keeps_each_row_multiset(k):
    probs = expert_labels(LOGITS)
    swapped = swap_labels(probs, k)
    assert row_multisets(swapped) == row_multisets(probs)


def test_swap_one_moves_the_top_probability_to_the_least_likely_class():
    probs = torch.tensor([[0.1, 0.6, 0.05, 0.25]], dtype=torch.float64)
    assert swap_labels(probs, 1).tolist() == [[0.1, 0.05, 0.6, 0.25]]
    assert swap_labels(probs, 2).tolist() == [[0.1, 0.6, 0.25, 0.05]]


def test_shuffle_tail_keeps_row_multisets_and_argmax_and_is_seeded():
    probs = expert_labels(LOGITS)
    shuffled = shuffle_tail_labels(probs, seed=4)
    assert row_multisets(shuffled) == row_multisets(probs)
    assert torch.equal(shuffled.argmax(dim=1), probs.argmax(dim=1))
    assert torch.equal(shuffled, shuffle_tail_labels(probs, seed=4))
    assert not torch.equal(shuffled, probs)
    with pytest.raises(TypeError, match="seed"):
        shuffle_tail_labels(probs, seed=None)


def test_label_modes_registry_lists_every_mode_with_a_description():
    assert set(LABEL_MODES) == {"hard", "expert", "smooth", "topk", "swap", "shuffle"}
    assert all(isinstance(v, str) and v for v in LABEL_MODES.values())


def test_make_labels_dispatches_to_each_builder():
    probs = numpy_softmax(LOGITS.double().numpy(), 2.0)
    args = {"hard": HARD, "logits": LOGITS, "num_classes": C, "temperature": 2.0, "k": 2,
            "seed": 3, "renormalize": False}
    out = {mode: make_labels(mode, **args) for mode in LABEL_MODES}
    np.testing.assert_array_equal(out["hard"].numpy(), np.eye(C)[HARD.numpy()])
    np.testing.assert_allclose(out["expert"].numpy(), probs, atol=1e-6)
    expert = expert_labels(LOGITS, 2.0)
    assert torch.equal(out["topk"], topk_labels(expert, 2, renormalize=False))
    assert torch.equal(out["swap"], swap_labels(expert, 2))
    assert torch.equal(out["shuffle"], shuffle_tail_labels(expert, 3))
    # smooth: same mean entropy as the expert labels, argmax at the true label
    assert float(L.entropy(out["smooth"]).mean()) == pytest.approx(
        float(numpy_entropy(probs).mean()), abs=1e-5)
    assert torch.equal(out["smooth"].argmax(dim=1), HARD)


def test_make_labels_smooth_with_explicit_target_entropy():
    y = make_labels("smooth", hard=HARD, num_classes=C, target_entropy=0.7)
    assert float(numpy_entropy(y.numpy()).mean()) == pytest.approx(0.7, abs=1e-5)


@pytest.mark.parametrize(("mode", "kwargs", "match"), [
    ("hard", {"num_classes": C}, "needs hard"),
    ("hard", {"hard": HARD}, "needs num_classes"),
    ("expert", {}, "needs logits"),
    ("topk", {"logits": LOGITS}, "needs k"),
    ("swap", {"logits": LOGITS}, "needs k"),
    ("shuffle", {"logits": LOGITS}, "needs seed"),
    ("smooth", {"logits": LOGITS}, "needs hard"),
    ("smooth", {"hard": HARD}, "needs logits .* or target_entropy"),
    ("smooth", {"hard": HARD, "target_entropy": 0.5}, "needs num_classes"),
    ("expert", {"logits": LOGITS, "num_classes": C + 1}, "num_classes=6 but logits have 5"),
    ("topk", {"logits": LOGITS, "k": 1, "hard": HARD[:3]}, "hard has 3 labels"),
    ("soft", {"logits": LOGITS}, "mode must be one of"),
    ("expert", {"logits": LOGITS, "temperature": 0.0}, "temperature"),
])
def test_make_labels_missing_or_inconsistent_arguments(mode, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_labels(mode, **kwargs)


def test_make_labels_from_device_tensors(device: str) -> None:
    """make_labels in every mode from device logits and labels: on the device, equal to the
    builders' definitions, and (off the CPU) to the CPU's labels (shuffle: the same draws)."""
    logits, hard = LOGITS.to(device), HARD.to(device)
    expert = torch.from_numpy(numpy_softmax(LOGITS.double().numpy(), 2.0)).float()
    out = {mode: make_labels(mode, hard=hard, logits=logits, num_classes=C, temperature=2.0,
                             k=2, seed=3) for mode in LABEL_MODES}
    for mode, labels in out.items():
        assert_on(labels, device)
        if off_cpu(device):
            cpu = make_labels(mode, hard=HARD, logits=LOGITS, num_classes=C, temperature=2.0,
                              k=2, seed=3)
            assert_close_on(labels, cpu, device, atol=1e-6)
    assert_close_on(out["hard"], torch.eye(C)[HARD], device, atol=0, rtol=0)
    assert_close_on(out["expert"], expert, device, atol=1e-6)
    top = expert.topk(2, 1)
    two = torch.zeros_like(expert).scatter(1, top.indices, top.values)
    assert_close_on(out["topk"], two / two.sum(1, keepdim=True), device, atol=1e-6)
    assert_close_on(make_labels("topk", logits=logits, k=0), torch.eye(C)[LOGITS.argmax(1)],
                    device, atol=0, rtol=0)
    assert row_multisets(out["swap"].cpu()) == row_multisets(out["expert"].cpu())
    assert row_multisets(out["shuffle"].cpu()) == row_multisets(out["expert"].cpu())
    assert torch.equal(out["shuffle"].argmax(1).cpu(), LOGITS.argmax(1))
    # smooth: the expert labels' mean entropy, the argmax at the true label.
    assert float(numpy_entropy(out["smooth"].cpu().numpy()).mean()) == pytest.approx(
        float(numpy_entropy(expert.numpy()).mean()), abs=1e-5)
    assert torch.equal(out["smooth"].argmax(1).cpu(), HARD)
    # An ensemble of logits shifted by a constant is the softmax of the logits.
    assert_close_on(make_labels("expert", logits=[logits, logits + 1.0]),
                    torch.softmax(LOGITS, 1), device, atol=1e-6)
