"""Parameter counts against reference numbers (10 classes, 3 channels unless stated).

Each expected value is a count by formula from the reference architecture, layer by layer
(the helpers below: a convolution, a norm, a linear layer), checked where one exists against
the figure the papers and reference implementations publish, so it depends neither on the
code under test nor on a total worked out once by hand.
"""

from __future__ import annotations

import pytest

from softlabels.models import create_model


def count(name: str, *args, **kwargs) -> int:
    return sum(p.numel() for p in create_model(name, *args, **kwargs).parameters())


def conv(cin: int, cout: int, k: int, *, bias: bool = False, groups: int = 1) -> int:
    """A k x k convolution's weights (and bias)."""
    return cin // groups * cout * k * k + (cout if bias else 0)


def norm(channels: int) -> int:
    """An affine BatchNorm / GroupNorm: a scale and a shift per channel."""
    return 2 * channels


def linear(features: int, outputs: int) -> int:
    return features * outputs + outputs


def resnet18_cifar(classes: int = 10) -> int:
    """kuangliu/pytorch-cifar ResNet18: a 3x3 stem, four stages of two BasicBlocks (two 3x3
    convs with BN; a 1x1 conv + BN shortcut where the width or stride changes), a linear head."""
    total = conv(3, 64, 3) + norm(64)
    cin = 64
    for width in (64, 128, 256, 512):
        for block in range(2):
            total += conv(cin, width, 3) + norm(width) + conv(width, width, 3) + norm(width)
            if block == 0 and cin != width:  # the first block of stages 2-4 strides by 2
                total += conv(cin, width, 1) + norm(width)
            cin = width
    return total + linear(512, classes)


def wide_resnet(depth: int, k: int, classes: int = 10) -> int:
    """TRADES / RSLAD WideResNet-depth-k: a 3x3 stem to 16, three groups of (depth - 4) / 6
    pre-activation blocks (BN, 3x3 conv, BN, 3x3 conv; a 1x1 shortcut where the width
    changes) at widths 16k, 32k, 64k, a final BN and a linear head."""
    blocks = (depth - 4) // 6
    total = conv(3, 16, 3)
    cin = 16
    for width in (16 * k, 32 * k, 64 * k):
        for _ in range(blocks):
            total += norm(cin) + conv(cin, width, 3) + norm(width) + conv(width, width, 3)
            if cin != width:
                total += conv(cin, width, 1)
            cin = width
    return total + norm(cin) + linear(cin, classes)


# (expansion t, output width, blocks, stride of the first block) of the CIFAR MobileNetV2.
MOBILENETV2_CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                   (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenetv2_cifar(classes: int = 10) -> int:
    """kuangliu / RSLAD CIFAR MobileNetV2: a 3x3 stem to 32, inverted residual blocks (1x1
    expansion to t * in, 3x3 depthwise, 1x1 projection, each with BN; the expansion is kept
    at t = 1; a 1x1 conv + BN shortcut in stride-1 blocks that change width), a 1x1 conv to
    1280 with BN and a linear head."""
    total = conv(3, 32, 3) + norm(32)
    cin = 32
    for t, width, blocks, first_stride in MOBILENETV2_CFG:
        for block in range(blocks):
            planes = t * cin
            total += conv(cin, planes, 1) + norm(planes) + conv(planes, planes, 3,
                                                                 groups=planes)
            total += norm(planes) + conv(planes, width, 1) + norm(width)
            stride = first_stride if block == 0 else 1
            if stride == 1 and cin != width:
                total += conv(cin, width, 1) + norm(width)
            cin = width
    return total + conv(320, 1280, 1) + norm(1280) + linear(1280, classes)


def unet(classes: int = 10, cin: int = 3, base: int = 16, depth: int = 3) -> int:
    """The U-Net: widths base * 2**i; double convs (two 3x3 convs without bias, each with
    BN) down the encoder; per decoder level a bilinear 2x upsampling, a 1x1 conv (with bias)
    halving the width, and a double conv on the concatenation with the skip; a 1x1 head."""
    widths = [base * 2**i for i in range(depth + 1)]

    def double(cin: int, cout: int) -> int:
        return conv(cin, cout, 3) + norm(cout) + conv(cout, cout, 3) + norm(cout)

    total = double(cin, widths[0])
    for i in range(depth):
        total += double(widths[i], widths[i + 1])
        total += conv(widths[i + 1], widths[i], 1, bias=True) + double(2 * widths[i], widths[i])
    return total + conv(widths[0], classes, 1, bias=True)


def test_resnet18_cifar() -> None:
    # The figure quoted by CIFAR robustness papers for kuangliu's ResNet18.
    assert resnet18_cifar() == 11_173_962
    assert count("resnet18", 10) == resnet18_cifar()
    assert count("resnet18", 100) == resnet18_cifar(100)


@pytest.mark.parametrize(("depth", "published"), [(34, 46_160_474), (28, 36_479_194)])
def test_wideresnet(depth: int, published: int) -> None:
    # WRN-34-10 and WRN-28-10 as used by TRADES / RSLAD / ABSLD (without the unused
    # ``sub_block1`` of the TRADES file, which never runs in forward): 46.2M and 36.5M.
    assert wide_resnet(depth, 10) == published
    assert count("wrn", 10, depth=depth, widen_factor=10) == published
    assert count("wrn", 10, depth=16, widen_factor=2) == wide_resnet(16, 2)


def test_mobilenetv2_cifar() -> None:
    expected = mobilenetv2_cifar()
    assert count("mobilenetv2", 10) == expected == 2_296_922
    # Cross-check with torchvision's published 3,504,872 (1000 classes): its 10-class head,
    # plus the kuangliu additions: the t = 1 block's expansion conv + BN, and the shortcuts of
    # the four stride-1 blocks that change width (32->16, 16->24, 64->96, 160->320).
    torchvision = 3_504_872 - linear(1280, 1000) + linear(1280, 10)
    additions = conv(32, 32, 1) + norm(32) + sum(
        conv(cin, cout, 1) + norm(cout) for cin, cout in ((32, 16), (16, 24), (64, 96),
                                                          (160, 320)))
    assert torchvision + additions == expected


@pytest.mark.parametrize(
    ("in_channels", "image_size", "features"),
    [(3, 32, 128 * 4 * 4), (1, 28, 128 * 3 * 3), (1, 8, 128 * 1 * 1)],
)
def test_convnet_d3(in_channels: int, image_size: int, features: int) -> None:
    # ConvNet-D3, width 128: conv3x3 with bias, GroupNorm affine (2 * 128) per block, then
    # a linear layer on the pooled map (32 -> 4x4, 28 -> 3x3 with floor, 8 -> 1x1).
    expected = (conv(in_channels, 128, 3, bias=True) + 2 * conv(128, 128, 3, bias=True)
                + 3 * norm(128) + linear(features, 10))
    assert count("convnet", 10, in_channels, image_size) == expected
    if (in_channels, image_size) == (3, 32):
        assert expected == 320_010


def test_mlp_default() -> None:
    # 3072 -> 256 -> 256 -> 10 with biases.
    assert count("mlp", 10) == linear(3072, 256) + linear(256, 256) + linear(256, 10)


@pytest.mark.parametrize(("depth", "classes"), [(3, 10), (4, 10), (3, 12)])
def test_unet(depth: int, classes: int) -> None:
    assert count("unet", classes, depth=depth) == unet(classes, depth=depth)
    if (depth, classes) == (3, 10):
        assert unet() == 450_634  # the default U-Net: 0.45M parameters
