"""Evaluate a segmentation model: fine-grained IoU, Dice, accuracy and calibration."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..data import SegmentationDataset
from ..metrics import CalibrationError, SegmentationMetrics
from ..runtime import resolve_device

__all__ = ["evaluate_segmentation", "predict_segmentation"]


@torch.no_grad()
def predict_segmentation(model: nn.Module, images: Tensor, *, batch_size: int = 16,
                         device: str | torch.device = "auto") -> Tensor:
    """Class probabilities float32 (N, C, H, W) on the CPU for images (N, C_in, H, W).

    The model runs in eval mode; its mode is restored afterwards.
    """
    target = resolve_device(device)
    was_training = model.training
    model.eval()
    try:
        model.to(target)
        return torch.cat([torch.softmax(model(images[i:i + batch_size].to(target)), 1).cpu()
                          for i in range(0, images.shape[0], batch_size)])
    finally:
        model.train(was_training)


def evaluate_segmentation(model: nn.Module, data: SegmentationDataset, *, q: float = 5.0,
                          batch_size: int = 16, device: str | torch.device = "auto"
                          ) -> dict[str, Any]:
    """mIoU / mDice / mAcc at dataset, image and class level, worst-q% mIoU, and ECE.

    Returns the keys of :meth:`SegmentationMetrics.compute` plus ``ece_dataset`` and
    ``ece_image`` (percent).
    """
    metrics = SegmentationMetrics(data.num_classes, ignore_index=data.ignore_index, q=q)
    calibration = CalibrationError(ignore_index=data.ignore_index)
    for start in range(0, len(data), batch_size):
        probs = predict_segmentation(model, data.images[start:start + batch_size],
                                     batch_size=batch_size, device=device)
        masks = data.masks[start:start + batch_size]
        metrics.update(probs, masks)
        calibration.update(probs, masks)
    return {**metrics.compute(), **calibration.compute()}
