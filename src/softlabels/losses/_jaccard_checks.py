"""Options and input checks of the metric losses, with a verdict read from the device once.

Shapes, dtypes and options are checked on the host at once (they cost nothing). Checks of
values (label ranges, soft-label sums, NaN) would each need a host synchronisation on a GPU;
instead each becomes a 0-dim bool tensor on the device, computed alongside the loss, and
:class:`DeferredChecks` reads them all in one transfer at the end of the call. Only when one
of them fails are the details gathered (more synchronisations, on the error path only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_choice, check_finite, check_range, check_tensor

__all__ = ["DeferredChecks", "MetricOptions", "level_weights"]

VARIANTS = ("jml1", "jml2", "sjl")
MODES = ("multiclass", "binary", "multilabel")
LEVELS = ("dataset", "image", "class")
ACTIVE_CLASSES = ("present", "all")
CLASS_MEANS = ("active", "all")
BACKENDS = ("auto", "torch", "triton")
SUM_TOLERANCE = 1e-3


def level_weights(levels: Mapping[str, float] | None) -> tuple[float, float, float]:
    """(dataset, image, class) weights from a mapping; default dataset only."""
    if levels is None:
        return (1.0, 0.0, 0.0)
    if not isinstance(levels, Mapping):
        raise TypeError(f"levels must be a mapping of level -> weight, got "
                        f"{type(levels).__name__}")
    unknown = sorted(set(levels) - set(LEVELS))
    if unknown:
        raise ValueError(f"levels has unknown keys {unknown}; valid: {list(LEVELS)}")
    weights = tuple(float(levels.get(level, 0.0)) for level in LEVELS)
    if any(not math.isfinite(w) or w < 0 for w in weights) or not any(weights):
        raise ValueError(f"levels weights must be >= 0 with at least one > 0, got "
                         f"{dict(zip(LEVELS, weights, strict=True))}")
    return weights  # type: ignore[return-value]


def _smooth_pair(smooth: float | tuple[float, float]) -> tuple[float, float]:
    pair = tuple(smooth) if isinstance(smooth, tuple | list) else (smooth, smooth)
    if len(pair) != 2:
        raise ValueError(f"smooth must be a number or a (numerator, denominator) pair, got "
                         f"{smooth!r}")
    for value in pair:
        check_range("smooth", value, 0.0, float("inf"))
    return float(pair[0]), float(pair[1])


@dataclass(frozen=True)
class MetricOptions:
    """Validated options of a metric loss (see ``jaccard_metric_loss`` for their meaning)."""

    variant: str = "jml1"
    mode: str = "multiclass"
    from_logits: bool = True
    p: int = 1
    levels: tuple[float, float, float] = (1.0, 0.0, 0.0)
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    smooth: tuple[float, float] = (1e-3, 1e-3)
    log_loss: bool = False
    active_classes: str | None = None
    class_mean: str = "active"
    threshold: float = 0.01
    ignore_index: int | None = None
    validate: bool = True
    sync_dist: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, VARIANTS)
        check_choice("mode", self.mode, MODES)
        if self.p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {self.p!r}")
        check_range("alpha", self.alpha, 0.0, float("inf"))
        check_range("beta", self.beta, 0.0, float("inf"))
        check_range("gamma", self.gamma, 1.0, float("inf"))
        check_range("threshold", self.threshold, 0.0, 1.0)
        object.__setattr__(self, "smooth", _smooth_pair(self.smooth))
        if self.active_classes is not None:
            check_choice("active_classes", self.active_classes, ACTIVE_CLASSES)
        check_choice("class_mean", self.class_mean, CLASS_MEANS)
        check_choice("backend", self.backend, BACKENDS)
        for name in ("from_logits", "log_loss", "validate", "sync_dist"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.ignore_index is not None and (isinstance(self.ignore_index, bool)
                                              or not isinstance(self.ignore_index, int)):
            raise TypeError(f"ignore_index must be an int or None, got {self.ignore_index!r}")


class DeferredChecks:
    """Device-side verdicts of value checks, read from the device in one transfer.

    ``add(bad, report)`` registers a 0-dim bool tensor (True = the check failed) and a
    function that raises the detailed error; :meth:`verdict` reads all flags at once.
    Disabled (``validate=False``), it records nothing and never synchronises.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._flags: list[Tensor] = []
        self._reports: list[Callable[[], None]] = []

    def add(self, bad: Tensor, report: Callable[[], None]) -> None:
        if self.enabled:
            self._flags.append(bad.reshape(()))
            self._reports.append(report)

    def payload(self) -> Tensor | None:
        """The flags as a float vector (summed over processes under ``sync_dist``)."""
        return torch.stack(self._flags).float() if self._flags else None

    def verdict(self, summed: Tensor | None = None) -> None:
        """Raise the first failed check; ``summed`` is :meth:`payload` summed over processes.

        Under ``sync_dist`` every process raises when any fails, so that no process waits in
        the backward's all-reduce for one that has stopped.
        """
        if not self._flags:
            return
        local = torch.stack(self._flags).float()
        every = local if summed is None else torch.cat([local, summed])
        if not bool(every.any()):  # the one host synchronisation of a valid call
            return
        read = every.tolist()
        count = len(self._flags)
        for bad, report in zip(read[:count], self._reports, strict=True):
            if bad:
                report()
        if any(read[count:]):
            raise ValueError("a metric-loss input failed validation on another process "
                             "(sync_dist=True); see that process's error")


def is_hard(target: Tensor, mode: str) -> bool:
    """True for int64 hard labels, False for floating-point soft labels."""
    check_tensor("target", target)
    if target.dtype == torch.int64:
        return True
    if target.is_floating_point():
        return False
    raise TypeError(f"target must be int64 hard labels or floating-point soft labels for mode "
                    f"{mode!r}, got {target.dtype}")


def keep_mask(logits: Tensor, target: Tensor, keep: Tensor | None, ignore_index: int | None,
              hard: bool, mode: str) -> Tensor | None:
    """bool (B, *spatial) on the logits' device: pixels that count, or None when all count."""
    spatial_shape = logits.shape[:1] + logits.shape[2:]
    mask = None
    if keep is not None:
        check_tensor("keep", keep)
        if keep.dtype != torch.bool:
            raise TypeError(f"keep must be a bool tensor, got {keep.dtype}")
        if keep.shape != spatial_shape:
            raise ValueError(f"keep must have shape {tuple(spatial_shape)}, got "
                             f"{tuple(keep.shape)}")
        # non_blocking: a mask held on the CPU reaches the GPU without a host synchronisation.
        mask = keep.to(logits.device, non_blocking=True)
    if ignore_index is not None:
        if not hard or mode == "multilabel":
            raise ValueError("ignore_index applies to multiclass or binary hard labels; pass a "
                             "bool keep mask to leave out pixels of other labels")
        check_hard_shape(target, logits)
        kept = target != ignore_index
        mask = kept if mask is None else mask & kept
    return mask


def check_hard_shape(target: Tensor, logits: Tensor) -> None:
    expected = logits.shape[:1] + logits.shape[2:]
    if target.shape != expected:
        raise ValueError(f"hard target must have shape {tuple(expected)} for logits "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")


def hard_label_report(target: Tensor, num_classes: int,
                      ignore_index: int | None) -> Callable[[], None]:
    """A function raising the detailed error for labels outside [0, C) (error path only)."""
    def report() -> None:
        valid = (target >= 0) & (target < num_classes)
        if ignore_index is not None:
            valid |= target == ignore_index
        if not bool(valid.all()):
            bad = target[~valid]
            allowed = f"[0, {num_classes})" + (f" or ignore_index={ignore_index}"
                                               if ignore_index is not None else "")
            raise ValueError(f"target must hold class indices in {allowed}, got {bad.numel()} "
                             f"values outside (e.g. {bad[:5].tolist()}); labels are never "
                             f"clamped")
    return report


def hard_label_flag(labels: Tensor, num_classes: int) -> Tensor:
    """0-dim bool: some label (ignored ones already replaced by 0) lies outside [0, C)."""
    if labels.numel() == 0:
        return torch.zeros((), dtype=torch.bool, device=labels.device)
    low, high = torch.aminmax(labels)
    return (low < 0) | (high >= num_classes)


def binary_labels(target: Tensor, logits: Tensor, ignore_index: int | None,
                  checks: DeferredChecks) -> Tensor:
    """Hard binary labels (B, *spatial) as a float (B, 1, *spatial) target in {0, 1}."""
    check_hard_shape(target, logits)
    labels = target.where(target != ignore_index, 0) if ignore_index is not None else target
    checks.add(hard_label_flag(labels, 2), hard_label_report(target, 2, ignore_index))
    return labels.unsqueeze(1)


def soft_label_flags(target: Tensor, mask: Tensor | None, mode: str,
                     checks: DeferredChecks) -> None:
    """Register the checks of a float (B, C, *spatial) target over its kept pixels."""
    if not checks.enabled or target.numel() == 0:
        return
    y = target.detach()
    sums = y.sum(1)
    if mask is None:
        low, high = torch.aminmax(y)  # one contiguous pass: much faster than per pixel
    else:
        low, high = torch.aminmax(y, dim=1)
        low, high, sums = low.where(mask, 0), high.where(mask, 0), sums.where(mask, 1)
    report = soft_label_report(target, mask, mode)
    checks.add(~torch.isfinite(sums).all(), report)
    checks.add(((low < 0) | (high > 1)).any(), report)
    if mode == "multiclass":
        checks.add(((sums - 1).abs() > SUM_TOLERANCE).any(), report)


def soft_label_report(target: Tensor, mask: Tensor | None, mode: str) -> Callable[[], None]:
    """A function raising the detailed error for a bad soft target (error path only)."""
    def report() -> None:
        y = target.detach()
        sums, lows, highs = y.sum(1), y.amin(1), y.amax(1)
        if mask is not None:
            sums, lows, highs = sums[mask], lows[mask], highs[mask]
        if sums.numel() == 0:
            return
        check_finite("target", sums)
        low, high = float(lows.min()), float(highs.max())
        if low < 0 or high > 1:
            raise ValueError(f"target values must lie in [0, 1], got range "
                             f"[{low:.4g}, {high:.4g}]")
        if mode == "multiclass" and float((sums - 1).abs().max()) > SUM_TOLERANCE:
            raise ValueError(f"soft target must sum to 1 over classes (dim 1, tolerance "
                             f"{SUM_TOLERANCE}), got sums in [{float(sums.min()):.4f}, "
                             f"{float(sums.max()):.4f}]")
    return report


def probability_flag(logits: Tensor, checks: DeferredChecks) -> None:
    """Register the check that probabilities (``from_logits=False``) lie in [0, 1]."""
    if not checks.enabled or logits.numel() == 0:
        return
    low, high = torch.aminmax(logits.detach())

    def report() -> None:
        raise ValueError("logits must hold probabilities in [0, 1] when from_logits=False")

    checks.add((low < 0) | (high > 1), report)


def class_weight_tensor(class_weights: Tensor | Sequence[float] | None, num_classes: int,
                        like: Tensor, checks: DeferredChecks) -> Tensor | None:
    """(C,) weights on ``like``'s device and dtype, or None."""
    if class_weights is None:
        return None
    on_host = not isinstance(class_weights, Tensor)
    if on_host:
        values = [float(v) for v in class_weights]
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"class_weights must be finite and non-negative, got {values}")
        class_weights = torch.tensor(values)
    if class_weights.shape != (num_classes,):
        raise ValueError(f"class_weights must have shape ({num_classes},), got "
                         f"{tuple(class_weights.shape)}")
    # non_blocking: a host tensor reaches the GPU without a host synchronisation; pass a
    # device tensor (the modules hold a buffer) to avoid the copy altogether.
    weights = class_weights.to(like.device, like.dtype, non_blocking=True)
    if not on_host and checks.enabled:
        def report() -> None:
            raise ValueError("class_weights must be finite and non-negative")

        checks.add(~torch.isfinite(weights).all() | (weights < 0).any(), report)
    return weights
