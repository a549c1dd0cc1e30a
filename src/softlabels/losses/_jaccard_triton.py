"""Triton kernels for the multiclass metric losses (softmax, p = 1), cross-entropy included.

Forward: one pass over pixel tiles computes each pixel's softmax and accumulates in registers,
per image and class, every sum the losses need, the cross-entropy and the value checks; each
program writes its partial sums and a plain ``sum`` over programs finishes them: a two-stage
reduction in a fixed order, so two calls give identical bits (no atomics). Backward: one pass
recomputes the softmax and writes the gradient of the logits in their dtype. Half-precision
logits are read as they are and upcast in registers, never copied whole to float32.

The kernels are built on first use, so that ``TRITON_INTERPRET=1`` set by then runs them on
the CPU (the tests do); the PyTorch path in ``_cardinalities`` is the reference.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from ._cardinalities import Counts, counts_from_sums
from ._jaccard_checks import SUM_TOLERANCE, VARIANTS

__all__ = ["MAX_CLASSES", "available", "hard_counts", "soft_counts"]

#: Beyond this many classes a pixel tile no longer fits in registers (sm_90 spills at 1,000
#: classes): the PyTorch path runs.
MAX_CLASSES = 256
# Elements of a (classes x pixels) tile: 8 per thread of 4 (forward) or 8 warps. The forward
# holds five accumulators of that size; more per thread costs registers (about 200 at 16 per
# thread for sm_90, and spills for soft labels), which costs occupancy.
_FORWARD_TILE, _BACKWARD_TILE = 1024, 2048
_PROGRAMS = 1024  # forward programs over the batch: a few per streaming multiprocessor
# Rows of the partial sums; the last holds the checks' counts in its first columns.
_HARD_ROWS = 5  # hits, total, count, ce, checks (labels, logits)
_SOFT_ROWS = 9  # total, prod, dist, excess, shortfall, y_total, above, ce, checks (target: 3)
_HARD_GRAD_ROWS, _SOFT_GRAD_ROWS = (0, 1), (0, 1, 2, 3, 4)  # sums that depend on the logits


def available() -> bool:
    """Whether the triton package can be imported."""
    return importlib.util.find_spec("triton") is not None


def _kernels() -> Any:
    """The kernel module, imported on first use (triton reads TRITON_INTERPRET then)."""
    return importlib.import_module("._jaccard_kernels", __package__)


def _launch_shape(batch: int, num_classes: int, pixels: int) -> dict[str, int]:
    """Block sizes, forward programs per image and pixels per forward program.

    Depends on the shapes only, so the order of every sum, and the bits, repeat.
    """
    import triton

    block_c = max(4, triton.next_power_of_2(num_classes))  # 4: room for the check columns
    forward_n = max(8, min(1024, _FORWARD_TILE // block_c))
    backward_n = max(8, min(1024, _BACKWARD_TILE // block_c))
    tiles = triton.cdiv(pixels, forward_n)
    programs = max(1, min(tiles, _PROGRAMS // batch))
    chunk = triton.cdiv(tiles, programs) * forward_n
    return {"BLOCK_C": block_c, "forward_n": forward_n, "backward_n": backward_n,
            "programs": triton.cdiv(pixels, chunk), "chunk": chunk}


def _warps(block_c: int, block_n: int) -> int:
    return 8 if block_c * block_n > 1024 else 4


class _TritonSums(torch.autograd.Function):
    """Per-class sums (B, C) from logits (B, C, N) against hard or soft targets.

    Outputs: the rows of ``_HARD_ROWS`` / ``_SOFT_ROWS`` but the checks, then ce (B,) and the
    checks' flags (0-dim bool): hard labels (bad labels, bad logits); soft (bad target, bad
    logits). Returned one by one, so that the backward gets one gradient per sum and stacks
    the few it needs in one kernel.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, logits: Tensor, target: Tensor, keep: Tensor | None,
                ignore_index: int | None, variant: str, threshold: float, check_sum: bool
                ) -> tuple[Tensor, ...]:
        batch, num_classes, pixels = logits.shape
        hard = not target.is_floating_point()
        kernels = _kernels()
        shape = _launch_shape(batch, num_classes, pixels)
        block_c, programs = shape["BLOCK_C"], shape["programs"]
        rows = _HARD_ROWS if hard else _SOFT_ROWS
        partial = logits.new_empty(batch, programs, rows, block_c, dtype=torch.float32)
        keep_arg = keep.view(torch.uint8) if keep is not None else logits
        common = {"HAS_KEEP": keep is not None, "BLOCK_C": block_c,
                  "BLOCK_N": shape["forward_n"],
                  "num_warps": _warps(block_c, shape["forward_n"])}
        if hard:
            kernels.hard_forward[(batch, programs)](
                logits, target, keep_arg, partial, num_classes, pixels,
                ignore_index if ignore_index is not None else 0, shape["chunk"],
                HAS_IGNORE=ignore_index is not None, **common)
        else:
            kernels.soft_forward[(batch, programs)](
                logits, target, keep_arg, partial, num_classes, pixels, threshold,
                SUM_TOLERANCE, shape["chunk"], VARIANT=VARIANTS.index(variant),
                CHECK_SUM=check_sum, **common)
        sums = partial.sum(1)  # the second, ordered stage of the reduction
        *values, ce = sums[:, :-1, :num_classes].unbind(1)
        checks = sums[:, -1, :4].sum(0)
        target_bad = checks[0] if hard else checks[:3].sum()
        flags = (target_bad > 0, checks[1 if hard else 3] > 0)
        ctx.save_for_backward(logits, target, keep)
        ctx.ignore_index = ignore_index
        ctx.common = {**common, "BLOCK_N": shape["backward_n"],
                      "num_warps": _warps(block_c, shape["backward_n"])}
        ctx.mark_non_differentiable(*flags)
        return (*values, ce.sum(1), *flags)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: Tensor
                 ) -> tuple[Tensor, None, None, None, None, None, None]:
        logits, target, keep = ctx.saved_tensors
        batch, num_classes, pixels = logits.shape
        hard = not target.is_floating_point()
        kernels = _kernels()
        # Gradients of the sums that depend on the logits, (B, rows, C); the cross-entropy's
        # (per image) is repeated over the classes.
        wanted = _HARD_GRAD_ROWS if hard else _SOFT_GRAD_ROWS
        g_ce = grads[(_HARD_ROWS if hard else _SOFT_ROWS) - 2]
        coef = torch.stack([*(grads[row] for row in wanted),
                            g_ce.unsqueeze(1).expand(batch, num_classes)], 1).float()
        dz = torch.empty_like(logits)
        common = ctx.common
        grid = (-(-pixels // common["BLOCK_N"]), batch)  # pixel tiles first: no 65,535 cap
        keep_arg = keep.view(torch.uint8) if keep is not None else logits
        if hard:
            ignore = ctx.ignore_index
            kernels.hard_backward[grid](
                logits, target, keep_arg, coef, dz, num_classes, pixels,
                ignore if ignore is not None else 0, HAS_IGNORE=ignore is not None, **common)
        else:
            kernels.soft_backward[grid](logits, target, keep_arg, coef, dz, num_classes,
                                        pixels, **common)
        return dz, None, None, None, None, None, None


def _sums(logits: Tensor, target: Tensor, keep: Tensor | None, ignore_index: int | None,
          variant: str, threshold: float, check_sum: bool) -> tuple[Tensor, ...]:
    if logits.shape[2] == 0:  # nothing to launch: zeros that keep the graph
        rows = _HARD_ROWS if not target.is_floating_point() else _SOFT_ROWS
        zero = 0 * logits.sum(2, dtype=torch.float32)  # (B, C)
        false = torch.zeros((), dtype=torch.bool, device=logits.device)
        return (*[zero] * (rows - 2), zero.sum(1), false, false)
    # The kernels index (B, C, N) and (B, N) buffers by their shapes: contiguous (an expanded
    # mask, for one, is not).
    return _TritonSums.apply(logits.contiguous(), target.contiguous(),
                             keep.contiguous() if keep is not None else None, ignore_index,
                             variant, threshold, check_sum)


def hard_counts(logits: Tensor, labels: Tensor, keep: Tensor | None, ignore_index: int | None,
                weights: tuple[float, float]) -> tuple[Counts, Tensor, Tensor]:
    """Counts (with ce) for logits (B, C, N) and int64 labels (B, N); keep bool (B, N).

    ``weights``: (alpha, beta). Returns the counts and two 0-dim flags: labels outside
    [0, C) (not ignored), and non-finite logits.
    """
    hits, total, count, ce, bad_labels, bad_logits = _sums(logits, labels, keep, ignore_index,
                                                           "jml1", 0.0, False)
    counts = counts_from_sums("jml1", weights, total, count, count > 0, ce, hits=hits)
    return counts, bad_labels, bad_logits


def soft_counts(logits: Tensor, target: Tensor, keep: Tensor | None, variant: str,
                weights: tuple[float, float], threshold: float, check_sum: bool
                ) -> tuple[Counts, Tensor, Tensor]:
    """Counts (with ce) for logits and a soft target (B, C, N) of any float dtype.

    Returns the counts and two 0-dim flags: a kept pixel's target is not finite, outside
    [0, 1] or (``check_sum``) not summing to 1; non-finite logits.
    """
    (total, prod, dist, excess, shortfall, y_total, above, ce, bad_target,
     bad_logits) = _sums(logits, target, keep, None, variant, threshold, check_sum)
    counts = counts_from_sums(variant, weights, total, y_total, above > 0, ce, prod=prod,
                              dist=dist, excess=excess, shortfall=shortfall)
    return counts, bad_target, bad_logits
