"""ConvNet-D3/D4 of the dataset-distillation literature.

Follows the ``ConvNet`` of Zhao et al.'s DC/DSA code as reused by MTT: ``depth`` blocks of
conv3x3 -> norm -> ReLU -> AvgPool2d(2), then one linear layer on the flattened features.
Two deliberate differences from that code: 28x28 inputs are not padded to 32x32 (the spatial
size follows AvgPool2d's floor: 28 -> 14 -> 7 -> 3), and ``"layernorm"`` is
``GroupNorm(1, width)`` instead of ``nn.LayerNorm`` over (C, H, W), so it has 2*width
parameters independent of the image size.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .._checks import check_choice, check_positive_int
from ._validate import check_common, check_input_hw
from .layers import NORM_CHOICES, Normalize, make_norm


class ConvBlock(nn.Module):
    """conv3x3 -> norm -> ReLU -> AvgPool2d(2); halves H and W (floor)."""

    def __init__(self, in_channels: int, width: int, norm: str) -> None:
        super().__init__()
        # Bias kept (as in DC/DSA/MTT) so parameter counts match the papers, although a
        # per-channel norm right after makes it redundant.
        self.conv = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.norm = make_norm(norm, width)
        # Not in-place: the distillation code trains stacked copies with torch.func.vmap.
        self.act = nn.ReLU()
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W)`` -> ``(N, width, H // 2, W // 2)``."""
        return self.pool(self.act(self.norm(self.conv(x))))


class ConvNet(nn.Module):
    """The ConvNet used for dataset distillation (ConvNet-D3 by default).

    Args:
        num_classes: number of output logits.
        in_channels: input channels C.
        image_size: ``H`` (square) or ``(H, W)``; each block halves it (floor), so it must
            be at least ``2 ** depth`` in both dimensions.
        width: channels of every conv layer.
        depth: number of conv blocks (3 for 32x32 and smaller, 4 for 64x64 in the papers).
        norm: one of ``"instancenorm"`` (default, ``GroupNorm(width, width)``),
            ``"batchnorm"``, ``"layernorm"``, ``"groupnorm"``, ``"none"``.
        mean, std: per-channel input statistics for :class:`Normalize` (``None``: identity).

    Shapes:
        input ``(N, C, H, W)`` in ``[0, 1]``; output logits ``(N, num_classes)``.

    The default has no BatchNorm and no in-place ops on activations, so it works with
    ``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``.
    """

    def __init__(self, num_classes: int, in_channels: int = 3,
                 image_size: int | tuple[int, int] = 32, *,
                 width: int = 128, depth: int = 3, norm: str = "instancenorm",
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.image_size = check_common(num_classes, in_channels, image_size)
        check_positive_int("width", width)
        check_positive_int("depth", depth)
        check_choice("norm", norm, NORM_CHOICES)
        height, wide = self.image_size
        for _ in range(depth):
            # AvgPool2d(2) on a 1-pixel map gives an empty output; catch that here, not
            # at the first forward pass.
            if height < 2 or wide < 2:
                raise ValueError(
                    f"image_size {self.image_size} is too small for convnet depth={depth}: "
                    f"each block halves H and W, so both must be >= {2 ** depth}"
                )
            height, wide = height // 2, wide // 2
        self.normalize = Normalize(in_channels, mean, std)
        blocks = [ConvBlock(in_channels if i == 0 else width, width, norm) for i in range(depth)]
        self.features = nn.Sequential(*blocks)
        self.feature_shape = (width, height, wide)
        self.classifier = nn.Linear(width * height * wide, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to the classifier's input ``(N, width * h * w)``."""
        x = self.normalize(x)
        check_input_hw("convnet", x.shape, self.image_size)
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        return self.classifier(self.embed(x))
