"""Metrics: classification accuracy and its class-wise (fairness) view; segmentation IoU, Dice
and accuracy at dataset, image and class level; expected calibration error."""

from .calibration import CalibrationError, expected_calibration_error
from .classification import (
    accuracy,
    classwise_accuracy,
    classwise_from_confusion,
    confusion_matrix,
    nsd,
    worst_class_accuracy,
)
from .segmentation import (
    SegmentationMetrics,
    macc,
    mdice,
    miou,
    per_image_scores,
    segmentation_confusion,
    segmentation_metrics,
    worst_case,
)

__all__ = ["accuracy", "classwise_accuracy",
    "classwise_from_confusion", "confusion_matrix", "nsd", "worst_class_accuracy"]
__all__ += [
    "CalibrationError",
    "SegmentationMetrics",
    "expected_calibration_error",
    "macc",
    "mdice",
    "miou",
    "per_image_scores",
    "segmentation_confusion",
    "segmentation_metrics",
    "worst_case",
]
