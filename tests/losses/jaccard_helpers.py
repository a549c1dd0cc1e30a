"""Helpers of the metric-loss tests: a textbook reference, inputs, and the sync_dist worker.

The reference follows the definitions in ``jaccard.py`` (and refs.md section 2) literally:
one-hot labels, masks multiplied in, plain autograd, no fused function. It was checked once
against the implementation this package had before the fused kernels (float64, values and
gradients within 1e-12 over levels, variants, p, masks, weights, log_loss and gamma).

Importable by module name (the tests put this folder on ``sys.path``), so that processes
started with ``torch.multiprocessing`` can run :func:`sync_dist_worker`.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = ({"dataset": 1.0}, {"image": 1.0}, {"class": 1.0},
          {"dataset": 0.3, "image": 0.3, "class": 0.4})


def inputs(seed: int = 0, b: int = 3, c: int = 5, h: int = 6, w: int = 7,
           dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """Logits, hard labels (with 255 = ignored and an absent class), keep, soft labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (b, h, w), generator=g)
    labels[1] = labels[1].where(labels[1] != 3, 0)  # class 3 absent from image 1
    labels[0, :2] = 255
    soft = torch.softmax(torch.randn(b, c, h, w, generator=g, dtype=dtype) * 2, 1)
    soft[-1, 4] = 0  # class 4 absent from the last image of the soft labels
    return {"logits": torch.randn(b, c, h, w, generator=g, dtype=dtype) * 2,
            "labels": labels, "keep": torch.rand(b, h, w, generator=g) > 0.3,
            "soft": soft / soft.sum(1, keepdim=True)}


def reference_loss(logits: Tensor, target: Tensor, *, variant: str = "jml1",
                   mode: str = "multiclass", from_logits: bool = True, p: int = 1,
                   levels: Mapping[str, float] | None = None, alpha: float = 1.0,
                   beta: float = 1.0, gamma: float = 1.0,
                   smooth: float | tuple[float, float] = 1e-3, log_loss: bool = False,
                   class_weights: Tensor | None = None, active_classes: str | None = None,
                   class_mean: str = "active", threshold: float = 0.01,
                   ignore_index: int | None = None, keep: Tensor | None = None) -> Tensor:
    """The metric loss written out with one-hot tensors (see ``jaccard_metric_loss``)."""
    b, c = logits.shape[:2]
    if not from_logits:
        x = logits
    else:
        x = logits.softmax(1) if mode == "multiclass" else logits.sigmoid()
    hard = not target.is_floating_point()
    mask = torch.ones((b, *logits.shape[2:]), dtype=torch.bool, device=logits.device)
    if keep is not None:
        mask &= keep
    if ignore_index is not None:
        mask &= target != ignore_index
    if hard and mode == "multiclass":
        y = F.one_hot(target.where(mask, 0), c).movedim(-1, 1).to(x.dtype)
    elif hard and mode == "binary":
        y = target.where(mask, 0).unsqueeze(1).to(x.dtype)
    else:
        y = target.to(x.dtype)
    x, y = (x * mask.unsqueeze(1)).flatten(2), (y * mask.unsqueeze(1)).flatten(2)

    def card(v: Tensor) -> Tensor:  # of non-negative values
        return v.pow(p).sum(-1)

    if variant == "jml1":
        tp = (card(x) + card(y) - card((x - y).abs())) / 2
        fp, fn = card(x) - tp, card(y) - tp
    elif variant == "jml2":
        tp = (x * y).sum(-1)
        fp, fn = card(F.relu(x - y)), card(F.relu(y - x))
    else:
        tp = (x * y).sum(-1)
        fp, fn = card(x) - tp, card(y) - tp
    if (active_classes or ("present" if hard else "all")) == "present":
        active = y.amax(-1) > threshold
    else:
        active = torch.ones(b, c, dtype=torch.bool, device=logits.device)
    s_num, s_den = smooth if isinstance(smooth, tuple) else (smooth, smooth)

    def loss_of(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        den = tp + alpha * fp + beta * fn + s_den
        score = (tp + s_num) / (den if s_den > 0 else den.clamp_min(1e-7))
        floored = score if s_num > 0 else score.clamp_min(1e-7)
        out = -torch.log(floored) if log_loss else 1 - score
        if gamma != 1:
            out = out.clamp_min(0) ** gamma
        return out * class_weights if class_weights is not None else out

    def mean(values: Tensor, where: Tensor, dim: int, count_all: bool) -> Tensor:
        total = (values * where).sum(dim)
        return total / (values.shape[dim] if count_all else where.sum(dim).clamp_min(1))

    weights = {"dataset": 0.0, "image": 0.0, "class": 0.0, **(levels or {"dataset": 1.0})}
    every = class_mean == "all"
    per_entry = loss_of(tp, fp, fn)
    dataset = mean(loss_of(tp.sum(0), fp.sum(0), fn.sum(0)), active.any(0), 0, every)
    image = mean(mean(per_entry, active, 1, every), active.any(1), 0, False)
    klass = mean(mean(per_entry, active, 0, False), active.any(0), 0, every)
    return (weights["dataset"] * dataset + weights["image"] * image
            + weights["class"] * klass)


def reference_ce(logits: Tensor, target: Tensor, keep: Tensor | None = None,
                 ignore_index: int | None = None) -> Tensor:
    """Mean over kept pixels of -sum_c y_c log softmax(logits)_c; 0 with no kept pixel."""
    mask = torch.ones((logits.shape[0], *logits.shape[2:]), dtype=torch.bool,
                      device=logits.device)
    if keep is not None:
        mask &= keep
    if ignore_index is not None:
        mask &= target != ignore_index
    if not target.is_floating_point():
        target = F.one_hot(target.where(mask, 0), logits.shape[1]).movedim(-1, 1)
    per_pixel = -(target.to(logits.dtype) * logits.log_softmax(1)).sum(1)
    return (per_pixel * mask).sum() / mask.sum().clamp_min(1)


def value_and_grad(loss, logits: Tensor) -> tuple[Tensor, Tensor]:
    """loss(x) and d loss / d x at a fresh leaf copy x of ``logits``."""
    x = logits.detach().clone().requires_grad_()
    value = loss(x)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


SYNC_CASES = (
    {"levels": {"dataset": 1.0}, "target": "labels", "ignore_index": 255},
    {"levels": {"dataset": 0.3, "image": 0.3, "class": 0.4}, "target": "labels",
     "ignore_index": 255, "class_mean": "all"},
    {"levels": {"dataset": 0.5, "class": 0.5}, "target": "soft", "keep": True,
     "variant": "jml2", "gamma": 2.0},
)


def sync_dist_worker(rank: int, world: int, folder: str) -> None:
    """One of ``world`` gloo ranks: its half of the batch through DDP, results saved to disk.

    For every case: the loss (``sync_dist=True``) and the DDP-averaged gradient of a 1x1
    convolution, and the gradient of the rank's logits; then the fused cross-entropy, and
    the error each rank raises when one rank's labels are invalid.
    """
    from softlabels.losses import ce_jaccard_metric_loss, jaccard_metric_loss

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        data = sync_inputs()
        part = slice(rank * 2, rank * 2 + 2)  # the global batch is 2 * world images
        results = []
        for case in SYNC_CASES:
            model = sync_model()
            ddp = nn.parallel.DistributedDataParallel(model)
            options = {k: v for k, v in case.items() if k not in ("target", "keep")}
            keep = data["keep"][part] if case.get("keep") else None
            logits = ddp(data["images"][part])
            logits.retain_grad()
            loss = jaccard_metric_loss(logits, data[case["target"]][part], keep=keep,
                                       sync_dist=True, **options)
            loss.backward()
            results.append({"loss": loss.detach(), "logits_grad": logits.grad,
                            "weight_grad": model.weight.grad.clone()})
        ce, metric = ce_jaccard_metric_loss(sync_model()(data["images"][part]),
                                            data["labels"][part], ignore_index=255,
                                            sync_dist=True)
        results.append({"ce": ce.detach(), "metric": metric.detach()})
        # A label out of range on the last rank only: every rank must raise (none may wait
        # for the others in a later collective).
        labels = data["labels"][part].clone()
        if rank == world - 1:
            labels[0, 0, 0] = 7
        try:
            jaccard_metric_loss(sync_model()(data["images"][part]), labels, ignore_index=255,
                                sync_dist=True)
            results.append({"error": None})
        except ValueError as error:
            results.append({"error": str(error)})
        torch.save(results, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def sync_inputs(world: int = 2) -> dict[str, Tensor]:
    """Images (2 * world, 3, 5, 6), labels with ignored pixels, keep and soft labels."""
    g = torch.Generator().manual_seed(11)
    n = 2 * world
    labels = torch.randint(0, 4, (n, 5, 6), generator=g)
    labels[0, 0] = 255
    labels[1] = labels[1].where(labels[1] != 2, 0)
    return {"images": torch.randn(n, 3, 5, 6, generator=g), "labels": labels,
            "keep": torch.rand(n, 5, 6, generator=g) > 0.2,
            "soft": torch.softmax(torch.randn(n, 4, 5, 6, generator=g) * 2, 1)}


def sync_model() -> nn.Conv2d:
    """The same 1x1 convolution (3 -> 4 channels) in every process."""
    torch.manual_seed(0)
    return nn.Conv2d(3, 4, 1)
