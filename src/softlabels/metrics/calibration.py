"""Expected calibration error (ECE) of classifiers and semantic segmenters.

For every kept sample (pixel), confidence = max_c p_c and correct = (argmax_c p_c == label);
ties in the argmax go to the lowest class index, as in ``torch.argmax``. The confidences are
put into M equal-width bins over (0, 1], bin b holding (b/M, (b+1)/M]; the edges are rounded to
the probabilities' dtype, so a confidence written as 0.6 falls in (0.5, 0.6] whatever its
binary representation. Then

    ECE = 100 * sum_b (n_b / N) * |acc_b - conf_b|
        = (100 / N) * sum_b |sum_{i in b} (correct_i - conf_i)|

**in percent** (0 to 100), as refs.md and the paper report it, unlike the segmentation scores of
:mod:`softlabels.metrics.segmentation_scores`, which are fractions. Levels (refs.md section 2):

- ``"dataset"`` (ECE^D): all kept pixels of all images pooled into one set of bins.
- ``"image"`` (ECE^I): the ECE of each image on its own, averaged over images. An image whose
  pixels are all ignored has no ECE and adds nothing to the mean. Classification inputs (N, C)
  have no images, so only the dataset level applies to them.

The official code (JDTLosses) uses left-closed bins [b/M, (b+1)/M); the two conventions differ
only for confidences exactly on an edge. An ECE over no sample is NaN.

The stateful :class:`CalibrationError` is separate from
:class:`~softlabels.metrics.SegmentationMetrics` rather than switched on when ``update`` happens
to receive probabilities: which metrics come back should not depend on whether a float tensor
looks normalised. Feed both classes the same batches and merge their ``compute()`` dicts.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import (
    check_choice,
    check_float,
    check_hard_labels,
    check_ignore_index,
    check_positive_int,
    check_probabilities,
    check_tensor,
)
from ..distributed import all_gather_objects
from .segmentation import _kept_pixels

__all__ = ["CalibrationError", "expected_calibration_error"]

_SUM_TOLERANCE = 1e-3
# The per-image state is 3 x bins float64 numbers: a bound keeps a typo from exhausting memory.
_MAX_BINS = 10_000
_ECE_LEVELS = ("dataset", "image")

BinStats = tuple[Tensor, Tensor, Tensor]


def expected_calibration_error(
    probs: Tensor,
    target: Tensor,
    bins: int = 10,
    ignore_index: int | None = None,
    level: str = "dataset",
    *,
    keep: Tensor | None = None,
) -> float:
    """Expected calibration error in percent.

    Args:
        probs: float (B, C, H, W) per-pixel probabilities, or (N, C) for classification;
            finite, non-negative, summing to 1 over dim 1 within 1e-3 (apply softmax first).
        target: int64 (B, H, W), or (N,), with classes in [0, C) or equal to ``ignore_index``.
        bins: number M of equal-width confidence bins over (0, 1], at most 10000.
        ignore_index: label value (outside [0, C)) whose pixels are left out, or None.
        level: ``"dataset"`` pools every kept pixel; ``"image"`` averages the per-image ECE
            (only for (B, C, H, W) inputs).
        keep: optional bool mask of target's shape; False pixels are left out.

    Returns:
        ECE in [0, 100], or NaN when no pixel is kept.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.35, 0.65], [0.6, 0.4]])
        >>> target = torch.tensor([0, 1, 1, 1])
        >>> round(expected_calibration_error(probs, target), 4)  # 25 * (.1 + .8 + .35 + .6)
        46.25
    """
    level = check_choice("level", level, _ECE_LEVELS)
    count, confidence, correct = _calibration_update(probs, target, bins, ignore_index, keep)
    if level == "image":
        if probs.ndim != 4:
            raise ValueError(f"level='image' needs (B, C, H, W) probs, got shape "
                             f"{tuple(probs.shape)}; use level='dataset' for classification")
        return float(_ece(count, confidence, correct).nanmean())
    return float(_ece(count.sum(0), confidence.sum(0), correct.sum(0)))


class CalibrationError:
    """Accumulates ECE^D and ECE^I (percent) over batches.

    The state is the pooled per-bin sums (3 x M numbers) plus one ECE per image, so it does not
    grow with the image size. The first update fixes the input kind: (B, C, H, W) segmentation
    or (N, C) classification; mixing them is an error.

    Args:
        bins: number of equal-width confidence bins over (0, 1] (default 10, at most 10000).
        ignore_index: label value (outside [0, C)) whose pixels are left out, or None.

    Example:
        >>> metric = CalibrationError(ignore_index=255)
        >>> probs = torch.tensor([[[[0.9, 0.3]], [[0.1, 0.7]]], [[[0.75, 0.2]], [[0.25, 0.8]]]])
        >>> metric.update(probs, torch.tensor([[[0, 0]], [[0, 255]]]))
        >>> {k: round(v, 4) for k, v in metric.compute().items()}  # images: 40 and 25
        {'ece_dataset': 35.0, 'ece_image': 32.5}
    """

    def __init__(self, bins: int = 10, ignore_index: int | None = None) -> None:
        self.bins = check_positive_int("bins", bins, _MAX_BINS)
        # num_classes is unknown until the first update; 0 defers the range check to then.
        self.ignore_index = check_ignore_index(ignore_index, 0)
        self.reset()

    def reset(self) -> None:
        """Forget every sample seen so far."""
        self._pooled = torch.zeros(3, self.bins, dtype=torch.float64)
        self._per_image: list[Tensor] = []
        self._spatial: bool | None = None

    def update(self, probs: Tensor, target: Tensor, *, keep: Tensor | None = None) -> None:
        """Add one batch; arguments as in :func:`expected_calibration_error`."""
        check_float("probs", probs)
        spatial = probs.ndim == 4
        if self._spatial is not None and spatial != self._spatial:
            seen = "(B, C, H, W)" if self._spatial else "(N, C)"
            raise ValueError(f"probs must keep the kind of the earlier updates, {seen}, got "
                             f"shape {tuple(probs.shape)}; call reset() to switch")
        count, confidence, correct = _calibration_update(probs, target, self.bins,
                                                         self.ignore_index, keep)
        self._spatial = spatial
        self._pooled += torch.stack([count.sum(0), confidence.sum(0), correct.sum(0)])
        if spatial:
            self._per_image.append(_ece(count, confidence, correct))

    def gather(self) -> None:
        """Under ``torchrun``: hold every rank's samples (in rank order); a no-op in a single
        process."""
        parts = all_gather_objects((self._pooled, self._per_image, self._spatial))
        self._pooled = sum((p[0] for p in parts), torch.zeros_like(self._pooled))
        self._per_image = [t for p in parts for t in p[1]]
        self._spatial = next((p[2] for p in parts if p[2] is not None), None)

    def compute(self) -> dict[str, float]:
        """``{"ece_dataset": ECE^D, "ece_image": ECE^I}`` in percent.

        ``ece_image`` is NaN for classification inputs and when no image had a kept pixel.
        """
        per_image = torch.cat(self._per_image) if self._per_image else torch.zeros(0)
        return {"ece_dataset": float(_ece(*self._pooled)),
                "ece_image": float(per_image.nanmean()) if per_image.numel() else math.nan}


def _calibration_update(probs: Tensor, target: Tensor, bins: int, ignore_index: int | None,
                        keep: Tensor | None) -> BinStats:
    """float64 (rows, M) per-bin sample count, confidence sum and correct count, on the CPU.

    rows is B for (B, C, H, W) inputs (one row per image) and 1 for (N, C) inputs.
    """
    check_positive_int("bins", bins, _MAX_BINS)
    probs, target = _check_inputs(probs, target, ignore_index)
    mask = _kept_pixels(target, ignore_index, keep)
    spatial = probs.ndim == 4
    rows = target.shape[0] if spatial else 1

    confidence, predicted = probs.detach().max(dim=1)
    row = (torch.arange(rows, device=target.device).view(-1, 1, 1).expand_as(target)
           if spatial else torch.zeros_like(target))
    correct = predicted == target
    if mask is not None:
        confidence, correct, row = confidence[mask], correct[mask], row[mask]
    confidence, correct, row = confidence.reshape(-1), correct.reshape(-1), row.reshape(-1)

    # Inner edges 1/M .. (M-1)/M rounded to the input dtype, so that bucketize (x <= edge goes
    # left) puts a confidence equal to an edge in the bin it closes. Compared in float64:
    # the rounded edges and the confidences are exact there.
    edges = (torch.arange(1, bins, dtype=torch.float64) / bins).to(probs.dtype)
    edges = edges.to(device=confidence.device, dtype=torch.float64)
    confidence = confidence.double()
    key = row * bins + torch.bucketize(confidence, edges, right=False)
    size = rows * bins
    count = torch.bincount(key, minlength=size)
    total_confidence = torch.bincount(key, weights=confidence, minlength=size)
    total_correct = torch.bincount(key[correct], minlength=size)
    count, total_confidence, total_correct = (
        t.to("cpu", torch.float64).view(rows, bins)
        for t in (count, total_confidence, total_correct)
    )
    return count, total_confidence, total_correct


def _check_inputs(probs: Tensor, target: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    check_float("probs", probs)
    if probs.ndim not in (2, 4):
        raise ValueError(f"probs must have shape (N, C) or (B, C, H, W), got "
                         f"{tuple(probs.shape)}")
    num_classes = int(probs.shape[1])
    if num_classes < 1:
        raise ValueError(f"probs must have at least one class in dim 1, got shape "
                         f"{tuple(probs.shape)}")
    check_ignore_index(ignore_index, num_classes)
    check_tensor("target", target)
    if target.dtype != torch.int64:
        raise TypeError(f"target must be an int64 tensor of class indices, got {target.dtype}")
    expected = (probs.shape[0], *probs.shape[2:])
    if target.shape != expected:
        raise ValueError(f"target must have shape {tuple(expected)} for probs "
                         f"{tuple(probs.shape)}, got {tuple(target.shape)}")
    check_hard_labels("target", target, num_classes, ignore_index)
    check_probabilities("probs", probs, atol=_SUM_TOLERANCE,
                        hint="; pass softmax(logits, dim=1), not logits")
    # A model's outputs on a GPU may meet labels kept on the CPU: the labels follow.
    return probs, target.to(probs.device)


def _ece(count: Tensor, confidence: Tensor, correct: Tensor) -> Tensor:
    """ECE in percent per row of (..., M) bin sums; NaN for a row without samples."""
    samples = count.sum(dim=-1)
    gap = (correct - confidence).abs().sum(dim=-1)
    return torch.where(samples > 0, 100 * gap / samples.clamp_min(1), math.nan)
