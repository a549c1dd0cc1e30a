"""Models from outside the registry: ``module.path:factory`` and ``timm:NAME``.

A user names their own model on the command line as ``--model mypackage.models:make_net``:
any importable callable that takes ``num_classes``, ``in_channels`` and ``image_size``
(``(H, W)``) as keywords, plus the ``--model-args`` options, and returns an ``nn.Module``
mapping ``(N, C, H, W)`` images to logits (``(N, K)``, or ``(N, K, H, W)`` for segmentation).
``timm:NAME`` builds ``timm.create_model(NAME, num_classes=..., in_chans=...)`` when timm is
installed (``pip install 'softlabels[timm]'``; timm also installs torchvision).

Images reach every model in ``[0, 1]`` (so attacks and augmentations stay in pixel space), so
the model is wrapped in :class:`WithNormalize` with the dataset's mean and std, unless it
declares that it normalises its inputs itself with a true ``normalizes_input`` attribute
(``model.normalizes_input = True``, or a class attribute). The built-in models carry their own
:class:`~softlabels.models.Normalize`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from .layers import Normalize

__all__ = ["MODEL_SPEC_HELP", "TIMM_PREFIX", "WithNormalize", "build_external",
           "check_external", "is_external"]

TIMM_PREFIX = "timm:"

#: The ``--model`` help text of every study.
MODEL_SPEC_HELP = ("a registered name (softlabels list models), module.path:factory (your own "
                   "callable returning an nn.Module) or timm:NAME (timm installed)")


class WithNormalize(nn.Module):
    """A model behind a per-channel :class:`~softlabels.models.Normalize` input layer.

    Args:
        normalize: the input layer (the dataset's mean and std).
        model: the wrapped network, which sees normalised inputs.

    Shapes:
        input ``(N, C, H, W)`` in ``[0, 1]``; output whatever ``model`` returns.
    """

    def __init__(self, normalize: Normalize, model: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.model = model

    def forward(self, x: Tensor) -> Any:
        """``model(normalize(x))`` for ``x`` of shape ``(N, C, H, W)``."""
        return self.model(self.normalize(x))


def is_external(name: object) -> bool:
    """Whether ``name`` names a model outside the registry (``module:factory`` or ``timm:``)."""
    return isinstance(name, str) and ":" in name


def build_external(spec: str, num_classes: int, in_channels: int,
                   image_size: tuple[int, int], *, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, **kwargs: Any) -> nn.Module:
    """Build the model ``spec`` names (see the module docstring), with its normalisation.

    Raises:
        ImportError: ``timm:NAME`` while timm is not installed (the message names the extra).
        ValueError: the module does not import, lacks the attribute, or timm does not know
            the name; the message names ``spec``.
        TypeError: the factory is not callable, refuses the arguments, or returns something
            other than an ``nn.Module``.
    """
    if spec.startswith(TIMM_PREFIX):
        model = _timm(spec, num_classes, in_channels, **kwargs)
    else:
        factory = _factory(spec)
        try:
            model = factory(num_classes=num_classes, in_channels=in_channels,
                            image_size=image_size, **kwargs)
        except TypeError as err:
            raise TypeError(f"model {spec!r} could not be called with num_classes, "
                            f"in_channels, image_size and the model args "
                            f"{sorted(kwargs)}: {err}") from err
        if not isinstance(model, nn.Module):
            raise TypeError(f"model {spec!r} returned a value of type "
                            f"{type(model).__name__}, not a torch.nn.Module")
    if getattr(model, "normalizes_input", False) is True:
        return model
    return WithNormalize(Normalize(in_channels, mean, std), model)


def check_external(spec: str) -> None:
    """Refuse, without building it, a ``spec`` that :func:`build_external` would refuse for
    its form alone: a module that does not import, a missing or non-callable factory, timm not
    installed or no name after ``timm:``. What a factory makes of its arguments is known only
    when it is called.

    Raises:
        ImportError, ValueError, TypeError: as :func:`build_external`; the message names
            ``spec``.
    """
    if spec.startswith(TIMM_PREFIX):
        _timm_module(spec)
    else:
        _factory(spec)


def _factory(spec: str) -> Callable[..., Any]:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"model {spec!r} must look like module.path:factory (or timm:NAME)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name.split(".")[0] or os.getcwd() in sys.path:
            raise ValueError(f"model {spec!r}: module {module_name!r} does not import: "
                             f"{err}") from err
        # The console script does not put the current folder on sys.path, where a user's
        # own models.py usually sits; look there last (so no installed package is shadowed).
        sys.path.append(os.getcwd())
        return _factory(spec)
    except Exception as err:  # any error while importing the user's module names it
        raise ValueError(f"model {spec!r}: module {module_name!r} does not import: "
                         f"{type(err).__name__}: {err}") from err
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"model {spec!r}: module {module_name!r} has no attribute "
                             f"{attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"model {spec!r}: {attribute!r} is of type {type(target).__name__}, "
                        "not a callable that returns an nn.Module")
    return target


def _timm_module(spec: str) -> Any:
    """The timm module, for a ``spec`` that names a model after ``timm:``."""
    try:
        import timm  # optional dependency
    except ImportError as err:
        raise ImportError(f"model {spec!r} needs timm, which is not installed: pip install "
                          "'softlabels[timm]' (timm also installs torchvision)") from err
    if not spec[len(TIMM_PREFIX):]:
        raise ValueError(f"model {spec!r} must name a timm model, e.g. timm:resnet18")
    return timm


def _timm(spec: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    name = spec[len(TIMM_PREFIX):]
    timm = _timm_module(spec)
    kwargs.setdefault("pretrained", False)  # no download unless asked for
    try:
        model = timm.create_model(name, num_classes=num_classes, in_chans=in_channels,
                                  **kwargs)
    except RuntimeError as err:  # timm's "Unknown model"
        raise ValueError(f"model {spec!r}: {err}") from err
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {spec!r}: timm returned a value of type "
                        f"{type(model).__name__}")
    return model
