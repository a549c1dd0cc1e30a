"""Multi-layer perceptron on flattened images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .._checks import check_positive_int
from ._validate import check_common, check_input_hw
from .layers import Normalize


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU] per hidden width -> Linear.

    Args:
        num_classes: number of output logits.
        in_channels: input channels C.
        image_size: ``H`` (square) or ``(H, W)``; fixes the first layer's input width.
        hidden: widths of the hidden layers; ``()`` gives a linear classifier.
        mean, std: per-channel input statistics for :class:`Normalize` (``None``: identity).

    Shapes:
        input ``(N, C, H, W)`` in ``[0, 1]``; output logits ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int, in_channels: int = 3,
                 image_size: int | tuple[int, int] = 32, *,
                 hidden: Sequence[int] = (256, 256),
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.image_size = check_common(num_classes, in_channels, image_size)
        if isinstance(hidden, int | str) or not isinstance(hidden, Sequence):
            raise TypeError(
                f"hidden must be a sequence of layer widths, got {type(hidden).__name__}"
            )
        widths = [check_positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden)]
        self.normalize = Normalize(in_channels, mean, std)
        height, width = self.image_size
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_channels * height * width
        for hidden_width in widths:
            layers += [nn.Linear(fan_in, hidden_width), nn.ReLU()]
            fan_in = hidden_width
        layers.append(nn.Linear(fan_in, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        x = self.normalize(x)
        check_input_hw("mlp", x.shape, self.image_size)
        return self.layers(x)
