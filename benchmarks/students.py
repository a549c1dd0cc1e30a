"""Throughput of vectorised vs sequential student training (``train_students``).

Trains S ConvNet students (CIFAR-shaped random data, 10 classes, soft labels, batch 256, so at
IPC <= 25 one step is one epoch) for the same number of steps with each backend, in the same
process and from the same initial weights: ``sequential`` (one student after the other),
``vmap`` (torch.func.vmap over functional_call) and ``grouped`` (the ConvNet as one network of
grouped convolutions). Prints student-epochs/s, images/s, the speed-up over the sequential loop
(target: >= 2x at IPC <= 10 on two cores) and the largest weight difference to the sequential
students (same computation up to floating-point summation order, so it should be tiny after a
few steps; DSA's draws are identical in every backend).

    python benchmarks/students.py [--students 5] [--ipc 1 10] [--width 128 64] [--steps 10]
                                  [--threads 2] [--repeats 2] [--no-dsa] [--device cpu]
                                  [--quick]

Time is the best of ``--repeats`` runs after one untimed warm-up step per backend; the backends
take turns so that a change in machine load hits them alike.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from _machine import device_name, synchronize
from softlabels.data.dsa import DSA
from softlabels.distill.students import train_students
from softlabels.engine import TrainConfig
from softlabels.models import create_model

BACKENDS = ("sequential", "vmap", "grouped")
NUM_CLASSES = 10


def run_once(backend: str, width: int, images: torch.Tensor, targets: torch.Tensor,
             seeds: list[int], steps: int, dsa: bool, device: str) -> tuple[float, list[dict]]:
    """Seconds to train the students for ``steps`` epochs, and their state dicts."""
    def build(seed: int) -> torch.nn.Module:
        return create_model("convnet", NUM_CLASSES, 3, 32, width=width,
                            mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))

    config = TrainConfig(epochs=steps, batch_size=256, lr=0.01, momentum=0.9,
                         weight_decay=5e-4, schedule="constant")
    synchronize(device)
    start = time.perf_counter()
    result = train_students(build, images, targets, config, seeds,
                            augment=DSA() if dsa else None, device=device,
                            vectorize=backend != "sequential",
                            backend="auto" if backend == "sequential" else backend,
                            show_progress=False)
    synchronize(device)
    return time.perf_counter() - start, result.state_dicts


def max_difference(a: list[dict], b: list[dict]) -> float:
    return max(float((x[k] - y[k]).abs().max()) for x, y in zip(a, b, strict=True) for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=5)
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--width", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--steps", type=int, default=10, help="training epochs (= steps)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-dsa", action="store_true", help="train without DSA")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run (3 students, IPC 1, width 16, 2 steps) to check the "
                             "script works; its numbers mean nothing")
    args = parser.parse_args()
    if args.quick:
        args.students, args.ipc, args.width, args.steps, args.repeats = 3, [1], [16], 2, 1
    torch.set_num_threads(args.threads)
    seeds = list(range(args.students))
    dsa = not args.no_dsa
    print(f"$ python {' '.join(sys.argv)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{device_name(args.device)}; "
          f"{args.students} ConvNet-D3 students, 32x32x3, {NUM_CLASSES} classes, "
          f"{args.steps} steps, DSA {'on' if dsa else 'off'}, best of {args.repeats}")
    print(f"{'width':>5} {'ipc':>4} {'backend':>10} {'seconds':>8} {'stud-ep/s':>10} "
          f"{'images/s':>9} {'speed-up':>8} {'max |dw|':>9}")
    for width in args.width:
        for ipc in args.ipc:
            generator = torch.Generator().manual_seed(ipc)
            count = ipc * NUM_CLASSES
            images = torch.rand(count, 3, 32, 32, generator=generator)
            targets = torch.softmax(2 * torch.randn(count, NUM_CLASSES, generator=generator), 1)
            for backend in BACKENDS:  # warm-up: oneDNN primitives, allocator, first-call costs
                run_once(backend, width, images, targets, seeds, 1, dsa, args.device)
            best = dict.fromkeys(BACKENDS, float("inf"))
            weights: dict[str, list[dict]] = {}
            for _ in range(args.repeats):
                for backend in BACKENDS:
                    seconds, weights[backend] = run_once(backend, width, images, targets,
                                                         seeds, args.steps, dsa, args.device)
                    best[backend] = min(best[backend], seconds)
            for backend in BACKENDS:
                seconds = best[backend]
                student_epochs = args.students * args.steps / seconds
                print(f"{width:5d} {ipc:4d} {backend:>10} {seconds:8.3f} {student_epochs:10.2f} "
                      f"{student_epochs * count:9.1f} "
                      f"{best['sequential'] / seconds:7.2f}x "
                      f"{max_difference(weights[backend], weights['sequential']):9.2e}")


if __name__ == "__main__":
    main()
