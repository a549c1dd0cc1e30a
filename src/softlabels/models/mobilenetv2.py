"""MobileNetV2 for small images (the CIFAR variant of kuangliu/pytorch-cifar).

Changes from the ImageNet network, all from that widely used version: the stem conv and the
second stage have stride 1 (total stride 8 instead of 32, so a 32x32 input ends at 4x4), and
a stride-1 block whose width changes gets a 1x1 conv + BN projection shortcut (the paper has
no shortcut there). The width multiplier rounds channels to multiples of 8 as in the paper's
reference code; at ``width_mult=1`` the network is identical to kuangliu's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_positive
from ._validate import check_common
from .layers import Normalize

# (expansion, out_channels, num_blocks, first_stride) per stage.
_CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 in the ImageNet network
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` without dropping more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection, with a residual at stride 1.

    Shapes: ``(N, in_planes, H, W)`` -> ``(N, out_planes, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        # Linear bottleneck: no ReLU after the projection (it would destroy information in
        # the narrow representation).
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2 (2,296,922 parameters for 10 classes at ``width_mult=1``).

    Args:
        num_classes: number of output logits.
        in_channels: input channels C.
        image_size: accepted for a uniform interface and checked; an adaptive average pool
            makes any size work.
        width_mult: multiplies every channel count (rounded to multiples of 8); the last
            1x1 conv keeps at least 1280 channels, as in the paper.
        mean, std: per-channel input statistics for :class:`Normalize` (``None``: identity).

    Shapes:
        input ``(N, C, H, W)`` in ``[0, 1]``; output logits ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int, in_channels: int = 3,
                 image_size: int | tuple[int, int] = 32, *, width_mult: float = 1.0,
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        check_common(num_classes, in_channels, image_size)
        check_positive("width_mult", width_mult)
        self.normalize = Normalize(in_channels, mean, std)
        stem = _make_divisible(32 * width_mult)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        blocks = []
        in_planes = stem
        for expansion, out, count, first_stride in _CFG:
            out_planes = _make_divisible(out * width_mult)
            for i in range(count):
                stride = first_stride if i == 0 else 1
                blocks.append(InvertedResidual(in_planes, out_planes, expansion, stride))
                in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        last = _make_divisible(1280 * max(1.0, width_mult))
        self.conv2 = nn.Conv2d(in_planes, last, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        out = torch.relu(self.bn1(self.conv1(self.normalize(x))))
        out = torch.relu(self.bn2(self.conv2(self.layers(out))))
        return self.linear(self.pool(out).flatten(1))
