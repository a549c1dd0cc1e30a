"""Losses that are correct for soft targets."""

from .classification import KDLoss, SoftCrossEntropy, kd_loss, soft_cross_entropy
from .jaccard import jaccard_metric_loss
from .metric_modules import DiceMetricLoss, JaccardMetricLoss, TverskyMetricLoss

__all__ = [
    "DiceMetricLoss",
    "JaccardMetricLoss",
    "KDLoss",
    "SoftCrossEntropy",
    "TverskyMetricLoss",
    "jaccard_metric_loss",
    "kd_loss",
    "soft_cross_entropy",
]
