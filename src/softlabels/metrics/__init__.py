"""Metrics: classification accuracy and its class-wise (fairness) view."""

from .classification import (
    accuracy,
    classwise_accuracy,
    confusion_matrix,
    nsd,
    worst_class_accuracy,
)

__all__ = ["accuracy", "classwise_accuracy", "confusion_matrix", "nsd", "worst_class_accuracy"]
