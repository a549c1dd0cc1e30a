"""Per-image costs behind docs/scaling.md, and the cost model built on them.

Measured here, on the CPU, cheaply:

1. Per model and input: GFLOP per image of a forward and of a forward + backward
   (``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products only;
   norms, activations and pooling are memory-bound and not counted), the activations autograd
   saves per image (``saved_tensors_hooks``, storages counted once, batch 4 minus batch 2, so
   weights cancel) in fp32 and with the model and input cast to bf16 (an estimate of
   autocast, which keeps a few tensors in fp32), parameters, the bytes of ``torch.save`` of
   the state dict (an ``epoch_XXXX.pt`` file), BatchNorm layers (SyncBatchNorm collectives
   under NCCL) and the non-view ATen operators of one forward + backward (each launches at
   least one kernel on a GPU). Counting runs on the meta device: no arithmetic is done, so
   DeepLabV3-ResNet101 at 512x1024 costs milliseconds.
2. Attack steps: FLOPs of a TRADES step and of an ABSLD step, composed on the meta device
   from an eval forward, PGD steps (forward + gradient w.r.t. the input only) and the
   training forwards + backward, checked against the library's own ``TRADESObjective`` and
   ``ABSLD`` on small models on the CPU.
3. Label stores: exact bytes of ``LabelStore.report`` for 1000 classes.
4. Host-side costs: one ``StreamingImageFolder`` item (a 256x256 JPEG), one 1024x2048 PNG
   decode (Cityscapes-sized), ``SegmentationMetrics`` + ``CalibrationError`` updates for one
   1024x2048 image with 19 classes (what ``evaluate_segmentation`` does per image, on the
   host), and ``check_batch`` (every batch read from a Dataset, in the main process: one
   ``torch.aminmax`` pass) next to the check it replaced (``isfinite`` + ``min`` + ``max``).
   Synthetic images: real photographs decode at a different speed (take +-2x).

Then the cost model (section 5): the assumptions are the constants below; every number of
docs/scaling.md's tables is printed here. Not in the library and built here by hand: the
ImageNet ResNet-18 (torchvision layout), dilated ResNet-d backbones with DeepLabV3 (ASPP) and
U-Net decoders (the JDTLosses layout).

    OMP_NUM_THREADS=1 python benchmarks/scaling_costs.py [--skip-host]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import sys
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

from _machine import cpu_name
from softlabels.models import create_model
from softlabels.robust import ABSLD, AttackConfig, TRADESObjective
from softlabels.store import LabelStore

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
# Models the library does not have
# --------------------------------------------------------------------------------------------

def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1
                  ) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, dilation * (k // 2), dilation,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, dilation: int,
                 shortcut: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, width, 3, stride, dilation)
        self.conv2 = nn.Sequential(nn.Conv2d(width, width, 3, 1, dilation, dilation, bias=False),
                                   nn.BatchNorm2d(width))
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.conv2(self.conv1(x)) + skip)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, dilation: int,
                 shortcut: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, width, 1)
        self.conv2 = _conv_bn_relu(width, width, 3, stride, dilation)
        self.conv3 = nn.Sequential(nn.Conv2d(width, width * 4, 1, bias=False),
                                   nn.BatchNorm2d(width * 4))
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.conv3(self.conv2(self.conv1(x))) + skip)


class ResNet(nn.Module):
    """torchvision's ResNet (``deep=False``) or timm's ResNet-d (deep 3x3 stem, average-pool
    shortcuts) with an optional output stride of 8 (dilated last two stages). ``features``
    returns the stem output and the four stages, as timm's ``features_only``."""

    def __init__(self, block: type[Basic | Bottleneck], layers: Sequence[int], *, deep: bool,
                 output_stride: int = 32, num_classes: int | None = None) -> None:
        super().__init__()
        if deep:
            self.stem = nn.Sequential(_conv_bn_relu(3, 32, 3, 2), _conv_bn_relu(32, 32),
                                      _conv_bn_relu(32, 64))
        else:
            self.stem = _conv_bn_relu(3, 64, 7, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        cin, dilation, stages = 64, 1, []
        for index, (width, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if index == 0 else 2
            if output_stride == 8 and index >= 2:
                stride, dilation = 1, dilation * 2
            blocks = []
            for number in range(count):
                s = stride if number == 0 else 1
                out = width * block.expansion
                shortcut = None
                if number == 0 and (s != 1 or cin != out):
                    pool: nn.Module = nn.AvgPool2d(2, s, ceil_mode=True, count_include_pad=False) \
                        if deep and s > 1 else nn.Identity()
                    shortcut = nn.Sequential(pool, nn.Conv2d(cin, out, 1, 1 if deep else s,
                                                             bias=False), nn.BatchNorm2d(out))
                blocks.append(block(cin, width, s, dilation, shortcut))
                cin = out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.channels = [64] + [w * block.expansion for w in (64, 128, 256, 512)]
        self.fc = nn.Linear(cin, num_classes) if num_classes else None

    def features(self, x: Tensor) -> list[Tensor]:
        out = [self.stem(x)]
        x = self.pool(out[0])
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        assert self.fc is not None
        return self.fc(self.features(x)[-1].mean((2, 3)))


def imagenet_resnet18() -> nn.Module:
    """torchvision's ``resnet18`` layout (7x7 stride-2 stem, max-pool), 1000 classes."""
    return ResNet(Basic, (2, 2, 2, 2), deep=False, num_classes=1000)


def _backbone(depth: int, output_stride: int) -> ResNet:
    block, layers = {18: (Basic, (2, 2, 2, 2)), 50: (Bottleneck, (3, 4, 6, 3)),
                     101: (Bottleneck, (3, 4, 23, 3))}[depth]
    return ResNet(block, layers, deep=True, output_stride=output_stride)


class DeepLabV3(nn.Module):
    """JDTLosses' DeepLabV3: ResNet-d at output stride 8, ASPP (512 channels, rates 12/24/36
    and image pooling), a 3x3 bottleneck, a 1x1 head upsampled to the input, and the auxiliary
    head on stage 3 (3x3 conv to 256 channels, 1x1 head)."""

    def __init__(self, depth: int, num_classes: int = 19) -> None:
        super().__init__()
        self.backbone = _backbone(depth, 8)
        c4, c3 = self.backbone.channels[-1], self.backbone.channels[-2]
        self.pool_branch = _conv_bn_relu(c4, 512, 1)
        self.branches = nn.ModuleList([_conv_bn_relu(c4, 512, 1)] + [
            _conv_bn_relu(c4, 512, 3, 1, rate) for rate in (12, 24, 36)])
        self.bottleneck = _conv_bn_relu(5 * 512, 512)
        self.head = nn.Conv2d(512, num_classes, 1)
        self.aux = nn.Sequential(_conv_bn_relu(c3, 256), nn.Conv2d(256, num_classes, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.backbone.features(x)
        top = feats[-1]
        pooled = self.pool_branch(top.mean((2, 3), keepdim=True)).expand(-1, -1, *top.shape[2:])
        mixed = self.bottleneck(torch.cat([pooled] + [b(top) for b in self.branches], 1))
        size = x.shape[2:]
        main = F.interpolate(self.head(mixed), size=size, mode="bilinear")
        return main, F.interpolate(self.aux(feats[-2]), size=size, mode="bilinear")


class UNetResNet(nn.Module):
    """JDTLosses' U-Net: ResNet-d at output stride 32, five upsampling blocks of two 3x3
    ConvBNReLU (1024, 512, 256, 128, 64 channels) with skips, 1x1 head, auxiliary head."""

    def __init__(self, depth: int, num_classes: int = 19) -> None:
        super().__init__()
        self.backbone = _backbone(depth, 32)
        channels = self.backbone.channels[::-1]  # stage 4, 3, 2, 1, stem
        outs = [64 * m for m in (16, 8, 4, 2, 1)]
        ins = [channels[0], *outs[:-1]]
        skips = [*channels[1:], 0]
        self.blocks = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(i + s, o), _conv_bn_relu(o, o))
            for i, s, o in zip(ins, skips, outs, strict=True))
        self.head = nn.Conv2d(64, num_classes, 1)
        self.aux = nn.Sequential(_conv_bn_relu(self.backbone.channels[-2], 256),
                                 nn.Conv2d(256, num_classes, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.backbone.features(x)
        out, skips = feats[-1], feats[-2::-1]
        for index, block in enumerate(self.blocks):
            out = F.interpolate(out, scale_factor=2.0, mode="bilinear")
            if index < len(skips):
                out = torch.cat([out, skips[index]], 1)
            out = block(out)
        aux = F.interpolate(self.aux(feats[-2]), size=x.shape[2:], mode="bilinear")
        return self.head(out), aux


# --------------------------------------------------------------------------------------------
# 1. Counting on the meta device
# --------------------------------------------------------------------------------------------

class _OpCounter(TorchDispatchMode):
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
    counter = _OpCounter()
    with counter:
        train_step(2)
    model = model.to(torch.bfloat16)
    act16 = (_saved_bytes(model, batch(4, torch.bfloat16))
             - _saved_bytes(model, batch(2, torch.bfloat16))) / 2
    return ModelCost(name, where, shape, params, buffer.getbuffer().nbytes, bn, tensors, fwd,
                     train, act32, act16, counter.count)


def library(name: str, classes: int, size: int | tuple[int, int], **kwargs: Any
            ) -> Callable[[], nn.Module]:
    return lambda: create_model(name, classes, 3, size, **kwargs)


MODELS: list[tuple[str, str, Callable[[], nn.Module], tuple[int, int, int]]] = [
    ("ConvNet-D3 w128", "library", library("convnet", 10, 32), (3, 32, 32)),
    ("ConvNet-D3 w64", "library", library("convnet", 10, 32, width=64), (3, 32, 32)),
    ("ResNet-18 (CIFAR stem)", "library", library("resnet18", 10, 32), (3, 32, 32)),
    ("MobileNetV2", "library", library("mobilenetv2", 10, 32), (3, 32, 32)),
    ("WRN-34-10", "library", library("wrn", 10, 32), (3, 32, 32)),
    ("ResNet-18 (CIFAR stem)", "library", library("resnet18", 1000, 224), (3, 224, 224)),
    ("ResNet-18 (ImageNet)", "built here", imagenet_resnet18, (3, 224, 224)),
    ("UNet w16 d3", "library", library("unet", 19, (512, 1024)), (3, 512, 1024)),
    ("DeepLabV3-R18d", "built here", lambda: DeepLabV3(18), (3, 512, 1024)),
    ("DeepLabV3-R50d", "built here", lambda: DeepLabV3(50), (3, 512, 1024)),
    ("DeepLabV3-R101d", "built here", lambda: DeepLabV3(101), (3, 512, 1024)),
    ("UNet-R50d", "built here", lambda: UNetResNet(50), (3, 512, 1024)),
]


# --------------------------------------------------------------------------------------------
# 2. Attack steps
# --------------------------------------------------------------------------------------------

def _pgd_step_flops(model: nn.Module, shape: tuple[int, ...], device: str) -> float:
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
            + steps * _pgd_step_flops(model, shape, device)
            + _two_forward_train_flops(model, shape, device))


def absld_flops(student: nn.Module, teacher: nn.Module, shape: tuple[int, ...], steps: int,
                device: str) -> float:
    """Per image: teacher eval forward + ``steps`` PGD steps on the student + the student's two
    training forwards + backward."""
    return (_eval_forward_flops(teacher, shape, device)
            + steps * _pgd_step_flops(student, shape, device)
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


def _both(fn: Callable[[int], float]) -> tuple[float, float]:
    """(optimistic, pessimistic) of ``fn(case)``."""
    return fn(0), fn(1)


def _ms(pair: tuple[float, float]) -> str:
    return f"{pair[0] * 1e3:.1f}-{pair[1] * 1e3:.1f} ms"


def report_workloads(costs: dict[str, ModelCost], attack: dict[str, float],
                     host: dict[str, float], labels: dict[str, tuple[float, float]]) -> None:
    r18, wrn = costs["ResNet-18 (ImageNet) 224"], costs["WRN-34-10 32"]
    print("\n## 5. Cost model (assumptions at the top of this script)\n")
    print(f"Peak {PEAK_BF16 / 1e12:.0f} TFLOP/s bf16, sustained {UTILISATION[1]:.0%}-"
          f"{UTILISATION[0]:.0%}; {SECONDS_PER_OP[0] * 1e6:.0f}-{SECONDS_PER_OP[1] * 1e6:.0f} "
          f"us per eager op; NVLink {NVLINK[0] / 1e9:.0f} GB/s, network "
          f"{NETWORK[1] / 1e9:.0f}-{NETWORK[0] / 1e9:.0f} GB/s per GPU; {CORES_PER_GPU} "
          "decode cores per GPU. Ranges: optimistic - pessimistic.")
    conv128, conv64 = costs["ConvNet-D3 w128 32"], costs["ConvNet-D3 w64 32"]
    pgd_rate = 10 * 512 * attack["pgd_step_convnet64"] / 31.1e-3
    student_rate = 5 * 20 * 500 * conv128.train_flops / 1.109
    print("\nCalibration from docs/benchmarks.md (one H100, fp32 with TF32):")
    print(f"- PGD-10, ConvNet-D3 w64, batch 512, 31.1 ms: {pgd_rate / 1e12:.1f} TFLOP/s = "
          f"{pgd_rate / 495e12:.1%} of the dense TF32 peak (495 TFLOP/s)")
    print(f"- 5 sequential ConvNet-D3 w128 students, IPC 50 (500 images), 20 epochs with DSA, "
          f"1.109 s: {student_rate / 1e12:.1f} TFLOP/s = {student_rate / 495e12:.1%} of TF32 "
          "peak")
    epoch = 50_000 * conv128.train_flops
    print(f"- so a CIFAR-10 ConvNet-D3 w128 expert epoch ({epoch / 1e12:.1f} TFLOP, "
          f"conv64 {conv64.train_flops / 1e9:.3f} / conv128 {conv128.train_flops / 1e9:.3f} "
          f"GFLOP per image) at that rate: {epoch / student_rate:.1f} s")

    # (a) ImageNet distillation baseline -----------------------------------------------------
    images, val = 1_281_167, 50_000
    decode = host["jpeg256_seconds"]
    check = host["check_imagenet_seconds"] / 256
    expert = Step(r18.train_flops, r18.ops, r18.params, r18.param_tensors, 2 * r18.bn_layers,
                  decode, check)
    # fit reads its eval_data in the main process (no DataLoader workers).
    evaluation = Step(r18.fwd_flops, r18.ops // 3, r18.params, 0, 0, decode, check, True)
    print("\n### (a) ImageNet-1K: ResNet-18 expert, 90 epochs, eval every epoch\n")
    print("| GPUs | global batch | per-GPU batch | compute | launch | host check | decode | "
          "all-reduce + sync | step | 90 epochs | 90 epochs, no host check | memory / GPU |")
    print("|---:|---:|---:|---|---|---|---|---|---|---|---|---|")
    for gpus, batch in ((1, 256), (8, 256), (64, 256), (64, 2048)):
        b = batch / gpus
        parts = [expert.seconds(b, gpus, c) for c in (0, 1)]
        steps, eval_steps = math.ceil(images / batch), math.ceil(val / 256 / gpus)
        total = {key: tuple(90 * (steps * parts[c][key]
                                  + eval_steps * evaluation.seconds(256, 1, c)[key])
                            for c in (0, 1)) for key in ("step", "fixed")}
        memory = (HEADROOM * (b * r18.act_bf16 + state_bytes(r18.params, "sgd", gpus))
                  + 2 * b * 3 * 224 * 224 * 4)  # two prefetched float32 batches
        cells = " | ".join(_ms((parts[0][k], parts[1][k]))
                           for k in ("compute", "launch", "check", "input", "comm", "step"))
        print(f"| {gpus} | {batch} | {b:g} | {cells} | {span(*total['step'])} | "
              f"{span(*total['fixed'])} | {memory / GB:.1f} GB |")
    print("\nStudents (train_students, sequential: BatchNorm cannot be vectorised): ResNet-18 "
          "at 224 on the IPC images, 3001 epochs, batch 256, AdamW; train_students reads the "
          "50,000 validation images once into a tensor (in the main process: decode + check) "
          "and keeps them on the GPU with the IPC images (float32); 16 evaluations (every 200 "
          "epochs); 5 students per IPC; one Ray cell = one student on one GPU.\n")
    student = Step(r18.train_flops, r18.ops, r18.params, r18.param_tensors, 0)
    load_val = val * (decode + check)  # one thread, num_workers=0
    val_bytes = val * 3 * 224 * 224 * 4
    cells: list[list[float]] = [[], []]
    print("| IPC | images | steps | training (1 GPU) | 16 evaluations | reading the validation "
          "set | memory / GPU |")
    print("|---:|---:|---:|---|---|---|---|")
    for ipc in (1, 10, 50):
        n = 1000 * ipc
        steps = 3001 * math.ceil(n / 256)
        b = min(256, n)
        train = _both(lambda c, b=b, steps=steps: steps * student.seconds(b, 1, c)["step"])
        evals = _both(lambda c: 16 * math.ceil(val / 256) * max(
            256 * r18.fwd_flops / (PEAK_BF16 * UTILISATION[c]),
            (r18.ops // 3) * SECONDS_PER_OP[c]))
        for c in (0, 1):
            cells[c] += [train[c] + evals[c] + load_val] * 5
        memory = HEADROOM * (b * r18.act_bf16 + state_bytes(r18.params, "adamw", 1)) \
            + n * 3 * 224 * 224 * 4 + val_bytes
        print(f"| {ipc} | {n:,} | {steps:,} | {span(*train)} | {span(*evals)} | "
              f"{hours(load_val)} | {memory / GB:.1f} GB |")
    print("\n| GPUs (Ray, 1 GPU per cell) | 15 student cells (3 IPC x 5 seeds) | tuning grid x 10 "
          "expert epochs x 3 learning rates (450 cells) |")
    print("|---:|---|---|")
    for gpus in GPUS:
        now = _both(lambda c, gpus=gpus: makespan(cells[c], gpus))
        grid = _both(lambda c, gpus=gpus: makespan(cells[c] * 30, gpus))
        print(f"| {gpus} | {span(*now)} | {span(*grid)} |")
    ddp = _both(lambda c: 588_196 * student.seconds(32, 8, c)["step"])
    print(f"\nOne IPC-50 student under torchrun on 8 GPUs (32 images per GPU): {span(*ddp)} "
          "of training.")
    checkpoint = r18.checkpoint_bytes
    print(f"\nStorage: one expert epoch file {checkpoint / MB:.1f} MB; 91 files (epochs 0-90) "
          f"{91 * checkpoint / GB:.2f} GB per expert; last.pt about "
          f"{(checkpoint + 4 * r18.params) / MB:.0f} MB (weights + SGD momentum).")
    print("Label stores (label + index bytes; file bytes with the header in parentheses):")
    for mode, (per_image, per_file) in labels.items():
        sizes = ", ".join(f"IPC {ipc}: {1000 * ipc * per_image / MB:.2f} MB"
                          for ipc in (1, 10, 50))
        print(f"- {mode}: {per_image:.0f} B/image ({per_file:.0f}) -> {sizes}")
    pre = images * host["jpeg256_bytes"] / GB
    print(f"Pre-resized 256x256 JPEG copy of the training set at the synthetic size "
          f"({host['jpeg256_bytes'] / 1e3:.0f} KB/image): about {pre:.0f} GB. Decode "
          f"{decode * 1e3:.2f} ms/image/core = {CORES_PER_GPU / decode:,.0f} images/s per GPU on "
          f"{CORES_PER_GPU} cores; host check {check * 1e3:.2f} ms/image = {1 / check:,.0f} "
          f"images/s per rank; the GPU: {PEAK_BF16 * UTILISATION[1] / r18.train_flops:,.0f}-"
          f"{PEAK_BF16 * UTILISATION[0] / r18.train_flops:,.0f} images/s.")

    # (b) Cityscapes JML -----------------------------------------------------------------------
    print("\n### (b) Cityscapes, JML (0.25 CE + 0.75 JML), 512x1024 crops, batch 8\n")
    png = host["png_seconds"] + host["mask_seconds"]
    seg: dict[str, Step] = {}
    print("| model | GPUs | per-GPU batch | step | 40k iters | 160k iters | 40k, no host check | "
          "160k, no host check | memory / GPU | last.pt |")
    print("|---|---:|---:|---|---|---|---|---|---|---|")
    for name in ("DeepLabV3-R18d", "DeepLabV3-R50d", "DeepLabV3-R101d", "UNet-R50d",
                 "UNet w16 d3"):
        cost = costs[f"{name} 512x1024"]
        seg[name] = step = Step(cost.train_flops, cost.ops, cost.params, cost.param_tensors,
                                2 * cost.bn_layers, png, host["check_city_seconds"] / 8)
        for gpus in (1, 8):
            b = 8 / gpus
            now = _both(lambda c, b=b, gpus=gpus, step=step: step.seconds(b, gpus, c)["step"])
            fixed = _both(lambda c, b=b, gpus=gpus, step=step: step.seconds(b, gpus, c)["fixed"])
            logits = b * 19 * 512 * 1024
            memory = HEADROOM * (b * cost.act_bf16 + logits * (4 + LOSS_BYTES_PER_LOGIT)
                                 + state_bytes(cost.params, "adamw", gpus))
            last = cost.checkpoint_bytes + 8 * cost.params
            print(f"| {name} | {gpus} | {b:g} | {now[0] * 1e3:.0f}-{now[1] * 1e3:.0f} ms | "
                  f"{span(40e3 * now[0], 40e3 * now[1])} | "
                  f"{span(160e3 * now[0], 160e3 * now[1])} | "
                  f"{span(40e3 * fixed[0], 40e3 * fixed[1])} | "
                  f"{span(160e3 * fixed[0], 160e3 * fixed[1])} | {memory / GB:.1f} GB | "
                  f"{last / MB:.0f} MB |")
    r101 = costs["DeepLabV3-R101d 512x1024"]
    print("\nSweep on Ray (one GPU per cell, 40k iterations): 3 DeepLabV3-R101d teachers, "
          "then 3 backbones x 2 losses (CE, CE+JML) x 3 label modes (hard, smooth, teacher: "
          "plus the teacher's forward) x 3 seeds = 54 students.\n")
    print("| GPUs | teachers | students | sweep | sweep, no host check |")
    print("|---:|---|---|---|---|")
    for gpus in GPUS:
        out = {}
        for key in ("step", "fixed"):
            def stage_times(c: int, key: str = key, gpus: int = gpus) -> tuple[float, float]:
                teachers = [40e3 * seg["DeepLabV3-R101d"].seconds(8, 1, c)[key]] * 3
                students = []
                for name in ("DeepLabV3-R18d", "DeepLabV3-R50d", "DeepLabV3-R101d"):
                    one = seg[name].seconds(8, 1, c)[key]
                    for mode in ("hard", "smooth", "teacher"):
                        extra = 8 * r101.fwd_flops / (PEAK_BF16 * UTILISATION[c]) \
                            if mode == "teacher" else 0.0
                        students += [40e3 * (one + extra)] * 6
                return makespan(teachers, gpus), makespan(students, gpus)
            out[key] = (stage_times(0), stage_times(1))
        t = (out["step"][0][0], out["step"][1][0])
        u = (out["step"][0][1], out["step"][1][1])
        f = (sum(out["fixed"][0]), sum(out["fixed"][1]))
        print(f"| {gpus} | {span(*t)} | {span(*u)} | {span(t[0] + u[0], t[1] + u[1])} | "
              f"{span(*f)} |")
    whole, windows = 4 * r101.fwd_flops, 9 * r101.fwd_flops
    gpu_eval = (500 * whole / (PEAK_BF16 * UTILISATION[0]),
                500 * windows / (PEAK_BF16 * UTILISATION[1]))
    print(f"\nEvaluation of DeepLabV3-R101d on the 500 validation images at 1024x2048: whole "
          f"image (the library) {whole / 1e12:.2f} TFLOP/image, 3x3 sliding 512x1024 windows "
          f"(stride 2/3, official) {windows / 1e12:.2f} TFLOP/image; GPU {span(*gpu_eval)}; "
          f"host metrics {host['seg_metrics_seconds']:.2f} s/image on one thread = "
          f"{hours(500 * host['seg_metrics_seconds'])} per evaluation in one process.")
    print(f"Host per image: PNG + mask decode {png * 1e3:.0f} ms on one core (synthetic PNG "
          f"{host['png_bytes'] / MB:.1f} MB; 8 per step on {CORES_PER_GPU} cores = "
          f"{8 * png / CORES_PER_GPU * 1e3:.0f} ms), check_batch "
          f"{host['check_city_seconds'] / 8 * 1e3:.1f} ms in the main process.")
    print(f"In memory as the library holds it (float32 images, int64 masks): "
          f"{2975 * (3 * 4 + 8) * 1024 * 2048 / GB:.0f} GB per process.")

    # (c) TRADES teacher and ABSLD students ------------------------------------------------------
    print("\n### (c) CIFAR-10 robust training (GPU-resident data)\n")
    r18c, mbv2 = costs["ResNet-18 (CIFAR stem) 32"], costs["MobileNetV2 32"]
    robust = {
        "TRADES WRN-34-10 teacher": (Step(attack["trades_wrn"], round(attack["trades_ops"]),
                                          wrn.params, wrn.param_tensors, 4 * wrn.bn_layers),
                                     wrn, (76, 100)),
        "ABSLD ResNet-18 student": (Step(attack["absld_r18"], round(attack["absld_ops"]),
                                         r18c.params, r18c.param_tensors, 4 * r18c.bn_layers),
                                    r18c, (300,)),
        "ABSLD MobileNetV2 student": (Step(attack["absld_mbv2"], round(attack["absld_mbv2_ops"]),
                                           mbv2.params, mbv2.param_tensors, 4 * mbv2.bn_layers),
                                      mbv2, (300,)),
    }
    steps_per_epoch = math.ceil(50_000 / 128)
    print("| run | GPUs | per-GPU batch | step | epoch | total | memory / GPU |")
    print("|---|---:|---:|---|---|---|---|")
    for name, (step, cost, epochs) in robust.items():
        for gpus in GPUS:
            b = 128 / gpus
            t = _both(lambda c, b=b, gpus=gpus, step=step: step.seconds(b, gpus, c)["step"])
            epoch = (steps_per_epoch * t[0], steps_per_epoch * t[1])
            total = " / ".join(f"{e} ep {span(e * epoch[0], e * epoch[1])}" for e in epochs)
            teacher = 0 if cost is wrn else 6 * wrn.params
            memory = HEADROOM * (2 * b * cost.act_bf16 + state_bytes(cost.params, "sgd", gpus)
                                 + teacher) + 50_000 * 3 * 32 * 32 * 4
            print(f"| {name} | {gpus} | {b:g} | {_ms(t)} | {span(*epoch)} | {total} | "
                  f"{memory / GB:.1f} GB |")
    print("\nSweep on Ray (one GPU per cell): the TRADES teacher (76 epochs), then 2 students "
          "(ResNet-18, MobileNetV2) x 3 methods (ARD, RSLAD, ABSLD, each costed as ABSLD) x 3 "
          "seeds = 18 students of 300 epochs.\n")
    print("| GPUs | teacher | students | sweep |")
    print("|---:|---|---|---|")
    one_gpu = {name: _both(lambda c, step=step: steps_per_epoch * step.seconds(128, 1, c)["step"])
               for name, (step, _, _) in robust.items()}
    for gpus in GPUS:
        t = (76 * one_gpu["TRADES WRN-34-10 teacher"][0],
             76 * one_gpu["TRADES WRN-34-10 teacher"][1])
        u = _both(lambda c, gpus=gpus: makespan(
            [300 * one_gpu[n][c] for n in ("ABSLD ResNet-18 student",
                                           "ABSLD MobileNetV2 student") for _ in range(9)],
            gpus))
        print(f"| {gpus} | {span(*t)} | {span(*u)} | {span(t[0] + u[0], t[1] + u[1])} |")
    pgd20 = 10_000 * (wrn.fwd_flops + 20 * attack["pgd_step_wrn"])
    aa = [10_000 * f * wrn.fwd_flops for f in AUTOATTACK_FORWARDS]
    pgd_time = (pgd20 / (PEAK_BF16 * UTILISATION[0]), pgd20 / (PEAK_BF16 * UTILISATION[1]))
    aa_time = (aa[0] / (PEAK_BF16 * UTILISATION[0]), aa[1] / (PEAK_BF16 * UTILISATION[1]))
    print(f"\nEvaluation of WRN-34-10 on the 10,000 test images: PGD-20 {pgd20 / 1e15:.1f} "
          f"PFLOP ({span(*pgd_time)} on 1 GPU; CW-20 the same); AutoAttack "
          f"{aa[0] / 1e15:.0f}-{aa[1] / 1e15:.0f} PFLOP ({span(*aa_time)} on 1 GPU, divided "
          "by the ranks).")
    bounds = [
        ("ImageNet expert ResNet-18", expert, 256, 8),
        ("ImageNet expert ResNet-18", expert, 256, 64),
        ("ImageNet expert ResNet-18", expert, 2048, 64),
        ("Cityscapes DeepLabV3-R101d", seg["DeepLabV3-R101d"], 8, 8),
        ("Cityscapes DeepLabV3-R101d", seg["DeepLabV3-R101d"], 64, 64),
        ("Cityscapes DeepLabV3-R18d", seg["DeepLabV3-R18d"], 8, 8),
        ("TRADES WRN-34-10", robust["TRADES WRN-34-10 teacher"][0], 128, 8),
        ("TRADES WRN-34-10", robust["TRADES WRN-34-10 teacher"][0], 128, 64),
        ("TRADES WRN-34-10", robust["TRADES WRN-34-10 teacher"][0], 1024, 64),
    ]
    print("\n### What bounds a step (per rank; optimistic-pessimistic)\n")
    print("| workload | GPUs | global batch | compute | launch | host check | decode | "
          "all-reduce + SyncBN | bound |")
    print("|---|---:|---:|---|---|---|---|---|---|")
    for name, step, batch, gpus in bounds:
        parts = [step.seconds(batch / gpus, gpus, c) for c in (0, 1)]
        pair = {k: (parts[0][k], parts[1][k]) for k in parts[0]}
        verdict = []
        for c in (0, 1):
            p = parts[c]
            # What bounds the step without the host check, then what the check adds to it
            # (it runs in the main process after the launches: Step.seconds).
            work = {"compute": p["compute"], "launch": p["launch"], "decode": p["input"]}
            top = max(work, key=work.get)  # type: ignore[arg-type]
            label = f"{top}-bound" if p["comm"] < work[top] else "comm-bound"
            longer = p["step"] / p["fixed"] - 1
            if longer >= 0.05:
                label += f" (check +{longer:.0%})"
            verdict.append(label)
        print(f"| {name} | {gpus} | {batch} | {_ms(pair['compute'])} | {_ms(pair['launch'])} | "
              f"{_ms(pair['check'])} | {_ms(pair['input'])} | {_ms(pair['comm'])} | "
              f"{' / '.join(dict.fromkeys(verdict))} |")
    print(f"\nStorage: WRN-34-10 epoch file {wrn.checkpoint_bytes / MB:.1f} MB (epochs 0-76: "
          f"{77 * wrn.checkpoint_bytes / GB:.1f} GB); last.pt about "
          f"{(wrn.checkpoint_bytes + 4 * wrn.params) / MB:.0f} MB. Students: ResNet-18 "
          f"{r18c.checkpoint_bytes / MB:.1f} MB, MobileNetV2 {mbv2.checkpoint_bytes / MB:.1f} MB "
          "per epoch file.")


# --------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-host", action="store_true",
                        help="skip the decode and metric timings (section 4)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    began = time.perf_counter()
    print(f"$ python {' '.join(sys.argv)}")
    print(f"torch {torch.__version__}, {cpu_name()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
    print("## 1. Per image (FLOPs: convolutions and matrix products; activations: saved for "
          "backward)\n")
    print("| model | in library | input | GFLOP fwd | GFLOP fwd+bwd | act MB fp32 | "
          "act MB bf16 | params | checkpoint MB | BN layers | ops/step |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    costs: dict[str, ModelCost] = {}
    for name, where, build, shape in MODELS:
        cost = measure_model(name, where, build, shape)
        size = "x".join(str(s) for s in sorted(set(shape[1:]), key=shape[1:].index))
        costs[f"{name} {size}"] = cost
        print(f"| {name} | {'yes' if where == 'library' else 'no (built here)'} | "
              f"{'x'.join(map(str, shape))} | {cost.fwd_flops / 1e9:.3f} | "
              f"{cost.train_flops / 1e9:.3f} | {cost.act_fp32 / MB:.1f} | "
              f"{cost.act_bf16 / MB:.1f} | {cost.params / 1e6:.2f}M | "
              f"{cost.checkpoint_bytes / MB:.1f} | {cost.bn_layers} | {cost.ops} |")

    print("\n## 2. Attack steps (GFLOP per image; multiple of a plain forward+backward)\n")
    attack: dict[str, float] = {}
    meta_models = {
        "wrn": create_model("wrn", 10, 3, 32).to("meta"),
        "r18": create_model("resnet18", 10, 3, 32).to("meta"),
        "mbv2": create_model("mobilenetv2", 10, 3, 32).to("meta"),
        "convnet64": create_model("convnet", 10, 3, 32, width=64).to("meta"),
    }
    shape = (3, 32, 32)
    attack["pgd_step_wrn"] = _pgd_step_flops(meta_models["wrn"], shape, "meta")
    attack["pgd_step_convnet64"] = _pgd_step_flops(meta_models["convnet64"], shape, "meta")
    counter = _OpCounter()
    with counter:
        attack["trades_wrn"] = trades_flops(meta_models["wrn"], shape, 10, "meta")
    attack["trades_ops"] = counter.count / 2  # each part ran at batch 4 and batch 2
    counter = _OpCounter()
    with counter:
        attack["absld_r18"] = absld_flops(meta_models["r18"], meta_models["wrn"], shape, 10,
                                          "meta")
    attack["absld_ops"] = counter.count / 2
    counter = _OpCounter()
    with counter:
        attack["absld_mbv2"] = absld_flops(meta_models["mbv2"], meta_models["wrn"], shape, 10,
                                           "meta")
    attack["absld_mbv2_ops"] = counter.count / 2
    wrn, r18c = costs["WRN-34-10 32"], costs["ResNet-18 (CIFAR stem) 32"]
    print("| step | GFLOP/image | x plain step of the trained model |")
    print("|---|---:|---:|")
    print(f"| PGD step on WRN-34-10 (fwd + input grad) | {attack['pgd_step_wrn'] / 1e9:.2f} | "
          f"{attack['pgd_step_wrn'] / wrn.train_flops:.2f} |")
    print(f"| TRADES step, WRN-34-10, PGD-10 | {attack['trades_wrn'] / 1e9:.1f} | "
          f"{attack['trades_wrn'] / wrn.train_flops:.2f} |")
    print(f"| ABSLD step, ResNet-18 student, WRN-34-10 teacher, PGD-10 | "
          f"{attack['absld_r18'] / 1e9:.1f} | {attack['absld_r18'] / r18c.train_flops:.2f} |")
    mbv2 = costs["MobileNetV2 32"]
    print(f"| ABSLD step, MobileNetV2 student, WRN-34-10 teacher, PGD-10 | "
          f"{attack['absld_mbv2'] / 1e9:.1f} | {attack['absld_mbv2'] / mbv2.train_flops:.2f} |")
    print(f"\nOps per step (eager): TRADES {attack['trades_ops']:.0f}, ABSLD ResNet-18 "
          f"{attack['absld_ops']:.0f}, ABSLD MobileNetV2 {attack['absld_mbv2_ops']:.0f}")
    print("\nComposition checked against the library's objectives (small models, CPU):")
    for name, real, composed in check_composition():
        print(f"- {name}: library {real / 1e6:.2f} MFLOP/image, composed "
              f"{composed / 1e6:.2f} ({composed / real - 1:+.2%})")

    print("\n## 3. Label stores, 1000 classes (LabelStore.save on 100 rows)\n")
    labels = label_store_bytes()
    for mode, (per_image, per_file) in labels.items():
        print(f"- {mode}: {per_image:.0f} B/image of tensors, {per_file:.0f} B/image in the "
              "file")

    host: dict[str, float] = {"jpeg256_seconds": 2e-3, "jpeg256_bytes": 25e3,
                              "png_seconds": 0.06, "mask_seconds": 0.01, "png_bytes": 3e6,
                              "seg_metrics_seconds": 1.5, "check_imagenet_seconds": 0.011,
                              "check_city_seconds": 0.013}
    if not args.skip_host:
        print("\n## 4. Host-side costs (one thread, synthetic images)\n")
        host = host_costs()
        print(f"- StreamingImageFolder item, 256x256 JPEG q90 ({host['jpeg256_bytes'] / 1e3:.0f}"
              f" KB): {host['jpeg256_seconds'] * 1e3:.2f} ms")
        print(f"- decode_image + float32, 1024x2048 RGB PNG ({host['png_bytes'] / MB:.1f} MB): "
              f"{host['png_seconds'] * 1e3:.0f} ms; 1024x2048 mask PNG: "
              f"{host['mask_seconds'] * 1e3:.0f} ms")
        print(f"- SegmentationMetrics + CalibrationError update, 1x19x1024x2048 probabilities: "
              f"{host['seg_metrics_seconds']:.2f} s")
        print(f"- check_batch (every Dataset batch, main process): 256x3x224x224 "
              f"{host['check_imagenet_seconds'] * 1e3:.0f} ms, 8x3x1024x2048 "
              f"{host['check_city_seconds'] * 1e3:.0f} ms (the former isfinite + min + max: "
              f"{host['former_check_imagenet_seconds'] * 1e3:.0f} ms, "
              f"{host['former_check_city_seconds'] * 1e3:.0f} ms)")
    else:
        print("\n(section 4 skipped: default host costs assumed)")
    report_workloads(costs, attack, host, labels)
    print(f"\n[{time.perf_counter() - began:.0f} s]")


if __name__ == "__main__":
    main()
