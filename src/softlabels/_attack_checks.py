"""Argument checks of :mod:`softlabels.attacks`, kept apart from the attack arithmetic.

Everything is checked before the first gradient step: the images (finite, in [0, 1]), the
labels against the model's logits on the first forward pass, the radius and step size, and the
model's output itself (finite float (B, K) logits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ._checks import check_finite, check_images, check_positive_int, check_tensor


def check_attack_input(x: Tensor, y: Tensor, eps: float, alpha: float, steps: int) -> None:
    check_images("x", x)
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != x.shape[:1]:
        raise ValueError(f"y must be int64 (B,) with B = {x.shape[0]}, got "
                         f"{getattr(y, 'dtype', type(y).__name__)} "
                         f"{tuple(getattr(y, 'shape', ()))}")
    check_radius(eps)
    check_step(alpha, eps)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")


def check_radius(eps: object) -> None:
    if isinstance(eps, bool) or not (isinstance(eps, int | float) and math.isfinite(eps)
                                     and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")


def check_step(alpha: object, eps: float) -> None:
    # With eps = 0 every step is projected back onto x, so a zero step (eps / 4) is harmless.
    smallest_ok = 0 if eps == 0 else None
    if isinstance(alpha, bool) or not (
        isinstance(alpha, int | float) and math.isfinite(alpha)
        and (alpha > 0 or alpha == smallest_ok)
    ):
        raise ValueError(f"alpha (the step size) must be a finite number > 0, got {alpha!r}")


def model_dtype(model: nn.Module, like: Tensor) -> torch.dtype:
    """The floating dtype of the model's first floating parameter or buffer, else ``like``'s."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return like.dtype


def check_logits_of(logits: object, batch: int, target_probs: Tensor | None) -> None:
    """The model's output on a batch of ``batch`` images must be finite float (B, K) logits."""
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.ndim != 2 or (
        logits.shape[0] != batch or logits.shape[1] < 1
    ):
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model must map x (B, C, H, W) to float logits (B, K) with B = "
                         f"{batch}, got {shape}")
    check_finite("model(x) (the logits)", logits)
    if target_probs is not None and target_probs.shape != logits.shape:
        raise ValueError(f"target_probs must have the shape of the model's logits "
                         f"{tuple(logits.shape)}, got {tuple(target_probs.shape)}")


def check_evaluation_input(images: Tensor, labels: Tensor, attacks: object,
                           batch_size: int) -> None:
    """The arguments of ``robust_evaluate`` that need no model: images, labels, attacks."""
    check_images("images", images)
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got shape "
                         f"{tuple(images.shape)}")
    check_tensor("labels", labels)
    if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be int64 with one label per image, got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    check_positive_int("batch_size", batch_size)
    if not isinstance(attacks, Mapping):
        raise TypeError(f"attacks must be a mapping of name -> attack or None, got "
                        f"{type(attacks).__name__}")
    for name, attack in attacks.items():
        if attack is not None and not callable(attack):
            raise TypeError(f"attacks[{name!r}] must be callable or None, got "
                            f"{type(attack).__name__}")
