"""``nn.Module`` forms of the metric losses: thin shells that validate and call the function."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._jaccard_checks import MetricOptions, level_weights
from .jaccard import metric_loss

__all__ = ["CEJaccardMetricLoss", "DiceMetricLoss", "JaccardMetricLoss", "TverskyMetricLoss"]


class TverskyMetricLoss(nn.Module):
    """Tversky metric loss; see :func:`~softlabels.losses.jaccard_metric_loss` for arguments.

    Call as ``loss(logits, target, keep=None)`` with logits (B, C, *spatial) and target int64
    (B, *spatial) or float (B, C, *spatial). ``class_weights`` is a buffer, so it follows the
    module to the input's device. Every option is checked here, at construction.
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, *,
                 levels: Mapping[str, float] | None = None,
                 class_weights: Tensor | Sequence[float] | None = None,
                 **options: Any) -> None:
        super().__init__()
        self.options = MetricOptions(alpha=alpha, beta=beta, levels=level_weights(levels),
                                     **options)
        weights = None
        if class_weights is not None:
            weights = torch.as_tensor(class_weights, dtype=torch.float32)
            if weights.ndim != 1 or not all(math.isfinite(w) and w >= 0
                                            for w in weights.tolist()):
                raise ValueError(f"class_weights must be a 1-D sequence of finite "
                                 f"non-negative numbers, got {weights.tolist()}")
        self.register_buffer("class_weights", weights)

    def forward(self, logits: Tensor, target: Tensor, keep: Tensor | None = None) -> Tensor:
        """Scalar loss for logits (B, C, *spatial) and a hard or soft target."""
        return metric_loss(logits, target, self.options, self.class_weights, keep)[0]

    def extra_repr(self) -> str:
        return ", ".join(f"{field.name}={getattr(self.options, field.name)!r}"
                         for field in dataclasses.fields(self.options))


class JaccardMetricLoss(TverskyMetricLoss):
    """Jaccard metric loss (alpha = beta = 1): optimises IoU, correct for soft labels."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(alpha=1.0, beta=1.0, **kwargs)


class DiceMetricLoss(TverskyMetricLoss):
    """Dice semimetric loss (alpha = beta = 0.5): optimises Dice, correct for soft labels."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(alpha=0.5, beta=0.5, **kwargs)


class CEJaccardMetricLoss(TverskyMetricLoss):
    """``ce_weight * CE + metric_weight * metric loss`` in one pass (multiclass logits).

    Defaults are the paper's recipe (0.25 CE + 0.75 JML, alpha = beta = 1); the other
    arguments are those of :class:`TverskyMetricLoss`. :meth:`terms` returns both terms,
    weighted, for logging.
    """

    def __init__(self, ce_weight: float = 0.25, metric_weight: float = 0.75,
                 alpha: float = 1.0, beta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(alpha, beta, **kwargs)
        if self.options.mode != "multiclass" or not self.options.from_logits:
            raise ValueError("CEJaccardMetricLoss takes multiclass logits (mode='multiclass', "
                             "from_logits=True)")
        for name, value in (("ce_weight", ce_weight), ("metric_weight", metric_weight)):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.ce_weight, self.metric_weight = float(ce_weight), float(metric_weight)

    def terms(self, logits: Tensor, target: Tensor, keep: Tensor | None = None
              ) -> dict[str, Tensor]:
        """``{"ce": ce_weight * ce, "metric": metric_weight * metric}``."""
        metric, ce = metric_loss(logits, target, self.options, self.class_weights, keep,
                                 with_ce=True)
        return {"ce": self.ce_weight * ce, "metric": self.metric_weight * metric}

    def forward(self, logits: Tensor, target: Tensor, keep: Tensor | None = None) -> Tensor:
        """The weighted sum of the two terms, a scalar."""
        terms = self.terms(logits, target, keep)
        return terms["ce"] + terms["metric"]

    def extra_repr(self) -> str:
        return f"ce_weight={self.ce_weight}, metric_weight={self.metric_weight}, " + \
            super().extra_repr()
