"""Attacks and robust evaluation: bad inputs fail clearly and before any work, eps = 0 works."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from softlabels.attacks import fgsm, pgd, robust_evaluate, standard_attacks


def _model(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, num_classes))


def _images(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(1))


Y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_pixels_are_refused(bad: float) -> None:
    x = _images()
    x[3, 1, 0, 1] = bad  # min() and max() of a tensor with NaN are NaN: passes [0, 1] checks
    with pytest.raises(ValueError, match="x must be finite"):
        pgd(_model(), x, Y, 0.1, 0.02, 2)
    with pytest.raises(ValueError, match="images must be finite"):
        robust_evaluate(_model(), x, Y, {"clean": None}, device="cpu")


@pytest.mark.parametrize("loss", ["ce", "cw", "kl"])
def test_labels_beyond_the_model_classes_are_refused(loss: str) -> None:
    y = Y.clone()
    y[2] = 3
    target = torch.full((8, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 3\)"):
        pgd(_model(), _images(), y, 0.1, 0.02, 2, loss=loss, target_probs=target)


def test_target_probs_of_another_width_are_refused() -> None:
    with pytest.raises(ValueError, match="target_probs must have the shape of the model's logits"):
        pgd(_model(), _images(), Y, 0.1, 0.02, 2, loss="kl", target_probs=torch.full((8, 4), 0.25))


def test_a_model_with_non_finite_logits_is_refused() -> None:
    model = _model()
    with torch.no_grad():
        model[1].bias[0] = math.nan
    with pytest.raises(ValueError, match=r"model\(x\) \(the logits\) must be finite"):
        pgd(model, _images(), Y, 0.1, 0.02, 2)


def test_a_model_without_class_logits_is_refused() -> None:
    with pytest.raises(ValueError, match=r"model must map x .* to float logits \(B, K\)"):
        pgd(nn.Identity(), _images(), Y, 0.1, 0.02, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_other_input_dtypes_are_converted_for_a_float32_model(dtype: torch.dtype) -> None:
    x = _images().to(dtype)
    reference = pgd(_model(), x.float(), Y, 0.1, 0.02, 3, random_start=False)
    adv = pgd(_model(), x, Y, 0.1, 0.02, 3, random_start=False)
    assert adv.dtype == dtype
    torch.testing.assert_close(adv.float(), reference, atol=1e-3, rtol=0)
    # Inside the ball up to the input dtype's rounding (float16 spacing is 2**-11 near 1).
    assert float((adv.double() - x.double()).abs().max()) <= 0.1 + 2**-10
    results = robust_evaluate(_model(), x, Y, {"clean": None}, device="cpu")
    assert 0.0 <= results["clean"].accuracy <= 1.0


def test_eps_zero_returns_the_input_in_fgsm_and_standard_attacks() -> None:
    model, x = _model(), _images()
    assert torch.equal(fgsm(model, x, Y, 0.0), x)
    attacks = standard_attacks(0.0, pgd_steps=3)
    for name, attack in attacks.items():
        if attack is not None:
            assert torch.equal(attack(model, x, Y), x), name
    results = robust_evaluate(model, x, Y, attacks, device="cpu")
    assert len({result.accuracy for result in results.values()}) == 1
    # Still checked: labels beyond the model's classes fail even though nothing moves.
    with pytest.raises(ValueError, match="y must hold class indices"):
        fgsm(model, x, Y + 3, 0.0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"eps": -0.1}, "eps must be a finite number >= 0"),
    ({"eps": math.inf}, "eps must be a finite number >= 0"),
    ({"eps": 0.1, "alpha": 0.0}, "alpha"),
    ({"eps": 0.1, "pgd_steps": 0}, "pgd_steps must be > 0"),
    ({"eps": 0.1, "cw_confidence": math.nan}, "cw_confidence must be a finite number"),
    ({"eps": 0.1, "seed": -1}, r"seed must be an int in \[0, 2\*\*63 - 1\]"),
    ({"eps": 0.1, "seed": 2**64}, r"seed must be an int in \[0, 2\*\*63 - 1\]"),
])
def test_standard_attacks_checks_its_arguments_up_front(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        standard_attacks(**kwargs)


def test_robust_evaluate_refuses_bad_inputs_before_attacking() -> None:
    calls = []

    def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x

    model, x = _model(), _images()
    with pytest.raises(ValueError, match=r"images must hold images in \[0, 1\]"):
        robust_evaluate(model, 3 * x, Y, {"a": attack}, device="cpu")
    with pytest.raises(ValueError, match=r"labels must hold class indices in \[0, 3\)"):
        robust_evaluate(model, x, Y + 1, {"a": attack}, device="cpu")
    with pytest.raises(ValueError, match="num_classes=4 but the model outputs 3 logits"):
        robust_evaluate(model, x, Y, {"a": attack}, num_classes=4, device="cpu")
    with pytest.raises(TypeError, match=r"attacks\['a'\] must be callable"):
        robust_evaluate(model, x, Y, {"a": 3}, device="cpu")
    with pytest.raises(ValueError, match="at least one image"):
        robust_evaluate(model, x[:0], Y[:0], {"a": attack}, device="cpu")
    assert calls == []


def test_an_empty_batch_is_returned_unchanged() -> None:
    x = _images()[:0]
    for norm in ("linf", "l2"):
        adv = pgd(_model(), x, Y[:0], 0.1, 0.02, 3, norm=norm)
        assert adv.shape == (0, 3, 2, 2)


def test_one_class_evaluation_sets_have_an_undefined_nsd() -> None:
    results = robust_evaluate(_model(), _images(), torch.zeros(8, dtype=torch.int64),
                              {"clean": None}, device="cpu")
    assert math.isnan(results["clean"].nsd)
    assert 0.0 <= results["clean"].accuracy <= 1.0
