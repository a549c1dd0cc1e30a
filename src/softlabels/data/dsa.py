"""Differentiable Siamese Augmentation (DSA) for dataset distillation.

Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021; this
reproduces ``DiffAugment`` / ``ParamDiffAug`` of the official code (VICO-UoE/DatasetCondensation,
``utils.py``), with its default parameters, as tensor ops that let gradients reach the images.

Semantics of the official code, kept here:

* The strategy is ops joined by ``_``; the default ``"color_crop_cutout_flip_scale_rotate"``.
  ``"color"`` stands for brightness, then saturation, then contrast.
* Mode: ``params.single=True`` (official ``aug_mode='S'``, the default) draws ONE op of the
  strategy per call, uniformly, and applies it to the whole batch; ``single=False``
  (``aug_mode='M'``) applies every listed op in turn.
* Per image (``siamese=False``, official ``seed=-1``) each image gets its own parameters;
  ``siamese=True`` (official ``seed != -1``) draws one set of parameters and applies it to every
  image of the batch. Calling twice with the same seed on batches of the same shape gives the
  same transforms (with ``siamese=True`` whatever the batch sizes): that is how real and
  synthetic batches are augmented identically.
* Ops, with ``N`` images of ``H x W`` (parameters drawn uniformly):

  - brightness: ``x + (u - 0.5) * brightness``, ``u`` in [0, 1) (``brightness=1.0``);
  - saturation: ``(x - m_c) * (u * saturation) + m_c``, ``m_c`` the per-pixel channel mean
    (``saturation=2.0``);
  - contrast: ``(x - m) * (u + contrast) + m``, ``m`` the image mean (``contrast=0.5``);
  - crop: integer translation in ``[-s, s]`` per axis, ``s = int(H * 0.125 + 0.5)``, uncovered
    pixels are zero (``ratio_crop_pad=0.125``);
  - cutout: a zeroed square of ``int(H * 0.5 + 0.5)`` pixels centred at a random pixel,
    clipped at the border (``ratio_cutout=0.5``);
  - flip: left-right with probability ``prob_flip=0.5``;
  - scale: ``sx, sy`` in ``[1/1.2, 1.2]`` (``ratio_scale=1.2``), bilinear ``grid_sample``;
  - rotate: angle in ``[-15, 15]`` degrees (``ratio_rotate=15``), bilinear ``grid_sample``.

  Values are not clamped to [0, 1] (the official code does not either).

Differences from the official code: random numbers come from a local ``torch.Generator``
(never the global RNG, which the official code reseeds at every draw), so the numbers drawn
for a seed differ from the official ones while the distributions are the same; in siamese mode
only one parameter set is drawn (the official code draws ``N`` and keeps the first);
``align_corners=False`` is passed explicitly (the PyTorch default the official code relies on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .augment import GeneratorLike, check_images, make_generator, randint, uniform

DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DSA_OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass(frozen=True)
class DSAParams:
    """Parameters of DSA; the defaults are the official ``ParamDiffAug``.

    Attributes:
        prob_flip: probability of a left-right flip.
        ratio_scale: scale factors are drawn in ``[1 / ratio_scale, ratio_scale]``.
        ratio_rotate: rotation angles are drawn in ``[-ratio_rotate, ratio_rotate]`` degrees.
        ratio_crop_pad: maximal translation, as a fraction of the image side.
        ratio_cutout: side of the cutout square, as a fraction of the image side.
        brightness: range of the additive brightness shift ``(u - 0.5) * brightness``.
        saturation: saturation factor ``u * saturation``.
        contrast: contrast factor ``u + contrast``.
        single: one op per call (official ``aug_mode='S'``) instead of all of them (``'M'``).
    """

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    single: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob_flip <= 1.0:
            raise ValueError(f"prob_flip must be in [0, 1], got {self.prob_flip}")
        if not self.ratio_scale >= 1.0:
            raise ValueError(f"ratio_scale must be >= 1, got {self.ratio_scale}")
        for name in ("ratio_rotate", "ratio_crop_pad", "ratio_cutout", "brightness",
                     "saturation", "contrast"):  # fmt: skip
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split ``"color_crop_..."`` into op names; ``""``/``"none"`` give no op."""
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be a string, got {type(strategy).__name__}")
    if strategy.lower() in ("", "none"):
        return ()
    ops = tuple(strategy.split("_"))
    unknown = [op for op in ops if op not in DSA_OPS]
    if unknown:
        raise ValueError(
            f"strategy {strategy!r} has unknown op(s) {unknown}; valid ops: {list(DSA_OPS)} "
            "joined by '_'"
        )
    return ops


def _draws(x: Tensor, siamese: bool) -> int:
    return 1 if siamese else x.shape[0]


def _per_image(values: Tensor, n: int) -> Tensor:
    """Broadcast one siamese draw to all ``n`` images (no-op for per-image draws)."""
    return values.expand(n) if values.shape[0] == 1 else values


def _brightness(x: Tensor, p: DSAParams, g: torch.Generator, siamese: bool) -> Tensor:
    u = _per_image(uniform(_draws(x, siamese), g, x, per_sample=not siamese), x.shape[0])
    return x + (u - 0.5)[:, None, None, None] * p.brightness


def _saturation(x: Tensor, p: DSAParams, g: torch.Generator, siamese: bool) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    u = _per_image(uniform(_draws(x, siamese), g, x, per_sample=not siamese), x.shape[0])
    return (x - mean) * (u * p.saturation)[:, None, None, None] + mean


def _contrast(x: Tensor, p: DSAParams, g: torch.Generator, siamese: bool) -> Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    u = _per_image(uniform(_draws(x, siamese), g, x, per_sample=not siamese), x.shape[0])
    return (x - mean) * (u + p.contrast)[:, None, None, None] + mean


def _color(x: Tensor, p: DSAParams, g: torch.Generator, siamese: bool) -> Tensor:
    for op in (_brightness, _saturation, _contrast):
        x = op(x, p, g, siamese)
    return x


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    """Resample ``x`` with per-image 2x3 matrices ``theta`` (output -> input coordinates)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _scale(x: Tensor, p: DSAParams, g: torch.Generator, siamese: bool) -> Tensor:
    n, k, r = x.shape[0], _draws(x, siamese), p.ratio_scale
    sx = _per_image(uniform(k, g, x, per_sample=not siamese) * (r - 1.0 / r) + 1.0 / r, n)
    sy = _per_image(uniform(k, g, x, per_sample=not siamese) * (r - 1.0 / r) + 1.0 / r, n)
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
    return _affine(x, theta)


def _rotate(x: Tensor, p: DSAParams, g: torch.Generator, siamese: bool) -> Tensor:
    n, k = x.shape[0], _draws(x, siamese)
    u = uniform(k, g, x, per_sample=not siamese)
    angle = _per_image((u - 0.5) * 2 * p.ratio_rotate / 180 * math.pi, n)
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
    )
    return _affine(x, theta)


def _flip(x: Tensor, p: DSAParams, g: torch.Generator, siamese: bool) -> Tensor:
    u = _per_image(uniform(_draws(x, siamese), g, x, per_sample=not siamese), x.shape[0])
    return torch.where((u < p.prob_flip)[:, None, None, None], x.flip(3), x)


def _crop(x: Tensor, p: DSAParams, g: torch.Generator, siamese: bool) -> Tensor:
    n, _, h, w = x.shape
    k = _draws(x, siamese)
    shift_h, shift_w = int(h * p.ratio_crop_pad + 0.5), int(w * p.ratio_crop_pad + 0.5)
    dy = _per_image(randint(-shift_h, shift_h + 1, k, g, x.device, per_sample=not siamese), n)
    dx = _per_image(randint(-shift_w, shift_w + 1, k, g, x.device, per_sample=not siamese), n)
    # Output pixel (i, j) takes input pixel (i + dy, j + dx), zero outside: index a one-pixel
    # zero border, clamping every outside position onto it (as the official code does).
    padded = F.pad(x, (1, 1, 1, 1))
    rows = (torch.arange(h, device=x.device)[None] + dy[:, None] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device)[None] + dx[:, None] + 1).clamp(0, w + 1)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)


def _cutout(x: Tensor, p: DSAParams, g: torch.Generator, siamese: bool) -> Tensor:
    n, _, h, w = x.shape
    k = _draws(x, siamese)
    size_h, size_w = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
    # Centre in [0, H] for an even square, [0, H) for an odd one, as in the official code.
    per_sample = not siamese
    cy = _per_image(randint(0, h + (1 - size_h % 2), k, g, x.device, per_sample=per_sample), n)
    cx = _per_image(randint(0, w + (1 - size_w % 2), k, g, x.device, per_sample=per_sample), n)
    top, left = cy - size_h // 2, cx - size_w // 2
    rows = torch.arange(h, device=x.device)[None]  # (1, H)
    cols = torch.arange(w, device=x.device)[None]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size_h)  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size_w)  # (N, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (N, H, W)
    return x * keep[:, None].to(x.dtype)


_OPS = {
    "color": _color,
    "crop": _crop,
    "cutout": _cutout,
    "flip": _flip,
    "scale": _scale,
    "rotate": _rotate,
}


def dsa(
    x: Tensor,
    strategy: str = DSA_STRATEGY,
    *,
    generator: GeneratorLike = None,
    siamese: bool = False,
    params: DSAParams | None = None,
) -> Tensor:
    """Apply differentiable siamese augmentation to a batch (see the module docstring).

    Args:
        x: ``(N, C, H, W)`` float images (any device; gradients flow back to them).
        strategy: ops joined by ``_``, from ``color, crop, cutout, flip, scale, rotate``;
            ``""`` or ``"none"`` returns ``x`` unchanged.
        generator: ``torch.Generator``, ``int`` seed (same seed, same transforms) or ``None``.
        siamese: share one set of parameters across the batch.
        params: :class:`DSAParams`; ``None`` = the official defaults.

    Returns:
        ``(N, C, H, W)`` tensor of ``x``'s dtype and device.

    Example:
        >>> real, syn = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
        >>> a = dsa(real, generator=7, siamese=True)
        >>> b = dsa(syn, generator=7, siamese=True)  # same crop/flip/... as ``a``
    """
    check_images("x", x)
    ops = parse_strategy(strategy)
    params = params if params is not None else DSAParams()
    if not isinstance(params, DSAParams):
        raise TypeError(f"params must be DSAParams or None, got {type(params).__name__}")
    if not ops:
        return x
    g = make_generator(generator)
    if params.single:
        ops = (ops[int(torch.randint(0, len(ops), (1,), generator=g, device=g.device))],)
    for op in ops:
        x = _OPS[op](x, params, g, bool(siamese))
    return x.contiguous()


class DSA:
    """DSA as a reusable callable, e.g. a step of :class:`~softlabels.data.augment.Augment`.

    Args:
        strategy: ops joined by ``_`` (default: all six).
        params: :class:`DSAParams` (default: the official parameters).
        siamese: share one transform across each batch.
    """

    def __init__(self, strategy: str = DSA_STRATEGY, params: DSAParams | None = None,
                 siamese: bool = False) -> None:  # fmt: skip
        parse_strategy(strategy)  # fail at construction, not at the first batch
        self.strategy = strategy
        self.params = params if params is not None else DSAParams()
        self.siamese = siamese

    def __call__(self, x: Tensor, generator: GeneratorLike = None) -> Tensor:
        """Augment ``(N, C, H, W)`` images; see :func:`dsa`."""
        return dsa(x, self.strategy, generator=generator, siamese=self.siamese,
                   params=self.params)  # fmt: skip

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, siamese={self.siamese}, params={self.params})"
