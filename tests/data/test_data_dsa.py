"""Differentiable siamese augmentation (DSA)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from softlabels.data import DSA, DSA_STRATEGY, Augment, DSAParams, dsa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import assert_close_on, device_fixture, gen, off_cpu  # noqa: F401

OPS = ["color", "crop", "cutout", "flip", "scale", "rotate"]


def _images(n: int = 6, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_default_parameters_are_the_official_ones():
    p = DSAParams()
    assert (p.prob_flip, p.ratio_scale, p.ratio_rotate, p.ratio_crop_pad, p.ratio_cutout) == (
        0.5, 1.2, 15.0, 0.125, 0.5,
    )  # fmt: skip
    assert (p.brightness, p.saturation, p.contrast, p.single) == (1.0, 2.0, 0.5, True)
    assert DSA_STRATEGY == "color_crop_cutout_flip_scale_rotate"


@pytest.mark.parametrize("strategy", [*OPS, DSA_STRATEGY])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_determinism(strategy: str, dtype: torch.dtype):
    x = _images().to(dtype)
    for single in (True, False):
        params = DSAParams(single=single)
        y = dsa(x, strategy, generator=11, params=params)
        assert y.shape == x.shape
        assert y.dtype == dtype
        assert torch.equal(y, dsa(x, strategy, generator=11, params=params))


@pytest.mark.parametrize("strategy", OPS)
def test_gradient_reaches_the_images(strategy: str):
    x = _images().requires_grad_()
    dsa(x, strategy, generator=3, params=DSAParams(single=False)).square().sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize("siamese", [False, True])
def test_same_seed_same_transform_on_different_batches(siamese: bool):
    # Every DSA op is affine in the pixels once its parameters are fixed, so applying the same
    # transform T gives T(a + b) = T(a) + T(b) - T(0); different parameters would break it.
    a, b = _images(seed=1), _images(seed=2)
    params = DSAParams(single=False)
    for seed in range(5):
        t = [dsa(v, DSA_STRATEGY, generator=seed, siamese=siamese, params=params)
             for v in (a, b, a + b, torch.zeros_like(a))]  # fmt: skip
        torch.testing.assert_close(t[2], t[0] + t[1] - t[3], atol=1e-5, rtol=0)
    # And a different seed gives a different transform.
    first, second = dsa(a, generator=0, params=params), dsa(a, generator=1, params=params)
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("strategy", OPS)
def test_siamese_shares_one_transform_across_the_batch(strategy: str):
    x = _images(1).expand(8, -1, -1, -1).contiguous()
    params = DSAParams(single=False)
    shared = dsa(x, strategy, generator=4, siamese=True, params=params)
    assert all(torch.equal(shared[0], shared[i]) for i in range(8))
    # Without siamese, 8 identical images get different transforms (flip may coincide by
    # chance for some images; over 8 images at p = 0.5 all equal has probability 1/128).
    own = dsa(x, strategy, generator=4, siamese=False, params=params)
    assert not all(torch.equal(own[0], own[i]) for i in range(8))


def test_siamese_is_independent_of_batch_size():
    x = _images(5)
    small = dsa(x[:2], generator=8, siamese=True, params=DSAParams(single=False))
    large = dsa(x, generator=8, siamese=True, params=DSAParams(single=False))
    torch.testing.assert_close(small, large[:2], atol=1e-6, rtol=0)


def _kind(y: torch.Tensor, x: torch.Tensor) -> str:
    """Classify the output of 'cutout_flip' on a strictly positive batch."""
    if torch.equal(y, x):
        return "none"
    if torch.equal(y, x.flip(3)):
        return "flip"
    zero = y == 0
    if zero.any() and torch.equal(y[~zero], x[~zero]):
        return "cutout"
    if zero.any() and torch.equal(y[~zero], x.flip(3)[~zero]):
        return "both"
    return "other"


def test_single_mode_applies_one_op_per_call_multi_mode_all():
    x = _images(4) + 0.1  # strictly positive, so only cutout creates zeros
    single = {_kind(dsa(x, "cutout_flip", generator=s, siamese=True), x) for s in range(40)}
    assert "both" not in single
    assert "other" not in single
    assert "cutout" in single
    assert ({"flip", "none"} & single)
    multi = {
        _kind(dsa(x, "cutout_flip", generator=s, siamese=True, params=DSAParams(single=False)), x)
        for s in range(40)
    }
    assert "both" in multi
    assert "other" not in multi


def test_crop_is_an_integer_translation_within_the_official_range():
    x = _images(20, h=32, w=32) + 0.1
    y = dsa(x, "crop", generator=2)
    shift = int(32 * 0.125 + 0.5)  # 4 pixels
    for i in range(20):
        found = False
        for dy in range(-shift, shift + 1):
            for dx in range(-shift, shift + 1):
                expected = torch.zeros_like(x[i])
                src = x[i, :, max(dy, 0) : 32 + min(dy, 0), max(dx, 0) : 32 + min(dx, 0)]
                expected[:, max(-dy, 0) : 32 + min(-dy, 0), max(-dx, 0) : 32 + min(-dx, 0)] = src
                if torch.equal(y[i], expected):
                    found = True
        assert found, f"image {i} is not a translation by at most {shift} pixels"


def test_cutout_zeroes_a_square_of_half_the_side_at_most():
    x = _images(30, h=16, w=16) + 0.1
    y = dsa(x, "cutout", generator=5)
    for i in range(30):
        zero = (y[i] == 0).all(dim=0)
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        assert 0 < len(rows) <= 8
        assert 0 < len(cols) <= 8
        # The zeroed pixels form a full rectangle (a square clipped at the border).
        assert int(zero.sum()) == len(rows) * len(cols)
        assert int(rows[-1] - rows[0]) + 1 == len(rows)


def test_neutral_parameters_give_identity():
    x = _images()
    torch.testing.assert_close(dsa(x, "scale", generator=0, params=DSAParams(ratio_scale=1.0)),
                               x, atol=1e-5, rtol=0)  # fmt: skip
    torch.testing.assert_close(dsa(x, "rotate", generator=0, params=DSAParams(ratio_rotate=0.0)),
                               x, atol=1e-5, rtol=0)  # fmt: skip
    assert torch.equal(dsa(x, "flip", generator=0, params=DSAParams(prob_flip=0.0)), x)
    assert torch.equal(dsa(x, "crop", generator=0, params=DSAParams(ratio_crop_pad=0.0)), x)
    assert dsa(x, "none") is x
    assert dsa(x, "") is x


def test_brightness_shift_range():
    # On constant images saturation and contrast change nothing (each pixel equals the means),
    # so "color" reduces to the brightness shift (u - 0.5) * 1.0 with u in [0, 1).
    flat = torch.full((50, 3, 4, 4), 0.5)
    shifted = dsa(flat, "color", generator=1)
    shift = shifted[:, 0, 0, 0] - 0.5
    assert torch.allclose(shifted, shifted[:, :1, :1, :1].expand_as(shifted))
    assert float(shift.min()) >= -0.5
    assert float(shift.max()) < 0.5
    assert float(shift.max() - shift.min()) > 0.5  # spread over the range


def test_saturation_and_contrast_factors():
    # Grey images: saturation does nothing, contrast scales around the image mean by u + 0.5.
    x = _images(40, c=1)
    y = dsa(x, "color", generator=2)
    mean_x = x.mean(dim=(1, 2, 3), keepdim=True)
    centred_x, centred_y = x - mean_x, y - y.mean(dim=(1, 2, 3), keepdim=True)
    factor = (centred_y * centred_x).sum(dim=(1, 2, 3)) / centred_x.square().sum(dim=(1, 2, 3))
    torch.testing.assert_close(centred_y, factor[:, None, None, None] * centred_x, atol=1e-5,
                               rtol=0)  # fmt: skip
    assert float(factor.min()) >= 0.5 - 1e-5
    assert float(factor.max()) < 1.5 + 1e-5
    assert float(factor.max() - factor.min()) > 0.5


def test_rotation_angle_is_bounded():
    # Rotating a centred vertical bar by theta tilts it; 15 degrees at most.
    x = torch.zeros(40, 1, 33, 33)
    x[:, :, 4:29, 16] = 1.0
    y = dsa(x, "rotate", generator=6)
    angles = []
    for i in range(40):
        top, bottom = y[i, 0, 8], y[i, 0, 24]
        cols = torch.arange(33, dtype=torch.float32)
        dx = float((bottom * cols).sum() / bottom.sum() - (top * cols).sum() / top.sum())
        angle = math.degrees(math.atan2(abs(dx), 16))
        angles.append(angle)
    assert max(angles) <= 15.5
    assert max(angles) > 5


def test_validation_and_callable_class():
    with pytest.raises(ValueError, match="unknown op"):
        dsa(_images(), "crop_blur")
    with pytest.raises(ValueError, match="unknown op"):
        DSA("zoom")
    with pytest.raises(ValueError, match="ratio_scale"):
        DSAParams(ratio_scale=0.5)
    with pytest.raises(TypeError, match="params"):
        dsa(_images(), params={"ratio_scale": 1.2})  # type: ignore[arg-type]
    augment = Augment(DSA(siamese=True))
    x = _images()
    assert torch.equal(augment(x, generator=3), dsa(x, generator=3, siamese=True))


def test_global_rng_is_not_touched():
    state = torch.get_rng_state()
    dsa(_images(), generator=None, params=DSAParams(single=False))
    dsa(_images(), generator=1)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("strategy", [*OPS, DSA_STRATEGY])
def test_device_images_with_cpu_draws(device: str, strategy: str):
    """dsa and DSA with int seeds and CPU generators on device images: on the device, an int
    seed is that CPU generator, one seed is one affine transform (identical images stay
    identical in a siamese batch), gradients reach the images, and (off the CPU) values and
    gradients are the CPU's."""
    every_op = DSAParams(single=False)  # the whole strategy, not one op drawn from it
    a, b = _images(8, seed=10), _images(8, seed=11)
    x = a.clone().to(device).requires_grad_(True)
    out = {"per_image": dsa(x, strategy, generator=11, params=every_op),
           "siamese": dsa(x, strategy, generator=gen(12), siamese=True, params=every_op),
           "module": DSA(strategy)(x, 13)}
    weights = {name: torch.linspace(0, 1, v.numel()).view_as(v) for name, v in out.items()}
    sum((v * weights[name].to(device)).sum() for name, v in out.items()).backward()
    assert_close_on(out["per_image"], dsa(x.detach(), strategy, generator=gen(11),
                                          params=every_op), device, atol=0, rtol=0)
    # Every op is affine in the pixels once its parameters are drawn: T(a + b) = T(a) + T(b)
    # - T(0) under one seed.
    t = [dsa(v.to(device), strategy, generator=14, params=every_op)
         for v in (a, b, a + b, torch.zeros_like(a))]
    assert_close_on(t[2], t[0] + t[1] - t[3], device, atol=1e-5, rtol=0)
    same = dsa(a[:1].expand(5, -1, -1, -1).to(device), strategy, generator=15, siamese=True,
               params=every_op)
    assert_close_on(same, same[:1].expand_as(same), device, atol=0, rtol=0)
    assert x.grad is not None
    assert bool(torch.isfinite(x.grad).all())
    assert float(x.grad.abs().sum()) > 0
    if off_cpu(device):
        # grid_sample (scale, rotate) and the colour statistics round differently on a GPU.
        x_cpu = a.clone().requires_grad_(True)
        expected = {"per_image": dsa(x_cpu, strategy, generator=11, params=every_op),
                    "siamese": dsa(x_cpu, strategy, generator=gen(12), siamese=True,
                                   params=every_op),
                    "module": DSA(strategy)(x_cpu, 13)}
        sum((v * weights[name]).sum() for name, v in expected.items()).backward()
        for name, value in out.items():
            assert_close_on(value.detach(), expected[name].detach(), device)
        assert_close_on(x.grad, x_cpu.grad, device)
