"""Normalize and the norm-layer factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from softlabels.models import NORM_CHOICES, Normalize, make_norm

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def test_normalize_matches_per_channel_formula() -> None:
    x = torch.rand(4, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    out = Normalize(3, MEAN, STD)(x)
    for c in range(3):
        torch.testing.assert_close(out[:, c], (x[:, c] - MEAN[c]) / STD[c])


def test_normalize_none_is_identity() -> None:
    x = torch.rand(2, 1, 3, 3)
    assert torch.equal(Normalize(1)(x), x)


def test_normalize_accepts_a_tensor() -> None:
    norm = Normalize(2, torch.tensor([0.5, 0.25]), torch.tensor([2.0, 4.0]))
    out = norm(torch.ones(1, 2, 1, 1))
    assert out.flatten().tolist() == [0.25, 0.1875]


def test_normalize_statistics_are_buffers_in_the_state_dict() -> None:
    norm = Normalize(3, MEAN, STD)
    assert list(norm.parameters()) == []
    state = norm.state_dict()
    assert set(state) == {"mean", "std"}
    torch.testing.assert_close(state["std"].flatten(), torch.tensor(STD))


def test_normalize_buffers_move_with_to() -> None:
    norm = Normalize(3, MEAN, STD).to(torch.float64)
    assert norm.mean.dtype == torch.float64
    assert norm.std.dtype == torch.float64
    meta = Normalize(3, MEAN, STD).to("meta")
    assert meta.mean.device.type == "meta"
    assert meta.std.device.type == "meta"


def test_normalize_gradient_reaches_the_input() -> None:
    # Attacks differentiate through the model w.r.t. pixels: d out / d x = 1 / std.
    x = torch.rand(1, 3, 2, 2, requires_grad=True)
    Normalize(3, MEAN, STD)(x).sum().backward()
    torch.testing.assert_close(x.grad[0, :, 0, 0], 1 / torch.tensor(STD))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mean": (0.5, 0.5)}, ValueError, r"mean must have one value per input channel \(3\)"),
        ({"std": (0.5,) * 4}, ValueError, r"std must have one value per input channel \(3\)"),
        ({"std": (0.5, 0.0, 0.5)}, ValueError, "std must be > 0"),
        ({"std": (0.5, -1.0, 0.5)}, ValueError, "std must be > 0"),
        ({"std": (0.5, float("nan"), 0.5)}, ValueError, "std must be finite"),
        ({"mean": 0.5}, TypeError, "mean must be a sequence of 3 numbers, got float"),
        ({"mean": ("a", "b", "c")}, TypeError, "mean must hold numbers, got str"),
        ({"mean": torch.zeros(3, 1)}, ValueError, "mean must be a 1-D sequence"),
    ],
)
def test_normalize_rejects_bad_statistics(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Normalize(3, **kwargs)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.rand(2, 1, 4, 4), ValueError, r"x must have shape \(N, 3, H, W\), got \(2, 1, 4"),
        (torch.rand(3, 4, 4), ValueError, r"x must have shape \(N, 3, H, W\)"),
        (torch.ones(1, 3, 2, 2, dtype=torch.uint8), TypeError, "x must be a floating-point"),
    ],
)
def test_normalize_rejects_bad_input(x: torch.Tensor, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Normalize(3)(x)


def test_make_norm_kinds() -> None:
    assert isinstance(make_norm("batchnorm", 8), nn.BatchNorm2d)
    instance = make_norm("instancenorm", 8)
    assert isinstance(instance, nn.GroupNorm)
    assert (instance.num_groups, instance.num_channels, instance.affine) == (8, 8, True)
    layer = make_norm("layernorm", 8)
    assert isinstance(layer, nn.GroupNorm)
    assert layer.num_groups == 1
    assert make_norm("groupnorm", 64).num_groups == 8
    assert make_norm("groupnorm", 12).num_groups == 4
    assert isinstance(make_norm("none", 8), nn.Identity)
    assert set(NORM_CHOICES) == {"batchnorm", "instancenorm", "layernorm", "groupnorm", "none"}


def test_instancenorm_normalises_each_sample_and_channel() -> None:
    x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0)) * 3 + 7
    out = make_norm("instancenorm", 4)(x)
    torch.testing.assert_close(out.mean(dim=(2, 3)), torch.zeros(2, 4), atol=1e-5, rtol=0)


def test_make_norm_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"norm must be one of .*got 'batch'"):
        make_norm("batch", 8)
