"""Summaries of a distillation sweep: scaling-law fit, Pareto frontier, dataset size, LRS.

Accuracies are fractions in [0, 1] throughout (not percentages).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from torch import Tensor

__all__ = [
    "ScalingFit",
    "dataset_bytes",
    "fit_scaling_law",
    "label_robust_score",
    "pareto_frontier",
]

ArrayLike = Sequence[float] | np.ndarray | Tensor

# Bounds of the fit acc = a - b * ipc^(-c): an asymptote a above 1 is allowed (up to 1.5) so a
# fit to noisy accuracies near 1 is not pinned to the bound; c > 0 keeps the curve rising, and
# c <= 5 excludes curves that jump to the asymptote between the first two IPC values.
_A_BOUNDS = (0.0, 1.5)
_C_BOUNDS = (1e-6, 5.0)
# Starting exponents of the multi-start fit: the power law is not convex in c, and one start can
# stall in a flat region; the fit with the smallest residual wins.
_C_STARTS = (0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class ScalingFit:
    """A fitted law ``acc = a - b * ipc^(-c)``.

    Attributes:
        a: asymptotic accuracy (IPC -> infinity), fraction.
        b: gap between the asymptote and the accuracy at IPC = 1.
        c: decay exponent.
        rmse: root-mean-square residual of the fit, in accuracy units.
        num_points: number of (ipc, acc) points fitted.
        at_bound: the parameters that ended on a bound of the fit (``"a"`` at 1.5 means the
            points show no saturation, so the asymptote and with it ``b`` and ``c`` are not
            determined by the data).
    """

    a: float
    b: float
    c: float
    rmse: float
    num_points: int
    at_bound: tuple[str, ...] = ()

    def predict(self, ipc: float | ArrayLike) -> float | np.ndarray:
        """Predicted accuracy at ``ipc`` (> 0): a float for a number, else a float64 array."""
        if isinstance(ipc, numbers.Real) and not isinstance(ipc, bool):
            if not ipc > 0:
                raise ValueError(f"ipc must be > 0, got {ipc}")
            return float(_law(np.float64(ipc), self.a, self.b, self.c))
        values = _as_array("ipc", ipc)
        if values.size and not bool((values > 0).all()):
            raise ValueError(f"ipc must be > 0, got a minimum of {values.min():.4g}")
        return _law(values, self.a, self.b, self.c)

    def as_dict(self) -> dict[str, float | int | list[str]]:
        """The fields as a JSON-ready dict (``at_bound`` as a list)."""
        return {**asdict(self), "at_bound": list(self.at_bound)}


def fit_scaling_law(ipc: ArrayLike, acc: ArrayLike) -> ScalingFit:
    """Least-squares fit of ``acc = a - b * ipc^(-c)`` to student accuracies over IPC.

    Repeated IPC values (several seeds) are fitted as separate points. Bounds: a in [0, 1.5],
    b >= 0, c in (0, 5].

    Args:
        ipc: (M,) images per class, > 0.
        acc: (M,) test accuracies as fractions in [0, 1].

    Returns:
        The fitted :class:`ScalingFit`.

    Raises:
        ValueError: shapes differ, non-finite values, ipc <= 0, accuracies outside [0, 1]
            (percentages), or fewer than 3 distinct IPC values (three parameters).
        RuntimeError: the optimiser did not converge from any starting point.

    Example:
        >>> fit = fit_scaling_law([1, 2, 4, 8], [0.8 - 0.5 * x ** -0.7 for x in [1, 2, 4, 8]])
        >>> round(fit.a, 3), round(fit.b, 3), round(fit.c, 3)
        (0.8, 0.5, 0.7)
    """
    x = _as_array("ipc", ipc)
    y = _as_array("acc", acc)
    if x.shape != y.shape:
        raise ValueError(f"ipc and acc must have the same length, got {x.size} and {y.size}")
    if x.size and not bool((x > 0).all()):
        raise ValueError(f"ipc must be > 0, got a minimum of {x.min():.4g}")
    if y.size and not bool(((y >= 0) & (y <= 1)).all()):
        raise ValueError(f"acc must be fractions in [0, 1], got values in [{y.min():.4g}, "
                         f"{y.max():.4g}] (percentages? divide by 100)")
    distinct = np.unique(x).size
    if distinct < 3:
        raise ValueError(f"fit_scaling_law needs at least 3 distinct ipc values to fit a, b "
                         f"and c, got {distinct}")
    lower = [_A_BOUNDS[0], 0.0, _C_BOUNDS[0]]
    upper = [_A_BOUNDS[1], np.inf, _C_BOUNDS[1]]
    a0 = float(np.clip(y.max() + 0.05, *_A_BOUNDS))
    b0 = max(a0 - float(y.min()), 1e-3)
    best: tuple[float, np.ndarray] | None = None
    errors: list[str] = []
    for c0 in _C_STARTS:
        try:
            with warnings.catch_warnings():
                # With exactly three points the covariance is undefined; we do not report it.
                warnings.simplefilter("ignore", OptimizeWarning)
                params, _ = curve_fit(_law, x, y, p0=[a0, b0, c0], bounds=(lower, upper),
                                      jac=_jacobian, method="trf", max_nfev=10_000,
                                      xtol=1e-15, ftol=1e-15, gtol=1e-15)
        except (RuntimeError, ValueError) as err:
            errors.append(str(err))
            continue
        rmse = float(np.sqrt(np.mean((_law(x, *params) - y) ** 2)))
        if best is None or rmse < best[0]:
            best = (rmse, params)
    if best is None:
        raise RuntimeError(f"scaling-law fit did not converge: {errors[-1]}")
    rmse, params = best
    a, b, c = (float(p) for p in params)
    edges = {"a": _A_BOUNDS, "c": _C_BOUNDS}
    at_bound = tuple(name for name, value in (("a", a), ("c", c))
                     if min(abs(value - edge) for edge in edges[name]) < 1e-6)
    return ScalingFit(a=a, b=b, c=c, rmse=rmse, num_points=int(x.size), at_bound=at_bound)


def pareto_frontier(sizes: ArrayLike, accuracies: ArrayLike) -> list[int]:
    """Indices of the non-dominated (size, accuracy) points, smaller size and higher accuracy
    being better, sorted by increasing size.

    A point is dominated when another point is no larger and no less accurate, and strictly
    better in one of the two. Ties are resolved deterministically:

    * points of equal size: only the most accurate can be on the frontier;
    * points of equal accuracy: only the smallest can be on the frontier;
    * exact duplicates (same size and accuracy): only the lowest index is returned.

    So along the returned indices both size and accuracy strictly increase.

    Args:
        sizes: (M,) dataset sizes (e.g. bytes from :func:`dataset_bytes`), finite.
        accuracies: (M,) accuracies, finite.

    Returns:
        Indices into the inputs; empty for empty inputs.

    Example:
        >>> pareto_frontier([1, 2, 2, 3], [0.5, 0.4, 0.7, 0.7])
        [0, 2]
    """
    size = _as_array("sizes", sizes)
    acc = _as_array("accuracies", accuracies)
    if size.shape != acc.shape:
        raise ValueError(f"sizes and accuracies must have the same length, got {size.size} and "
                         f"{acc.size}")
    # Sweep by size ascending, accuracy descending, index ascending: the first point of each
    # size is its most accurate (lowest index among equals), and a point joins the frontier
    # only when it beats every smaller-or-equal point's accuracy strictly.
    order = sorted(range(size.size), key=lambda i: (size[i], -acc[i], i))
    frontier: list[int] = []
    best = -math.inf
    for index in order:
        if acc[index] > best:
            frontier.append(index)
            best = float(acc[index])
    return frontier


def dataset_bytes(num_images: int, image_shape: Sequence[int],
                  label_bytes_per_image: float) -> int:
    """Storage of a distilled set: uint8 images plus the stored labels.

    Images count one byte per value (the 8-bit pixels a dataset ships as); labels count what
    :meth:`softlabels.store.LabelStore.report` gives as ``bytes_per_image`` (4 C for fp32,
    2 C for fp16, about 3 k for top-k), which excludes the 8-byte dataset index. A hard label
    can be counted as 1 byte (C <= 256).

    Args:
        num_images: images in the set, >= 0.
        image_shape: (channels, height, width), or any shape of positive ints.
        label_bytes_per_image: >= 0.

    Returns:
        Total bytes, rounded to the nearest byte.

    Example:
        >>> dataset_bytes(10, (3, 32, 32), 40.0)
        31120
    """
    if isinstance(num_images, bool) or not isinstance(num_images, numbers.Integral):
        raise TypeError(f"num_images must be an int, got {type(num_images).__name__}")
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    if isinstance(image_shape, str | bytes) or not isinstance(image_shape, Sequence) \
            or not image_shape:
        raise TypeError(f"image_shape must be a non-empty sequence of ints such as (3, 32, 32), "
                        f"got {image_shape!r}")
    if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d <= 0
           for d in image_shape):
        raise ValueError(f"image_shape must hold positive ints, got {tuple(image_shape)}")
    if isinstance(label_bytes_per_image, bool) \
            or not isinstance(label_bytes_per_image, numbers.Real):
        raise TypeError(f"label_bytes_per_image must be a number, got "
                        f"{type(label_bytes_per_image).__name__}")
    if not (math.isfinite(float(label_bytes_per_image)) and label_bytes_per_image >= 0):
        raise ValueError(f"label_bytes_per_image must be finite and >= 0, got "
                         f"{label_bytes_per_image}")
    image_bytes = int(num_images) * math.prod(int(d) for d in image_shape)
    return image_bytes + round(int(num_images) * float(label_bytes_per_image))


def label_robust_score(acc_real_hard: float, acc_distilled_hard: float,
                       acc_distilled_any: float, acc_random_any: float) -> dict[str, float]:
    """DD-Ranking's label-robust score (LRS) of a distilled set.

    * HLR (hard-label recovery) = Acc(real, hard) - Acc(distilled, hard): how far the distilled
      images with hard labels fall short of the full real data; lower is better.
    * IOR (improvement over random) = Acc(distilled, any) - Acc(random, any): what the
      distilled set gains over random real images under the same label/training recipe.
    * a = (IOR - HLR) / 2, in [-1, 1]; LRS = (e^a - e^-1) / (e - e^-1), in [0, 1].

    Args:
        acc_real_hard: accuracy of training on the full real data with hard labels.
        acc_distilled_hard: accuracy of training on the distilled images with hard labels.
        acc_distilled_any: accuracy of the distilled set under the method's own labels.
        acc_random_any: accuracy of random real images under that same recipe.

    Returns:
        ``{"hlr", "ior", "a", "lrs"}`` as fractions.

    Example:
        >>> round(label_robust_score(0.8, 0.3, 0.6, 0.5)["lrs"], 4)
        0.1918
    """
    values = {
        "acc_real_hard": acc_real_hard,
        "acc_distilled_hard": acc_distilled_hard,
        "acc_distilled_any": acc_distilled_any,
        "acc_random_any": acc_random_any,
    }
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ValueError(f"{name} must be a fraction in [0, 1], got {value} "
                             "(percentages? divide by 100)")
    hlr = float(acc_real_hard) - float(acc_distilled_hard)
    ior = float(acc_distilled_any) - float(acc_random_any)
    a = 0.5 * ior - 0.5 * hlr
    lrs = (math.exp(a) - math.exp(-1.0)) / (math.e - math.exp(-1.0))
    return {"hlr": hlr, "ior": ior, "a": a, "lrs": lrs}


def _law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(x, -c)


def _jacobian(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """(M, 3) derivatives of the law by a, b and c; analytic for a tight noiseless fit."""
    power = np.power(x, -c)
    return np.stack([np.ones_like(x), -power, b * power * np.log(x)], axis=1)


def _as_array(name: str, values: object) -> np.ndarray:
    """A finite 1-D float64 array from a sequence, array or tensor."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        raise TypeError(f"{name} must be a sequence, array or tensor of numbers, got "
                        f"{type(values).__name__}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must hold numbers: {err}") from err
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if not bool(np.isfinite(array).all()):
        raise ValueError(f"{name} must be finite, got {int((~np.isfinite(array)).sum())} NaN or "
                         "infinite entries")
    return array
