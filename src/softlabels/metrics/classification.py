"""Classification metrics, including the class-wise view used to measure robust fairness."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_finite, check_hard_labels, check_logits, check_ndim, check_tensor

__all__ = [
    "accuracy",
    "classwise_accuracy",
    "classwise_from_confusion",
    "confusion_matrix",
    "nsd",
    "worst_class_accuracy",
]


def accuracy(preds: Tensor, targets: Tensor, num_classes: int | None = None) -> float:
    """Fraction of correct predictions.

    Args:
        preds: int64 (N,) predicted classes, or finite float (N, C) scores (argmax is taken).
        targets: int64 (N,) true classes.
        num_classes: C. Classes of both ``preds`` and ``targets`` must lie in [0, C); when
            omitted, C is the width of float scores, and for int64 predictions only negative
            classes can be told apart from real ones (and are refused).

    Returns:
        Accuracy in [0, 1].
    """
    predicted = _as_classes(preds, targets, num_classes)
    if num_classes is None and preds.is_floating_point():
        num_classes = int(preds.shape[1])
    if predicted.numel() == 0:
        raise ValueError("accuracy of an empty batch is undefined (preds has no samples)")
    if num_classes is None:
        for name, classes in (("targets", targets), ("preds", predicted)):
            if bool((classes < 0).any()):
                raise ValueError(f"{name} must hold class indices >= 0, got "
                                 f"{classes[classes < 0][:5].tolist()}")
    else:
        check_hard_labels("targets", targets, num_classes)
        check_hard_labels("preds", predicted, num_classes)
    return float((predicted == targets).float().mean())


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """Counts of (true class, predicted class) pairs.

    Args:
        preds: int64 (N,) classes or float (N, C) scores.
        targets: int64 (N,) true classes in [0, num_classes).
        num_classes: C.

    Returns:
        int64 (C, C); entry [i, j] counts samples of class i predicted as j.
    """
    predicted = _as_classes(preds, targets, num_classes)
    check_hard_labels("targets", targets, num_classes)
    check_hard_labels("preds", predicted, num_classes)
    flat = targets.cpu() * num_classes + predicted.cpu()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def classwise_accuracy(preds: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """Accuracy within each true class (recall per class).

    Args:
        preds: int64 (N,) classes or float (N, C) scores.
        targets: int64 (N,) true classes.
        num_classes: C.

    Returns:
        float64 (C,); NaN for classes with no sample in ``targets``.
    """
    return classwise_from_confusion(confusion_matrix(preds, targets, num_classes))


def classwise_from_confusion(matrix: Tensor) -> Tensor:
    """Class-wise accuracy float64 (C,) from a (C, C) confusion matrix (rows: true classes);
    NaN for a class with no sample. Sums of matrices (batches, ranks) give the exact result."""
    matrix = check_tensor("matrix", matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be a square (C, C) confusion matrix, got shape "
                         f"{tuple(matrix.shape)}")
    matrix = matrix.double()
    check_finite("matrix", matrix)
    if bool((matrix < 0).any()):
        raise ValueError("matrix must hold counts >= 0, got a negative entry")
    support = matrix.sum(dim=1)
    return torch.where(support > 0, matrix.diagonal() / support.clamp_min(1), math.nan)


def worst_class_accuracy(classwise_acc: Tensor) -> float:
    """Lowest class-wise accuracy, ignoring NaN (classes absent from the evaluation set).

    Args:
        classwise_acc: (C,) as returned by :func:`classwise_accuracy`.
    """
    present = _present(classwise_acc)
    return float(present.min())


def nsd(classwise_acc: Tensor, correction: int = 1) -> float:
    """Normalized standard deviation ``std(acc_c) / mean(acc_c)``; lower is fairer.

    Uses the sample standard deviation (``correction=1``, divisor C - 1) by default, as the
    Fair-ARD/ABSLD evaluation code does; ``correction=0`` gives the population std (for 10
    classes the two differ by a factor sqrt(10/9) = 1.054). Classes with NaN accuracy are left
    out.

    Args:
        classwise_acc: (C,) class-wise accuracies.
        correction: 1 for the sample std, 0 for the population std.

    Returns:
        NSD >= 0, or NaN when every class has accuracy 0 (the ratio is undefined).
    """
    if isinstance(correction, bool) or correction not in (0, 1):
        raise ValueError(f"correction must be 0 or 1, got {correction}")
    present = _present(classwise_acc).double()
    if present.numel() <= correction:
        raise ValueError(f"nsd needs more than {correction} classes with samples, got "
                         f"{present.numel()}")
    mean = present.mean()
    if float(mean) == 0.0:
        return math.nan
    return float(present.std(correction=correction) / mean)


def _as_classes(preds: Tensor, targets: Tensor, num_classes: int | None) -> Tensor:
    """int64 (N,) predicted classes of ``preds``, on ``targets``' device."""
    check_tensor("preds", preds)
    check_tensor("targets", targets)
    if targets.dtype != torch.int64 or targets.ndim != 1:
        raise TypeError(f"targets must be a 1-D int64 tensor, got dtype {targets.dtype} and "
                        f"shape {tuple(targets.shape)}")
    if preds.is_floating_point():
        # The argmax of NaN scores is meaningless: report them instead of counting garbage.
        check_logits("preds", preds, (2,))
        if num_classes is not None and preds.shape[1] != num_classes:
            raise ValueError(f"preds scores must have num_classes={num_classes} columns, got "
                             f"shape {tuple(preds.shape)}")
        preds = preds.argmax(dim=1)
    elif preds.dtype != torch.int64:
        raise TypeError(f"preds must be int64 classes or float scores, got {preds.dtype}")
    if preds.shape != targets.shape:
        raise ValueError(f"preds holds {tuple(preds.shape)} predictions but targets has shape "
                         f"{tuple(targets.shape)}")
    return preds.to(targets.device)  # predictions may come from a GPU, labels from the CPU


def _present(classwise_acc: Tensor) -> Tensor:
    check_tensor("classwise_acc", classwise_acc)
    check_ndim("classwise_acc", classwise_acc, (1,))
    if not classwise_acc.is_floating_point():
        raise TypeError(f"classwise_acc must be a floating-point tensor (NaN marks an absent "
                        f"class), got {classwise_acc.dtype}")
    present = classwise_acc[~torch.isnan(classwise_acc)]
    if present.numel() == 0:
        raise ValueError("classwise_acc has no class with samples (all NaN or empty)")
    check_finite("classwise_acc (its non-NaN entries)", present)
    if float(present.min()) < 0 or float(present.max()) > 1:
        raise ValueError(f"classwise_acc must hold accuracies in [0, 1] (or NaN), got values in "
                         f"[{float(present.min()):.4g}, {float(present.max()):.4g}]")
    return present
