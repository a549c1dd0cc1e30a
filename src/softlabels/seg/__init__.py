"""Segmentation with metric losses and soft labels: training objectives and evaluation."""

from .evaluation import evaluate_segmentation, predict_segmentation
from .objectives import LABEL_MODES, LOSSES, UNLABELLED, SegLoss, SegObjective

__all__ = [
    "LABEL_MODES",
    "LOSSES",
    "UNLABELLED",
    "SegLoss",
    "SegObjective",
    "evaluate_segmentation",
    "predict_segmentation",
]
