"""Argument checks of :func:`~softlabels.distill.train_students`, apart from the training."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_finite, check_float, check_hard_labels, check_ndim
from ..labels import validate


def check_seeds(seeds: object) -> list[int]:
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence):
        raise TypeError(f"seeds must be a sequence of ints, got {type(seeds).__name__}")
    if len(seeds) == 0:
        raise ValueError("seeds is empty: give one seed per student, e.g. [0, 1, 2, 3, 4]")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seeds must hold ints, got {type(seed).__name__} ({seed!r})")
        if seed < 0:
            raise ValueError(f"seeds must be >= 0, got {seed}")
    duplicates = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if duplicates:
        raise ValueError(f"seeds must be distinct (a repeated seed trains the same student "
                         f"twice), got duplicates {duplicates} in {list(seeds)}")
    return [int(s) for s in seeds]


def check_data(images: Tensor, targets: Tensor) -> None:
    check_float("images", images)
    check_ndim("images", images, (4,))
    if images.shape[0] == 0:
        raise ValueError("images is empty: nothing to train on")
    check_finite("images", images)
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.is_floating_point():
        if targets.ndim != 2:
            raise ValueError(f"soft targets must have shape (N, K), got {tuple(targets.shape)}")
        validate(targets, name="targets", allow_partial=True)
    else:
        if targets.dtype != torch.int64:
            raise TypeError(f"hard targets must be int64 class indices, got {targets.dtype}")
        if targets.ndim != 1:
            raise ValueError(f"hard targets must have shape (N,), got {tuple(targets.shape)}")
        if int(targets.min()) < 0:
            raise ValueError(f"targets must be >= 0, got a minimum of {int(targets.min())}")
    if targets.shape[0] != images.shape[0]:
        raise ValueError(f"targets has {targets.shape[0]} rows but images has "
                         f"{images.shape[0]}")


def check_eval_data(eval_data: object, images: Tensor) -> None:
    if not isinstance(eval_data, tuple | list) or len(eval_data) != 2:
        raise TypeError("eval_data must be a pair (images, labels)")
    eval_images, eval_labels = eval_data
    check_float("eval_data[0]", eval_images)
    check_ndim("eval_data[0]", eval_images, (4,))
    if eval_images.shape[0] == 0:
        raise ValueError("eval_data[0] is empty: nothing to evaluate")
    if eval_images.shape[1:] != images.shape[1:]:
        raise ValueError(f"eval_data[0] has images of shape {tuple(eval_images.shape[1:])} but "
                         f"the training images are {tuple(images.shape[1:])}")
    if not isinstance(eval_labels, Tensor) or eval_labels.dtype != torch.int64:
        raise TypeError("eval_data[1] must be an int64 tensor of class indices")
    if eval_labels.shape != eval_images.shape[:1]:
        raise ValueError(f"eval_data[1] must have shape ({eval_images.shape[0]},), got "
                         f"{tuple(eval_labels.shape)}")


def signature(model: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {name: (tuple(t.shape), t.dtype)
            for name, t in [*model.named_parameters(), *model.named_buffers()]}


def check_same_architecture(models: list[nn.Module], seeds: list[int]) -> None:
    reference = signature(models[0])
    for model, seed in zip(models[1:], seeds[1:], strict=True):
        other = signature(model)
        if other == reference:
            continue
        names = sorted(set(reference) ^ set(other))
        if names:
            detail = f"the tensor names differ ({names[:5]})"
        else:
            name = next(n for n in reference if reference[n] != other[n])
            detail = (f"{name!r} has shape/dtype {other[name]} instead of "
                      f"{reference[name]}")
        raise ValueError(f"build_model must build the same architecture for every seed, but "
                         f"build_model({seed}) differs from build_model({seeds[0]}): {detail}")


def batchnorm_statistics(model: nn.Module) -> str | None:
    """The first module keeping BatchNorm running statistics, described, or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            return f"{name or 'the model'} is {type(module).__name__}"
    return None


def check_vmappable(model: nn.Module) -> None:
    found = batchnorm_statistics(model)
    if found is not None:
        raise ValueError(
            f"vectorize=True cannot train a model with BatchNorm running statistics "
            f"({found}); use an instance-norm model (e.g. convnet with norm='instancenorm'), "
            "vectorize=False, or vectorize=None to fall back to sequential students")


@torch.no_grad()
def probe_num_classes(model: nn.Module, x: Tensor) -> int:
    """Number of logits, from one image, so label mismatches fail before any training."""
    was_training = model.training
    model.eval()
    try:
        out = model(x)
    finally:
        model.train(was_training)
    if out.ndim != 2:
        raise ValueError(f"build_model must return a classifier with (B, K) logits, got an "
                         f"output of shape {tuple(out.shape)}")
    return int(out.shape[1])


def check_classes(targets: Tensor, eval_data: tuple[Tensor, Tensor] | None,
                   num_classes: int) -> None:
    if targets.is_floating_point():
        if targets.shape[1] != num_classes:
            raise ValueError(f"soft targets have {targets.shape[1]} classes but the model "
                             f"returns {num_classes} logits")
    else:
        check_hard_labels("targets", targets, num_classes)
    if eval_data is not None:
        check_hard_labels("eval_data[1]", eval_data[1], num_classes)
