"""Models the cost model needs that the library does not have (ImageNet ResNet-18, dilated
ResNet-d backbones with DeepLabV3 and U-Net decoders), and the list of models measured."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softlabels.models import create_model

# --------------------------------------------------------------------------------------------
# Models the library does not have
# --------------------------------------------------------------------------------------------

def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1
                  ) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, dilation * (k // 2), dilation,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, dilation: int,
                 shortcut: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, width, 3, stride, dilation)
        self.conv2 = nn.Sequential(nn.Conv2d(width, width, 3, 1, dilation, dilation, bias=False),
                                   nn.BatchNorm2d(width))
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.conv2(self.conv1(x)) + skip)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, dilation: int,
                 shortcut: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, width, 1)
        self.conv2 = _conv_bn_relu(width, width, 3, stride, dilation)
        self.conv3 = nn.Sequential(nn.Conv2d(width, width * 4, 1, bias=False),
                                   nn.BatchNorm2d(width * 4))
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.conv3(self.conv2(self.conv1(x))) + skip)


class ResNet(nn.Module):
    """torchvision's ResNet (``deep=False``) or timm's ResNet-d (deep 3x3 stem, average-pool
    shortcuts) with an optional output stride of 8 (dilated last two stages). ``features``
    returns the stem output and the four stages, as timm's ``features_only``."""

    def __init__(self, block: type[Basic | Bottleneck], layers: Sequence[int], *, deep: bool,
                 output_stride: int = 32, num_classes: int | None = None) -> None:
        super().__init__()
        if deep:
            self.stem = nn.Sequential(_conv_bn_relu(3, 32, 3, 2), _conv_bn_relu(32, 32),
                                      _conv_bn_relu(32, 64))
        else:
            self.stem = _conv_bn_relu(3, 64, 7, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        cin, dilation, stages = 64, 1, []
        for index, (width, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if index == 0 else 2
            if output_stride == 8 and index >= 2:
                stride, dilation = 1, dilation * 2
            blocks = []
            for number in range(count):
                s = stride if number == 0 else 1
                out = width * block.expansion
                shortcut = None
                if number == 0 and (s != 1 or cin != out):
                    pool: nn.Module = nn.AvgPool2d(2, s, ceil_mode=True, count_include_pad=False) \
                        if deep and s > 1 else nn.Identity()
                    shortcut = nn.Sequential(pool, nn.Conv2d(cin, out, 1, 1 if deep else s,
                                                             bias=False), nn.BatchNorm2d(out))
                blocks.append(block(cin, width, s, dilation, shortcut))
                cin = out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.channels = [64] + [w * block.expansion for w in (64, 128, 256, 512)]
        self.fc = nn.Linear(cin, num_classes) if num_classes else None

    def features(self, x: Tensor) -> list[Tensor]:
        out = [self.stem(x)]
        x = self.pool(out[0])
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        assert self.fc is not None
        return self.fc(self.features(x)[-1].mean((2, 3)))


def imagenet_resnet18() -> nn.Module:
    """torchvision's ``resnet18`` layout (7x7 stride-2 stem, max-pool), 1000 classes."""
    return ResNet(Basic, (2, 2, 2, 2), deep=False, num_classes=1000)


def _backbone(depth: int, output_stride: int) -> ResNet:
    block, layers = {18: (Basic, (2, 2, 2, 2)), 50: (Bottleneck, (3, 4, 6, 3)),
                     101: (Bottleneck, (3, 4, 23, 3))}[depth]
    return ResNet(block, layers, deep=True, output_stride=output_stride)


class DeepLabV3(nn.Module):
    """JDTLosses' DeepLabV3: ResNet-d at output stride 8, ASPP (512 channels, rates 12/24/36
    and image pooling), a 3x3 bottleneck, a 1x1 head upsampled to the input, and the auxiliary
    head on stage 3 (3x3 conv to 256 channels, 1x1 head)."""

    def __init__(self, depth: int, num_classes: int = 19) -> None:
        super().__init__()
        self.backbone = _backbone(depth, 8)
        c4, c3 = self.backbone.channels[-1], self.backbone.channels[-2]
        self.pool_branch = _conv_bn_relu(c4, 512, 1)
        self.branches = nn.ModuleList([_conv_bn_relu(c4, 512, 1)] + [
            _conv_bn_relu(c4, 512, 3, 1, rate) for rate in (12, 24, 36)])
        self.bottleneck = _conv_bn_relu(5 * 512, 512)
        self.head = nn.Conv2d(512, num_classes, 1)
        self.aux = nn.Sequential(_conv_bn_relu(c3, 256), nn.Conv2d(256, num_classes, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.backbone.features(x)
        top = feats[-1]
        pooled = self.pool_branch(top.mean((2, 3), keepdim=True)).expand(-1, -1, *top.shape[2:])
        mixed = self.bottleneck(torch.cat([pooled] + [b(top) for b in self.branches], 1))
        size = x.shape[2:]
        main = F.interpolate(self.head(mixed), size=size, mode="bilinear")
        return main, F.interpolate(self.aux(feats[-2]), size=size, mode="bilinear")


class UNetResNet(nn.Module):
    """JDTLosses' U-Net: ResNet-d at output stride 32, five upsampling blocks of two 3x3
    ConvBNReLU (1024, 512, 256, 128, 64 channels) with skips, 1x1 head, auxiliary head."""

    def __init__(self, depth: int, num_classes: int = 19) -> None:
        super().__init__()
        self.backbone = _backbone(depth, 32)
        channels = self.backbone.channels[::-1]  # stage 4, 3, 2, 1, stem
        outs = [64 * m for m in (16, 8, 4, 2, 1)]
        ins = [channels[0], *outs[:-1]]
        skips = [*channels[1:], 0]
        self.blocks = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(i + s, o), _conv_bn_relu(o, o))
            for i, s, o in zip(ins, skips, outs, strict=True))
        self.head = nn.Conv2d(64, num_classes, 1)
        self.aux = nn.Sequential(_conv_bn_relu(self.backbone.channels[-2], 256),
                                 nn.Conv2d(256, num_classes, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.backbone.features(x)
        out, skips = feats[-1], feats[-2::-1]
        for index, block in enumerate(self.blocks):
            out = F.interpolate(out, scale_factor=2.0, mode="bilinear")
            if index < len(skips):
                out = torch.cat([out, skips[index]], 1)
            out = block(out)
        aux = F.interpolate(self.aux(feats[-2]), size=x.shape[2:], mode="bilinear")
        return self.head(out), aux


def library(name: str, classes: int, size: int | tuple[int, int], **kwargs: Any
            ) -> Callable[[], nn.Module]:
    return lambda: create_model(name, classes, 3, size, **kwargs)


MODELS: list[tuple[str, str, Callable[[], nn.Module], tuple[int, int, int]]] = [
    ("ConvNet-D3 w128", "library", library("convnet", 10, 32), (3, 32, 32)),
    ("ConvNet-D3 w64", "library", library("convnet", 10, 32, width=64), (3, 32, 32)),
    ("ResNet-18 (CIFAR stem)", "library", library("resnet18", 10, 32), (3, 32, 32)),
    ("MobileNetV2", "library", library("mobilenetv2", 10, 32), (3, 32, 32)),
    ("WRN-34-10", "library", library("wrn", 10, 32), (3, 32, 32)),
    ("ResNet-18 (CIFAR stem)", "library", library("resnet18", 1000, 224), (3, 224, 224)),
    ("ResNet-18 (ImageNet)", "built here", imagenet_resnet18, (3, 224, 224)),
    ("UNet w16 d3", "library", library("unet", 19, (512, 1024)), (3, 512, 1024)),
    ("DeepLabV3-R18d", "built here", lambda: DeepLabV3(18), (3, 512, 1024)),
    ("DeepLabV3-R50d", "built here", lambda: DeepLabV3(50), (3, 512, 1024)),
    ("DeepLabV3-R101d", "built here", lambda: DeepLabV3(101), (3, 512, 1024)),
    ("UNet-R50d", "built here", lambda: UNetResNet(50), (3, 512, 1024)),
]


