"""Batch augmentation: flip, crop and their composition."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from softlabels.data import (
    Augment,
    RandomCrop,
    RandomFlip,
    augmentation,
    random_crop,
    random_flip,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import assert_close_on, assert_on, device_fixture, gen, off_cpu  # noqa: F401


def _images(n: int = 16, c: int = 3, h: int = 8, w: int = 8, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(123), dtype=dtype)


def test_flip_probability_extremes():
    x = _images()
    assert torch.equal(random_flip(x, p=1.0, generator=0), x.flip(3))
    assert torch.equal(random_flip(x, p=0.0, generator=0), x)


def test_flip_is_per_image_and_seeded():
    x = _images(64)
    y = random_flip(x, generator=3)
    flipped = [bool(torch.equal(y[i], x[i].flip(2))) for i in range(64)]
    kept = [bool(torch.equal(y[i], x[i])) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54
    assert torch.equal(y, random_flip(x, generator=3))
    assert torch.equal(y, random_flip(x, generator=torch.Generator().manual_seed(3)))
    # Same seed twice: every image flipped twice or not at all, i.e. back to the input.
    assert torch.equal(random_flip(y, generator=3), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_shape_preserved(dtype: torch.dtype):
    x = _images(dtype=dtype)
    for out in (random_flip(x, generator=0), random_crop(x, 2, generator=0),
                random_crop(x, 2, padding_mode="reflect", generator=0)):  # fmt: skip
        assert out.shape == x.shape
        assert out.dtype == dtype
        assert out.device == x.device


def test_crop_with_zero_padding_is_identity():
    x = _images()
    assert torch.equal(random_crop(x, 0, generator=0), x)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_crop_takes_a_window_of_the_padded_image(mode: str):
    x, pad = _images(12, h=6, w=7), 2
    y = random_crop(x, pad, padding_mode=mode, generator=9)
    padded = F.pad(x, (pad,) * 4, mode="constant" if mode == "zeros" else "reflect")
    offsets = set()
    for i in range(len(x)):
        matches = [
            (t, s)
            for t in range(2 * pad + 1)
            for s in range(2 * pad + 1)
            if torch.equal(y[i], padded[i, :, t : t + 6, s : s + 7])
        ]
        assert matches, f"image {i} is not a window of its padded version"
        offsets.update(matches)
    assert len(offsets) > 3, "offsets must vary per image"


def test_crop_keeps_gradients_and_errors():
    x = _images(4).requires_grad_()
    random_crop(x, 3, generator=1).sum().backward()
    assert x.grad is not None
    assert float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="padding"):
        random_crop(_images(), -1)
    with pytest.raises(ValueError, match="smaller than the image size"):
        random_crop(_images(h=4, w=4), 4, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode"):
        random_crop(_images(), 1, padding_mode="edge")


def test_input_checks():
    with pytest.raises(TypeError, match="floating-point"):
        random_flip(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="4 dimensions"):
        random_flip(torch.zeros(3, 2, 2))
    with pytest.raises(TypeError, match="generator"):
        random_flip(_images(), generator="seed")  # type: ignore[arg-type]


def test_augment_composes_and_is_seeded():
    x = _images(32)
    augment = Augment(RandomCrop(2), RandomFlip(0.5))
    a, b = augment(x, generator=5), augment(x, generator=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, augment(x, generator=6))
    # Equivalent to calling the steps by hand with one shared generator.
    g = torch.Generator().manual_seed(5)
    manual = random_flip(random_crop(x, 2, generator=g), 0.5, generator=g)
    assert torch.equal(a, manual)
    assert "RandomCrop(padding=2" in repr(augment)
    with pytest.raises(TypeError, match="callable"):
        Augment(3)  # type: ignore[arg-type]


def test_global_rng_is_not_touched():
    state = torch.get_rng_state()
    Augment(RandomCrop(1), RandomFlip())(_images(), generator=None)
    assert torch.equal(state, torch.get_rng_state())


def _crop_by_hand(x: torch.Tensor, pad: int, mode: str, generator: torch.Generator
                  ) -> torch.Tensor:
    """random_crop's definition: each image's window of the padded batch, at offsets given
    by the generator's first two draws (rows, then columns)."""
    n, _, h, w = x.shape
    top, left = (torch.randint(0, 2 * pad + 1, (n,), generator=generator) for _ in range(2))
    padded = F.pad(x, (pad,) * 4, mode="constant" if mode == "zeros" else "reflect")
    return torch.stack([padded[i, :, top[i]:top[i] + h, left[i]:left[i] + w] for i in range(n)])


def test_device_images_with_cpu_draws(device: str) -> None:
    """random_flip, random_crop, Augment and the presets with int seeds and CPU generators on
    device images: on the device, the windows and flips the CPU generator's draws give."""
    x_cpu = torch.rand(8, 3, 16, 16, generator=gen(8))
    x = x_cpu.to(device)
    flip = random_flip(x, 0.5, generator=3)
    assert_close_on(flip, random_flip(x, 0.5, generator=gen(3)), device, atol=0, rtol=0)
    flipped = (flip.cpu() == x_cpu.flip(3)).flatten(1).all(1)
    same = (flip.cpu() == x_cpu).flatten(1).all(1)
    assert bool((flipped | same).all())
    assert bool(flipped.any())
    assert bool(same.any())
    assert_close_on(random_crop(x, 2, generator=4), _crop_by_hand(x_cpu, 2, "zeros", gen(4)),
                    device, atol=0, rtol=0)
    assert_close_on(random_crop(x, 3, padding_mode="reflect", generator=gen(5)),
                    _crop_by_hand(x_cpu, 3, "reflect", gen(5)), device, atol=0, rtol=0)
    # The steps in order with one shared generator; the preset pads 16 // 8 = 2.
    g = gen(6)
    manual = random_flip(random_crop(x_cpu, 2, generator=g), 0.5, generator=g)
    assert_close_on(Augment(RandomCrop(2), RandomFlip())(x, generator=6), manual, device,
                    atol=0, rtol=0)
    assert_close_on(augmentation("flip_crop", 16)(x, gen(6)), manual, device, atol=0, rtol=0)
    dsa = augmentation("dsa", 16)(x, 9)
    assert_on(dsa, device)
    assert dsa.shape == x.shape
    if off_cpu(device):  # the DSA preset may resample (grid_sample) on the device
        assert_close_on(dsa, augmentation("dsa", 16)(x_cpu, 9), device)
    # A generator on the device itself works too (its draws differ from the CPU's).
    on_device = Augment(RandomCrop(2), RandomFlip())(x, torch.Generator(device=device))
    assert_on(on_device, device)
    assert on_device.shape == x.shape
