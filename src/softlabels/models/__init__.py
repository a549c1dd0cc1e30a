"""Models that take ``(N, C, H, W)`` images in ``[0, 1]`` and normalise them internally.

Use :func:`create_model` to build one by name (:func:`list_models` gives the names), or the
classes directly; ``create_model("module.path:factory", ...)`` and ``create_model("timm:NAME",
...)`` build a model from outside the registry (:mod:`softlabels.models.external`). Every model
starts with a :class:`Normalize` layer (``model.normalize``) holding the dataset's per-channel
mean and std as buffers.
"""

from .convnet import ConvNet
from .external import MODEL_SPEC_HELP, WithNormalize, build_external, is_external
from .layers import NORM_CHOICES, Normalize, make_norm
from .mlp import MLP
from .mobilenetv2 import MobileNetV2
from .registry import check_model, create_model, list_models, model_kwargs
from .resnet import ResNet, resnet18
from .unet import UNet
from .wrn import WideResNet

__all__ = [
    "MLP",
    "MODEL_SPEC_HELP",
    "NORM_CHOICES",
    "ConvNet",
    "MobileNetV2",
    "Normalize",
    "ResNet",
    "UNet",
    "WideResNet",
    "WithNormalize",
    "build_external",
    "check_model",
    "create_model",
    "is_external",
    "list_models",
    "make_norm",
    "model_kwargs",
    "resnet18",
]
