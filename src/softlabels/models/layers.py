"""Layers shared by the models: input normalisation and a normalisation-layer factory."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_float, check_positive_int

#: Names accepted by :func:`make_norm` (and by the ``norm`` argument of the models).
NORM_CHOICES: tuple[str, ...] = ("batchnorm", "instancenorm", "layernorm", "groupnorm", "none")


def _per_channel(name: str, values: object, num_channels: int) -> Tensor:
    """Turn a per-channel sequence (or 1-D tensor) into a float32 vector of length C."""
    if isinstance(values, Tensor):
        vector = values.detach().to(dtype=torch.float32, device="cpu").flatten()
        if values.ndim != 1:
            raise ValueError(
                f"{name} must be a 1-D sequence of {num_channels} numbers, got a tensor of "
                f"shape {tuple(values.shape)}"
            )
    elif isinstance(values, Sequence) and not isinstance(values, str):
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(
                    f"{name} must hold numbers, got {type(value).__name__} in {values!r}"
                )
        vector = torch.tensor([float(v) for v in values], dtype=torch.float32, device="cpu")
    else:
        raise TypeError(
            f"{name} must be a sequence of {num_channels} numbers, got {type(values).__name__}"
        )
    if vector.numel() != num_channels:
        raise ValueError(
            f"{name} must have one value per input channel ({num_channels}), got "
            f"{vector.numel()} values {vector.tolist()}"
        )
    if not bool(torch.isfinite(vector).all()):
        raise ValueError(f"{name} must be finite, got {vector.tolist()}")
    return vector


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` at the model input.

    Living inside the model (not in the data pipeline) means every model takes images in
    ``[0, 1]``, so attack budgets are in pixel space and a model can be handed to any attack
    library unchanged. ``mean`` and ``std`` are buffers: they follow ``.to(device)`` and are
    saved in the state dict, so a checkpoint carries its own normalisation.

    Args:
        num_channels: number of input channels C.
        mean: C per-channel means, or ``None`` for 0 (identity).
        std: C per-channel standard deviations (> 0), or ``None`` for 1 (identity).

    Shapes:
        input ``(N, C, H, W)`` float; output the same shape.

    Example:
        >>> norm = Normalize(3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        >>> norm(torch.ones(1, 3, 2, 2))[0, :, 0, 0].tolist()
        [2.0, 2.0, 2.0]
    """

    mean: Tensor
    std: Tensor

    def __init__(self, num_channels: int, mean: Sequence[float] | Tensor | None = None,
                 std: Sequence[float] | Tensor | None = None) -> None:
        super().__init__()
        self.num_channels = check_positive_int("num_channels", num_channels)
        # On the CPU whatever the default device: the check below reads the values (a model
        # built under torch.device("meta") for deferred initialisation gets CPU statistics).
        mean_vec = (torch.zeros(num_channels, device="cpu") if mean is None
                    else _per_channel("mean", mean, num_channels))
        std_vec = (torch.ones(num_channels, device="cpu") if std is None
                   else _per_channel("std", std, num_channels))
        if not bool((std_vec > 0).all()):
            raise ValueError(f"std must be > 0 for every channel, got {std_vec.tolist()}")
        # Buffers even for the identity case, so every model has the same state-dict keys
        # and a checkpoint with real statistics loads into a model built without them.
        self.register_buffer("mean", mean_vec.view(1, -1, 1, 1))
        self.register_buffer("std", std_vec.view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` of shape ``(N, C, H, W)``; returns the same shape."""
        check_float("x", x)
        # Shape-only checks: they stay valid under torch.func.vmap (no data-dependent branch).
        if x.ndim != 4 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"x must have shape (N, {self.num_channels}, H, W), got {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return (f"mean={[round(v, 4) for v in self.mean.flatten().tolist()]}, "
                f"std={[round(v, 4) for v in self.std.flatten().tolist()]}")


def make_norm(kind: str, channels: int) -> nn.Module:
    """Build a normalisation layer for ``channels`` feature maps.

    Kinds:
        ``"batchnorm"``: ``nn.BatchNorm2d``.
        ``"instancenorm"``: ``nn.GroupNorm(channels, channels, affine=True)``, as in the
            dataset-distillation ConvNet (DC/DSA/MTT): per-sample statistics, no running
            buffers, so it works under ``torch.func.vmap`` and with batches of one.
        ``"layernorm"``: ``nn.GroupNorm(1, channels)`` (one group over C, H, W).
        ``"groupnorm"``: ``nn.GroupNorm(gcd(channels, 8), channels)``; 8 groups rather than
            the usual 32 because the models here are narrow (16 channels in a small U-Net).
        ``"none"``: ``nn.Identity``.
    """
    if kind not in NORM_CHOICES:
        raise ValueError(f"norm must be one of {list(NORM_CHOICES)}, got {kind!r}")
    check_positive_int("channels", channels)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "layernorm":
        return nn.GroupNorm(1, channels, affine=True)
    if kind == "groupnorm":
        return nn.GroupNorm(math.gcd(channels, 8), channels, affine=True)
    return nn.Identity()
