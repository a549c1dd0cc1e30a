"""Time the first (decode) and second (cache hit) load of a dataset from its image files.

Target from the foundation issue: the second load of CIFAR-10's training split from the
JPEG ImageFolder takes under 2 s on two cores. Each load runs in a fresh process, as a user's
second run would.

    python benchmarks/data_cache.py --root DIR/cifar10 [--dataset cifar10] [--split train]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

LOAD = ("import sys; from softlabels.data import load_dataset; "
        "d = load_dataset(sys.argv[1], sys.argv[2], split=sys.argv[3], cache_dir=sys.argv[4]); "
        "print(len(d), tuple(d.images.shape))")


def timed_load(dataset: str, root: str, split: str, cache: str) -> tuple[float, str]:
    """Wall time of one load in a new interpreter, minus that interpreter's import time."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", LOAD, dataset, root, split, cache],
                         capture_output=True, text=True, check=True).stdout.strip()
    return time.perf_counter() - start, out


def import_time() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import softlabels.data"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="dataset folder (e.g. .../cifar10)")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    base = import_time()
    with tempfile.TemporaryDirectory() as cache:
        first, shape = timed_load(args.dataset, args.root, args.split, cache)
        second, _ = timed_load(args.dataset, args.root, args.split, cache)
    print(f"{args.dataset}/{args.split}: {shape}; import of softlabels.data alone {base:.2f} s")
    print(f"  first load (decode + write cache): {first - base:6.2f} s")
    print(f"  second load (cache hit):           {second - base:6.2f} s   "
          f"ratio {(second - base) / (first - base):.3f}x of the first; target < 2 s: "
          f"{'met' if second - base < 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
