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
import math
import os
import sys
import time
from collections.abc import Callable

import torch

from _cost_measures import (
    ModelCost,
    OpCounter,
    absld_flops,
    check_composition,
    host_costs,
    label_store_bytes,
    measure_model,
    pgd_step_flops,
    trades_flops,
)
from _cost_model import (
    AUTOATTACK_FORWARDS,
    CORES_PER_GPU,
    GB,
    GPUS,
    HEADROOM,
    LOSS_BYTES_PER_LOGIT,
    MB,
    NETWORK,
    NVLINK,
    PEAK_BF16,
    SECONDS_PER_OP,
    UTILISATION,
    Step,
    hours,
    makespan,
    span,
    state_bytes,
)
from _machine import cpu_name
from _reference_models import MODELS
from softlabels.models import create_model


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
    attack["pgd_step_wrn"] = pgd_step_flops(meta_models["wrn"], shape, "meta")
    attack["pgd_step_convnet64"] = pgd_step_flops(meta_models["convnet64"], shape, "meta")
    counter = OpCounter()
    with counter:
        attack["trades_wrn"] = trades_flops(meta_models["wrn"], shape, 10, "meta")
    attack["trades_ops"] = counter.count / 2  # each part ran at batch 4 and batch 2
    counter = OpCounter()
    with counter:
        attack["absld_r18"] = absld_flops(meta_models["r18"], meta_models["wrn"], shape, 10,
                                          "meta")
    attack["absld_ops"] = counter.count / 2
    counter = OpCounter()
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
