"""ResNet-18 for small images (the CIFAR variant of kuangliu/pytorch-cifar).

Differences from the ImageNet ResNet-18: a 3x3 stride-1 stem and no max-pool, because a
7x7 stride-2 stem plus pooling would shrink 32x32 inputs to 8x8 before the first block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_choice
from ._validate import check_common
from .layers import NORM_CHOICES, Normalize, make_norm


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (post-activation, He et al. 2016).

    Shapes: ``(N, in_planes, H, W)`` -> ``(N, planes, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str) -> None:
        super().__init__()
        # No conv bias: the norm layer that follows has its own shift.
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            # Projection shortcut (option B) when the shape changes.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                make_norm(norm, planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet built from :class:`BasicBlock` stages of widths 64-128-256-512.

    Args:
        num_classes: number of output logits.
        in_channels: input channels C.
        image_size: accepted for a uniform interface and checked; the adaptive average pool
            makes the network work for any size (>= 8 keeps every stage larger than 1x1).
        blocks: number of blocks per stage; ``(2, 2, 2, 2)`` is ResNet-18.
        norm: normalisation layer kind (see :func:`~softlabels.models.layers.make_norm`);
            ``"batchnorm"`` is the standard network, ``"instancenorm"`` the variant used by
            the dataset-distillation code.
        mean, std: per-channel input statistics for :class:`Normalize` (``None``: identity).

    Shapes:
        input ``(N, C, H, W)`` in ``[0, 1]``; output logits ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int, in_channels: int = 3,
                 image_size: int | tuple[int, int] = 32, *,
                 blocks: Sequence[int] = (2, 2, 2, 2), norm: str = "batchnorm",
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        check_common(num_classes, in_channels, image_size)
        check_choice("norm", norm, NORM_CHOICES)
        if len(blocks) != 4 or any(
            isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in blocks
        ):
            raise ValueError(f"blocks must be 4 positive ints, got {blocks!r}")
        self.normalize = Normalize(in_channels, mean, std)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = make_norm(norm, 64)
        in_planes = 64
        stages = []
        for planes, stride, count in zip((64, 128, 256, 512), (1, 2, 2, 2), blocks, strict=True):
            stage = []
            for i in range(count):
                stage.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, norm))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        out = torch.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.pool(out).flatten(1))


def resnet18(num_classes: int, in_channels: int = 3,
             image_size: int | tuple[int, int] = 32, *, norm: str = "batchnorm",
             mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> ResNet:
    """CIFAR ResNet-18 (11,173,962 parameters for 10 classes and 3 channels).

    Shapes: input ``(N, C, H, W)`` in ``[0, 1]``; output logits ``(N, num_classes)``.
    """
    return ResNet(num_classes, in_channels, image_size, blocks=(2, 2, 2, 2), norm=norm,
                  mean=mean, std=std)
