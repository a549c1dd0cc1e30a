"""Evaluate a classifier: accuracy, loss and class-wise accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_float, check_hard_labels, check_positive_int
from ..metrics import classwise_accuracy, nsd, worst_class_accuracy
from ..runtime import resolve_device

__all__ = ["EvalResult", "evaluate", "predict_logits"]


@dataclass(frozen=True)
class EvalResult:
    """Scores of a classifier on a labelled set.

    Attributes:
        accuracy: overall accuracy in [0, 1].
        loss: mean cross-entropy against the true labels.
        classwise_accuracy: float64 (C,), NaN for classes absent from the set.
        num_samples: N.
    """

    accuracy: float
    loss: float
    classwise_accuracy: Tensor
    num_samples: int

    @property
    def worst_class_accuracy(self) -> float:
        """Lowest class-wise accuracy."""
        return worst_class_accuracy(self.classwise_accuracy)

    @property
    def nsd(self) -> float:
        """Normalized standard deviation of the class-wise accuracies (sample std)."""
        return nsd(self.classwise_accuracy)


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, *, batch_size: int = 512,
                   device: str | torch.device = "auto") -> Tensor:
    """Run ``model`` in eval mode over ``images`` in batches.

    Args:
        model: maps (B, C, H, W) to (B, K) logits.
        images: float (N, C, H, W) in [0, 1].
        batch_size: images per forward pass.
        device: where to run; the result is returned on the CPU.

    Returns:
        float32 (N, K) logits on the CPU. The model's train/eval mode is restored.
    """
    check_float("images", images)
    check_positive_int("batch_size", batch_size)
    target = resolve_device(device)
    was_training = model.training
    model.eval()
    try:
        model.to(target)
        outputs = [model(images[start:start + batch_size].to(target)).float().cpu()
                   for start in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("images is empty: nothing to evaluate")
    return torch.cat(outputs)


def evaluate(model: nn.Module, images: Tensor, labels: Tensor, *, batch_size: int = 512,
             device: str | torch.device = "auto") -> EvalResult:
    """Accuracy, cross-entropy and class-wise accuracy of ``model`` on a labelled set.

    Args:
        model: classifier returning (B, K) logits.
        images: float (N, C, H, W) in [0, 1].
        labels: int64 (N,) in [0, K).
        batch_size: images per forward pass.
        device: where to run.
    """
    logits = predict_logits(model, images, batch_size=batch_size, device=device)
    num_classes = logits.shape[1]
    check_hard_labels("labels", labels, num_classes)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got "
                         f"{tuple(labels.shape)}")
    labels = labels.cpu()
    classwise = classwise_accuracy(logits, labels, num_classes)
    return EvalResult(
        accuracy=float((logits.argmax(dim=1) == labels).double().mean()),
        loss=float(F.cross_entropy(logits, labels)),
        classwise_accuracy=classwise,
        num_samples=int(labels.shape[0]),
    )
