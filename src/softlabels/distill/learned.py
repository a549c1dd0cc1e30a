"""Learned labels: soft labels optimised through an unrolled student training, images fixed.

The ablation of Qin et al. that asks what labels a distilled set *wants*: keep the selected real
images, make their labels free parameters, train a fresh student for a few differentiable SGD
steps on (images, labels), score it on a batch of real training images, and back-propagate that
score through the unrolled steps into the labels. The paper finds the learned labels end up
close (Jensen-Shannon) to an early-stopped expert's labels. The unroll is full (every inner step
is differentiated), so keep it short and the student small.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .._checks import check_float, check_ndim, check_positive, check_positive_int
from ..labels import validate
from ..losses import soft_cross_entropy
from ..progress import progress
from ..runtime import build_seeded, resolve_device

__all__ = ["LearnedLabels", "learn_labels"]

ModelBuilder = Callable[[int], nn.Module]

# Probabilities below this are floored before taking logs, so a one-hot start has finite
# logits and its zero entries can still grow.
_FLOOR = 1e-4


@dataclass
class LearnedLabels:
    """Outcome of :func:`learn_labels`.

    Attributes:
        labels: float32 (N, K) learned probabilities (rows sum to 1), on the CPU.
        losses: real-data cross-entropy of the unrolled student, one per outer step.
    """

    labels: Tensor
    losses: list[float]


def learn_labels(build_model: ModelBuilder, images: Tensor, init_labels: Tensor,
                 real_images: Tensor, real_labels: Tensor, *, outer_steps: int = 100,
                 inner_steps: int = 10, inner_lr: float = 0.01, label_lr: float = 0.05,
                 batch_real: int = 256, seed: int = 0, device: str | torch.device = "auto",
                 show_progress: bool | None = None) -> LearnedLabels:
    """Optimise the labels of fixed images by back-propagating through student training.

    Each outer step draws a fresh student ``build_model(seed + step)``, takes ``inner_steps``
    full-batch SGD steps of soft cross-entropy on ``(images, softmax(label_logits))`` keeping
    the graph, and updates ``label_logits`` with Adam on the student's cross-entropy over
    ``batch_real`` random real images.

    Args:
        build_model: ``build_model(seed) -> nn.Module`` mapping (B, C, H, W) to (B, K) logits;
            it must work with ``torch.func.functional_call`` (no BatchNorm statistics).
        images: float (N, C, H, W) in [0, 1], the distilled images (kept fixed).
        init_labels: float (N, K) starting probabilities (e.g. one-hot or expert labels).
        real_images: float (M, C, H, W) in [0, 1], real training images for the outer loss.
        real_labels: int64 (M,) their classes in [0, K).
        outer_steps: label updates.
        inner_steps: unrolled student steps per update.
        inner_lr: the student's SGD learning rate.
        label_lr: Adam learning rate on the label logits.
        batch_real: real images per outer loss.
        seed: seeds the students and the real batches.
        device: where to compute.
        show_progress: see :func:`softlabels.progress.progress`.

    Returns:
        :class:`LearnedLabels`.
    """
    for name, tensor in (("images", images), ("real_images", real_images)):
        check_float(name, tensor)
        check_ndim(name, tensor, (4,))
    validate(init_labels, name="init_labels")
    if init_labels.ndim != 2 or init_labels.shape[0] != images.shape[0]:
        raise ValueError(f"init_labels must be (N, K) with N = {images.shape[0]} images, got "
                         f"{tuple(init_labels.shape)}")
    if real_labels.dtype != torch.int64 or real_labels.shape != real_images.shape[:1]:
        raise ValueError(f"real_labels must be int64 with one label per real image, got "
                         f"{real_labels.dtype} {tuple(real_labels.shape)}")
    for name, value in (("outer_steps", outer_steps), ("inner_steps", inner_steps),
                        ("batch_real", batch_real)):
        check_positive_int(name, value)
    check_positive("inner_lr", inner_lr)
    check_positive("label_lr", label_lr)
    target = resolve_device(device)
    x = images.to(target)
    label_logits = init_labels.float().clamp_min(_FLOOR).log().to(target).requires_grad_(True)
    optimizer = torch.optim.Adam([label_logits], lr=label_lr)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    with progress(outer_steps, "learn labels", show_progress) as bar:
        for step in range(outer_steps):
            student = build_seeded(build_model, seed + step).to(target).train()
            params = {k: v.detach().requires_grad_(True) for k, v in student.named_parameters()}
            buffers = dict(student.named_buffers())
            soft = label_logits.softmax(1)
            for _ in range(inner_steps):
                inner = soft_cross_entropy(functional_call(student, (params, buffers), (x,)), soft)
                grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
                params = {k: p - inner_lr * g for (k, p), g in zip(params.items(), grads,
                                                                     strict=True)}
            pick = torch.randint(0, real_images.shape[0], (batch_real,), generator=generator)
            logits = functional_call(student, (params, buffers), (real_images[pick].to(target),))
            outer = F.cross_entropy(logits, real_labels[pick].to(target))
            optimizer.zero_grad(set_to_none=True)
            outer.backward()
            optimizer.step()
            losses.append(float(outer.detach()))
            bar.advance(f"loss {losses[-1]:.4f}")
    return LearnedLabels(label_logits.detach().softmax(1).cpu(), losses)
