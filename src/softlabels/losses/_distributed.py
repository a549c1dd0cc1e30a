"""A differentiable all-reduce for losses whose value depends on the whole (global) batch.

A dataset-level metric loss is a function L(S) of per-class sums S = sum_r s_r, where s_r are
the sums of rank r's part of the batch. Every rank computes the same L(S) after an all-reduce.
Backward: rank r needs dL/ds_r = dL/dS, which every rank holds; the backward here all-reduces
the incoming gradient too, so rank r's gradient is sum_k dL_k/dS = W * dL/dS (W ranks, each
rank's loss L_k being the same function). DDP then averages parameter gradients over the W
ranks, (1/W) * sum_r W * dL/dS * ds_r/dtheta = dL/dtheta on the global batch: exactly the
single-process gradient.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import FunctionCtx

__all__ = ["all_reduce_sum", "check_process_group"]


def check_process_group(name: str = "sync_dist") -> None:
    """Raise ``ValueError`` unless the default process group is initialised.

    Without it a collective would fail deep inside torch.distributed or, with a half-started
    group, wait for peers that never come; the check makes the cause plain.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(f"{name}=True needs an initialised default process group "
                         f"(torch.distributed.init_process_group, e.g. under torchrun); "
                         f"none is initialised")


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, tensor: Tensor) -> Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` (any shape) over the ranks of the default process group.

    Differentiable; the gradient is scaled for DDP's averaging (see the module docstring).
    Every rank must call it with a tensor of the same shape and dtype.
    """
    check_process_group()
    return _AllReduceSum.apply(tensor)
