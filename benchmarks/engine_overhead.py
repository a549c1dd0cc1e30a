"""Time ``softlabels.engine.fit`` against a bare PyTorch loop doing the same training.

Both train the same ConvNet from the same initial weights on the same data order for the same
number of epochs; the ratio shows what the engine's checks, bookkeeping and checkpointing
cost. Also times the ``softlabels train --quick`` command end to end (target: under 30 s on
two cores).

    python benchmarks/engine_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from softlabels.data import load_dataset
from softlabels.engine import TrainConfig, fit
from softlabels.models import create_model


def bare_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
              config: TrainConfig) -> None:
    """The loop a user would write by hand: SGD, cosine schedule, no checks."""
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], config.batch_size):
            batch = order[start:start + config.batch_size]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = load_dataset("digits", split="train")
    config = TrainConfig(epochs=5, batch_size=128, lr=0.05)
    torch.manual_seed(0)
    initial = create_model("convnet", 10, 1, 8, width=64)
    timings: dict[str, list[float]] = {"bare loop": [], "fit (with checkpoints)": []}
    for _ in range(args.repeats):
        model = copy.deepcopy(initial)
        start = time.perf_counter()
        bare_loop(model, data.images, data.labels, config)
        timings["bare loop"].append(time.perf_counter() - start)
        model = copy.deepcopy(initial)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            fit(model, data.images, data.labels, config, checkpoint_dir=folder, device="cpu",
                show_progress=False)
            timings["fit (with checkpoints)"].append(time.perf_counter() - start)
    base = min(timings["bare loop"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; digits train "
          f"({len(data)} images), convnet width 64, {config.epochs} epochs; best of "
          f"{args.repeats}")
    for name, values in timings.items():
        print(f"  {name:24s} {min(values):7.3f} s   ratio {min(values) / base:5.2f}x")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "softlabels.cli", "train", "--quick", "--out",
                        folder], check=True, capture_output=True)
        wall = time.perf_counter() - start
    print(f"  softlabels train --quick (end to end, incl. start-up): {wall:.1f} s "
          f"(target < 30 s: {'met' if wall < 30 else 'NOT met'})")


if __name__ == "__main__":
    main()
