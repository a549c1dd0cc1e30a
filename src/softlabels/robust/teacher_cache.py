"""The frozen teacher's logits of every augmented training image, computed once.

ARD, Fair-ARD, RSLAD and ABSLD give the teacher the *same augmented clean batch* as the
student: the official code calls ``teacher(train_batch_data)`` on the output of
``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip``. The logits of the un-augmented
images would be other targets. A crop/flip augmentation has finitely many outcomes per image,
though: (2p + 1)^2 offsets times 2 flips (162 for CIFAR's padding 4). The cache holds the
teacher's logits of all of them, (N, V, K), computed once in a fixed order (the same numbers
in every process).

During training, :meth:`TeacherLogitCache.augment` is the augmentation: it runs the study's own
augmentation (the same draws from the same generator, so the same images as a run without the
cache) on the batch with two extra probe channels that hold each pixel's source row and
column, reads from them which variant each image got, and checks that this variant reproduces
the probe exactly. The distiller then looks the logits up by (position, variant).

It pays when students x epochs exceed V: without it every student epoch costs one teacher
forward pass per image; the cache costs V per image, once for all students.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_bool, check_choice
from .._io import tensor_digest, torch_load, torch_save
from ..data.augment import RandomCrop, RandomFlip, crop_windows
from ..engine.training import autocast
from ..runtime import follow_device, resolve_device

__all__ = ["CropFlipVariants", "TeacherLogitCache"]

Augmentation = Callable[[Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class CropFlipVariants:
    """The outcomes of a shift by up to ``padding`` pixels and an optional horizontal flip.

    Variant ``v = ((dy + p) * (2p + 1) + (dx + p)) * F + f``: output pixel (i, j) shows source
    pixel (i + dy, j + dx) when f = 0 and (i + dy, W - 1 - j + dx) when f = 1; ``F`` is 2 with
    a flip, else 1. Pixels from outside the image are zeros (or reflected, as the crop pads).
    """

    padding: int = 0
    padding_mode: str = "zeros"
    flip: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) \
                or self.padding < 0:
            raise ValueError(f"padding must be an int >= 0, got {self.padding!r}")
        check_choice("padding_mode", self.padding_mode, ("zeros", "reflect"))
        check_bool("flip", self.flip)

    @classmethod
    def of(cls, augment: Augmentation | None) -> CropFlipVariants:
        """The variants of an :class:`~softlabels.data.Augment` of at most one
        :class:`~softlabels.data.RandomCrop` and one :class:`~softlabels.data.RandomFlip`
        (the ``none``, ``flip`` and ``flip_crop`` presets); None: no augmentation.

        Raises:
            ValueError: any other augmentation (its outcomes cannot be enumerated).
        """
        if augment is None:
            return cls()
        steps = tuple(getattr(augment, "steps", (augment,)))
        crops = [s for s in steps if isinstance(s, RandomCrop)]
        flips = [s for s in steps if isinstance(s, RandomFlip)]
        if len(crops) + len(flips) != len(steps) or len(crops) > 1 or len(flips) > 1:
            raise ValueError(f"the teacher cache enumerates crop and flip augmentations only "
                             f"(none, flip, flip_crop), got {augment!r}")
        crop = crops[0] if crops else RandomCrop(0)
        return cls(crop.padding, crop.padding_mode, bool(flips) and flips[0].p > 0)

    @property
    def count(self) -> int:
        """V, the number of variants."""
        return (2 * self.padding + 1) ** 2 * (2 if self.flip else 1)

    def apply(self, x: Tensor, variants: Tensor) -> Tensor:
        """float (B, C, H, W) images, each in its variant of int64 (B,) ``variants``."""
        p, side, flips = self.padding, 2 * self.padding + 1, 2 if self.flip else 1
        variants = variants.to(x.device)
        shift, flipped = variants // flips, variants % flips
        out = x
        if p:
            mode = "constant" if self.padding_mode == "zeros" else "reflect"
            padded = F.pad(x, (p, p, p, p), mode=mode)
            out = crop_windows(padded, shift // side, shift % side, x.shape[2], x.shape[3])
        if self.flip:
            out = torch.where((flipped == 1)[:, None, None, None], out.flip(3), out)
        return out

    def decode(self, probe: Tensor) -> Tensor:
        """int64 (B,) variants from augmented float (B, 2, H, W) probes (:func:`_probe`).

        Read at the centre pixel, which stays inside the image for any shift.
        """
        h, w = probe.shape[2:]
        ci, cj = h // 2, w // 2
        rows = torch.round(probe[:, 0, ci, cj] * (h + 1)).long() - 1
        cols = torch.round(probe[:, 1, ci, cj] * (w + 1)).long() - 1
        flipped = probe[:, 1, ci, cj] < probe[:, 1, ci, cj - 1]
        dx = torch.where(flipped, cols - (w - 1 - cj), cols - cj)
        p = self.padding
        dy, dx = (rows - ci).clamp(-p, p), dx.clamp(-p, p)
        return ((dy + p) * (2 * p + 1) + dx + p) * (2 if self.flip else 1) + flipped.long()


def _probe(like: Tensor) -> Tensor:
    """float (B, 2, H, W): each pixel's (row + 1) / (H + 1) and (column + 1) / (W + 1)."""
    b, _, h, w = like.shape
    rows = (torch.arange(h, device=like.device, dtype=like.dtype) + 1) / (h + 1)
    cols = (torch.arange(w, device=like.device, dtype=like.dtype) + 1) / (w + 1)
    grid = torch.stack([rows[:, None].expand(h, w), cols[None, :].expand(h, w)])
    return grid[None].expand(b, 2, h, w)


class TeacherLogitCache:
    """float (N, V, K) teacher logits of N training images in V variants (module docstring).

    Build it with :meth:`compute` (or :meth:`load_or_compute`); train with
    ``fit(..., targets=TeacherLogitCache.targets(labels), augment=cache.augment)`` and a
    distiller given ``teacher_cache=cache``.
    """

    def __init__(self, logits: Tensor, variants: CropFlipVariants,
                 augment: Augmentation | None, fingerprint: dict[str, Any]) -> None:
        if logits.ndim != 3 or logits.shape[1] != variants.count:
            raise ValueError(f"logits must be (N, {variants.count}, K), got "
                             f"{tuple(logits.shape)}")
        self.logits, self.variants, self.fingerprint = logits, variants, fingerprint
        self._augment = augment
        self._last: Tensor | None = None

    @classmethod
    def compute(cls, teacher: nn.Module, images: Tensor, augment: Augmentation | None, *,
                batch_size: int = 512, device: str | torch.device = "auto",
                precision: str = "fp32") -> TeacherLogitCache:
        """The logits of every variant of every image of float (N, C, H, W) ``images``, the
        teacher in eval mode under the training's autocast ``precision``."""
        variants = CropFlipVariants.of(augment)
        target = resolve_device(device)
        teacher.eval()
        parts = []
        with torch.no_grad(), autocast(target, precision):
            for start in range(0, images.shape[0], batch_size):
                batch = images[start:start + batch_size].to(target)
                net = follow_device(teacher, batch)
                parts.append(torch.stack([
                    net(variants.apply(batch, torch.full((batch.shape[0],), v))).float().cpu()
                    for v in range(variants.count)], 1))
        return cls(torch.cat(parts), variants, augment,
                   cls._fingerprint(teacher, images, variants, precision))

    @staticmethod
    def _fingerprint(teacher: nn.Module, images: Tensor, variants: CropFlipVariants,
                     precision: str) -> dict[str, Any]:
        return {"teacher": tensor_digest(dict(teacher.state_dict())),
                "images": tensor_digest({"images": images}), "variants": asdict(variants),
                "precision": precision}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the logits and what they were computed from (atomically)."""
        torch_save(path, {"logits": self.logits,
                          "fingerprint": json.dumps(self.fingerprint, sort_keys=True)})

    @classmethod
    def load_or_compute(cls, path: str | os.PathLike[str], teacher: nn.Module, images: Tensor,
                        augment: Augmentation | None, *, device: str | torch.device = "auto",
                        precision: str = "fp32") -> TeacherLogitCache:
        """The cache at ``path`` when it was computed for this teacher, these images and
        this augmentation; otherwise compute it and save it there."""
        variants = CropFlipVariants.of(augment)
        wanted = cls._fingerprint(teacher, images, variants, precision)
        if Path(path).is_file():
            stored = torch_load(path)
            if json.loads(stored["fingerprint"]) == wanted:
                return cls(stored["logits"], variants, augment, wanted)
        cache = cls.compute(teacher, images, augment, device=device, precision=precision)
        cache.save(path)
        return cache

    @staticmethod
    def targets(labels: Tensor) -> Tensor:
        """int64 (N, 2) training targets ``(label, position)`` of int64 (N,) ``labels``."""
        return torch.stack([labels, torch.arange(labels.shape[0], device=labels.device)], 1)

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The study's augmentation of float (B, C, H, W) ``x``; remembers each image's
        variant for the next :meth:`lookup`.

        Raises:
            ValueError: the augmentation moved pixels in a way no variant reproduces.
        """
        if self._augment is None:
            self._last = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            return x
        probe = _probe(x)
        out = self._augment(torch.cat([x, probe], 1), generator)
        moved = out[:, x.shape[1]:]
        variants = self.variants.decode(moved)
        if not torch.equal(self.variants.apply(probe, variants), moved):
            raise ValueError(f"the augmentation {self._augment!r} moved pixels in a way no "
                             "crop/flip variant reproduces; train without the teacher cache")
        self._last = variants
        return out[:, :x.shape[1]]

    def lookup(self, targets: Tensor) -> tuple[Tensor, Tensor]:
        """(int64 (B,) labels, float (B, K) logits) of int64 (B, 2) ``(label, position)``
        targets, in the variants of the last :meth:`augment`."""
        if targets.ndim != 2 or targets.shape[1] != 2:
            raise ValueError(f"with a teacher cache the targets are (B, 2) (label, position) "
                             f"rows (TeacherLogitCache.targets), got {tuple(targets.shape)}")
        last, self._last = self._last, None
        if last is None or last.shape[0] != targets.shape[0]:
            raise ValueError("no variants recorded for this batch: pass the cache's augment "
                             "to fit (fit(..., augment=cache.augment))")
        if self.logits.device != targets.device:  # moved once, then indexed there
            self.logits = self.logits.to(targets.device)
        return targets[:, 0], self.logits[targets[:, 1], last.to(targets.device)]

    @staticmethod
    def check_against(teacher_logits: Tensor, cached: Tensor) -> None:
        """Raise ValueError when cached float (B, K) logits differ from the teacher's own on
        the same batch by more than the precision's rounding."""
        tolerance = 1e-3 if teacher_logits.dtype == torch.float32 else 5e-2
        scale = 1.0 + float(teacher_logits.detach().abs().max())
        gap = float((teacher_logits.detach().float() - cached.to(teacher_logits.device)
                     .float()).abs().max())
        if gap > tolerance * scale:
            raise ValueError(f"the teacher cache does not hold this teacher's logits (largest "
                             f"difference {gap:.3g} on the first batch): it was computed for "
                             "other weights, images or augmentation; recompute it")
