"""Sections 1-4 of scaling_costs.py: per-image FLOPs, activations and operators counted on the
meta device, attack-step FLOPs, label-store bytes and host-side costs."""

from __future__ import annotations

import io
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from softlabels.models import create_model
from softlabels.robust import ABSLD, AttackConfig, TRADESObjective
from softlabels.store import LabelStore

# --------------------------------------------------------------------------------------------
# 1. Counting on the meta device
# --------------------------------------------------------------------------------------------

class OpCounter(TorchDispatchMode):
    """Counts ATen operators that are not views (a view launches no kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        if not getattr(func, "is_view", False) and func is not torch.ops.aten.detach.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _scalar_loss(out: Tensor | tuple[Tensor, ...]) -> Tensor:
    outs = out if isinstance(out, tuple) else (out,)
    return sum(o.float().mean() for o in outs)  # type: ignore[return-value]


def _saved_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes of the storages autograd saves in one training-mode forward (each counted once)."""
    seen: dict[int, int] = {}
    keep: list[Tensor] = []

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen[storage._cdata] = storage.nbytes()
        keep.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    keep.clear()
    return sum(seen.values())


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker, whose hooks refuse a leaf input under
    ``torch.autograd.grad`` (what every PGD step does); only the global total is needed."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _conv_backward_flops(grad_out_shape: Sequence[int], x_shape: Sequence[int],
                         w_shape: Sequence[int], _bias: Any, _stride: Any, _padding: Any,
                         _dilation: Any, transposed: bool, _output_padding: Any, _groups: Any,
                         output_mask: Sequence[bool], out_shape: Any = None, **_: Any) -> int:
    """Each requested gradient (input, weight) costs what the forward convolution costs.

    PyTorch's own formula counts the weight gradient of a grouped convolution as if it were
    dense (C times too much for MobileNetV2's depthwise layers); this one holds for any
    ``groups`` (the weight shape already carries the 1/groups of the input channels).
    """
    spatial = math.prod(x_shape[2:] if transposed else grad_out_shape[2:])
    forward = 2 * x_shape[0] * spatial * math.prod(w_shape)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def _flops(fn: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten.convolution_backward: _conv_backward_flops})
    counter.mod_tracker = _GlobalOnly()  # type: ignore[assignment]
    with counter:
        fn()
    return int(counter.get_total_flops())


@dataclass
class ModelCost:
    name: str
    where: str  # "library" or "built here"
    shape: tuple[int, int, int]
    params: int
    checkpoint_bytes: int
    bn_layers: int
    param_tensors: int
    fwd_flops: float  # per image
    train_flops: float  # forward + backward, per image
    act_fp32: float  # saved bytes per image
    act_bf16: float
    ops: int  # non-view ATen operators of one forward + backward


def measure_model(name: str, where: str, build: Callable[[], nn.Module],
                  shape: tuple[int, int, int]) -> ModelCost:
    torch.manual_seed(0)
    model = build()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    params = sum(p.numel() for p in model.parameters())
    bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    tensors = sum(1 for _ in model.parameters())
    model = model.to("meta").train()

    def batch(n: int, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.empty(n, *shape, device="meta", dtype=dtype)

    def train_step(n: int) -> None:
        _scalar_loss(model(batch(n))).backward()

    def forward(n: int) -> None:
        with torch.no_grad():
            model(batch(n))

    train = (_flops(lambda: train_step(4)) - _flops(lambda: train_step(2))) / 2
    model.eval()
    fwd = (_flops(lambda: forward(4)) - _flops(lambda: forward(2))) / 2
    model.train()
    act32 = (_saved_bytes(model, batch(4)) - _saved_bytes(model, batch(2))) / 2
    counter = OpCounter()
    with counter:
        train_step(2)
    model = model.to(torch.bfloat16)
    act16 = (_saved_bytes(model, batch(4, torch.bfloat16))
             - _saved_bytes(model, batch(2, torch.bfloat16))) / 2
    return ModelCost(name, where, shape, params, buffer.getbuffer().nbytes, bn, tensors, fwd,
                     train, act32, act16, counter.count)


# --------------------------------------------------------------------------------------------
# 2. Attack steps
# --------------------------------------------------------------------------------------------

def pgd_step_flops(model: nn.Module, shape: tuple[int, ...], device: str) -> float:
    """One PGD step per image: eval forward + gradient w.r.t. the input only."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def step(n: int) -> None:
        x = torch.zeros(n, *shape, device=device, requires_grad=True)
        logits = model(x)
        target = torch.full_like(logits, 1.0 / logits.shape[1])
        loss = F.kl_div(logits.log_softmax(1), target, reduction="sum")
        torch.autograd.grad(loss, x)

    try:
        return (_flops(lambda: step(4)) - _flops(lambda: step(2))) / 2
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.train()


def _eval_forward_flops(model: nn.Module, shape: tuple[int, ...], device: str) -> float:
    model.eval()

    def run(n: int) -> None:
        with torch.no_grad():
            model(torch.zeros(n, *shape, device=device))

    try:
        return (_flops(lambda: run(4)) - _flops(lambda: run(2))) / 2
    finally:
        model.train()


def _two_forward_train_flops(model: nn.Module, shape: tuple[int, ...], device: str) -> float:
    """Training part of TRADES / RSLAD / ABSLD: forwards on x and x_adv, one backward."""
    def run(n: int) -> None:
        a, b = (torch.zeros(n, *shape, device=device) for _ in range(2))
        (_scalar_loss(model(a)) + _scalar_loss(model(b))).backward()

    return (_flops(lambda: run(4)) - _flops(lambda: run(2))) / 2


def trades_flops(model: nn.Module, shape: tuple[int, ...], steps: int, device: str) -> float:
    """Per image: clean eval forward + ``steps`` PGD steps + two training forwards + backward."""
    return (_eval_forward_flops(model, shape, device)
            + steps * pgd_step_flops(model, shape, device)
            + _two_forward_train_flops(model, shape, device))


def absld_flops(student: nn.Module, teacher: nn.Module, shape: tuple[int, ...], steps: int,
                device: str) -> float:
    """Per image: teacher eval forward + ``steps`` PGD steps on the student + the student's two
    training forwards + backward."""
    return (_eval_forward_flops(teacher, shape, device)
            + steps * pgd_step_flops(student, shape, device)
            + _two_forward_train_flops(student, shape, device))


def check_composition() -> list[tuple[str, float, float]]:
    """(name, library's objective GFLOP/img, composed GFLOP/img) on small CPU models."""
    rows = []
    shape = (3, 16, 16)
    attack = AttackConfig(eps=8 / 255, alpha=2 / 255, steps=10)
    torch.manual_seed(0)
    wrn = create_model("wrn", 10, 3, 16, depth=10, widen_factor=1)
    objective = TRADESObjective(attack, generator=torch.Generator().manual_seed(0))

    def trades(n: int) -> None:
        x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(n))
        y = torch.arange(n) % 10
        sum(objective(wrn, x, y).values()).backward()

    library_trades = (_flops(lambda: trades(4)) - _flops(lambda: trades(2))) / 2
    rows.append(("TRADES, WRN-10-1", library_trades, trades_flops(wrn, shape, 10, "cpu")))
    student = create_model("convnet", 10, 3, 16, width=8, depth=2)
    teacher = create_model("wrn", 10, 3, 16, depth=10, widen_factor=1)
    distiller = ABSLD(student, teacher, attack, 10, generator=torch.Generator().manual_seed(0))
    distiller(torch.rand(2, *shape), torch.arange(2))  # the first call also checks classes

    def absld(n: int) -> None:
        x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(n))
        sum(distiller(x, torch.arange(n) % 10).values()).backward()

    library_absld = (_flops(lambda: absld(4)) - _flops(lambda: absld(2))) / 2
    rows.append(("ABSLD, ConvNet-D2 w8 from WRN-10-1", library_absld,
                 absld_flops(student, teacher, shape, 10, "cpu")))
    return rows


# --------------------------------------------------------------------------------------------
# 3. Label stores, 4. host-side costs
# --------------------------------------------------------------------------------------------

def label_store_bytes(classes: int = 1000, n: int = 100) -> dict[str, tuple[float, float]]:
    """{mode: (label + index bytes per image, file bytes per image)} measured on ``n`` rows."""
    torch.manual_seed(0)
    store = LabelStore(torch.arange(n), torch.randn(n, classes).softmax(1))
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode, k in (("fp32", None), ("fp16", None), ("topk", 10), ("topk", 100)):
            report = store.save(Path(folder) / f"{mode}{k}.safetensors", mode, k)
            key = mode if k is None else f"top-{k}"
            out[key] = ((report.label_bytes + report.index_bytes) / n,
                        (report.file_bytes or 0) / n)
    return out


def _smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """A photo-like uint8 image: a few octaves of smooth noise plus fine grain."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), dtype=np.float32)
    for cells, weight in ((4, 0.5), (16, 0.3), (64, 0.15)):
        coarse = torch.from_numpy(rng.random((1, 3, cells, cells * width // height),
                                             dtype=np.float32))
        fine = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
        image += weight * fine[0].permute(1, 2, 0).numpy()
    image += 0.05 * rng.random((height, width, 3), dtype=np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def host_costs() -> dict[str, float]:
    from PIL import Image

    from softlabels.data import stream_dataset
    from softlabels.data.sources.imagefolder import decode_image
    from softlabels.metrics import CalibrationError, SegmentationMetrics

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sizes = []
        for index in range(24):
            target = root / "train" / f"c{index % 2}" / f"{index:03d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_smooth_image(256, 256, index)).save(target, quality=90)
            sizes.append(target.stat().st_size)
        dataset = stream_dataset("imagefolder", root, "train")
        times = []
        for index in range(len(dataset)):
            began = time.perf_counter()
            dataset[index]
            times.append(time.perf_counter() - began)
        out["jpeg256_seconds"] = statistics.median(times)
        out["jpeg256_bytes"] = statistics.mean(sizes)
        png, mask_png = root / "city.png", root / "mask.png"
        Image.fromarray(_smooth_image(1024, 2048, 99)).save(png)
        rng = np.random.default_rng(0)
        blocks = rng.integers(0, 19, (32, 64), dtype=np.uint8)
        Image.fromarray(np.kron(blocks, np.ones((32, 32), dtype=np.uint8))).save(mask_png)
        out["png_bytes"] = float(png.stat().st_size)
        for key, path in (("png_seconds", png), ("mask_seconds", mask_png)):
            times = []
            for _ in range(3):
                began = time.perf_counter()
                array = decode_image(str(path))
                if array.ndim == 3:  # as StreamingSegmentation: CHW float32, int64 masks
                    torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))
                                     ).float().div_(255.0)
                else:
                    torch.from_numpy(array.astype(np.int64))
                times.append(time.perf_counter() - began)
            out[key] = min(times)
    # What the engine does to every batch read from a Dataset, in the main process before
    # the copy to the GPU (check_batch: finite, in [0, 1], one target per image), and, for
    # comparison, the three passes it made until it switched to one aminmax.
    from softlabels.engine.data import check_batch

    def former_check(x: Tensor, y: Tensor, where: str) -> None:
        bool(torch.isfinite(x).all()), float(x.min()), float(x.max())

    for key, shape in (("check_imagenet_seconds", (256, 3, 224, 224)),
                       ("check_city_seconds", (8, 3, 1024, 2048))):
        batch = torch.rand(shape)
        targets = torch.zeros(shape[0], dtype=torch.int64)
        for prefix, check in (("", check_batch), ("former_", former_check)):
            times = []
            for _ in range(3):
                began = time.perf_counter()
                check(batch, targets, "a batch")
                times.append(time.perf_counter() - began)
            out[prefix + key] = min(times)
        del batch
    torch.manual_seed(0)
    probs = torch.rand(1, 19, 1024, 2048).softmax(1)
    target = torch.randint(0, 19, (1, 1024, 2048))
    metrics, calibration = SegmentationMetrics(19, ignore_index=255), CalibrationError(
        ignore_index=255)
    began = time.perf_counter()
    metrics.update(probs, target)
    calibration.update(probs, target)
    out["seg_metrics_seconds"] = time.perf_counter() - began
    return out

