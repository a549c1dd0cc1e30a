"""Paired augmentation: the image and its mask move together; masks are padded with ignore.

Each pixel's coordinates are encoded in the image (channel 0: row + 1, channel 1: column + 1,
scaled to [0, 1]) and in the mask (row * W + column), so after any geometric transform the
mask value at a pixel must name the source pixel the image shows there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from softlabels.data import (
    PairedAugment,
    paired_flip,
    paired_random_crop,
    paired_random_scale,
)
from softlabels.data.segmentation import PairedFlip, PairedRandomCrop, PairedRandomScale

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import assert_close_on, assert_on, device_fixture, gen, off_cpu  # noqa: F401

H, W = 10, 12  # H * W < 255, so coordinate codes never collide with the ignore index
IGNORE = 255


def _coded(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    cols = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    image = torch.stack([(rows + 1) / H, (cols + 1) / W, torch.rand(H, W)])
    mask = torch.arange(H * W).reshape(H, W)
    return image.expand(n, 3, H, W).clone(), mask.expand(n, H, W).clone()


def _decoded_rows_cols(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (images[:, 0] * H - 1).round().long(), (images[:, 1] * W - 1).round().long()


def _assert_mask_follows_image(images: torch.Tensor, masks: torch.Tensor) -> None:
    rows, cols = _decoded_rows_cols(images)
    pad = masks == IGNORE
    assert torch.equal(masks[~pad], (rows * W + cols)[~pad])
    # Padded mask pixels are exactly the padded image pixels (value 0 in the coded channels).
    assert torch.equal(pad, (images[:, 0] == 0) & (images[:, 1] == 0))


def test_flip_moves_image_and_mask_together_per_sample():
    images, masks = _coded(64)
    out_x, out_m = paired_flip(images, masks, 5)
    _assert_mask_follows_image(out_x, out_m)
    flipped = out_m[:, 0, 0] == W - 1
    assert 10 < int(flipped.sum()) < 54  # independent per sample
    assert torch.equal(out_x[flipped], images[flipped].flip(3))
    assert torch.equal(out_x[~flipped], images[~flipped])
    x1, m1 = paired_flip(images, masks, p=1.0)
    assert torch.equal(x1, images.flip(3))
    assert torch.equal(m1, masks.flip(2))


@pytest.mark.parametrize("size", [(4, 5), (H, W), 7])
def test_crop_inside_the_image_takes_the_same_window(size):
    images, masks = _coded(16)
    out_x, out_m = paired_random_crop(images, masks, size, 3)
    h, w = (size, size) if isinstance(size, int) else size
    assert out_x.shape == (16, 3, h, w)
    assert out_m.shape == (16, h, w)
    assert not bool((out_m == IGNORE).any())
    _assert_mask_follows_image(out_x, out_m)
    for i in range(16):  # each crop is a contiguous window of its own sample
        top, left = int(out_m[i, 0, 0]) // W, int(out_m[i, 0, 0]) % W
        assert torch.equal(out_m[i], masks[i, top : top + h, left : left + w])
        assert torch.equal(out_x[i], images[i, :, top : top + h, left : left + w])
    if (h, w) != (H, W):
        assert len({int(v) for v in out_m[:, 0, 0]}) > 1, "offsets should differ per sample"


def test_crop_larger_than_the_image_pads_masks_with_the_ignore_index():
    images, masks = _coded(16)
    out_x, out_m = paired_random_crop(images, masks, (H + 4, W + 6), 11)
    assert out_x.shape == (16, 3, H + 4, W + 6)
    _assert_mask_follows_image(out_x, out_m)
    for i in range(16):
        kept = out_m[i] != IGNORE
        # The whole input lies inside the crop, padding around it carries the ignore index.
        assert int(kept.sum()) == H * W
        assert sorted(out_m[i][kept].tolist()) == list(range(H * W))
        assert torch.equal(out_x[i, 2][kept].reshape(H, W), images[i, 2])
    # Padding positions vary across samples.
    assert len({int(torch.nonzero(out_m[i] == 0)[0, 1]) for i in range(16)}) > 1


def test_crop_pad_values_are_configurable_and_checked():
    images, masks = _coded(2)
    out_x, out_m = paired_random_crop(
        images, masks, (H + 2, W), 0, pad_value_image=0.5, pad_value_mask=-1
    )
    pad = out_m == -1
    assert int(pad.sum()) == 2 * 2 * W  # two rows of each crop lie outside the image
    assert bool((out_x.permute(1, 0, 2, 3)[:, pad] == 0.5).all())
    with pytest.raises(ValueError, match="does not fit"):
        paired_random_crop(images, masks.to(torch.uint8), (H + 2, W), 0, pad_value_mask=-1)
    with pytest.raises(ValueError, match="size"):
        paired_random_crop(images, masks, (0, 3), 0)


def test_scale_uses_nearest_for_masks_and_bilinear_for_images():
    images, masks = _coded(4)
    for seed in range(6):
        out_x, out_m = paired_random_scale(images, masks, (0.5, 2.0), seed)
        h, w = out_m.shape[1:]
        assert out_x.shape == (4, 3, h, w)
        # Nearest neighbour: no new labels, and the source pixel of each output pixel is the
        # one nearest to where the bilinear image samples (at most half a pixel away).
        assert set(out_m.unique().tolist()) <= set(range(H * W))
        rows_img = out_x[:, 0] * H - 1
        cols_img = out_x[:, 1] * W - 1
        assert float((rows_img - (out_m // W)).abs().max()) <= 0.5 + 1e-4
        assert float((cols_img - (out_m % W)).abs().max()) <= 0.5 + 1e-4


def test_scale_output_size_matches_the_drawn_factor():
    images, masks = _coded(2)
    _, out_m = paired_random_scale(images, masks, (2.0, 2.0), 0)
    assert out_m.shape == (2, 2 * H, 2 * W)
    # Exactly 2x: every source pixel becomes a 2x2 block of its label.
    assert torch.equal(out_m, masks.repeat_interleave(2, 1).repeat_interleave(2, 2))
    with pytest.raises(ValueError, match="scale_range"):
        paired_random_scale(images, masks, (0.0, 1.0), 0)


def test_seeded_reproducibility_and_generator_equivalence():
    images, masks = _coded(8)
    augment = PairedAugment(PairedRandomScale((0.8, 1.6)), PairedRandomCrop((8, 9)), PairedFlip())
    a = augment(images, masks, 7)
    b = augment(images, masks, torch.Generator().manual_seed(7))
    c = augment(images, masks, 8)
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # One generator shared by the steps, in order: the same as calling them by hand.
    g = torch.Generator().manual_seed(7)
    x, m = paired_random_scale(images, masks, (0.8, 1.6), g)
    x, m = paired_random_crop(x, m, (8, 9), g)
    x, m = paired_flip(x, m, g)
    assert torch.equal(a[0], x)
    assert torch.equal(a[1], m)
    assert a[0].shape == (8, 3, 8, 9)
    assert "PairedRandomCrop" in repr(augment)


def test_dtype_and_device_are_kept():
    images, masks = _coded(3)
    images, masks = images.double(), masks.to(torch.uint8)
    augment = PairedAugment(PairedRandomScale((1.3, 1.3)), PairedRandomCrop(16), PairedFlip())
    out_x, out_m = augment(images, masks, 0)
    assert out_x.dtype == torch.float64
    assert out_m.dtype == torch.uint8
    assert out_x.device == images.device
    assert out_m.device == masks.device


def test_input_checks():
    images, masks = _coded(2)
    with pytest.raises(ValueError, match=r"masks must have shape \(2, 10, 12\)"):
        paired_flip(images, masks[:, 1:], 0)
    with pytest.raises(TypeError, match="integer"):
        paired_flip(images, masks.float(), 0)
    with pytest.raises(TypeError, match="floating-point"):
        paired_flip(masks[:, None], masks, 0)
    with pytest.raises(TypeError, match="callable"):
        PairedAugment("flip")  # type: ignore[arg-type]


def test_device_images_and_masks_with_cpu_draws(device: str):
    """paired_flip, paired_random_crop (inside and with padding), paired_random_scale and
    PairedAugment with int seeds and CPU generators on device images and masks: on the
    device, the mask still names the pixel the image shows, padding takes the ignore index,
    and (off the CPU) the CPU's draws."""
    images_cpu, masks_cpu = _coded(6)
    images, masks = images_cpu.to(device), masks_cpu.to(device)
    calls = {
        "flip": lambda x, m, g: paired_flip(x, m, g),
        "crop": lambda x, m, g: paired_random_crop(x, m, 8, g),
        "crop_pad": lambda x, m, g: paired_random_crop(x, m, (H + 2, 9), g),
        "scale": lambda x, m, g: paired_random_scale(x, m, (0.6, 1.4), g),
        "augment": lambda x, m, g: PairedAugment(PairedRandomCrop(8), PairedFlip())(x, m, g),
    }
    def draws(seed: int) -> int | torch.Generator:  # int seeds and CPU generators in turn
        return seed if seed % 2 else gen(seed)

    for seed, (name, call) in enumerate(calls.items()):
        out_x, out_m = call(images, masks, draws(seed))
        assert_on(out_x, device)
        assert_on(out_m, device)
        if name == "scale":  # nearest for the mask, bilinear for the image: half a pixel
            rows, cols = out_x[:, 0].cpu() * H - 1, out_x[:, 1].cpu() * W - 1
            assert float((rows - out_m.cpu() // W).abs().max()) <= 0.5 + 1e-4
            assert float((cols - out_m.cpu() % W).abs().max()) <= 0.5 + 1e-4
        else:
            _assert_mask_follows_image(out_x.cpu(), out_m.cpu())
        if name == "crop_pad":
            assert out_m.shape == (6, H + 2, 9)
            assert int((out_m == IGNORE).sum()) == 6 * 2 * 9  # two padded rows per crop
        if off_cpu(device):
            x_ref, m_ref = call(images_cpu, masks_cpu, draws(seed))
            # Bilinear resizing may round differently on the device; the rest is indexing.
            tol = 1e-5 if name == "scale" else 0.0
            assert_close_on(out_x, x_ref, device, atol=tol, rtol=tol)
            assert_close_on(out_m, m_ref, device, atol=0, rtol=0)
