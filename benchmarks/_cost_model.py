"""The assumptions of the scaling cost model (section 5 of scaling_costs.py) and the step,
communication and scheduling arithmetic built on them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# --- Assumptions of the cost model (section 5). Ranges are (optimistic, pessimistic). ---
PEAK_BF16 = 989e12  # H100 / H200 SXM dense bf16 Tensor Core peak, FLOP/s
# Sustained fraction of that peak for large convnets (ResNet-18 at 224, WRN-34-10, DeepLab at
# 512x1024) in bf16 with channels-last at a per-GPU batch that fills the GPU. Not measured
# here: an assumption (see docs/scaling.md), far above the 1-3% this repository measured for
# the small CIFAR ConvNets (printed in section 5).
UTILISATION = (0.35, 0.10)
SECONDS_PER_OP = (5e-6, 15e-6)  # host time per eager operator: the floor of a small step
NVLINK = (400e9, 400e9)  # all-reduce bus bandwidth inside an 8-GPU node, B/s per GPU
NETWORK = (50e9, 25e9)  # between nodes (one 400 or 200 Gb/s NIC per GPU), B/s per GPU
LATENCY_NODE = (10e-6, 20e-6)  # one small collective (SyncBatchNorm statistics) inside a node
LATENCY_NETWORK = (30e-6, 60e-6)  # one small collective across nodes
CORES_PER_GPU = 12  # DataLoader worker cores per GPU (a ~100-core host for 8 GPUs)
HEADROOM = 1.2  # allocator fragmentation, cuDNN workspace and temporaries over the sum
LOSS_BYTES_PER_LOGIT = 5.6  # JML's extra memory per logit on an H100 (docs/benchmarks.md)
AUTOATTACK_FORWARDS = (3000, 6000)  # forward-equivalents per image of standard AutoAttack
GPUS = (1, 8, 64)
MB, GB = 1e6, 1e9


# --------------------------------------------------------------------------------------------
# 5. Cost model
# --------------------------------------------------------------------------------------------

def ring_allreduce_seconds(nbytes: float, gpus: int, case: int) -> float:
    """Bandwidth term of a ring all-reduce: each GPU sends and receives 2 (G-1)/G x bytes."""
    if gpus == 1:
        return 0.0
    bandwidth = NVLINK[case] if gpus <= 8 else NETWORK[case]
    return 2 * (gpus - 1) / gpus * nbytes / bandwidth


def collective_latency(gpus: int, case: int) -> float:
    if gpus == 1:
        return 0.0
    return LATENCY_NODE[case] if gpus <= 8 else LATENCY_NETWORK[case]


@dataclass
class Step:
    """One optimiser step of a data-parallel run, as the library runs it.

    GPU work runs asynchronously behind the host, which launches the operators and, for a
    Dataset, checks each batch (``check_batch``, one thread as under torchrun); DataLoader
    workers decode the next batches meanwhile. The gradient all-reduce and the SyncBatchNorm
    collectives do not overlap compute. ``step`` is as the library runs today; ``fixed`` the
    same without the host check (e.g. done on the GPU after the copy).
    """

    flops_per_image: float  # all passes of the step
    ops: int  # eager operators per step (at any batch)
    params: int
    param_tensors: int
    bn_syncs: int  # SyncBatchNorm collectives per step (2 per BN layer per training forward)
    input_seconds_per_image: float = 0.0  # host decode, on CORES_PER_GPU cores
    check_seconds_per_image: float = 0.0  # check_batch in the main process (one thread)
    decode_in_main: bool = False  # a Dataset read without workers (fit's evaluation data)

    def seconds(self, per_gpu_batch: float, gpus: int, case: int) -> dict[str, float]:
        compute = per_gpu_batch * self.flops_per_image / (PEAK_BF16 * UTILISATION[case])
        launch = self.ops * SECONDS_PER_OP[case]
        check = per_gpu_batch * self.check_seconds_per_image
        # The library's all-reduce: one flat fp32 buffer after backward (no overlap), then
        # one copy per parameter tensor back into the gradients.
        comm = 0.0
        if gpus > 1:
            comm = (ring_allreduce_seconds(4 * self.params, gpus, case)
                    + collective_latency(gpus, case) * (1 + self.bn_syncs)
                    + (2 + self.param_tensors) * SECONDS_PER_OP[case])
        if self.decode_in_main:
            data = per_gpu_batch * self.input_seconds_per_image
            return {"compute": compute, "launch": launch, "check": check, "comm": comm,
                    "input": data, "step": max(compute, launch + check + data) + comm,
                    "fixed": max(compute, launch + data) + comm}
        data = per_gpu_batch * self.input_seconds_per_image / CORES_PER_GPU
        return {"compute": compute, "launch": launch, "check": check, "comm": comm,
                "input": data, "step": max(compute, launch + check, data) + comm,
                "fixed": max(compute, launch, data) + comm}


def hours(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def span(low: float, high: float) -> str:
    return f"{hours(low)} - {hours(high)}"


def makespan(jobs: Sequence[float], machines: int) -> float:
    """Longest-first list scheduling of independent cells on ``machines`` single-GPU slots."""
    loads = [0.0] * machines
    for job in sorted(jobs, reverse=True):
        loads[loads.index(min(loads))] += job
    return max(loads)


def state_bytes(params: int, optimizer: str, gpus: int) -> float:
    """Weights + gradients + optimiser state (fp32), the bf16 weight copies autocast caches,
    and the flat all-reduce buffer when there are several ranks."""
    per_param = 4 + 4 + (4 if optimizer == "sgd" else 8) + 2 + (4 if gpus > 1 else 0)
    return params * per_param
