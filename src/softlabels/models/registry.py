"""Build models by name, so the CLI and configs can name a model with a string.

The registry is a plain dict literal filled when this module is read: no decorator
registration as an import side effect, so what exists is visible in one place.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ._validate import check_common
from .convnet import ConvNet
from .external import build_external, check_external, is_external
from .mlp import MLP
from .mobilenetv2 import MobileNetV2
from .resnet import resnet18
from .unet import UNet
from .wrn import WideResNet

_MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "convnet": ConvNet,
    "resnet18": resnet18,
    "mobilenetv2": MobileNetV2,
    "wrn": WideResNet,
    "unet": UNet,
}

# Image side of check_model's trial build: large enough for any depth of pooling or
# down-sampling a real input allows (the real size is checked when the model is built).
_CHECK_SIZE = 1024

# Taken by create_model itself, so never a model-specific keyword.
_COMMON = ("num_classes", "in_channels", "image_size", "mean", "std")


def list_models() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(_MODELS)


def model_kwargs(name: str) -> dict[str, object]:
    """Return the model-specific keyword arguments of ``name`` and their defaults.

    Example:
        >>> model_kwargs("convnet")
        {'width': 128, 'depth': 3, 'norm': 'instancenorm'}
    """
    builder = _builder(name)
    return {
        param.name: param.default
        for param in inspect.signature(builder).parameters.values()
        if param.kind is inspect.Parameter.KEYWORD_ONLY and param.name not in _COMMON
    }


def _builder(name: object) -> Callable[..., nn.Module]:
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(f"name must be one of {list_models()} (or module.path:factory, or "
                         f"timm:NAME), got {name!r}")
    return _MODELS[name]


def check_model(name: str, **kwargs: object) -> None:
    """Refuse a model :func:`create_model` would refuse for its name or options alone (a
    study checks its models before it trains any): a registered model is built on the meta
    device (no memory, no random numbers) with 10 classes, 3 channels and 1024-pixel sides,
    so its own checks of the options run; only those involving the real data wait.

    Raises:
        ValueError: unknown ``name``; an external one that does not resolve
            (:func:`~softlabels.models.external.check_external`).
        TypeError: a keyword the registered model ``name`` does not take, or a value of the
            wrong type (the model's ValueError for one out of range).
        ImportError: ``timm:NAME`` without timm installed.
    """
    if is_external(name):
        check_external(name)
        return
    _check_keywords(name, kwargs)
    with torch.device("meta"):  # the model's own checks of its options, allocating nothing
        _builder(name)(10, 3, _CHECK_SIZE, **kwargs)


def _check_keywords(name: str, kwargs: dict[str, object]) -> None:
    allowed = model_kwargs(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"model {name!r} got unexpected keyword argument(s) {unknown}; "
            f"it accepts {sorted(allowed)}"
        )


def create_model(name: str, num_classes: int, in_channels: int = 3,
                 image_size: int | tuple[int, int] = 32, *,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 **kwargs: object) -> nn.Module:
    """Build the model registered as ``name``.

    Args:
        name: one of :func:`list_models`, or ``"module.path:factory"`` / ``"timm:NAME"``
            for a model from outside the registry (see :mod:`softlabels.models.external`):
            called with ``num_classes``, ``in_channels``, ``image_size=(H, W)`` and
            ``**kwargs``, and wrapped with ``Normalize(mean, std)`` unless it has a true
            ``normalizes_input`` attribute.
        num_classes: number of classes (output logits; output channels for ``"unet"``).
        in_channels: input channels C.
        image_size: ``H`` or ``(H, W)`` of the inputs the model will see (fixes the
            classifier width of ``"mlp"`` and ``"convnet"``).
        mean, std: per-channel input statistics for the model's :class:`Normalize` input
            layer (length ``in_channels``, ``std > 0``); ``None`` means identity.
        **kwargs: model-specific options, see :func:`model_kwargs`.

    Returns:
        An ``nn.Module`` taking ``(N, C, H, W)`` images in ``[0, 1]`` and returning logits
        ``(N, num_classes)`` (``(N, num_classes, H, W)`` for ``"unet"``).

    Raises:
        ValueError: unknown ``name`` (the message lists the valid ones) or an invalid value.
        TypeError: a keyword the model does not take, or an argument of the wrong type.

    Example:
        >>> import torch
        >>> model = create_model("convnet", 10, in_channels=1, image_size=8, width=16)
        >>> model(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """
    if is_external(name):
        size = check_common(num_classes, in_channels, image_size)
        return build_external(name, num_classes, in_channels, size, mean=mean, std=std,
                              **kwargs)
    _check_keywords(name, kwargs)
    check_common(num_classes, in_channels, image_size)
    return _builder(name)(num_classes, in_channels, image_size, mean=mean, std=std, **kwargs)
