"""Forward + backward time and peak memory of the Jaccard metric loss.

Compared on the same logits against ``F.cross_entropy`` (hard labels), soft cross-entropy
(soft labels) and a straightforward implementation that builds a one-hot float label tensor
(what the official code does for hard labels). Memory: each case runs in a fresh
subprocess: one warm-up step, then freed memory is handed back to the system
(``malloc_trim``) and the kernel's peak-RSS mark is reset
(``/proc/self/clear_refs``); "extra" is the peak resident memory of one more forward + backward
minus the resident memory just before it (Linux only). With ``--device cuda`` the same is read
in-process from PyTorch's allocator (peak allocated minus allocated before the step).

Time: the median over repeats in which the cases take turns. Targets: hard-label JML within
1.0x the time of cross-entropy and at most 0.5x the extra memory of the one-hot
implementation; soft-label JML within 1.5x soft cross-entropy.

    python benchmarks/jml.py [--repeats 5] [--threads N] [--device cpu]
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
from softlabels.losses import jaccard_metric_loss, soft_cross_entropy

SHAPES = {"cityscapes-like": (2, 19, 256, 512), "camvid-like": (8, 12, 180, 240)}


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


CASES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy (hard)": lambda x, y, s: F.cross_entropy(x, y),
    "jml (hard)": lambda x, y, s: jaccard_metric_loss(x, y),
    "one-hot jml (hard)": lambda x, y, s: one_hot_jml(x, y),
    "soft cross_entropy": lambda x, y, s: soft_cross_entropy(x, s),
    "jml (soft)": lambda x, y, s: jaccard_metric_loss(x, s),
}


def inputs(shape: tuple[int, int, int, int], device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """Logits (B, C, H, W), hard labels (B, H, W) and soft labels (B, C, H, W) on ``device``."""
    b, c, h, w = shape
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, c, h, w, generator=g)
    labels = torch.randint(0, c, (b, h, w), generator=g)
    soft = torch.softmax(torch.randn(b, c, h, w, generator=g), dim=1)
    return logits.to(device), labels.to(device), soft.to(device)


def step(case: str, logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor) -> None:
    x = logits.detach().requires_grad_()
    CASES[case](x, labels, soft).backward()


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
    step(case, *tensors)  # lazy initialisation must not count
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM, the peak resident set size, to the current size
    before = status_bytes("VmRSS")
    step(case, *tensors)
    print(json.dumps({"extra": max(status_bytes("VmHWM") - before, 0)}))


def gpu_extra_memory(case: str, tensors: tuple[torch.Tensor, ...]) -> int:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--memory-child", nargs=2, metavar=("CASE", "SHAPE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    device = args.device
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{device_name(device)}, median of {args.repeats}")
    for name, shape in SHAPES.items():
        tensors = inputs(shape, device)
        samples: dict[str, list[float]] = {case: [] for case in CASES}
        for case in CASES:
            step(case, *tensors)  # warm-up
        # Cases take turns within each repeat, so a slow spell of the machine hits all alike.
        for _ in range(args.repeats):
            for case in CASES:
                synchronize(device)
                start = time.perf_counter()
                step(case, *tensors)
                synchronize(device)
                samples[case].append(time.perf_counter() - start)
        times = {case: statistics.median(values) for case, values in samples.items()}
        if device.startswith("cuda"):
            memory = {case: gpu_extra_memory(case, tensors) for case in CASES}
        else:
            memory = {case: extra_memory(case, name, args.threads) for case in CASES}
        print(f"\n{name} {shape} (B, C, H, W)")
        print(f"  {'case':24s} {'time':>9s} {'extra MB':>9s}")
        for case in CASES:
            print(f"  {case:24s} {times[case] * 1e3:7.1f}ms {memory[case] / 2**20:9.1f}")
        hard_t = times["jml (hard)"] / times["cross_entropy (hard)"]
        hard_m = memory["jml (hard)"] / memory["one-hot jml (hard)"]
        soft_t = times["jml (soft)"] / times["soft cross_entropy"]
        print(f"  hard JML / cross-entropy time: {hard_t:.2f}x (target <= 1.0x)")
        print(f"  hard JML / one-hot JML extra memory: {hard_m:.2f}x (target <= 0.5x)")
        print(f"  soft JML / soft cross-entropy time: {soft_t:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
