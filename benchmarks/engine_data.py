"""How the engine reads data: tensors vs datasets vs loaders, streaming, ranks, precisions.

1. ``fit`` for one epoch of a ConvNet (width 32, CIFAR-shaped random images, batch 256) from
   tensors, from a plain map-style Dataset (in this process, and with 2 DataLoader workers)
   and from a user's DataLoader; ratio to the tensor path (goal <= 1.1x).
2. ``--data-root DIR`` (a CIFAR-10 ImageFolder tree): a streamed epoch over the JPEGs of the
   test split, images/s with 0, 1 and 2 DataLoader workers, decoding only (no model).
3. ``--ranks``: one epoch under 2 gloo ranks of 1 thread each against 1 process of 1 and of 2
   threads (on two cores the ranks can at best match the 2-thread process).
4. ``--device cuda``: a CIFAR-10 ConvNet-D3 width-128 expert epoch with DSA (50,000 images,
   batch 256): fp32, bf16, channels-last, compile, and the data on the GPU vs read by a
   DataLoader; seconds per epoch (goal <= 2 s on an H200; airbench reaches 94% on CIFAR-10 in
   about 3-4 s of A100 time, so about 10 epochs of ResNet-ish work).

    python benchmarks/engine_data.py [--images 4096] [--repeats 3] [--data-root DIR] [--ranks]
                                     [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset, TensorDataset

from _machine import device_name, synchronize
from softlabels.data import DSA, stream_dataset
from softlabels.engine import TrainConfig, fit
from softlabels.models import create_model


class Items(Dataset):
    """A map-style dataset over tensors, read item by item (no tensor shortcut)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def model(width: int = 32) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("convnet", 10, 3, 32, width=width, mean=(0.5,) * 3, std=(0.25,) * 3)


def epoch_seconds(data: object, targets: torch.Tensor | None, config: TrainConfig,
                  device: str, repeats: int, width: int = 32, augment: object = None,
                  **options: object) -> float:
    """Best of ``repeats`` one-epoch fits (a fresh model each)."""
    best = float("inf")
    for _ in range(repeats):
        net = model(width)
        synchronize(device)
        began = time.perf_counter()
        fit(net, data, targets, config, device=device, augment=augment,  # type: ignore[arg-type]
            show_progress=False, **options)
        synchronize(device)
        best = min(best, time.perf_counter() - began)
    return best


def sources(images: int, repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(images, 3, 32, 32, generator=g), torch.randint(0, 10, (images,),
                                                                      generator=g)
    config = TrainConfig(epochs=1, batch_size=256, lr=0.01)
    epoch_seconds(x[:512], y[:512], config, "cpu", 1)  # warm-up: kernels chosen, pools made
    base = epoch_seconds(x, y, config, "cpu", repeats)
    print(f"\n1. one epoch, {images} images, {torch.get_num_threads()} threads")
    print(f"{'source':<34} {'seconds':>8} {'ratio':>6}")
    print(f"{'tensors':<34} {base:>8.2f} {1.0:>6.2f}")
    for name, data, options in (
            ("Dataset, in this process", Items(x, y), {}),
            ("Dataset, 2 DataLoader workers", Items(x, y), {"num_workers": 2}),
            ("a user's DataLoader (shuffle)", DataLoader(TensorDataset(x, y), batch_size=256,
                                                          shuffle=True), {})):
        seconds = epoch_seconds(data, None, config, "cpu", repeats, **options)
        print(f"{name:<34} {seconds:>8.2f} {seconds / base:>6.2f}")


def streaming(root: str) -> None:
    data = stream_dataset("cifar10", root, "test")
    print(f"\n2. streaming {len(data)} JPEGs of {root}/test (decode and collate, no model)")
    for workers in (0, 1, 2):
        loader = DataLoader(data, batch_size=256, num_workers=workers,
                            persistent_workers=workers > 0)
        began = time.perf_counter()
        count = sum(int(x.shape[0]) for x, _ in loader)
        seconds = time.perf_counter() - began
        print(f"workers {workers}: {count / seconds:>8.0f} images/s ({seconds:.1f} s)")


def _rank(rank: int, port: int, images: int, queue: mp.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(images, 3, 32, 32, generator=g), torch.randint(0, 10, (images,),
                                                                      generator=g)
    seconds = epoch_seconds(x, y, TrainConfig(epochs=1, batch_size=256), "cpu", 2)
    if rank == 0:
        queue.put(seconds)
    dist.destroy_process_group()


def ranks(images: int) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(images, 3, 32, 32, generator=g), torch.randint(0, 10, (images,),
                                                                      generator=g)
    config = TrainConfig(epochs=1, batch_size=256)
    threads = torch.get_num_threads()
    print(f"\n3. one epoch, {images} images: ranks against one process")
    for count in (1, 2):
        torch.set_num_threads(count)
        print(f"1 process, {count} thread(s): {epoch_seconds(x, y, config, 'cpu', 2):.2f} s")
    torch.set_num_threads(threads)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_rank, args=(r, port, images, queue)) for r in range(2)]
    for worker in workers:
        worker.start()
    seconds = queue.get(timeout=600)
    for worker in workers:
        worker.join()
    print(f"2 gloo ranks x 1 thread: {seconds:.2f} s")


def gpu(repeats: int, device: str) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(50000, 3, 32, 32, generator=g), torch.randint(0, 10, (50000,),
                                                                     generator=g)
    base = TrainConfig(epochs=1, batch_size=256, lr=1e-3, momentum=0.0, weight_decay=0.0)
    print(f"\n4. CIFAR-10 ConvNet-D3 width 128 expert epoch with DSA on {device_name(device)}")
    print(f"{'setting':<32} {'s / epoch':>9}")
    cases = (("fp32", {}), ("bf16", {"precision": "bf16"}),
             ("bf16 + channels-last", {"precision": "bf16", "channels_last": True}),
             ("bf16 + channels-last + compile", {"precision": "bf16", "channels_last": True,
                                                 "compile": True}))
    for name, changes in cases:
        config = TrainConfig(**{**base.to_dict(), **changes})
        seconds = epoch_seconds(x, y, config, device, repeats, width=128, augment=DSA())
        print(f"{name:<32} {seconds:>9.2f}")
    config = TrainConfig(**{**base.to_dict(), "precision": "bf16"})
    seconds = epoch_seconds(Items(x, y), None, config, device, repeats, width=128,
                            augment=DSA(), num_workers=4)
    print(f"{'bf16, DataLoader (4 workers)':<32} {seconds:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--ranks", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="1024 images, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats = 1024, 1
    print(f"machine: {device_name(args.device)}, torch {torch.__version__}")
    if args.device.startswith("cuda"):
        gpu(args.repeats, args.device)
        sys.exit(0)
    sources(args.images, args.repeats)
    if args.data_root:
        streaming(args.data_root)
    if args.ranks:
        ranks(args.images)


if __name__ == "__main__":
    main()
