"""Wide residual network (Zagoruyko & Komodakis, 2016) as used in adversarial training.

Layer for layer the ``WideResNet`` of the TRADES / RSLAD code (pre-activation BN-ReLU-conv
blocks, a 1x1 projection shortcut where the width or stride changes, fan-out He init), so
that teacher checkpoints and parameter counts carry over. That code also builds an unused
``sub_block1`` (never called in ``forward``) which inflates its parameter count; it is left
out here, so WRN-34-10 has 46,160,474 parameters for 10 classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_positive_int, check_range
from ._validate import check_common
from .layers import Normalize


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus shortcut.

    Shapes: ``(N, in_planes, H, W)`` -> ``(N, out_planes, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        # Named as in the reference code so its checkpoints load.
        self.convShortcut: nn.Module | None = None
        if in_planes != out_planes or stride != 1:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = torch.relu(self.bn1(x))
        out = torch.relu(self.bn2(self.conv1(pre)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        # As in the reference code: the projection shortcut reads the pre-activated input,
        # the identity shortcut the raw input.
        residual = x if self.convShortcut is None else self.convShortcut(pre)
        return residual + out


class _Stage(nn.Module):
    """A stage of blocks; a wrapper only so parameter names match the reference's
    ``NetworkBlock`` (``block1.layer.0...``)."""

    def __init__(self, blocks: list[WideBasicBlock]) -> None:
        super().__init__()
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k for small images (WRN-34-10 by default).

    Args:
        num_classes: number of output logits.
        in_channels: input channels C.
        image_size: accepted for a uniform interface and checked; the adaptive average pool
            makes any size work (the reference uses a fixed 8x8 pool, i.e. 32x32 inputs).
        depth: total depth; ``(depth - 4) % 6 == 0``, giving ``(depth - 4) // 6`` blocks
            per stage (34 -> 5, 28 -> 4).
        widen_factor: stage widths are 16k, 32k, 64k.
        dropout: dropout probability between the two convs of each block.
        mean, std: per-channel input statistics for :class:`Normalize` (``None``: identity).

    Shapes:
        input ``(N, C, H, W)`` in ``[0, 1]``; output logits ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int, in_channels: int = 3,
                 image_size: int | tuple[int, int] = 32, *,
                 depth: int = 34, widen_factor: int = 10, dropout: float = 0.0,
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        check_common(num_classes, in_channels, image_size)
        check_positive_int("depth", depth)
        check_positive_int("widen_factor", widen_factor)
        check_range("dropout", dropout, 0.0, 1.0)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"depth must satisfy (depth - 4) % 6 == 0 and be >= 10 (e.g. 16, 28, 34, 40), "
                f"got {depth}"
            )
        blocks_per_stage = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.normalize = Normalize(in_channels, mean, std)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        stages = []
        for stage, stride in enumerate((1, 2, 2)):
            in_planes, out_planes = widths[stage], widths[stage + 1]
            stages.append(_Stage([
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes,
                               stride if i == 0 else 1, dropout)
                for i in range(blocks_per_stage)
            ]))
        self.block1, self.block2, self.block3 = stages
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # The reference init (He normal with fan-out, zero linear bias); matching it keeps
        # training curves comparable with the TRADES / RSLAD papers.
        if self.fc.weight.is_meta:
            return  # built for its shapes (check_model, deferred init): nothing to draw
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = torch.relu(self.bn1(out))
        return self.fc(self.pool(out).flatten(1))
