"""Distribution Matching (DM), the synthetic-image baseline of the distillation study.

Zhao and Bilen, "Dataset Condensation with Distribution Matching", WACV 2023. Synthetic images
of each class are learnt so that their mean embedding under a *freshly initialised* network
matches the mean embedding of a batch of real images of that class; both batches get the same
DSA transform (siamese seed). Each iteration draws a new network, so the images match the
class means under the distribution of random networks rather than one network.

Difference from the official code, kept on purpose: the images are clamped to [0, 1] after
every step, so the distilled set obeys the library's image contract (and can be stored as
8-bit pixels, which is how the study counts its bytes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .._checks import check_float, check_ndim, check_positive, check_positive_int
from .._io import tensor_digest, torch_load, torch_save
from ..data.dsa import DSA_STRATEGY, dsa
from ..progress import progress
from ..runtime import build_seeded, resolve_device

__all__ = ["DMResult", "distribution_matching"]

EmbedderBuilder = Callable[[int], nn.Module]


@dataclass
class DMResult:
    """Outcome of :func:`distribution_matching`.

    Attributes:
        images: float32 (M, C, H, W) synthetic images in [0, 1], on the CPU, in the order of
            ``init_images``.
        labels: int64 (M,) their classes (``init_labels``).
        losses: the matching loss of every iteration (sum over classes of the squared
            distance between mean embeddings).
    """

    images: Tensor
    labels: Tensor
    losses: list[float]


def distribution_matching(build_model: EmbedderBuilder, real_images: Tensor,
                          real_labels: Tensor, init_images: Tensor, init_labels: Tensor, *,
                          iterations: int = 1000, lr: float = 1.0, momentum: float = 0.5,
                          batch_real: int = 256, strategy: str = DSA_STRATEGY, seed: int = 0,
                          device: str | torch.device = "auto",
                          checkpoint: str | os.PathLike[str] | None = None,
                          checkpoint_every: int = 50,
                          channel_lr_scale: Sequence[float] | None = None,
                          show_progress: bool | None = None) -> DMResult:
    """Learn synthetic images by matching mean embeddings of random networks (DM).

    Args:
        build_model: ``build_model(seed) -> nn.Module`` with an ``embed(x) -> (B, D)`` method
            (e.g. :class:`~softlabels.models.ConvNet`); called with a new seed every iteration.
        real_images: float (N, C, H, W) in [0, 1], the real training set.
        real_labels: int64 (N,) its classes.
        init_images: float (M, C, H, W) starting synthetic images (the official code starts
            from random real images of each class).
        init_labels: int64 (M,) their classes; each must occur in ``real_labels``.
        iterations: optimisation steps, each with a fresh network.
        lr: SGD learning rate on the pixels (official: 1.0).
        momentum: SGD momentum (official: 0.5).
        batch_real: real images drawn per class and iteration.
        strategy: DSA strategy applied, siamese, to real and synthetic batches ("none": off).
        seed: seeds the networks, the real batches and the augmentation.
        device: where to compute.
        checkpoint: a file holding the optimisation state, written every ``checkpoint_every``
            iterations and after the last; when it exists the run continues from it (with the
            same networks, real batches and augmentations as an uninterrupted run), so
            ``iterations`` may also be raised to extend a finished run.
        checkpoint_every: iterations between checkpoint writes.
        channel_lr_scale: a factor per channel on each pixel step. The official code
            optimises normalised images ``(x - mean) / std``; SGD there is SGD on the pixels
            with each channel's gradient scaled by ``std ** 2`` (same trajectory, momentum
            included), so ``[s ** 2 for s in std]`` gives its learning rate in its units.
        show_progress: see :func:`softlabels.progress.progress`.

    Returns:
        :class:`DMResult`.

    Raises:
        ValueError: bad shapes, a synthetic class without real images, non-positive settings,
            a checkpoint written by a run with other settings or starting images.
        TypeError: the model has no ``embed`` method.
    """
    for name, tensor in (("real_images", real_images), ("init_images", init_images)):
        check_float(name, tensor)
        check_ndim(name, tensor, (4,))
    if real_images.shape[1:] != init_images.shape[1:]:
        raise ValueError(f"init_images are {tuple(init_images.shape[1:])} but real_images are "
                         f"{tuple(real_images.shape[1:])}")
    for name, labels, images in (("real_labels", real_labels, real_images),
                                 ("init_labels", init_labels, init_images)):
        if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            raise ValueError(f"{name} must be int64 with one label per image, got "
                             f"{labels.dtype} {tuple(labels.shape)}")
    check_positive_int("iterations", iterations)
    check_positive_int("checkpoint_every", checkpoint_every)
    check_positive_int("batch_real", batch_real)
    check_positive("lr", lr)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    target = resolve_device(device)
    classes = init_labels.unique().tolist()
    pools = {c: torch.nonzero(real_labels == c).flatten() for c in classes}
    missing = [c for c, pool in pools.items() if pool.numel() == 0]
    if missing:
        raise ValueError(f"classes {missing} have synthetic images but no real images")
    members = {c: torch.nonzero(init_labels == c).flatten().to(target) for c in classes}

    synthetic = init_images.detach().clone().to(target).requires_grad_(True)
    optimizer = torch.optim.SGD([synthetic], lr=lr, momentum=momentum)
    scale = None
    if channel_lr_scale is not None:
        scale = torch.tensor([float(v) for v in channel_lr_scale], device=target,
                             dtype=synthetic.dtype)
        if scale.shape != (synthetic.shape[1],) or not bool((scale > 0).all()):
            raise ValueError(f"channel_lr_scale must hold one positive factor per channel "
                             f"({synthetic.shape[1]}), got {list(channel_lr_scale)}")
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    fingerprint = {"lr": lr, "momentum": momentum, "batch_real": batch_real,
                   **({} if scale is None else {"channel_lr_scale": scale.tolist()}),
                   "strategy": strategy, "seed": seed,
                   "init": tensor_digest({"images": init_images, "labels": init_labels}),
                   "real": [list(real_images.shape), tensor_digest({"labels": real_labels})]}
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        start, losses = _resume(Path(checkpoint), fingerprint, synthetic, optimizer, generator)
    with progress(iterations, "dm", show_progress, start=min(start, iterations)) as bar:
        for step in range(start, iterations):
            net = _embedder(build_model, seed * 1_000_003 + step, target)
            loss = synthetic.new_zeros(())
            for c in classes:
                pool = pools[c]
                pick = pool[torch.randint(0, pool.numel(), (batch_real,), generator=generator)]
                real = real_images[pick].to(target)
                flip = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
                with torch.no_grad():
                    real_mean = net.embed(dsa(real, strategy, generator=flip,
                                              siamese=True)).mean(0)
                syn = dsa(synthetic[members[c]], strategy, generator=flip, siamese=True)
                loss = loss + (real_mean - net.embed(syn).mean(0)).pow(2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if scale is not None:
                synthetic.grad.mul_(scale.view(1, -1, 1, 1))  # type: ignore[union-attr]
            optimizer.step()
            with torch.no_grad():
                synthetic.clamp_(0.0, 1.0)
            losses.append(float(loss.detach()))
            bar.advance(f"loss {losses[-1]:.4f}")
            if checkpoint is not None and (
                    (step + 1) % checkpoint_every == 0 or step + 1 == iterations):
                torch_save(checkpoint, {
                    "fingerprint": fingerprint, "step": step + 1, "losses": losses,
                    "synthetic": synthetic.detach().cpu(), "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state()})
    return DMResult(synthetic.detach().cpu(), init_labels.clone(), losses)


def _resume(path: Path, fingerprint: dict[str, object], synthetic: Tensor,
            optimizer: torch.optim.Optimizer, generator: torch.Generator
            ) -> tuple[int, list[float]]:
    """Load a checkpoint into the run's state; returns (next iteration, losses so far)."""
    state = torch_load(path)
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise ValueError(f"{str(path)!r} is not a distribution-matching checkpoint")
    if state["fingerprint"] != fingerprint:
        changed = sorted(k for k in fingerprint if state["fingerprint"].get(k) != fingerprint[k])
        raise ValueError(f"cannot resume from {str(path)!r}: it was written by a DM run with "
                         f"other {changed}; delete it or use another checkpoint path")
    with torch.no_grad():
        synthetic.copy_(state["synthetic"].to(synthetic.device))
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return int(state["step"]), list(state["losses"])


def _embedder(build_model: EmbedderBuilder, seed: int, device: torch.device) -> nn.Module:
    """A freshly initialised network in train mode, with frozen weights (only pixels learn)."""
    net = build_seeded(build_model, seed)
    if not callable(getattr(net, "embed", None)):
        raise TypeError(f"{type(net).__name__} has no embed(x) method; DM needs the "
                        "embedding before the classifier")
    net.to(device).train()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net
