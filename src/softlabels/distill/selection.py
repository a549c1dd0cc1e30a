"""Which real images make up a distilled set: random per class, by expert loss, or from a file.

Every selector returns sorted ``int64`` dataset positions (indices into the ``labels`` it was
given), ``ipc`` per class present in ``labels``. Positions, not images, are returned so the
caller can take ``dataset.subset(positions)`` and match a :class:`~softlabels.store.LabelStore`
against ``dataset.indices``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .._checks import (
    check_finite,
    check_float,
    check_ndim,
    check_positive_int,
    check_range,
    check_tensor,
)
from .._io import write_text
from ..data.split import sample_per_class

__all__ = [
    "QUANTILE_PRESETS",
    "load_index_file",
    "save_index_file",
    "select_by_loss",
    "select_random",
]

#: Named quantiles of :func:`select_by_loss`; ``"easiest"`` equals 0.0 and ``"hardest"`` 1.0.
QUANTILE_PRESETS = {"easiest": 0.0, "hardest": 1.0}

# How many offending values an error message shows: enough to find them, short enough to read.
_SHOW = 5


def select_random(labels: Tensor, ipc: int, seed: int) -> Tensor:
    """Draw ``ipc`` random images of every class (the paper's default selection).

    Args:
        labels: int64 (N,) hard labels (non-negative class indices).
        ipc: images per class, >= 1.
        seed: integer seed; the global RNG is untouched, so same labels and seed give the
            same positions.

    Returns:
        Sorted int64 (K * ipc,) positions, where K is the number of classes present.

    Raises:
        ValueError: a class has fewer than ``ipc`` images (the message names the class and both
            counts).

    Example:
        >>> select_random(torch.tensor([0, 1, 0, 1, 0]), 2, seed=0).shape
        torch.Size([4])
    """
    _check_labels(labels)
    _check_ipc(labels, ipc)
    return sample_per_class(labels, ipc, seed)


def select_by_loss(labels: Tensor, losses: Tensor, ipc: int,
                   quantile: str | float = "easiest") -> Tensor:
    """Pick ``ipc`` images per class around a quantile of the expert's per-image loss.

    Within each class the images are ranked by ``(loss, position)`` ascending, so ties are
    broken by dataset position (the lower position ranks as easier) and the result never
    depends on sort stability. Of a class with ``n`` images and ranks ``0..n-1``:

    * ``"easiest"`` (= 0.0) takes ranks ``0..ipc-1`` (lowest losses);
    * ``"hardest"`` (= 1.0) takes ranks ``n-ipc..n-1`` (highest losses);
    * a float ``q`` takes the ``ipc`` consecutive ranks centred on rank ``q * (n - 1)`` (the
      q-quantile with linear interpolation, as numpy's default), i.e. starting at
      ``floor(q * (n - 1) - (ipc - 1) / 2 + 0.5)``, shifted inwards when the window would
      leave ``[0, n)``. The half-up rounding makes an even window prefer the harder side.

    Args:
        labels: int64 (N,) hard labels.
        losses: float (N,) per-image cross-entropy of the expert against ``labels`` (any finite
            score works: only its order within a class matters).
        ipc: images per class, >= 1.
        quantile: ``"easiest"``, ``"hardest"`` or a number in [0, 1].

    Returns:
        Sorted int64 (K * ipc,) positions.

    Example:
        >>> select_by_loss(torch.tensor([0, 0, 0, 1, 1]),
        ...                torch.tensor([0.3, 0.1, 0.2, 2.0, 1.0]), 1, "hardest").tolist()
        [0, 3]
    """
    _check_labels(labels)
    check_float("losses", losses)
    check_ndim("losses", losses, (1,))
    if losses.shape != labels.shape:
        raise ValueError(f"losses must have shape {tuple(labels.shape)} to match labels, got "
                         f"{tuple(losses.shape)}")
    check_finite("losses", losses)
    _check_ipc(labels, ipc)
    q = _quantile_value(quantile)
    labels_cpu = labels.detach().cpu().to(torch.int64)
    # float64 so that losses that differ only beyond float32 precision keep their order.
    losses_cpu = losses.detach().cpu().to(torch.float64)
    chosen: list[Tensor] = []
    for cls in torch.unique(labels_cpu, sorted=True).tolist():
        positions = torch.nonzero(labels_cpu == cls, as_tuple=False).flatten()
        # positions is ascending, so a stable sort on the losses ranks ties by position.
        order = torch.sort(losses_cpu[positions], stable=True).indices
        ranked = positions[order]
        count = ranked.numel()
        start = math.floor(q * (count - 1) - (ipc - 1) / 2 + 0.5)
        start = min(max(start, 0), count - ipc)
        chosen.append(ranked[start:start + ipc])
    if not chosen:
        return torch.empty(0, dtype=torch.int64)
    return torch.sort(torch.cat(chosen)).values


def load_index_file(path: str | os.PathLike[str], num_images: int) -> Tensor:
    """Read a user's list of dataset positions (the images of a hand-made distilled set).

    Two formats are accepted, told apart by the first non-blank character:

    * JSON (starts with ``[`` or ``{``): a list of integers, e.g. ``[3, 17, 42]``;
    * plain text: integers separated by whitespace and/or commas (typically one per line);
      ``#`` starts a comment that runs to the end of the line.

    Args:
        path: the file.
        num_images: N, the size of the dataset the positions index; each must be in [0, N).

    Returns:
        int64 (M,) positions in the file's order.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: invalid JSON, an entry that is not an integer, an empty list, positions
            outside ``[0, num_images)`` or repeated positions; the message names the file, the
            problem and the first offending values.
    """
    check_positive_int("num_images", num_images)
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"index file {str(target)!r} does not exist")
    text = target.read_text(encoding="utf-8")
    what = f"index file {str(target)!r}"
    # "{" goes to the JSON reader too, so a JSON object gets a JSON error, not a token error.
    is_json = text.lstrip().startswith(("[", "{"))
    values = _parse_json(text, what) if is_json else _parse_text(text, what)
    if not values:
        raise ValueError(f"{what} holds no positions")
    _check_positions(values, what, num_images)
    return torch.tensor(values, dtype=torch.int64)


def save_index_file(path: str | os.PathLike[str], positions: Tensor | Sequence[int]) -> None:
    """Atomically write dataset positions that :func:`load_index_file` reads back.

    A path ending in ``.json`` gets a JSON list; any other path gets one integer per line.

    Args:
        path: destination; an existing file is replaced only once the new one is complete.
        positions: int (M,) tensor or a sequence of ints, non-negative and without repeats.

    Raises:
        TypeError: ``positions`` is not integer-valued.
        ValueError: ``positions`` is not 1-D, is empty, or holds negative or repeated values.
    """
    if isinstance(positions, Tensor):
        if positions.dtype.is_floating_point or positions.dtype.is_complex \
                or positions.dtype == torch.bool:
            raise TypeError(f"positions must be an integer tensor, got dtype {positions.dtype}")
        check_ndim("positions", positions, (1,))
        values = [int(v) for v in positions.tolist()]
    elif isinstance(positions, Sequence) and not isinstance(positions, str | bytes):
        bad = [v for v in positions if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise TypeError(f"positions must hold ints, got non-integers (first few): "
                            f"{bad[:_SHOW]!r}")
        values = list(positions)
    else:
        raise TypeError(f"positions must be a tensor or a sequence of ints, got "
                        f"{type(positions).__name__}")
    if not values:
        raise ValueError("positions must not be empty")
    _check_positions(values, "positions", None)
    if Path(path).suffix.lower() == ".json":
        text = json.dumps(values) + "\n"
    else:
        text = "".join(f"{v}\n" for v in values)
    write_text(path, text)


def _check_labels(labels: object) -> Tensor:
    tensor = check_tensor("labels", labels)
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor of class indices, got {tensor.dtype}")
    check_ndim("labels", tensor, (1,))
    if tensor.numel() and int(tensor.min()) < 0:
        raise ValueError(f"labels must be non-negative class indices, got a minimum of "
                         f"{int(tensor.min())}")
    return tensor


def _check_ipc(labels: Tensor, ipc: int) -> None:
    """Require every class in ``labels`` to have at least ``ipc`` images; name all short ones."""
    check_positive_int("ipc", ipc)
    classes, counts = torch.unique(labels.detach().cpu(), return_counts=True)
    short = [(int(c), int(n)) for c, n in zip(classes, counts, strict=True) if int(n) < ipc]
    if short:
        listed = ", ".join(f"class {c} has {n}" for c, n in short[:_SHOW])
        more = f" and {len(short) - _SHOW} more classes" if len(short) > _SHOW else ""
        raise ValueError(f"ipc={ipc} images per class requested but {listed}{more}")


def _quantile_value(quantile: object) -> float:
    if isinstance(quantile, str):
        if quantile not in QUANTILE_PRESETS:
            raise ValueError(f"quantile must be one of {sorted(QUANTILE_PRESETS)} or a number in "
                             f"[0, 1], got {quantile!r}")
        return QUANTILE_PRESETS[quantile]
    return check_range("quantile", quantile, 0.0, 1.0)


_INTEGER = re.compile(r"[+-]?\d+")


def _parse_text(text: str, what: str) -> list[int]:
    tokens = [
        token
        for line in text.splitlines()
        for token in re.split(r"[\s,]+", line.split("#", 1)[0])
        if token
    ]
    bad = [token for token in tokens if not _INTEGER.fullmatch(token)]
    if bad:
        raise ValueError(f"{what} holds entries that are not integers (first few): "
                         f"{bad[:_SHOW]!r}")
    return [int(token) for token in tokens]


def _parse_json(text: str, what: str) -> list[int]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} is not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise ValueError(f"{what} must hold a JSON list of integers, got {type(data).__name__}")
    # bool is an int subclass in Python, and 3.0 is not an index: both are rejected.
    bad = [v for v in data if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise ValueError(f"{what} holds entries that are not integers (first few): "
                         f"{bad[:_SHOW]!r}")
    return data


def _check_positions(values: list[int], what: str, num_images: int | None) -> None:
    high = f"{num_images}" if num_images is not None else "inf"
    outside = [v for v in values if v < 0 or (num_images is not None and v >= num_images)]
    if outside:
        raise ValueError(f"{what} holds {len(outside)} positions outside [0, {high}) "
                         f"(first few): {outside[:_SHOW]}")
    seen: set[int] = set()
    repeated: dict[int, None] = {}  # a dict keeps first-repeat order, a set would not
    for v in values:
        if v in seen:
            repeated[v] = None
        seen.add(v)
    if repeated:
        raise ValueError(f"{what} holds repeated positions (first few): {list(repeated)[:_SHOW]}")
