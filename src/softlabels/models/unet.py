"""A small U-Net (Ronneberger et al., 2015) for semantic segmentation on a CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_positive_int
from ._validate import check_common
from .layers import Normalize, make_norm

UNET_NORMS: tuple[str, ...] = ("batchnorm", "groupnorm", "instancenorm", "none")
UNET_UPSAMPLE: tuple[str, ...] = ("bilinear", "transpose")


class DoubleConv(nn.Module):
    """[conv3x3 -> norm -> ReLU] x 2; keeps H and W.

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        # A conv bias is redundant in front of a norm layer; keep it only without one.
        bias = norm == "none"
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias),
            make_norm(norm, out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias),
            make_norm(norm, out_channels),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class Up(nn.Module):
    """Upsample x2 to ``out_channels``, concatenate the skip, then :class:`DoubleConv`.

    Shapes: ``(N, in_channels, H, W)`` and skip ``(N, out_channels, 2H, 2W)`` ->
    ``(N, out_channels, 2H, 2W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str, mode: str) -> None:
        super().__init__()
        self.up: nn.Module
        if mode == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        else:
            # Bilinear + 1x1 conv: no checkerboard artefacts and fewer parameters than a
            # transposed conv; the 1x1 conv makes both modes produce the same widths.
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, 1),
            )
        self.conv = DoubleConv(2 * out_channels, out_channels, norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """U-Net with ``depth`` down/up-sampling steps and widths ``base_width * 2**i``.

    Inputs of any size work: the image is padded (edge replication, bottom and right) up to
    a multiple of ``2**depth`` so every pooled map halves exactly and the skips line up,
    and the logits are cropped back to the input size.

    Args:
        num_classes: number of output channels (per-pixel logits).
        in_channels: input channels C.
        image_size: accepted for a uniform interface and checked; any size works.
        base_width: channels at full resolution; doubles at each level.
        depth: number of 2x2 max-pool steps (3 or 4 are typical).
        norm: ``"batchnorm"`` (default), ``"groupnorm"``, ``"instancenorm"`` or ``"none"``.
        upsample: ``"bilinear"`` (default) or ``"transpose"`` (transposed conv).
        mean, std: per-channel input statistics for :class:`Normalize` (``None``: identity).

    Shapes:
        input ``(N, C, H, W)`` in ``[0, 1]``; output logits ``(N, num_classes, H, W)``.
    """

    def __init__(self, num_classes: int, in_channels: int = 3,
                 image_size: int | tuple[int, int] = 32, *,
                 base_width: int = 16, depth: int = 3, norm: str = "batchnorm",
                 upsample: str = "bilinear",
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        check_common(num_classes, in_channels, image_size)
        check_positive_int("base_width", base_width)
        check_positive_int("depth", depth)
        check_choice("norm", norm, UNET_NORMS)
        check_choice("upsample", upsample, UNET_UPSAMPLE)
        self.depth = depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.normalize = Normalize(in_channels, mean, std)
        self.inc = DoubleConv(in_channels, widths[0], norm)
        self.pool = nn.MaxPool2d(2)
        self.down = nn.ModuleList(
            DoubleConv(widths[i], widths[i + 1], norm) for i in range(depth)
        )
        self.up = nn.ModuleList(
            Up(widths[i + 1], widths[i], norm, upsample) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to per-pixel logits ``(N, num_classes, H, W)``."""
        x = self.normalize(x)
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            # Replicate rather than zero-pad: zeros would be an artificial edge that the
            # convs near the border respond to.
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(self.pool(skips[-1])))
        out = skips.pop()
        for up in self.up:
            out = up(out, skips.pop())
        return self.head(out)[..., :height, :width]
