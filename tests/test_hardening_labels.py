"""Label operations refuse the inputs a hostile trial found accepted, with the argument named."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from softlabels import labels as L
from softlabels._checks import check_indices, check_number

UNIFORM = torch.full((2, 3), 1 / 3)


class TestArgumentsThatSwitchChecksOff:
    @pytest.mark.parametrize("atol", [math.nan, math.inf, -1e-3, 0.6])
    def test_validate_refuses_the_tolerance_not_the_probabilities(self, atol: float) -> None:
        with pytest.raises(ValueError, match=r"^atol must be"):
            L.validate(UNIFORM, atol=atol)

    def test_a_nan_tolerance_no_longer_accepts_garbage(self) -> None:
        with pytest.raises(ValueError, match="atol"):
            L.validate(torch.full((2, 3), 5.0), atol=math.nan)

    def test_allow_partial_must_be_a_bool(self) -> None:
        with pytest.raises(TypeError, match="allow_partial must be a bool"):
            L.validate(UNIFORM, allow_partial="no")

    def test_renormalize_must_be_a_bool(self) -> None:
        with pytest.raises(TypeError, match="renormalize must be a bool"):
            L.topk(UNIFORM, 1, renormalize="no")


class TestIgnoreIndexInsideTheClasses:
    @pytest.mark.parametrize("call", [
        lambda: L.one_hot(torch.tensor([0, 1]), 3, ignore_index=1),
        lambda: L.smooth(torch.tensor([0, 2]), 3, 0.1, ignore_index=0),
        lambda: L.boundary_smooth(torch.zeros(1, 3, 3, dtype=torch.int64), 3, ignore_index=2),
    ])
    def test_is_refused(self, call) -> None:
        with pytest.raises(ValueError, match=r"ignore_index must lie outside the class range"):
            call()

    def test_outside_is_still_fine(self) -> None:
        out = L.one_hot(torch.tensor([1, -1]), 3, ignore_index=-1)
        assert out.tolist() == [[0, 1, 0], [0, 0, 0]]

    def test_boundary_mask_checks_its_arguments(self) -> None:
        with pytest.raises(TypeError, match="hard must be an int64"):
            L.boundary_mask(torch.zeros(1, 3, 3))
        with pytest.raises(ValueError, match="kernel must be odd"):
            L.boundary_mask(torch.zeros(1, 3, 3, dtype=torch.int64), kernel=2)
        with pytest.raises(TypeError, match="ignore_index must be an int"):
            L.boundary_mask(torch.zeros(1, 3, 3, dtype=torch.int64), ignore_index=2.5)


class TestDegenerateSizes:
    @pytest.mark.parametrize("call", [
        lambda: L.soften(torch.zeros(2, 0)),
        lambda: L.soften(torch.zeros(2, 0, 3, 3)),
        lambda: L.ensemble([torch.zeros(2, 0)]),
        lambda: L.classwise_soften(torch.zeros(2, 0), torch.zeros(2, dtype=torch.int64),
                                   torch.ones(0)),
    ])
    def test_zero_classes_are_refused(self, call) -> None:
        with pytest.raises(ValueError, match="at least one class along dim 1"):
            call()

    def test_zero_samples_give_empty_results(self) -> None:
        assert L.soften(torch.zeros(0, 4)).shape == (0, 4)
        assert L.entropy(torch.zeros(0, 4)).shape == (0,)


class TestTemperatures:
    def test_tiny_temperature_gives_the_argmax_not_nan(self) -> None:
        out = L.soften(torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 0.0]]), 1e-30)
        assert out.tolist() == [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]

    def test_huge_temperature_gives_the_uniform_distribution(self) -> None:
        out = L.soften(torch.tensor([[1.0, 3.0, 2.0, -4.0]]), 1e30)
        assert out.tolist() == [[0.25] * 4]

    def test_half_precision_logits_with_a_small_temperature(self) -> None:
        # 1e-8 is zero in float16: the division used to give inf - inf = NaN.
        out = L.soften(torch.tensor([[1.0, 2.0]], dtype=torch.float16), 1e-8)
        assert out.dtype == torch.float16
        assert out.tolist() == [[0.0, 1.0]]

    @pytest.mark.parametrize(("temperature", "message"), [
        (1e-45, r"temperature must lie in \[1.18e-38"),
        (1e300, r"temperature must lie in"),
        (math.inf, "temperature must be a finite number"),
        (math.nan, "temperature must be a finite number"),
    ])
    def test_unrepresentable_temperatures_are_refused(self, temperature: float,
                                                      message: str) -> None:
        with pytest.raises(ValueError, match=message):
            L.soften(torch.randn(2, 3), temperature)

    def test_classwise_temperatures_that_underflow_are_refused(self) -> None:
        with pytest.raises(ValueError, match="temperatures must lie in"):
            L.classwise_soften(torch.randn(2, 2), torch.tensor([0, 1]),
                               torch.tensor([1.0, 1e-300], dtype=torch.float64))

    def test_classwise_small_temperatures_match_the_argmax(self) -> None:
        logits = torch.tensor([[1.0, 2.0], [4.0, 3.0]])
        out = L.classwise_soften(logits, torch.tensor([0, 1]), torch.tensor([1e-30, 1.0]))
        assert out[0].tolist() == [0.0, 1.0]
        expected = np.exp([4.0, 3.0]) / np.exp([4.0, 3.0]).sum()
        np.testing.assert_allclose(out[1].numpy(), expected, rtol=1e-6)


class TestLogBase:
    @pytest.mark.parametrize("base", [1, 1.0, 0.5, 0, -2, math.inf, math.nan])
    def test_entropy_and_js_refuse_bases_not_above_one(self, base: float) -> None:
        with pytest.raises(ValueError, match=r"^base must be"):
            L.entropy(UNIFORM, base=base)
        with pytest.raises(ValueError, match=r"^base must be"):
            L.js_distance(UNIFORM, UNIFORM, base=base)

    def test_js_distance_of_the_smallest_subnormal_is_finite(self) -> None:
        tiny = 5e-324  # p = 5e-324, q = 0: the mixture m = p / 2 underflows to 0
        p = torch.tensor([[1.0 - tiny, tiny, 0.0]], dtype=torch.float64)
        q = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
        distance = L.js_distance(p, q)
        assert torch.isfinite(distance).all()
        assert float(distance) < 1e-100


def test_one_hot_refuses_an_integer_output_dtype() -> None:
    with pytest.raises(TypeError, match=r"dtype must be a floating-point torch\.dtype"):
        L.one_hot(torch.tensor([0, 1]), 2, dtype=torch.int64)
    assert L.one_hot(torch.tensor([0, 1]), 2, dtype=torch.float64).dtype == torch.float64


def test_shuffle_tail_refuses_a_non_generator() -> None:
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        L.shuffle_tail(UNIFORM, generator=3)


class TestSharedNumberChecks:
    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400])
    def test_non_finite_numbers_are_refused(self, value: float) -> None:
        with pytest.raises(ValueError, match="x must be a finite number"):
            check_number("x", value)

    @pytest.mark.parametrize("value", [True, "1", None, torch.tensor(1.0)])
    def test_non_numbers_are_refused(self, value: object) -> None:
        with pytest.raises(TypeError, match="x must be a number"):
            check_number("x", value)

    @pytest.mark.parametrize("value", [torch.tensor([1.7]), [1.7], torch.tensor([True])])
    def test_positions_must_be_integers(self, value: object) -> None:
        with pytest.raises(TypeError, match="positions must hold integer positions"):
            check_indices("positions", value)

    def test_positions_are_converted_to_int64(self) -> None:
        assert check_indices("p", [2, 0]).dtype == torch.int64
        assert check_indices("p", []).shape == (0,)
        assert check_indices("p", torch.tensor([1], dtype=torch.uint8)).tolist() == [1]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rounded_low_precision_probabilities_are_accepted(dtype: torch.dtype) -> None:
    # Exact probabilities rounded to bfloat16 miss a row sum of 1 by up to ~2**-8; about one
    # row in six of these misses it by more than the default tolerance of 1e-3.
    exact = torch.softmax(torch.randn(2000, 10, generator=torch.Generator().manual_seed(0),
                                      dtype=torch.float64), dim=1)
    rounded = exact.to(dtype)
    assert L.validate(rounded) is rounded
    with pytest.raises(ValueError, match="rows must sum to 1"):
        L.validate((exact * 1.02).to(dtype))


def test_boundary_smooth_of_empty_images_and_errors_name_hard() -> None:
    for shape in [(0, 3, 3), (2, 0, 3), (1, 3, 0)]:
        out = L.boundary_smooth(torch.zeros(shape, dtype=torch.int64), 4)
        assert out.shape == (shape[0], 4, *shape[1:])
    with pytest.raises(ValueError, match=r"^hard must hold class indices in \[0, 2\)"):
        L.boundary_smooth(torch.full((1, 2, 2), 2), 2)


def test_counts_beyond_int32_are_refused() -> None:
    with pytest.raises(ValueError, match="num_classes must be <= 2147483647"):
        L.one_hot(torch.tensor([0]), 10**20)
    with pytest.raises(ValueError, match="k must be <= 2147483647"):
        L.topk(UNIFORM, 2**40)


def test_shuffle_seeds_are_checked() -> None:
    from softlabels.distill.label_modes import shuffle_tail_labels

    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*63 - 1\]"):
        shuffle_tail_labels(UNIFORM, 2**64)
    with pytest.raises(TypeError, match="seed must be an int"):
        shuffle_tail_labels(UNIFORM, 1.5)
