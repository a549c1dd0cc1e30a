"""PGD time: ``softlabels.attacks.pgd`` against ``torchattacks.PGD`` on the same model and batch.

Both run L-inf PGD with cross-entropy, no random start (so they compute the same iterates), on
a ConvNet-D3 in eval mode over a CIFAR-shaped batch. Prints the best of ``--repeats`` timings
per implementation (taking turns, after one warm-up each), the ratio ours / theirs (target
<= 1.05x) and the largest difference between the two adversarial batches.

    python benchmarks/attacks.py [--batch 128] [--steps 10] [--width 64] [--repeats 5]
                                 [--threads 2] [--device cpu]

torchattacks is a dev extra installed without dependencies (``make setup`` does it).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torchattacks

from _machine import device_name, synchronize
from softlabels.attacks import pgd
from softlabels.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = args.device
    model = create_model("convnet", 10, 3, 32, width=args.width).eval().to(device)
    x = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=torch.Generator().manual_seed(2)).to(device)
    eps, alpha = 8 / 255, 2 / 255
    theirs_attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=args.steps,
                                     random_start=False)
    runs = {
        "softlabels": lambda: pgd(model, x, y, eps, alpha, args.steps, random_start=False),
        "torchattacks": lambda: theirs_attack(x, y),
    }
    outputs = {name: run() for name, run in runs.items()}  # warm-up
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeats):
        for name, run in runs.items():
            synchronize(device)
            began = time.perf_counter()
            outputs[name] = run()
            synchronize(device)
            best[name] = min(best[name], time.perf_counter() - began)
    print(f"$ python {' '.join(sys.argv)}")
    print(f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, "
          f"{torch.get_num_threads()} threads, {device_name(device)}; "
          f"ConvNet-D3 width {args.width}, "
          f"batch {args.batch}x3x32x32, PGD-{args.steps}, best of {args.repeats}")
    for name, seconds in best.items():
        print(f"{name:>13}: {seconds * 1000:8.1f} ms")
    ratio = best["softlabels"] / best["torchattacks"]
    difference = float((outputs["softlabels"] - outputs["torchattacks"]).abs().max())
    print(f"ratio softlabels / torchattacks: {ratio:.3f}x (target <= 1.05x); "
          f"max |difference| {difference:.2e}")


if __name__ == "__main__":
    main()
