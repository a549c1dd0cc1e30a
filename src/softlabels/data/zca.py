"""ZCA whitening, as the dataset-distillation code applies it to CIFAR-10.

The official code of Qin et al. (and of MTT/DATM before it) whitens the training and test
images with kornia's ``ZCAWhitening(eps=0.1)`` fitted on the training images: ``x`` flattened
to ``D = C * H * W`` values, centred by the training mean ``mu``, is mapped to ``(x - mu) W``
with ``W = U diag(1 / sqrt(s + eps)) U^T`` from the eigendecomposition ``U diag(s) U^T`` of
the (unbiased) covariance of the training images. Experts and students then see whitened
tensors, and DSA augments them. The transform here is written from that definition (fitted
in float64, applied in float32) and recorded by a digest, so labels made for whitened inputs
are never reused with raw ones (or with another whitening).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_float, check_ndim

__all__ = ["ZCA", "fit_zca"]


@dataclass(frozen=True)
class ZCA:
    """A fitted whitening: ``whiten(x) = (x.flatten(1) - mean) @ matrix``, reshaped back.

    Attributes:
        mean: float32 (D,) the training images' mean.
        matrix: float32 (D, D) the symmetric whitening matrix.
        eps: the eigenvalue regulariser it was fitted with.
        shape: (C, H, W) of the images it applies to.
    """

    mean: Tensor
    matrix: Tensor
    eps: float
    shape: tuple[int, int, int]

    def __call__(self, images: Tensor) -> Tensor:
        """Whiten float (N, C, H, W) images of :attr:`shape`; returns float32 (N, C, H, W)."""
        check_float("images", images)
        check_ndim("images", images, (4,))
        if tuple(images.shape[1:]) != self.shape:
            raise ValueError(f"this ZCA was fitted on images of shape {self.shape}, got "
                             f"{tuple(images.shape[1:])}")
        flat = images.reshape(images.shape[0], -1).to(self.matrix)
        mean, matrix = self.mean.to(flat.device), self.matrix.to(flat.device)
        return ((flat - mean) @ matrix).reshape(images.shape)

    def digest(self) -> str:
        """SHA-256 of the transform (eps, shape, mean and matrix bytes): its identity in label
        stores, exports and run folders."""
        sha = hashlib.sha256(f"zca eps={self.eps!r} shape={self.shape}".encode())
        for tensor in (self.mean, self.matrix):
            sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return sha.hexdigest()

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to save (``torch.save`` / safetensors) and reload with :meth:`from_state`."""
        return {"mean": self.mean, "matrix": self.matrix,
                "eps": torch.tensor(self.eps, dtype=torch.float64),
                "shape": torch.tensor(self.shape, dtype=torch.int64)}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> ZCA:
        """The transform :meth:`state_dict` saved.

        Raises:
            ValueError: a missing entry or inconsistent shapes.
        """
        missing = sorted({"mean", "matrix", "eps", "shape"} - set(state))
        if missing:
            raise ValueError(f"a ZCA state needs {missing} as well")
        shape = tuple(int(v) for v in state["shape"].tolist())
        size = shape[0] * shape[1] * shape[2] if len(shape) == 3 else -1
        if state["mean"].shape != (size,) or state["matrix"].shape != (size, size):
            raise ValueError(f"ZCA state of shape {shape} has mean {tuple(state['mean'].shape)} "
                             f"and matrix {tuple(state['matrix'].shape)}")
        return cls(state["mean"].float(), state["matrix"].float(), float(state["eps"]),
                   shape)  # type: ignore[arg-type]


def fit_zca(images: Tensor, eps: float = 0.1) -> ZCA:
    """Fit ZCA whitening on float (N, C, H, W) training images (kornia's convention).

    Args:
        images: the training split, N >= 2.
        eps: added to the covariance eigenvalues before the inverse square root (0.1 in the
            official CIFAR-10 commands); > 0.

    Raises:
        ValueError: fewer than two images, a non-finite image, ``eps <= 0``.

    Example:
        >>> zca = fit_zca(torch.rand(50, 1, 4, 4))
        >>> zca(torch.rand(3, 1, 4, 4)).shape
        torch.Size([3, 1, 4, 4])
    """
    check_float("images", images)
    check_ndim("images", images, (4,))
    if images.shape[0] < 2:
        raise ValueError(f"ZCA needs at least 2 training images, got {images.shape[0]}")
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
        raise ValueError(f"eps must be a number > 0, got {eps!r}")
    flat = images.reshape(images.shape[0], -1).double()
    if not bool(torch.isfinite(flat).all()):
        raise ValueError("images must be finite")
    mean = flat.mean(dim=0)
    centred = flat - mean
    covariance = centred.T @ centred / (flat.shape[0] - 1)
    values, vectors = torch.linalg.eigh(covariance)
    # Round-off gives tiny negative eigenvalues for rank-deficient data; they are 0.
    scale = (values.clamp_min(0.0) + eps).rsqrt()
    matrix = (vectors * scale) @ vectors.T
    return ZCA(mean.float(), matrix.float(), float(eps),
               tuple(int(s) for s in images.shape[1:]))  # type: ignore[arg-type]
