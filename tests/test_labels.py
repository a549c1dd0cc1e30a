"""Tests of softlabels.labels: label construction, transforms and checks."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

from softlabels import labels as L

sys.path.insert(0, str(Path(__file__).parent))
from devices import (
    assert_close_on,
    assert_on,
    device_fixture,  # noqa: F401  (the device fixture)
    gen,
    off_cpu,
)


def random_probs(n: int, c: int, seed: int = 0, sharp: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, c, generator=g) * sharp, dim=1)


prob_rows = st.integers(min_value=2, max_value=12).flatmap(
    lambda c: st.lists(
        st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=c, max_size=c).filter(
            lambda row: sum(row) > 1e-3),
        min_size=1, max_size=6))


def as_probs(rows: list[list[float]]) -> torch.Tensor:
    t = torch.tensor(rows, dtype=torch.float64)
    return t / t.sum(dim=1, keepdim=True)


class TestOneHotAndSmooth:
    def test_one_hot_classification(self) -> None:
        out = L.one_hot(torch.tensor([2, 0]), 3)
        assert out.tolist() == [[0, 0, 1], [1, 0, 0]]

    def test_one_hot_dense_puts_classes_on_dim1(self) -> None:
        labels = torch.tensor([[[0, 1], [2, 1]]])  # (1, 2, 2)
        out = L.one_hot(labels, 3)
        assert out.shape == (1, 3, 2, 2)
        assert out[0, :, 1, 0].tolist() == [0, 0, 1]

    def test_one_hot_ignore_index_gives_zero_rows(self) -> None:
        out = L.one_hot(torch.tensor([1, 255]), 3, ignore_index=255)
        assert out.tolist() == [[0, 1, 0], [0, 0, 0]]

    @pytest.mark.parametrize("bad", [torch.tensor([3]), torch.tensor([-1])])
    def test_one_hot_out_of_range_is_an_error_not_clamped(self, bad: torch.Tensor) -> None:
        with pytest.raises(ValueError, match=r"labels must hold class indices in \[0, 3\)"):
            L.one_hot(bad, 3)

    def test_one_hot_rejects_float_labels(self) -> None:
        with pytest.raises(TypeError, match="labels must be an int64"):
            L.one_hot(torch.tensor([1.0]), 3)

    def test_smooth_values(self) -> None:
        out = L.smooth(torch.tensor([1]), 4, 0.2)
        assert torch.allclose(out, torch.tensor([[0.05, 0.85, 0.05, 0.05]]))

    @pytest.mark.parametrize("eps", [-0.1, 1.5])
    def test_smooth_rejects_eps_outside_unit_interval(self, eps: float) -> None:
        with pytest.raises(ValueError, match="eps must be in"):
            L.smooth(torch.tensor([1]), 4, eps)

    def test_smooth_ignore_index(self) -> None:
        out = L.smooth(torch.tensor([[[0, 9]]]), 2, 0.5, ignore_index=9)
        assert out.shape == (1, 2, 1, 2)
        assert out[0, :, 0, 0].tolist() == [0.75, 0.25]
        assert out[0, :, 0, 1].tolist() == [0.0, 0.0]


class TestSoften:
    def test_matches_manual_softmax(self) -> None:
        logits = torch.tensor([[1.0, 2.0, 3.0]])
        expected = np.exp([0.5, 1.0, 1.5]) / np.exp([0.5, 1.0, 1.5]).sum()
        assert np.allclose(L.soften(logits, 2.0).numpy(), expected)

    def test_higher_temperature_raises_entropy(self) -> None:
        logits = torch.randn(16, 10)
        assert bool((L.entropy(L.soften(logits, 4.0)) > L.entropy(L.soften(logits, 1.0))).all())

    @pytest.mark.parametrize("t", [0.0, -1.0])
    def test_rejects_non_positive_temperature(self, t: float) -> None:
        with pytest.raises(ValueError, match="temperature must be > 0"):
            L.soften(torch.randn(2, 3), t)

    def test_rejects_nan_logits(self) -> None:
        with pytest.raises(ValueError, match="logits must be finite"):
            L.soften(torch.tensor([[0.0, math.nan]]))

    def test_rejects_wrong_ndim(self) -> None:
        with pytest.raises(ValueError, match="logits must have 2 or 4 dimensions"):
            L.soften(torch.randn(3))

    def test_classwise_picks_temperature_of_true_class(self) -> None:
        logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
        temps = torch.tensor([1.0, 4.0])
        out = L.classwise_soften(logits, torch.tensor([0, 1]), temps)
        assert torch.allclose(out[0], torch.softmax(torch.tensor([2.0, 0.0]), 0))
        assert torch.allclose(out[1], torch.softmax(torch.tensor([0.5, 0.0]), 0))

    def test_classwise_dense(self) -> None:
        logits = torch.randn(2, 3, 4, 5)
        targets = torch.randint(0, 3, (2, 4, 5))
        temps = torch.tensor([0.5, 1.0, 5.0])
        out = L.classwise_soften(logits, targets, temps)
        i, h, w = 1, 2, 3
        t = temps[targets[i, h, w]]
        assert torch.allclose(out[i, :, h, w], torch.softmax(logits[i, :, h, w] / t, 0))

    def test_classwise_errors(self) -> None:
        with pytest.raises(ValueError, match=r"temperatures must have shape \(2,\)"):
            L.classwise_soften(torch.randn(2, 2), torch.tensor([0, 1]), torch.ones(3))
        with pytest.raises(ValueError, match="temperatures must be > 0"):
            L.classwise_soften(torch.randn(2, 2), torch.tensor([0, 1]), torch.tensor([1.0, 0.0]))
        with pytest.raises(ValueError, match="targets must have shape"):
            L.classwise_soften(torch.randn(2, 2), torch.tensor([0]), torch.ones(2))


class TestTopk:
    def test_keeps_k_largest_and_renormalises(self) -> None:
        p = torch.tensor([[0.1, 0.5, 0.3, 0.1]])
        assert torch.allclose(L.topk(p, 2), torch.tensor([[0.0, 0.625, 0.375, 0.0]]))

    def test_without_renormalisation_keeps_mass(self) -> None:
        p = torch.tensor([[0.1, 0.5, 0.3, 0.1]])
        assert torch.allclose(L.topk(p, 2, renormalize=False), torch.tensor([[0, 0.5, 0.3, 0]]))

    def test_k1_is_one_hot_of_argmax(self) -> None:
        p = random_probs(20, 7)
        assert torch.equal(L.topk(p, 1), L.one_hot(p.argmax(1), 7))

    def test_dense_shape(self) -> None:
        p = torch.softmax(torch.randn(2, 5, 3, 3), dim=1)
        out = L.topk(p, 2)
        assert out.shape == p.shape
        assert bool(((out > 0).sum(1) == 2).all())

    @pytest.mark.parametrize("k", [0, 5])
    def test_rejects_bad_k(self, k: int) -> None:
        with pytest.raises(ValueError, match="k must be"):
            L.topk(random_probs(2, 4), k)

    @given(prob_rows, st.integers(1, 12))
    @settings(max_examples=50, deadline=None)
    def test_property_rows_sum_to_one_with_at_most_k_nonzero(self, rows, k) -> None:
        p = as_probs(rows)
        k = min(k, p.shape[1])
        out = L.topk(p, k)
        assert torch.allclose(out.sum(1), torch.ones(p.shape[0], dtype=p.dtype))
        assert bool(((out > 0).sum(1) <= k).all())


class TestEnsembleEntropyJS:
    def test_ensemble_averages_logits_before_softmax(self) -> None:
        a, b = torch.tensor([[0.0, 2.0]]), torch.tensor([[2.0, 0.0]])
        assert torch.allclose(L.ensemble([a, b]), torch.tensor([[0.5, 0.5]]))

    def test_ensemble_errors(self) -> None:
        with pytest.raises(ValueError, match="non-empty list"):
            L.ensemble([])
        with pytest.raises(ValueError, match=r"logits\[1\] has shape"):
            L.ensemble([torch.zeros(2, 3), torch.zeros(2, 4)])

    def test_entropy_uniform_and_one_hot(self) -> None:
        p = torch.tensor([[0.25] * 4, [1.0, 0, 0, 0]])
        assert torch.allclose(L.entropy(p), torch.tensor([math.log(4), 0.0]))
        assert torch.allclose(L.entropy(p, base=2), torch.tensor([2.0, 0.0]))

    def test_js_matches_scipy(self) -> None:
        p, q = random_probs(10, 6, 1), random_probs(10, 6, 2)
        expected = jensenshannon(p.numpy(), q.numpy(), axis=1)
        assert np.allclose(L.js_distance(p, q).numpy(), expected, atol=1e-6)
        expected2 = jensenshannon(p.numpy(), q.numpy(), axis=1, base=2)
        assert np.allclose(L.js_distance(p, q, base=2).numpy(), expected2, atol=1e-6)

    def test_js_with_disjoint_support_is_one_in_base2(self) -> None:
        p, q = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        assert torch.allclose(L.js_distance(p, q, base=2), torch.tensor([1.0]))

    @given(prob_rows)
    @settings(max_examples=40, deadline=None)
    def test_js_property_symmetric_zero_on_diagonal_triangle(self, rows) -> None:
        p = as_probs(rows)
        q = p.flip(0)
        r = p.roll(1, dims=1)
        assert torch.allclose(L.js_distance(p, q), L.js_distance(q, p))
        assert torch.allclose(L.js_distance(p, p), torch.zeros(p.shape[0], dtype=p.dtype),
                              atol=1e-6)
        assert bool((L.js_distance(p, r) <= L.js_distance(p, q) + L.js_distance(q, r)
                     + 1e-7).all())


class TestStructureAblations:
    def test_swap_k1_moves_top_mass_to_smallest(self) -> None:
        p = torch.tensor([[0.6, 0.1, 0.3, 0.0]])
        assert torch.equal(L.swap_ranks(p, 1), torch.tensor([[0.0, 0.1, 0.3, 0.6]]))

    def test_swap_k2(self) -> None:
        p = torch.tensor([[0.6, 0.1, 0.25, 0.05]])
        assert torch.allclose(L.swap_ranks(p, 2), torch.tensor([[0.6, 0.1, 0.05, 0.25]]))

    def test_swap_k_equal_to_classes_is_identity(self) -> None:
        p = random_probs(5, 4)
        assert torch.equal(L.swap_ranks(p, 4), p)

    def test_swap_dense_matches_per_pixel(self) -> None:
        p = torch.softmax(torch.randn(2, 5, 3, 4), dim=1)
        out = L.swap_ranks(p, 2)
        pixel = p[1, :, 2, 3].unsqueeze(0)
        assert torch.equal(out[1, :, 2, 3], L.swap_ranks(pixel, 2)[0])

    @given(prob_rows, st.integers(1, 12), st.integers(0, 1000))
    @settings(max_examples=50, deadline=None)
    def test_swap_and_shuffle_are_row_permutations(self, rows, k, seed) -> None:
        p = as_probs(rows)
        k = min(k, p.shape[1])
        for out in (L.swap_ranks(p, k), L.shuffle_tail(p, torch.Generator().manual_seed(seed))):
            assert torch.equal(out.sort(1).values, p.sort(1).values)

    def test_shuffle_tail_keeps_top_class_and_is_seeded(self) -> None:
        p = random_probs(200, 10, sharp=3)
        a = L.shuffle_tail(p, torch.Generator().manual_seed(3))
        b = L.shuffle_tail(p, torch.Generator().manual_seed(3))
        c = L.shuffle_tail(p, torch.Generator().manual_seed(4))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
        assert torch.equal(a.argmax(1), p.argmax(1))
        assert torch.equal(a.max(1).values, p.max(1).values)
        # The tail is really moved: most rows change somewhere.
        assert (a != p).any(dim=1).float().mean() > 0.9

    def test_shuffle_tail_is_uniform_over_tail_positions(self) -> None:
        # Class 0 is the top; the mass 0.2 at class 1 should land on classes 1-3 equally often.
        p = torch.tensor([[0.7, 0.2, 0.05, 0.05]]).repeat(3000, 1)
        out = L.shuffle_tail(p, torch.Generator().manual_seed(0))
        where = (out == 0.2).float().mean(0)
        assert where[0] == 0
        assert torch.allclose(where[1:], torch.full((3,), 1 / 3), atol=0.04)


class TestValidate:
    def test_accepts_probabilities(self) -> None:
        p = random_probs(3, 4)
        assert L.validate(p) is p

    @pytest.mark.parametrize(
        ("probs", "message"),
        [
            (torch.tensor([[0.5, math.nan]]), "must be finite"),
            (torch.tensor([[1.2, -0.2]]), "must be non-negative"),
            (torch.tensor([[0.5, 0.4]]), "rows must sum to 1"),
            (torch.tensor([[0.7, 0.4]]), "rows must sum to 1"),
            (torch.tensor([0.5, 0.5]), "must have 2 or 4 dimensions"),
        ],
    )
    def test_rejects(self, probs: torch.Tensor, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            L.validate(probs)

    def test_rejects_integer_tensor(self) -> None:
        with pytest.raises(TypeError, match="floating-point"):
            L.validate(torch.tensor([[1, 0]]))

    def test_partial_allows_sums_below_one_only(self) -> None:
        L.validate(torch.tensor([[0.5, 0.4]]), allow_partial=True)
        with pytest.raises(ValueError, match="<= 1"):
            L.validate(torch.tensor([[0.7, 0.4]]), allow_partial=True)

    def test_names_the_argument(self) -> None:
        with pytest.raises(ValueError, match=r"^teacher rows"):
            L.validate(torch.tensor([[0.5, 0.4]]), name="teacher")


class TestBoundarySmooth:
    def test_only_pixels_next_to_another_class_are_smoothed(self) -> None:
        hard = torch.tensor([[[0, 0, 0, 1, 1],
                              [0, 0, 0, 1, 1],
                              [0, 0, 0, 1, 1]]])
        out = L.boundary_smooth(hard, 2, eps=0.5, kernel=3)
        assert out.shape == (1, 2, 3, 5)
        boundary_columns = {2, 3}
        for col in range(5):
            cls = 0 if col < 3 else 1
            expected = [0.75, 0.25] if col in boundary_columns else [1.0, 0.0]
            if cls == 1:
                expected = expected[::-1]
            for row in range(3):
                assert out[0, :, row, col].tolist() == expected, (row, col)

    def test_wider_kernel_widens_the_band(self) -> None:
        hard = torch.tensor([[[0, 0, 0, 0, 1, 1, 1, 1]]])
        band = (L.boundary_smooth(hard, 2, kernel=5).amax(1) < 1)[0, 0].tolist()
        assert band == [False, False, True, True, True, True, False, False]

    def test_kernel_one_and_eps_zero_are_identity(self) -> None:
        hard = torch.randint(0, 4, (2, 6, 6))
        assert torch.equal(L.boundary_smooth(hard, 4, kernel=1), L.one_hot(hard, 4))
        assert torch.equal(L.boundary_smooth(hard, 4, eps=0.0), L.one_hot(hard, 4))

    def test_pixels_next_to_ignored_ones_are_left_alone(self) -> None:
        hard = torch.tensor([[[0, 0, 255, 1, 1, 1, 2]]])
        out = L.boundary_smooth(hard, 3, eps=0.3, ignore_index=255)
        assert out[0, :, 0, 2].tolist() == [0, 0, 0]  # the ignored pixel itself
        assert out[0, :, 0, 1].tolist() == [1, 0, 0]  # next to ignored: left alone
        assert out[0, :, 0, 3].tolist() == [0, 1, 0]
        assert out[0, :, 0, 4].tolist() == [0, 1, 0]  # interior
        assert torch.allclose(out[0, :, 0, 5], torch.tensor([0.1, 0.8, 0.1]))  # boundary
        assert torch.allclose(out[0, :, 0, 6], torch.tensor([0.1, 0.1, 0.8]))

    def test_rows_are_probabilities(self) -> None:
        hard = torch.randint(0, 5, (2, 9, 9))
        L.validate(L.boundary_smooth(hard, 5))

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="kernel must be odd"):
            L.boundary_smooth(torch.zeros(1, 3, 3, dtype=torch.int64), 2, kernel=2)
        with pytest.raises(ValueError, match="hard must have 3 dimensions"):
            L.boundary_smooth(torch.zeros(3, 3, dtype=torch.int64), 2)
        with pytest.raises(ValueError, match="hard must hold class indices"):  # its name
            L.boundary_smooth(torch.full((1, 3, 3), 255), 2)
        with pytest.raises(ValueError, match="eps must be in"):
            L.boundary_smooth(torch.zeros(1, 3, 3, dtype=torch.int64), 2, eps=2.0)


# ----------------------------------------------------------------------------- devices


def _swapped_by_hand(probs: torch.Tensor, k: int) -> torch.Tensor:
    """swap_ranks by a loop over (N, C) rows: the k-th largest (ties: lowest class first)
    trades places with the smallest (ties: highest class, the last in that order)."""
    out = probs.clone()
    for row, values in zip(out, probs.tolist(), strict=True):
        order = sorted(range(len(values)), key=lambda c: (-values[c], c))
        row[order[k - 1]], row[order[-1]] = values[order[-1]], values[order[k - 1]]
    return out


def _boundary_by_hand(hard: torch.Tensor, ignore: int) -> torch.Tensor:
    """bool (N, H, W): a 3x3 window inside the image holds another class and no ignored
    pixel (boundary_smooth's definition), by a loop over pixels."""
    n, h, w = hard.shape
    out = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        for r in range(h):
            for c in range(w):
                window = hard[i, max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
                out[i, r, c] = bool((window != hard[i, r, c]).any()) and not bool(
                    (window == ignore).any())
    return out


def test_label_transforms_on_device(device: str) -> None:
    """soften, classwise_soften (temperatures left on the CPU), topk, swap_ranks, ensemble,
    entropy and js_distance on device tensors: on the device, equal to their formulas."""
    g = gen(0)
    logits_cpu = 3 * torch.randn(6, 5, generator=g)
    hard_cpu = torch.randint(0, 5, (6,), generator=g)
    dense_cpu = torch.softmax(torch.randn(2, 4, 3, 3, generator=g), 1)
    temps = torch.tensor([0.5, 1.0, 2.0, 1.5, 3.0])
    logits, hard, dense = logits_cpu.to(device), hard_cpu.to(device), dense_cpu.to(device)
    reference = torch.softmax(logits_cpu.double() / 2.0, 1).float()

    probs = L.soften(logits, 2.0)
    assert_close_on(probs, reference, device, atol=1e-6)
    # The temperatures stay on the CPU: the library moves them to the logits' device.
    assert_close_on(L.classwise_soften(logits, hard, temps),
                    torch.softmax(logits_cpu / temps[hard_cpu, None], 1), device, atol=1e-6)
    top = reference.topk(3, 1)
    kept = torch.zeros_like(reference).scatter(1, top.indices, top.values)
    assert_close_on(L.topk(probs, 3, renormalize=False), kept, device, atol=1e-6)
    two = torch.zeros_like(reference).scatter(1, top.indices[:, :2], top.values[:, :2])
    assert_close_on(L.topk(probs, 2), two / two.sum(1, keepdim=True), device, atol=1e-6)
    assert_close_on(L.swap_ranks(probs, 1), _swapped_by_hand(probs.cpu(), 1), device, atol=0,
                    rtol=0)
    dense_rows = dense_cpu.movedim(1, -1).reshape(-1, 4)
    assert_close_on(L.swap_ranks(dense, 2),
                    _swapped_by_hand(dense_rows, 2).reshape(2, 3, 3, 4).movedim(-1, 1), device,
                    atol=0, rtol=0)
    # Smoothed labels tie on every wrong class: the stable sort must break the ties the same
    # way on every device, so the top class swaps with the highest other class. (No such case
    # for topk: torch.topk's tie order is not lowest-index-first even on the CPU.)
    highest_other = torch.where(hard_cpu == 4, 3, 4)
    ties = L.swap_ranks(L.smooth(hard, 5, 0.1), 1)
    assert_close_on(ties.argmax(1), highest_other, device, atol=0, rtol=0)
    # The mean of logits and 2 logits at T = 1.5 is the logits at T = 1.
    assert_close_on(L.ensemble([logits, 2 * logits], 1.5), torch.softmax(logits_cpu, 1),
                    device, atol=1e-6)
    assert_close_on(L.entropy(probs), -(reference * reference.log()).sum(1), device,
                    atol=1e-6)
    expected_js = jensenshannon(reference.double().numpy(), (two / two.sum(1, keepdim=True)
                                                            ).double().numpy(), axis=1)
    assert_close_on(L.js_distance(probs, L.topk(probs, 2)),
                    torch.from_numpy(expected_js).float(), device, atol=1e-5)


def test_hard_label_smoothing_on_device(device: str) -> None:
    """smooth (with and without ignored pixels) and boundary_smooth of device labels: on the
    device, equal to (1 - eps) one-hot + eps / C where the definition says, zero rows at
    ignored pixels."""
    g = gen(1)
    hard_cpu = torch.randint(0, 5, (6,), generator=g)
    masks_cpu = torch.randint(0, 4, (2, 6, 6), generator=g)
    masks_cpu[:, 0, :2] = 255
    hard, masks = hard_cpu.to(device), masks_cpu.to(device)
    assert_close_on(L.smooth(hard, 5, 0.1), 0.9 * F.one_hot(hard_cpu, 5).float() + 0.02,
                    device)
    kept = (masks_cpu != 255)[:, None]
    encoded = F.one_hot(masks_cpu.where(masks_cpu != 255, 0), 4).movedim(-1, 1).float() * kept
    assert_close_on(L.smooth(masks, 4, 0.2, ignore_index=255), (0.8 * encoded + 0.05) * kept,
                    device)
    weight = 0.5 * _boundary_by_hand(masks_cpu, 255)[:, None].float()
    boundary = L.boundary_smooth(masks, 4, 0.5, ignore_index=255)
    assert_close_on(boundary, encoded * (1 - weight) + weight / 4, device)
    assert bool(weight.any())  # the masks have boundaries to smooth


def test_shuffle_tail_on_device_with_a_cpu_generator(device: str) -> None:
    """shuffle_tail of device probabilities, (N, C) and (N, C, H, W), with a CPU generator: on
    the device, each row a permutation of its input with the top class fixed, and (off the
    CPU) the CPU's draws."""
    g = gen(2)
    flat_cpu = torch.softmax(3 * torch.randn(6, 5, generator=g), 1)
    dense_cpu = torch.softmax(torch.randn(2, 4, 3, 3, generator=g), 1)
    for source, seed in ((flat_cpu, 7), (dense_cpu, 8)):
        shuffled = L.shuffle_tail(source.to(device), gen(seed))
        assert_on(shuffled, device)
        result = shuffled.cpu()
        assert torch.equal(result.argmax(1), source.argmax(1))  # the top class stays
        torch.testing.assert_close(result.sort(1).values, source.sort(1).values)
        assert not torch.equal(result, source)  # and the tail really moved
        if off_cpu(device):
            assert_close_on(shuffled, L.shuffle_tail(source, gen(seed)), device, atol=0,
                            rtol=0)
