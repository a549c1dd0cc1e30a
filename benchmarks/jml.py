"""Forward + backward time, peak memory, op and synchronisation counts of the metric losses.

Compared on the same logits against ``F.cross_entropy`` (hard labels), soft cross-entropy
(soft labels) and a straightforward implementation that builds a one-hot float label tensor
(what the official code does for hard labels); ``ce+jml`` is the paper's 0.25 CE + 0.75 JML
from ``ce_jaccard_metric_loss`` (one pass), against the same sum of two separate calls.

Time: the median over repeats in which the cases take turns. Memory: on the CPU each case runs
in a fresh subprocess (one warm-up step, freed memory handed back with ``malloc_trim``, the
peak-RSS mark reset through ``/proc/self/clear_refs``; "extra" is the peak resident memory of
one more step minus the resident memory before it, Linux only); on a GPU it is read from
PyTorch's allocator. Counts, from one profiled step (less an empty one): ``ops``, top-level
operators other than views (each launches at least one kernel); ``kernels``, the GPU kernels
that ran; ``reads``, reads of a tensor's value by the host (``aten::_local_scalar_dense``,
behind ``.item()``, ``bool()``, ``int()``) and data-dependent shapes (``aten::nonzero``), each
a host synchronisation on a GPU; ``syncs``, the CUDA runtime's blocking calls.

Targets: CPU, hard JML <= 1.0x cross-entropy, soft <= 1.5x soft cross-entropy, hard JML
<= 0.5x the extra memory of the one-hot version; GPU, hard <= 1.1x, soft <= 1.3x, ce+jml <=
1.2x cross-entropy alone.

    python benchmarks/jml.py [--repeats 5] [--threads N] [--device cpu|cuda]
                             [--dtype float32 bfloat16] [--shapes camvid-like ...] [--compile]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from _machine import device_name, synchronize
from softlabels.losses import ce_jaccard_metric_loss, jaccard_metric_loss, soft_cross_entropy

SHAPES = {"cityscapes-like": (2, 19, 256, 512), "camvid-like": (8, 12, 180, 240),
          "cityscapes": (2, 19, 512, 1024), "camvid": (8, 12, 360, 480)}
DEFAULT_SHAPES = {"cpu": ("cityscapes-like", "camvid-like"), "cuda": ("cityscapes", "camvid")}
MEMORY_CASES = ("cross_entropy (hard)", "jml (hard)", "one-hot jml (hard)",
                "soft cross_entropy", "jml (soft)")
Case = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def one_hot_jml(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The textbook version: a (B, C, H, W) float one-hot label, then dataset-level JML."""
    probs = logits.softmax(dim=1)
    target = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    x_card, y_card = probs.sum(dims), target.sum(dims)
    diff = (probs - target).abs().sum(dims)
    tp = (x_card + y_card - diff) / 2
    score = (tp + 1e-3) / (x_card + y_card - tp + 1e-3)
    present = y_card > 0
    return (1 - score)[present].mean()


def lean_jml(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Dataset-level hard-label JML in a few plain ops, no sync: input for ``torch.compile``."""
    probs = logits.softmax(dim=1, dtype=torch.float32).flatten(2)
    classes = torch.arange(logits.shape[1], device=logits.device).view(1, -1, 1)
    onehot = labels.flatten(1).unsqueeze(1) == classes
    hits = torch.where(onehot, probs, 0).sum((0, 2))
    total, count = probs.sum((0, 2)), onehot.sum((0, 2))
    score = (hits + 1e-3) / (total + count - hits + 1e-3)
    present = count > 0
    return ((1 - score) * present).sum() / present.sum().clamp_min(1)


def recipe(ce: torch.Tensor, metric: torch.Tensor) -> torch.Tensor:
    return 0.25 * ce + 0.75 * metric


CASES: dict[str, Case] = {
    "cross_entropy (hard)": lambda x, y, s: F.cross_entropy(x, y),
    "jml (hard)": lambda x, y, s: jaccard_metric_loss(x, y),
    "jml (hard, validate=False)": lambda x, y, s: jaccard_metric_loss(x, y, validate=False),
    "one-hot jml (hard)": lambda x, y, s: one_hot_jml(x, y),
    "ce+jml (hard, one call)": lambda x, y, s: recipe(*ce_jaccard_metric_loss(x, y)),
    "ce+jml (hard, two calls)": lambda x, y, s: recipe(F.cross_entropy(x, y),
                                                       jaccard_metric_loss(x, y)),
    "soft cross_entropy": lambda x, y, s: soft_cross_entropy(x, s),
    "jml (soft)": lambda x, y, s: jaccard_metric_loss(x, s),
    "jml (soft, validate=False)": lambda x, y, s: jaccard_metric_loss(x, s, validate=False),
    "ce+jml (soft, one call)": lambda x, y, s: recipe(*ce_jaccard_metric_loss(x, s)),
}
GPU_CASES: dict[str, Case] = {  # the PyTorch path beside the Triton kernels
    "jml (hard, torch path)": lambda x, y, s: jaccard_metric_loss(x, y, backend="torch"),
    "jml (soft, torch path)": lambda x, y, s: jaccard_metric_loss(x, s, backend="torch"),
}
RATIOS = (  # (numerator, denominator, CPU target, GPU target); missing cases are skipped
    ("jml (hard)", "cross_entropy (hard)", 1.0, 1.1),
    ("jml (hard, validate=False)", "cross_entropy (hard)", 1.0, 1.1),
    ("jml (soft)", "soft cross_entropy", 1.5, 1.3),
    ("jml (soft, validate=False)", "soft cross_entropy", 1.5, 1.3),
    ("ce+jml (hard, one call)", "cross_entropy (hard)", None, 1.2),
    ("ce+jml (soft, one call)", "soft cross_entropy", None, 1.2),
)


def compiled_cases() -> dict[str, Case]:
    """torch.compile of the loss calls (sync-free with validate=False: one graph each), and of
    a lean textbook JML; compilation happens in the warm-up step."""
    lean = torch.compile(lean_jml)
    hard = torch.compile(lambda x, y: jaccard_metric_loss(x, y, validate=False))
    soft = torch.compile(lambda x, s: jaccard_metric_loss(x, s, validate=False))
    both = torch.compile(lambda x, y: recipe(*ce_jaccard_metric_loss(x, y, validate=False)))
    return {"lean jml (hard, compiled)": lambda x, y, s: lean(x, y),
            "jml (hard, compiled)": lambda x, y, s: hard(x, y),
            "jml (soft, compiled)": lambda x, y, s: soft(x, s),
            "ce+jml (hard, compiled)": lambda x, y, s: both(x, y)}


def inputs(shape: tuple[int, int, int, int], device: str = "cpu",
           dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """Logits (B, C, H, W), hard labels (B, H, W) and soft labels (B, C, H, W) on ``device``."""
    b, c, h, w = shape
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, c, h, w, generator=g)
    labels = torch.randint(0, c, (b, h, w), generator=g)
    soft = torch.softmax(torch.randn(b, c, h, w, generator=g), dim=1)
    return logits.to(device, dtype), labels.to(device), soft.to(device, dtype)


def step(case: Case, logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor) -> None:
    x = logits.detach().requires_grad_()
    case(x, labels, soft).backward()


READ_OPS = ("aten::_local_scalar_dense", "aten::nonzero")  # a host read / data-dependent shape
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
              "cudaMemcpy")  # runtime calls that block the host until the GPU catches up
# Operators that only describe a view, a dtype or a shape: no kernel.
NO_KERNEL = {"aten::" + name for name in (
    "view", "reshape", "_unsafe_view", "unsqueeze", "squeeze", "flatten", "expand", "slice",
    "select", "unbind", "split", "as_strided", "t", "alias", "detach", "empty",
    "promote_types", "lift_fresh", "result_type")}


def profile_counts(fn: Callable[[], None], cuda: bool) -> dict[str, int]:
    """Top-level kernel-launching operators, GPU kernels, host reads and runtime syncs."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        fn()
    events = prof.events()
    return {
        "ops": sum(1 for e in events if e.name.startswith("aten::") and e.name not in NO_KERNEL
                   and not _inside_aten(e)),
        "kernels": sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                       and not e.name.startswith(("Memcpy", "Memset"))),
        "reads": sum(1 for e in events if e.name in READ_OPS),
        "syncs": sum(1 for e in events if e.name in SYNC_CALLS),
    }


def counts(case: Case, tensors: tuple[torch.Tensor, ...]) -> dict[str, int]:
    """``profile_counts`` of one step, less what profiling an empty step records."""
    cuda = tensors[0].is_cuda
    empty = profile_counts(lambda: None, cuda)
    tally = profile_counts(lambda: step(case, *tensors), cuda)
    return {key: value - empty[key] for key, value in tally.items()}


def _inside_aten(event: torch.autograd.profiler_util.FunctionEvent) -> bool:
    """Whether an enclosing event is an aten operator (so ``event`` is not top-level).

    Backward operators sit under autograd's ``evaluate_function`` events, not under an
    operator: they count as top-level, as the forward ones do.
    """
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


def status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(case: str, shape: str) -> None:
    """Run one case; print its peak extra memory in bytes (subprocess entry point)."""
    tensors = inputs(SHAPES[shape])
    step(CASES[case], *tensors)  # lazy initialisation must not count
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM, the peak resident set size, to the current size
    before = status_bytes("VmRSS")
    step(CASES[case], *tensors)
    print(json.dumps({"extra": max(status_bytes("VmHWM") - before, 0)}))


def gpu_extra_memory(case: Case, tensors: tuple[torch.Tensor, ...]) -> int:
    """Peak bytes the caching allocator hands out during one step, beyond what it held."""
    device = tensors[0].device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step(case, *tensors)
    torch.cuda.synchronize(device)
    return max(torch.cuda.max_memory_allocated(device) - before, 0)


def extra_memory(case: str, shape: str, threads: int | None) -> int:
    # A fixed mmap threshold stops glibc from moving large blocks onto its heap after the
    # first free, which would make the peak depend on allocation history.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    argv = [sys.executable, __file__, "--memory-child", case, shape]
    if threads:
        argv += ["--threads", str(threads)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout
    return int(json.loads(out.strip().splitlines()[-1])["extra"])


def timings(cases: dict[str, Case], tensors: tuple[torch.Tensor, ...], repeats: int,
            device: str) -> dict[str, float]:
    """Median seconds of one step per case; the cases take turns within each repeat."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():
        step(case, *tensors)  # warm-up (and compilation)
    for _ in range(repeats):
        for name, case in cases.items():
            synchronize(device)
            start = time.perf_counter()
            step(case, *tensors)
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(name: str, shape: tuple[int, ...], dtype: torch.dtype, cases: dict[str, Case],
           tensors: tuple[torch.Tensor, ...], args: argparse.Namespace) -> None:
    cuda = args.device.startswith("cuda")
    times = timings(cases, tensors, args.repeats, args.device)
    if cuda:
        memory = {case: gpu_extra_memory(cases[case], tensors) for case in cases}
    elif dtype == torch.float32:
        memory = {case: extra_memory(case, name, args.threads) for case in MEMORY_CASES}
    else:
        memory = {}
    tally = {case: counts(cases[case], tensors) for case in cases}
    print(f"\n{name} {shape} (B, C, H, W), {str(dtype).removeprefix('torch.')}")
    print(f"  {'case':28s} {'time':>9s} {'extra MB':>9s} {'ops':>4s} {'kernels':>7s} "
          f"{'reads':>5s} {'syncs':>5s}")
    for case in cases:
        mb = f"{memory[case] / 2**20:9.1f}" if case in memory else f"{'':9s}"
        c = tally[case]
        kernels, syncs = (str(c["kernels"]), str(c["syncs"])) if cuda else ("-", "-")
        print(f"  {case:28s} {times[case] * 1e3:7.2f}ms {mb} {c['ops']:4d} {kernels:>7s} "
              f"{c['reads']:5d} {syncs:>5s}")
    ratios = RATIOS + tuple((name, "cross_entropy (hard)" if "hard" in name else
                             "soft cross_entropy", None, None)
                            for name in cases if "compiled" in name)
    for numerator, denominator, cpu_target, gpu_target in ratios:
        target = gpu_target if cuda else cpu_target
        goal = f" (target <= {target}x)" if target else ""
        print(f"  {numerator} / {denominator}: {times[numerator] / times[denominator]:.2f}x"
              f"{goal}")
    if memory.get("one-hot jml (hard)"):
        ratio = memory["jml (hard)"] / memory["one-hot jml (hard)"]
        print(f"  jml (hard) / one-hot jml extra memory: {ratio:.2f}x (target <= 0.5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", nargs="+", default=None, choices=("float32", "bfloat16"),
                        help="logit dtypes (default: float32 on the CPU, both on a GPU)")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=None)
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile of the losses and of a lean PyTorch JML")
    parser.add_argument("--memory-child", nargs=2, metavar=("CASE", "SHAPE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    cuda = args.device.startswith("cuda")
    cases = {**CASES, **(GPU_CASES if cuda else {})}
    if args.compile:
        cases.update(compiled_cases())
    dtypes = args.dtype or (["float32", "bfloat16"] if cuda else ["float32"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{device_name(args.device)}, median of {args.repeats}")
    for name in args.shapes or DEFAULT_SHAPES["cuda" if cuda else "cpu"]:
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            tensors = inputs(SHAPES[name], args.device, dtype)
            report(name, SHAPES[name], dtype, cases, tensors, args)


if __name__ == "__main__":
    main()
