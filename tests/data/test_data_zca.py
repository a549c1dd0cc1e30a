"""ZCA whitening against a NumPy reference and kornia, and its identity (digest)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from softlabels.data.zca import ZCA, fit_zca


def _images(n: int = 200, seed: int = 0) -> torch.Tensor:
    """Correlated pixels: a smooth random field plus noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 1, 1, generator=g)
    return (0.6 * base + 0.4 * torch.rand(n, 2, 3, 3, generator=g)).clamp(0, 1)


def _numpy_reference(images: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    flat = images.reshape(len(images), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    covariance = np.cov(flat, rowvar=False)  # unbiased, as kornia
    values, vectors = np.linalg.eigh(covariance)
    matrix = vectors @ np.diag(1.0 / np.sqrt(np.clip(values, 0, None) + eps)) @ vectors.T
    return mean, matrix


@pytest.mark.parametrize("eps", [0.1, 1e-3])
def test_matches_the_numpy_reference(eps: float) -> None:
    images = _images()
    zca = fit_zca(images, eps)
    mean, matrix = _numpy_reference(images.numpy(), eps)
    np.testing.assert_allclose(zca.mean.numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(zca.matrix.numpy(), matrix, rtol=1e-4, atol=1e-4)
    test = _images(7, seed=1)
    expected = (test.reshape(7, -1).double().numpy() - mean) @ matrix
    np.testing.assert_allclose(zca(test).reshape(7, -1).numpy(), expected, rtol=1e-4,
                               atol=1e-4)


def test_whitened_training_images_have_identity_covariance() -> None:
    images = _images(2000)
    whitened = fit_zca(images, eps=1e-6)(images).reshape(2000, -1).double()
    covariance = np.cov(whitened.numpy(), rowvar=False)
    np.testing.assert_allclose(covariance, np.eye(covariance.shape[0]), atol=1e-3)


@pytest.mark.skipif(importlib.util.find_spec("kornia") is None,
                    reason="kornia is not installed (pip install kornia)")
def test_matches_kornia() -> None:
    from kornia.enhance import ZCAWhitening

    images = _images()
    theirs = ZCAWhitening(eps=0.1).fit(images)
    test = _images(5, seed=2)
    torch.testing.assert_close(fit_zca(images, 0.1)(test), theirs(test), rtol=1e-4,
                               atol=1e-4)


def test_state_round_trip_and_digest() -> None:
    zca = fit_zca(_images())
    again = ZCA.from_state(zca.state_dict())
    assert again.digest() == zca.digest()
    assert fit_zca(_images(), eps=0.2).digest() != zca.digest()
    with pytest.raises(ValueError, match=r"needs \['matrix'\] as well"):
        ZCA.from_state({k: v for k, v in zca.state_dict().items() if k != "matrix"})


@pytest.mark.parametrize(("call", "message"), [
    (lambda: fit_zca(torch.rand(1, 1, 2, 2)), "at least 2 training images"),
    (lambda: fit_zca(torch.rand(4, 1, 2, 2), eps=0.0), "eps must be a number > 0"),
    (lambda: fit_zca(torch.full((4, 1, 2, 2), float("nan"))), "must be finite"),
    (lambda: fit_zca(torch.rand(4, 1, 2, 2))(torch.rand(2, 1, 3, 3)),
     r"fitted on images of shape \(1, 2, 2\), got \(1, 3, 3\)"),
])
def test_bad_input(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
