"""Evaluate a classifier: accuracy, loss and class-wise accuracy.

Scores are computed from counts (a confusion matrix and a summed cross-entropy), so under
``torchrun`` each rank scores its part of the data and the all-reduced counts give exactly the
single-process numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_hard_labels, check_positive_int
from ..distributed import all_reduce_sum
from ..metrics import classwise_from_confusion, nsd, worst_class_accuracy
from ..runtime import resolve_device
from .data import Data, Source, make_source

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


def _source(data: Data | Source, labels: Tensor | None) -> Source:
    return data if isinstance(data, Source) else make_source(data, labels)


@torch.no_grad()
def predict_logits(model: nn.Module, images: Data | Source, *, batch_size: int = 512,
                   device: str | torch.device = "auto") -> Tensor:
    """Run ``model`` in eval mode over ``images`` in batches.

    Args:
        model: maps (B, C, H, W) to (B, K) logits.
        images: float (N, C, H, W) in [0, 1], or a dataset or loader of (image, target) pairs
            (targets unused).
        batch_size: images per forward pass.
        device: where to run; the result is returned on the CPU.

    Returns:
        float32 (N, K) logits on the CPU, in the data's order (every rank computes all of
        them). The model's train/eval mode is restored.
    """
    check_positive_int("batch_size", batch_size)
    if isinstance(images, Tensor):
        images = make_source(images, torch.zeros(images.shape[:1], dtype=torch.int64))
    source = _source(images, None)
    target = resolve_device(device)
    was_training = model.training
    model.eval()
    try:
        model.to(target)
        outputs = [model(b.x).float().cpu() for b in source.ordered(batch_size, target)]
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("images is empty: nothing to evaluate")
    return torch.cat(outputs)


@torch.no_grad()
def evaluate(model: nn.Module, images: Data | Source, labels: Tensor | None = None, *,
             batch_size: int = 512, device: str | torch.device = "auto") -> EvalResult:
    """Accuracy, cross-entropy and class-wise accuracy of ``model`` on a labelled set.

    Args:
        model: classifier returning (B, K) logits.
        images: float (N, C, H, W) in [0, 1] with ``labels``, or a dataset or loader of
            (image, label) pairs.
        labels: int64 (N,) in [0, K) for tensor ``images``.
        batch_size: images per forward pass.
        device: where to run.
    """
    check_positive_int("batch_size", batch_size)
    if isinstance(images, Tensor) and isinstance(labels, Tensor) and \
            labels.shape != images.shape[:1]:
        raise ValueError(f"labels must have shape ({images.shape[0]},), got "
                         f"{tuple(labels.shape)}")
    source = _source(images, labels)
    target = resolve_device(device)
    was_training = model.training
    model.eval()
    matrix: Tensor | None = None
    loss_sum = torch.zeros((), dtype=torch.float64)
    try:
        model.to(target)
        for batch in source.ordered(batch_size, target, split="data"):
            logits = model(batch.x).float()
            y = check_hard_labels("labels", batch.y, logits.shape[1])
            counts = torch.bincount(y * logits.shape[1] + logits.argmax(1),
                                    minlength=logits.shape[1] ** 2).cpu()
            matrix = counts if matrix is None else matrix + counts
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double().cpu()
        if matrix is None and len(source):  # a rank whose part is empty still counts
            classes = int(model(source.sample()[0][:1].to(target)).shape[1])
            matrix = torch.zeros(classes * classes, dtype=torch.int64)
    finally:
        model.train(was_training)
    if matrix is None:
        raise ValueError("images is empty: nothing to evaluate")
    totals = all_reduce_sum(torch.cat([matrix.double(), loss_sum[None]]))
    classes = round((totals.numel() - 1) ** 0.5)
    confusion = totals[:-1].view(classes, classes)
    samples = int(confusion.sum())
    return EvalResult(
        accuracy=float(confusion.diagonal().sum() / samples),
        loss=float(totals[-1] / samples),
        classwise_accuracy=classwise_from_confusion(confusion),
        num_samples=samples,
    )
