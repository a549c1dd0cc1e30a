"""Seeded augmentation of image batches, as tensor ops (no PIL, works on any device).

Every function takes ``(N, C, H, W)`` floating-point images and a ``generator``: a
``torch.Generator``, an ``int`` seed, or ``None`` for a fresh non-deterministic seed. Random
numbers are always drawn from that generator on *its* device and then moved to the images'
device, so the same seed gives the same augmentation on CPU and GPU, and the global RNG is never
touched. Output has the input's shape, dtype and device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_float, check_ndim, check_range
from ..distributed import draw_rows

GeneratorLike = torch.Generator | int | None


def make_generator(generator: GeneratorLike) -> torch.Generator:
    """Return ``generator`` itself, a CPU generator seeded with an ``int``, or a fresh one."""
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        fresh = torch.Generator()
        fresh.seed()  # non-deterministic seed, without reading or advancing the global RNG
        return fresh
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(
            f"generator must be a torch.Generator, an int seed or None, got "
            f"{type(generator).__name__}"
        )
    return torch.Generator().manual_seed(generator)


def check_images(name: str, x: object) -> Tensor:
    """Require a floating-point ``(N, C, H, W)`` tensor."""
    tensor = check_float(name, x)
    check_ndim(name, tensor, (4,))
    return tensor


def uniform(n: int, generator: torch.Generator, like: Tensor, *, per_sample: bool = True
            ) -> Tensor:
    """``(n,)`` uniform [0, 1) draws from ``generator``, on ``like``'s device and dtype.

    ``per_sample`` draws (one per image of the batch) are made for the whole global batch
    under data-parallel training and this rank's rows kept
    (:func:`softlabels.distributed.draw_rows`), so they do not depend on the number of ranks.
    """
    if per_sample:
        draws = draw_rows(torch.rand, (n,), generator, device=generator.device)
    else:
        draws = torch.rand(n, generator=generator, device=generator.device)
    return draws.to(device=like.device, dtype=like.dtype)


def randint(
    low: int, high: int, n: int, generator: torch.Generator, device: torch.device, *,
    per_sample: bool = True,
) -> Tensor:
    """``(n,)`` int64 draws in ``[low, high)`` from ``generator``, moved to ``device``
    (``per_sample`` as in :func:`uniform`)."""
    if per_sample:
        draws = draw_rows(lambda shape, **kw: torch.randint(low, high, shape, **kw), (n,),
                          generator, device=generator.device)
    else:
        draws = torch.randint(low, high, (n,), generator=generator, device=generator.device)
    return draws.to(device)


def random_flip(x: Tensor, p: float = 0.5, *, generator: GeneratorLike = None) -> Tensor:
    """Flip each image left-right with probability ``p``, independently.

    Args:
        x: ``(N, C, H, W)`` float images.
        p: flip probability in [0, 1].
        generator: ``torch.Generator``, ``int`` seed or ``None``.

    Returns:
        ``(N, C, H, W)`` tensor, same dtype and device.
    """
    check_images("x", x)
    p = check_range("p", p, 0.0, 1.0)
    g = make_generator(generator)
    flip = uniform(x.shape[0], g, x) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_crop(
    x: Tensor, padding: int, *, padding_mode: str = "zeros", generator: GeneratorLike = None
) -> Tensor:
    """Pad each image by ``padding`` pixels, then crop it back at a random offset per image.

    The classic CIFAR augmentation (``padding=4``), vectorised: each image gets its own
    offset in ``[0, 2 * padding]`` on both axes.

    Args:
        x: ``(N, C, H, W)`` float images.
        padding: pixels added on each side (``0`` returns the images unchanged).
        padding_mode: ``"zeros"`` or ``"reflect"`` (needs ``padding < H`` and ``< W``).
        generator: ``torch.Generator``, ``int`` seed or ``None``.

    Returns:
        ``(N, C, H, W)`` tensor, same dtype and device; differentiable w.r.t. ``x``.
    """
    check_images("x", x)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    check_choice("padding_mode", padding_mode, ("zeros", "reflect"))
    n, _, h, w = x.shape
    if padding_mode == "reflect" and padding >= min(h, w):
        raise ValueError(
            f"padding must be smaller than the image size {h}x{w} for reflect padding, "
            f"got {padding}"
        )
    g = make_generator(generator)
    if padding == 0:
        return x.clone()
    mode = "constant" if padding_mode == "zeros" else "reflect"
    padded = F.pad(x, (padding, padding, padding, padding), mode=mode)
    top = randint(0, 2 * padding + 1, n, g, x.device)
    left = randint(0, 2 * padding + 1, n, g, x.device)
    return crop_windows(padded, top, left, h, w)


def crop_windows(padded: Tensor, top: Tensor, left: Tensor, h: int, w: int) -> Tensor:
    """Per-image ``h x w`` windows of ``padded`` starting at rows ``top``, columns ``left``."""
    n = padded.shape[0]
    rows = top[:, None] + torch.arange(h, device=padded.device)  # (N, h)
    cols = left[:, None] + torch.arange(w, device=padded.device)  # (N, w)
    batch = torch.arange(n, device=padded.device)[:, None, None]
    # Advanced indices separated by the channel slice put their broadcast shape first:
    # the result is (N, h, w, C).
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


class BatchOp(Protocol):
    """An augmentation step: ``(images, generator) -> images``."""

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor: ...


class RandomFlip:
    """:func:`random_flip` as a step of :class:`Augment`."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = check_range("p", p, 0.0, 1.0)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return random_flip(x, self.p, generator=generator)

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p})"


class RandomCrop:
    """:func:`random_crop` as a step of :class:`Augment`."""

    def __init__(self, padding: int, padding_mode: str = "zeros") -> None:
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be an int >= 0, got {padding!r}")
        self.padding = padding
        self.padding_mode = check_choice("padding_mode", padding_mode, ("zeros", "reflect"))

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return random_crop(x, self.padding, padding_mode=self.padding_mode, generator=generator)

    def __repr__(self) -> str:
        return f"RandomCrop(padding={self.padding}, padding_mode={self.padding_mode!r})"


class Augment:
    """Apply steps in order, all drawing from one generator.

    Steps are callables ``(x, generator) -> x`` (:class:`RandomFlip`, :class:`RandomCrop`,
    :class:`~softlabels.data.dsa.DSA`, or your own). One call with a given seed is
    reproducible; with one ``torch.Generator`` reused across calls, each call draws fresh
    parameters.

    Example:
        >>> augment = Augment(RandomCrop(4), RandomFlip())
        >>> augment(torch.rand(8, 3, 32, 32), generator=0).shape
        torch.Size([8, 3, 32, 32])
    """

    def __init__(self, *steps: BatchOp | Callable[[Tensor, torch.Generator], Tensor]) -> None:
        for step in steps:
            if not callable(step):
                raise TypeError(f"each step must be callable, got {type(step).__name__}")
        self.steps = steps

    def __call__(self, x: Tensor, generator: GeneratorLike = None) -> Tensor:
        """Augment ``(N, C, H, W)`` float images; returns the same shape, dtype and device."""
        check_images("x", x)
        g = make_generator(generator)
        for step in self.steps:
            x = step(x, g)
        return x

    def __repr__(self) -> str:
        return f"Augment({', '.join(repr(s) for s in self.steps)})"
