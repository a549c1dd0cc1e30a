"""Losses that are correct for soft targets."""

from .classification import KDLoss, SoftCrossEntropy, kd_loss, soft_cross_entropy
from .jaccard import ce_jaccard_metric_loss, jaccard_metric_loss
from .metric_modules import (
    CEJaccardMetricLoss,
    DiceMetricLoss,
    JaccardMetricLoss,
    TverskyMetricLoss,
)

__all__ = [
    "CEJaccardMetricLoss",
    "DiceMetricLoss",
    "JaccardMetricLoss",
    "KDLoss",
    "SoftCrossEntropy",
    "TverskyMetricLoss",
    "ce_jaccard_metric_loss",
    "jaccard_metric_loss",
    "kd_loss",
    "soft_cross_entropy",
]
