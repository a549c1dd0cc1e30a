"""Several processes (``torchrun``) computing what one process would on the global batch.

Data parallelism here is exact by construction: every rank walks the same global batches
(one seeded permutation per epoch), takes a contiguous :class:`Shard` of each, and the
gradients are summed across ranks with each rank's loss weighted by its share of the global
batch, so N ranks apply the gradient of the global batch's mean loss (uneven last batches
included). Random draws that are one per sample (augmentation parameters, attack starts) go
through :func:`draw_rows`: every rank draws for the whole global batch from the same generator
and keeps its own rows, so they do not depend on the world size either. Outside a
``torch.distributed`` process group all of this is the identity.

The gradients are all-reduced by :func:`all_reduce_gradients` after ``backward`` rather than
by wrapping the model in ``DistributedDataParallel``: objectives here run several forward
passes per step and attacks differentiate the unwrapped model, which DDP's reducer does not
allow; the arithmetic is the same (an averaged, all-reduced gradient before every step).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Shard", "World", "all_gather_objects", "all_reduce_gradients", "all_reduce_sum",
           "barrier", "broadcast_parameters", "check_same_on_every_rank", "draw_rows",
           "init_from_environment", "raise_on_every_rank", "shard_rows", "sharded", "world"]


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (``size`` 1 without a process group)."""

    rank: int = 0
    size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Whether this rank writes files (checkpoints, rows, reports): rank 0."""
        return self.rank == 0


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of a global batch of ``total`` rows held by this rank."""

    start: int
    stop: int
    total: int

    @property
    def size(self) -> int:
        """Rows held here."""
        return self.stop - self.start


_SHARD: contextvars.ContextVar[Shard | None] = contextvars.ContextVar("softlabels_shard",
                                                                      default=None)


def world() -> World:
    """The current process group's rank and size (rank 0 of 1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))
    return World()


def init_from_environment(device: str) -> World:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment).

    NCCL for a CUDA ``device`` (each rank on GPU ``LOCAL_RANK``), gloo otherwise. A no-op in
    a plain process.

    Raises:
        ValueError: NCCL is implied (a CUDA device) but CUDA is not available, or the world is
            larger than the GPUs of this node.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return world()
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not torch.cuda.is_available():
            raise ValueError("NCCL (a CUDA device) was asked for but CUDA is not available; "
                             "use --device cpu for gloo")
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} but this node has "
                             f"{torch.cuda.device_count()} GPUs; lower --nproc-per-node")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if wants_cuda else "gloo")
    return world()


def shard_rows(total: int, current: World | None = None) -> Shard:
    """This rank's contiguous part of ``total`` rows: sizes differ by at most one."""
    current = current or world()
    base, extra = divmod(total, current.size)
    start = current.rank * base + min(current.rank, extra)
    return Shard(start, start + base + (current.rank < extra), total)


@contextmanager
def sharded(shard: Shard) -> Iterator[None]:
    """Inside, :func:`draw_rows` draws for ``shard.total`` rows and keeps ``shard``'s."""
    token = _SHARD.set(shard)
    try:
        yield
    finally:
        _SHARD.reset(token)


def draw_rows(sample: Callable[..., Tensor], shape: Sequence[int],
              generator: torch.Generator | None, **options: Any) -> Tensor:
    """``sample(shape, generator=generator, **options)`` with one leading row per sample.

    Inside :func:`sharded` with ``shape[0]`` equal to the shard's size, the draw is made for
    the whole global batch and this rank's rows are returned, so every rank advances the
    generator alike and a sample gets the same draw for any number of ranks.
    """
    shard = _SHARD.get()
    if shard is None or shard.total == shard.size or shape[0] != shard.size:
        return sample(tuple(shape), generator=generator, **options)
    full = sample((shard.total, *shape[1:]), generator=generator, **options)
    return full[shard.start:shard.stop]


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """``tensor`` summed over the ranks, in place (unchanged in a single process)."""
    if world().size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_gradients(parameters: Sequence[nn.Parameter], loss: Tensor, *,
                         failed: bool = False) -> tuple[Tensor, bool]:
    """Sum every parameter's gradient over the ranks, and the loss and a failure flag with
    them.

    Each rank's loss must already be weighted by its share of the global batch (so the sum is
    the global mean's gradient). One flat buffer per call: one collective per step. Returns
    the summed (global) loss, identical on every rank, so a non-finite loss stops every rank
    at the same step, and whether any rank ``failed`` this step (then every rank stops too:
    see :func:`raise_on_every_rank`).
    """
    if world().size == 1:
        return loss.detach(), failed
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    device = grads[0].device if grads else loss.device
    tail = torch.stack([loss.detach().float().to(device),
                        torch.tensor(float(failed), device=device)])
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [tail])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for parameter, grad in zip(parameters, grads, strict=True):
        count = grad.numel()
        summed = flat[offset:offset + count].view_as(grad).to(grad.dtype)
        if parameter.grad is None:
            parameter.grad = summed
        else:
            parameter.grad.copy_(summed)
        offset += count
    return flat[-2], bool(flat[-1] > 0)


def raise_on_every_rank(error: BaseException | None) -> None:
    """Called on every rank once some rank failed: each raises, naming the failed ranks.

    Raises:
        ValueError: the failing ranks' messages (the failing rank chains its own error).
    """
    text = None if error is None else f"{type(error).__name__}: {error}"
    messages = all_gather_objects(text)
    failed = "; ".join(f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None)
    raise ValueError(f"training stopped on every rank: {failed}") from error


def all_gather_objects(value: Any) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]`` on every rank (``[value]`` alone)."""
    current = world()
    if current.size == 1:
        return [value]
    values: list[Any] = [None] * current.size
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if world().size > 1:
        dist.barrier()


def broadcast_parameters(module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (a model built without a seed)."""
    if world().size > 1:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def check_same_on_every_rank(name: str, value: Any) -> None:
    """Raise on every rank when ``value`` (JSON-like) differs between ranks.

    Raises:
        ValueError: naming ``name`` and the ranks' values; every rank raises, none hangs.
    """
    if world().size == 1:
        return
    values = all_gather_objects(value)
    if any(v != values[0] for v in values):
        raise ValueError(f"{name} differs between ranks: "
                         + ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values)))
