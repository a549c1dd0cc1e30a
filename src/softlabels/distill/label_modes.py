"""The label modes of the soft-label distillation study, built from hard labels or expert logits.

Each builder returns float (N, C) probabilities for the N selected images (rows sum to 1, except
top-k labels kept without renormalisation). The modes and the question each answers:

* ``hard``: one-hot true labels, the classic baseline.
* ``expert``: ``softmax(logits / T)`` of an early-stopped expert (or of the mean logits of
  several experts), the paper's soft-label baseline.
* ``smooth``: label smoothing whose mean entropy equals the expert labels' mean entropy: as
  much uncertainty as the expert but no class structure (does entropy alone explain the gain?).
* ``topk``: expert labels keeping only the k largest probabilities (data-knowledge scaling).
* ``swap``: expert labels with the k-th largest probability swapped with the smallest
  (which part of the ranking matters?).
* ``shuffle``: expert labels whose non-top probabilities are randomly permuted (same argmax and
  entropy, structure of the wrong classes destroyed).

:func:`make_labels` dispatches on the mode name so a sweep or the CLI can name modes by string.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .. import labels as L
from .._checks import (
    check_choice,
    check_ndim,
    check_positive,
    check_positive_int,
    check_seed,
    check_tensor,
)

__all__ = [
    "LABEL_MODES",
    "entropy_matched_smoothing",
    "expert_labels",
    "hard_labels",
    "make_labels",
    "shuffle_tail_labels",
    "smoothing_for_entropy",
    "swap_labels",
    "topk_labels",
]

#: Label mode name -> what it is. The keys are the values ``make_labels(mode=...)`` accepts.
LABEL_MODES: dict[str, str] = {
    "hard": "one-hot true labels",
    "expert": "softmax(logits / T) of an expert, or of the mean logits of several experts",
    "smooth": "label smoothing with the same mean entropy as the expert labels",
    "topk": "expert labels keeping the k largest probabilities (k = 0: one-hot expert argmax)",
    "swap": "expert labels with the k-th largest probability swapped with the smallest",
    "shuffle": "expert labels with all probabilities but the top one randomly permuted",
}

# Bisection halves the bracket each step; 64 steps shrink [0, 1) to 2^-64, far below the 1e-6
# the study needs and below float64 resolution near 1, so the loop always ends converged.
_BISECTION_STEPS = 64


def hard_labels(labels: Tensor, num_classes: int) -> Tensor:
    """One-hot encode true labels.

    Args:
        labels: int64 (N,) class indices in [0, num_classes).
        num_classes: C.

    Returns:
        float32 (N, C) with a single 1 per row.
    """
    check_tensor("labels", labels)
    check_ndim("labels", labels, (1,))
    return L.one_hot(labels, num_classes)


def expert_labels(logits: Tensor | Sequence[Tensor], temperature: float = 1.0) -> Tensor:
    """Soft labels of an expert: ``softmax(logits / T)``; for a list, of the mean logits.

    Averaging logits (not probabilities) follows the official code's ensemble.

    Args:
        logits: float (N, C), or a non-empty list of float (N, C) tensors, one per expert.
        temperature: T > 0; larger T gives smoother labels.

    Returns:
        (N, C) probabilities in the dtype of the logits.
    """
    if isinstance(logits, Tensor):
        check_ndim("logits", logits, (2,))
        return L.soften(logits, temperature)
    if not isinstance(logits, Sequence) or isinstance(logits, str | bytes):
        raise TypeError(f"logits must be a tensor or a list of tensors, got "
                        f"{type(logits).__name__}")
    if len(logits) == 0:
        raise ValueError("logits must hold at least one expert's logits, got an empty list")
    for position, item in enumerate(logits):
        check_tensor(f"logits[{position}]", item)
        check_ndim(f"logits[{position}]", item, (2,))
    return L.ensemble(logits, temperature)


def smoothing_for_entropy(num_classes: int, target_entropy: float) -> float:
    """The label-smoothing mass ``eps`` whose smoothed one-hot row has entropy ``target_entropy``.

    A smoothed row ``(1 - eps) * one_hot + eps / C`` moves along the segment from a vertex of
    the simplex to its centre as eps goes from 0 to 1, so its entropy rises monotonically from 0
    to log C and bisection finds the unique eps.

    Args:
        num_classes: C >= 2.
        target_entropy: entropy in nats, in [0, log C).

    Returns:
        eps in [0, 1).
    """
    check_positive_int("num_classes", num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 for smoothing to change a label, got "
                         f"{num_classes}")
    if isinstance(target_entropy, bool) or not isinstance(target_entropy, int | float):
        raise TypeError(f"target_entropy must be a number, got {type(target_entropy).__name__}")
    log_c = math.log(num_classes)
    if not 0.0 <= target_entropy < log_c:
        raise ValueError(f"target_entropy must be in [0, log C) = [0, {log_c:.6f}) nats for "
                         f"C = {num_classes}, got {target_entropy}")
    if target_entropy == 0.0:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if _smoothed_entropy(num_classes, middle) < target_entropy:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def entropy_matched_smoothing(labels: Tensor, num_classes: int, target_entropy: float) -> Tensor:
    """Label smoothing whose mean entropy over the set equals ``target_entropy`` nats.

    Every smoothed row has the same entropy (the rows are permutations of one another), so the
    set's mean entropy is that of one row, computed in closed form in float64 rather than on the
    (N, C) tensor at every bisection step. Pass the mean entropy of the expert labels
    (``labels.entropy(probs).mean()``) to get labels as uncertain as the expert's but without
    its class structure.

    Args:
        labels: int64 (N,) true class indices.
        num_classes: C >= 2.
        target_entropy: mean entropy in nats, in [0, log C).

    Returns:
        float32 (N, C) smoothed labels.
    """
    eps = smoothing_for_entropy(num_classes, target_entropy)
    check_tensor("labels", labels)
    check_ndim("labels", labels, (1,))
    return L.smooth(labels, num_classes, eps)


def topk_labels(probs: Tensor, k: int, renormalize: bool = True) -> Tensor:
    """Keep the k largest probabilities of each row; k = 0 gives the one-hot argmax.

    k = 0 is the paper's "hard label" end of the data-knowledge scaling axis: the label keeps no
    knowledge beyond the expert's top class (which differs from the true class where the expert
    is wrong). Ties are broken towards the lowest class index, as in :func:`labels.topk`.

    Args:
        probs: (N, C) probabilities.
        k: classes kept, 0 <= k <= C.
        renormalize: rescale the kept values to sum to 1. The official code does not
            (``renormalize=False``), so its rows sum to the kept mass. Ignored for k = 0.

    Returns:
        (N, C) in the dtype of ``probs``.
    """
    check_tensor("probs", probs)
    check_ndim("probs", probs, (2,))
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not isinstance(renormalize, bool):
        raise TypeError(f"renormalize must be a bool, got {type(renormalize).__name__}")
    if k == 0:
        L.validate(probs, name="probs", allow_partial=True)
        top = probs.argmax(dim=1)  # first maximal index on ties
        return L.one_hot(top, probs.shape[1], dtype=probs.dtype)
    if k < 0:
        raise ValueError(f"k must be >= 0 (0 means hard argmax labels), got {k}")
    return L.topk(probs, k, renormalize=renormalize)


def swap_labels(probs: Tensor, k: int) -> Tensor:
    """Swap each row's k-th largest probability with its smallest (the label-swap ablation).

    Args:
        probs: (N, C) probabilities.
        k: rank to swap, 1 <= k <= C (k = C changes nothing).

    Returns:
        (N, C); each row is a permutation of the input row.
    """
    check_tensor("probs", probs)
    check_ndim("probs", probs, (2,))
    return L.swap_ranks(probs, k)


def shuffle_tail_labels(probs: Tensor, seed: int) -> Tensor:
    """Randomly permute each row's probabilities among all classes but its top class.

    Args:
        probs: (N, C) probabilities.
        seed: integer seed of a local generator; the global RNG is untouched.

    Returns:
        (N, C); each row is a permutation of the input row with the argmax in place.
    """
    check_tensor("probs", probs)
    check_ndim("probs", probs, (2,))
    check_seed("seed", seed)
    return L.shuffle_tail(probs, torch.Generator().manual_seed(seed))


def make_labels(mode: str, *, hard: Tensor | None = None,
                logits: Tensor | Sequence[Tensor] | None = None,
                num_classes: int | None = None, temperature: float = 1.0,
                k: int | None = None, seed: int | None = None, renormalize: bool = True,
                target_entropy: float | None = None) -> Tensor:
    """Build the labels of one label mode (see :data:`LABEL_MODES`).

    Arguments a mode does not use are ignored, so a sweep can pass its whole configuration.
    What each mode needs:

    ========== ==================================================================
    mode       required
    ========== ==================================================================
    hard       ``hard``, ``num_classes``
    expert     ``logits`` (``temperature``)
    smooth     ``hard``, and ``logits`` or ``target_entropy``
    topk       ``logits``, ``k`` (``temperature``, ``renormalize``)
    swap       ``logits``, ``k`` (``temperature``)
    shuffle    ``logits``, ``seed`` (``temperature``)
    ========== ==================================================================

    Args:
        mode: a key of :data:`LABEL_MODES`.
        hard: int64 (N,) true labels of the selected images.
        logits: float (N, C) expert logits of the selected images, or a list for an ensemble.
        num_classes: C; inferred from ``logits`` when omitted, checked against it when given.
        temperature: T > 0 of the expert softmax.
        k: classes kept (``topk``, 0 = hard argmax) or rank swapped (``swap``).
        seed: seed of the ``shuffle`` permutation.
        renormalize: whether ``topk`` labels are rescaled to sum to 1.
        target_entropy: ``smooth`` only: the mean entropy in nats to match instead of the
            expert labels' mean entropy.

    Returns:
        float (N, C) labels.

    Example:
        >>> make_labels("hard", hard=torch.tensor([1, 0]), num_classes=3).tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    """
    check_choice("mode", mode, tuple(LABEL_MODES))
    check_positive("temperature", temperature)
    builder = _BUILDERS[mode]
    return builder(_Arguments(mode, hard, logits, num_classes, temperature, k, seed,
                              renormalize, target_entropy))


class _Arguments:
    """The arguments of one :func:`make_labels` call, with checked accessors that name the mode."""

    def __init__(self, mode: str, hard: Tensor | None,
                 logits: Tensor | Sequence[Tensor] | None, num_classes: int | None,
                 temperature: float, k: int | None, seed: int | None, renormalize: bool,
                 target_entropy: float | None) -> None:
        self.mode, self.hard, self.logits = mode, hard, logits
        self.num_classes, self.temperature, self.k = num_classes, temperature, k
        self.seed, self.renormalize, self.target_entropy = seed, renormalize, target_entropy

    def need(self, name: str, meaning: str) -> object:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"label mode {self.mode!r} needs {name} ({meaning})")
        return value

    def expert(self) -> Tensor:
        self.need("logits", "the expert logits of the selected images")
        probs = expert_labels(self.logits, self.temperature)  # type: ignore[arg-type]
        if self.num_classes is not None and self.num_classes != probs.shape[1]:
            raise ValueError(f"num_classes={self.num_classes} but logits have "
                             f"{probs.shape[1]} classes")
        if self.hard is not None and self.hard.shape[:1] != probs.shape[:1]:
            raise ValueError(f"hard has {self.hard.shape[0]} labels but logits have "
                             f"{probs.shape[0]} rows")
        return probs


def _build_hard(args: _Arguments) -> Tensor:
    hard = args.need("hard", "the true labels of the selected images")
    num_classes = args.need("num_classes", "the number of classes C")
    return hard_labels(hard, num_classes)  # type: ignore[arg-type]


def _build_smooth(args: _Arguments) -> Tensor:
    hard = args.need("hard", "the true labels that get smoothed")
    if args.target_entropy is not None:
        target = args.target_entropy
        num_classes = args.need("num_classes", "the number of classes C")
    else:
        if args.logits is None:
            raise ValueError("label mode 'smooth' needs logits (whose labels' mean entropy is "
                             "matched) or target_entropy")
        probs = args.expert()
        target = float(L.entropy(probs).double().mean())
        num_classes = probs.shape[1]
    return entropy_matched_smoothing(hard, num_classes, target)  # type: ignore[arg-type]


def _build_topk(args: _Arguments) -> Tensor:
    k = args.need("k", "the number of classes kept, 0 for hard argmax labels")
    return topk_labels(args.expert(), k, args.renormalize)  # type: ignore[arg-type]


def _build_swap(args: _Arguments) -> Tensor:
    k = args.need("k", "the rank swapped with the smallest probability")
    return swap_labels(args.expert(), k)  # type: ignore[arg-type]


def _build_shuffle(args: _Arguments) -> Tensor:
    seed = args.need("seed", "the seed of the permutation")
    return shuffle_tail_labels(args.expert(), seed)  # type: ignore[arg-type]


_BUILDERS: dict[str, Callable[[_Arguments], Tensor]] = {
    "hard": _build_hard,
    "expert": lambda args: args.expert(),
    "smooth": _build_smooth,
    "topk": _build_topk,
    "swap": _build_swap,
    "shuffle": _build_shuffle,
}


def _smoothed_entropy(num_classes: int, eps: float) -> float:
    """Entropy in nats of ``(1 - eps) * one_hot + eps / C`` (float64, 0 log 0 = 0)."""
    top = 1.0 - eps + eps / num_classes
    rest = eps / num_classes
    value = -top * math.log(top) if top > 0 else 0.0
    if rest > 0:
        value -= (num_classes - 1) * rest * math.log(rest)
    return value
