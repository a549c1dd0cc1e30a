"""Evaluate a segmentation model: fine-grained IoU, Dice, accuracy and calibration."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._checks import check_positive_int
from ..data import SegmentationDataset
from ..engine.data import make_source
from ..metrics import CalibrationError, SegmentationMetrics
from ..runtime import resolve_device

__all__ = ["evaluate_segmentation", "predict_segmentation"]


@torch.no_grad()
def predict_segmentation(model: nn.Module, images: Tensor, *, batch_size: int = 16,
                         device: str | torch.device = "auto") -> Tensor:
    """Class probabilities float32 (N, C, H, W) on the CPU for images (N, C_in, H, W).

    The model runs in eval mode; its mode is restored afterwards.
    """
    check_positive_int("batch_size", batch_size)
    target = resolve_device(device)
    was_training = model.training
    model.eval()
    try:
        model.to(target)
        return torch.cat([torch.softmax(model(images[i:i + batch_size].to(target)), 1).cpu()
                          for i in range(0, images.shape[0], batch_size)])
    finally:
        model.train(was_training)


def evaluate_segmentation(model: nn.Module, data: SegmentationDataset | Dataset | DataLoader,
                          *, q: float = 5.0, batch_size: int = 16,
                          num_classes: int | None = None, ignore_index: int | None = None,
                          device: str | torch.device = "auto") -> dict[str, Any]:
    """mIoU / mDice / mAcc at dataset, image and class level, worst-q% mIoU, and ECE.

    Args:
        model: maps (B, C_in, H, W) images to (B, C, H, W) logits.
        data: a :class:`SegmentationDataset`, or any dataset / loader of (image, mask) pairs
            (then give ``num_classes`` and ``ignore_index``).
        q: percentage of the worst images (classes) in the worst-case scores.
        batch_size: images per forward pass.
        num_classes, ignore_index: default to the dataset's own.
        device: where to run.

    Returns the keys of :meth:`SegmentationMetrics.compute` plus ``ece_dataset`` and
    ``ece_image`` (percent). Under ``torchrun`` each rank scores its part of the images and
    the per-image counts are gathered, so every rank returns the single-process numbers.
    """
    classes = num_classes if num_classes is not None else getattr(data, "num_classes", None)
    if classes is None:
        raise ValueError("num_classes is needed for a dataset that does not say its classes")
    ignored = ignore_index if ignore_index is not None else getattr(data, "ignore_index", None)
    metrics = SegmentationMetrics(classes, ignore_index=ignored, q=q)
    calibration = CalibrationError(ignore_index=ignored)
    target = resolve_device(device)
    was_training = model.training
    model.eval()
    try:
        model.to(target)
        with torch.no_grad():
            for batch in make_source(data).ordered(batch_size, target, split="data"):
                probs = torch.softmax(model(batch.x), 1).float().cpu()
                metrics.update(probs, batch.y.cpu())
                calibration.update(probs, batch.y.cpu())
    finally:
        model.train(was_training)
    metrics.gather()
    calibration.gather()
    return {**metrics.compute(), **calibration.compute()}
