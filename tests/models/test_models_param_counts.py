"""Parameter counts against reference numbers (10 classes, 3 channels unless stated).

Each expected value is a published figure or a count by hand from the reference
architecture, written out so it does not depend on the code under test.
"""

from __future__ import annotations

import pytest

from softlabels.models import create_model


def count(name: str, *args, **kwargs) -> int:
    return sum(p.numel() for p in create_model(name, *args, **kwargs).parameters())


def test_resnet18_cifar() -> None:
    # kuangliu/pytorch-cifar ResNet18, the figure quoted by CIFAR robustness papers.
    assert count("resnet18", 10) == 11_173_962


@pytest.mark.parametrize(("depth", "expected"), [(34, 46_160_474), (28, 36_479_194)])
def test_wideresnet(depth: int, expected: int) -> None:
    # WRN-34-10 and WRN-28-10 as used by TRADES / RSLAD / ABSLD (without the unused
    # ``sub_block1`` of the TRADES file, which never runs in forward).
    assert count("wrn", 10, depth=depth, widen_factor=10) == expected


def test_mobilenetv2_cifar() -> None:
    # torchvision's MobileNetV2 has 3,504,872 parameters with 1000 classes; its 10-class
    # head has 1280*10 + 10 instead of 1280*1000 + 1000 -> 2,236,682. The kuangliu / RSLAD
    # CIFAR version used here adds (a) a 1x1 expansion conv + BN in the first (t=1) block:
    # 32*32 + 2*32 = 1,088, and (b) 1x1 conv + BN projection shortcuts in the four stride-1
    # blocks that change width: 32->16 (544), 16->24 (432), 64->96 (6,336), 160->320 (51,840).
    torchvision_10_classes = 3_504_872 - (1280 * 1000 + 1000) + (1280 * 10 + 10)
    assert torchvision_10_classes == 2_236_682
    expected = torchvision_10_classes + 1_088 + 544 + 432 + 6_336 + 51_840
    assert count("mobilenetv2", 10) == expected == 2_296_922


@pytest.mark.parametrize(
    ("in_channels", "image_size", "features"),
    [(3, 32, 128 * 4 * 4), (1, 28, 128 * 3 * 3), (1, 8, 128 * 1 * 1)],
)
def test_convnet_d3(in_channels: int, image_size: int, features: int) -> None:
    # ConvNet-D3, width 128: conv3x3 with bias, GroupNorm affine (2 * 128) per block, then
    # a linear layer on the pooled map (32 -> 4x4, 28 -> 3x3 with floor, 8 -> 1x1).
    first = in_channels * 128 * 9 + 128
    later = 2 * (128 * 128 * 9 + 128)
    norms = 3 * 2 * 128
    expected = first + later + norms + features * 10 + 10
    assert count("convnet", 10, in_channels, image_size) == expected
    if (in_channels, image_size) == (3, 32):
        assert expected == 320_010


def test_mlp_default() -> None:
    # 3072 -> 256 -> 256 -> 10 with biases.
    assert count("mlp", 10) == (3072 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)


def test_unet_default_is_small() -> None:
    # Hand count, base_width 16, depth 3, BatchNorm, bilinear up + 1x1 conv:
    # encoder double convs 3->16, 16->32, 32->64, 64->128 (no conv bias, BN 4*C each):
    encoder = (432 + 2304 + 64) + (4608 + 9216 + 128) + (18432 + 36864 + 256) + (
        73728 + 147456 + 512)
    # decoder per level: 1x1 conv (with bias) then double conv on the concatenation:
    decoder = (8192 + 64 + 73728 + 36864 + 256) + (2048 + 32 + 18432 + 9216 + 128) + (
        512 + 16 + 4608 + 2304 + 64)
    head = 16 * 10 + 10
    assert count("unet", 10) == encoder + decoder + head == 450_634
    assert count("unet", 10, depth=4) < 2_000_000
