"""What each sweep executor costs, and what two workers buy on this machine.

1. Scheduling overhead: a sweep of ``--cells`` empty cells (a study whose ``run_cell`` returns
   at once) under ``serial``, ``processes`` and ``ray``: a sweep of 1 cell and one of
   ``--cells``, each with a fresh executor (Ray: in one cluster started first); their
   difference per extra cell is what the driver and the executor add to every cell (ship the
   task, return the row, append it durably, rewrite the report).
2. Real cells: a ``softlabels train`` sweep of ``--real-cells`` digit students (one label mode
   and seed each) under ``serial`` (one cell at a time, all threads) and ``processes`` with 2
   workers of 1 thread each; prints wall times and the ratio. On two cores this can only show
   whether two 1-thread cells beat one 2-thread cell: the answer depends on how well one cell
   uses two threads, not on the executor.

    python benchmarks/sweep.py [--cells 50] [--real-cells 4] [--epochs 40] [--skip-ray]
                               [--quick]

The rows of the real sweep are compared between the executors (they must be identical).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

import _noop_study
from _machine import device_name
from softlabels.results import ResultsLog
from softlabels.studies.executors import ExecutorConfig, runtime_env
from softlabels.studies.registry import STUDIES, register_study, run_study


def _seconds(study: str, executor: ExecutorConfig, out: Path, **fields: object) -> float:
    """Wall seconds of one sweep with a fresh executor (pool or cluster start included)."""
    began = time.perf_counter()
    run_study(study, executor=executor, show_progress=False, out=str(out), **fields)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--real-cells", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--quick", action="store_true", help="10 empty cells, 2 real cells")
    args = parser.parse_args()
    if args.quick:
        args.cells, args.real_cells, args.epochs = 10, 2, 10
    register_study(_noop_study.STUDY)
    executors = {"serial": ExecutorConfig(),
                 "processes": ExecutorConfig(executor="processes", workers=2, cell_cpus=1)}
    if not args.skip_ray and importlib.util.find_spec("ray") is not None:
        executors["ray"] = ExecutorConfig(executor="ray", workers=2, cell_cpus=1)
    print(f"machine: {device_name('cpu')}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"\n1. empty cells: a sweep of 1 cell (start-up and one cell) and of {args.cells}")
        print(f"{'executor':<10} {'1 cell s':>9} {f'{args.cells} cells s':>11} "
              f"{'ms / extra cell':>16}")
        for name, executor in executors.items():
            session = None
            if name == "ray":  # one cluster for both sweeps: its start is not a cell's cost
                import ray

                began = time.perf_counter()
                ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                         log_to_driver=False, runtime_env=runtime_env(sys.path))
                session = time.perf_counter() - began
            one = _seconds("noop", executor, root / f"noop1-{name}", cells=1)
            many = _seconds("noop", executor, root / f"noop-{name}", cells=args.cells)
            per_cell = 1000 * (many - one) / (args.cells - 1)
            print(f"{name:<10} {one:>9.2f} {many:>11.2f} {per_cell:>16.1f}"
                  + (f"  (cluster start {session:.1f} s)" if session is not None else ""))
            if session is not None:
                ray.shutdown()

        print(f"\n2. {args.real_cells} real cells (digits students, {args.epochs} epochs)")
        seeds = tuple(range(args.real_cells))
        fields = {"labels": ("hard",), "seeds": seeds, "ipc": 20,
                  "epochs": args.epochs, "model_args": ("width=32",), "device": "cpu"}
        timings, rows = {}, {}
        for name in ("serial", "processes"):
            out = root / f"train-{name}"
            timings[name] = _seconds("train", executors[name], out, **fields)
            rows[name] = [{k: v for k, v in r.items() if k != "seconds"}
                          for r in ResultsLog(out / "results.jsonl").rows()]
        print(f"serial (1 cell at a time, {torch.get_num_threads()} threads): "
              f"{timings['serial']:.1f} s")
        print(f"processes (2 workers x 1 thread): {timings['processes']:.1f} s")
        print(f"speed-up of processes over serial: "
              f"{timings['serial'] / timings['processes']:.2f}x")
        pairs = zip(rows["serial"], rows["processes"], strict=True)
        gaps = [abs(a["accuracy"] - b["accuracy"]) for a, b in pairs]
        print(f"largest accuracy difference between the two: {max(gaps):.4f} (the cells ran "
              "with 2 and with 1 thread, so their float sums differ; with the same "
              "--cell-cpus the rows are identical, see tests/test_sweep.py)")
    STUDIES.pop("noop", None)
    sys.exit(0)


if __name__ == "__main__":
    main()
