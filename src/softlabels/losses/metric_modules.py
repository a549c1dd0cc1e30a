"""``nn.Module`` forms of the metric losses: thin shells that validate and call the function."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice
from .jaccard import ACTIVE_CLASSES, MODES, VARIANTS, _level_weights, jaccard_metric_loss

__all__ = ["DiceMetricLoss", "JaccardMetricLoss", "TverskyMetricLoss"]


class TverskyMetricLoss(nn.Module):
    """Tversky metric loss; see :func:`~softlabels.losses.jaccard_metric_loss` for arguments.

    Call as ``loss(logits, target, keep=None)`` with logits (B, C, *spatial) and target int64
    (B, *spatial) or float (B, C, *spatial). ``class_weights`` is a buffer, so it follows the
    module to the input's device.
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, *, variant: str = "jml1",
                 mode: str = "multiclass", from_logits: bool = True, p: int = 1,
                 levels: Mapping[str, float] | None = None, gamma: float = 1.0,
                 smooth: float = 1e-3, log_loss: bool = False,
                 class_weights: Tensor | Sequence[float] | None = None,
                 active_classes: str | None = None, threshold: float = 0.01,
                 ignore_index: int | None = None) -> None:
        super().__init__()
        check_choice("variant", variant, VARIANTS)
        check_choice("mode", mode, MODES)
        if active_classes is not None:
            check_choice("active_classes", active_classes, ACTIVE_CLASSES)
        self.options: dict[str, Any] = {
            "variant": variant, "mode": mode, "from_logits": from_logits, "p": p,
            "levels": _level_weights(levels), "alpha": alpha, "beta": beta, "gamma": gamma,
            "smooth": smooth, "log_loss": log_loss, "active_classes": active_classes,
            "threshold": threshold, "ignore_index": ignore_index,
        }
        weights = (torch.as_tensor(class_weights, dtype=torch.float32)
                   if class_weights is not None else None)
        if weights is not None and (weights.ndim != 1 or not bool(torch.isfinite(weights).all())
                                    or float(weights.min()) < 0):
            raise ValueError(f"class_weights must be a 1-D sequence of finite non-negative "
                             f"numbers, got {weights.tolist()}")
        self.register_buffer("class_weights", weights)
        # Fail at construction on bad numbers rather than at the first batch: one tiny call
        # with a target of the kind this mode takes.
        channels = 1 if mode == "binary" else 2
        probe_target = (torch.full((1, channels, 1), 0.5) if mode == "multilabel"
                        else torch.zeros(1, 1, dtype=torch.int64))
        jaccard_metric_loss(torch.zeros(1, channels, 1), probe_target,
                            **{**self.options, "levels": {"dataset": 1.0}})

    def forward(self, logits: Tensor, target: Tensor, keep: Tensor | None = None) -> Tensor:
        """Scalar loss for logits (B, C, *spatial) and a hard or soft target."""
        return jaccard_metric_loss(logits, target, class_weights=self.class_weights, keep=keep,
                                   **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class JaccardMetricLoss(TverskyMetricLoss):
    """Jaccard metric loss (alpha = beta = 1): optimises IoU, correct for soft labels."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(alpha=1.0, beta=1.0, **kwargs)


class DiceMetricLoss(TverskyMetricLoss):
    """Dice semimetric loss (alpha = beta = 0.5): optimises Dice, correct for soft labels."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(alpha=0.5, beta=0.5, **kwargs)
