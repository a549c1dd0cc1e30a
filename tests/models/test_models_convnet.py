"""ConvNet specifics: spatial sizes of the distillation datasets and vectorised training."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state, vmap

from softlabels.models import MLP, ConvNet, create_model


@pytest.mark.parametrize(
    ("image_size", "depth", "feature_hw"),
    [(8, 3, (1, 1)), (28, 3, (3, 3)), (28, 4, (1, 1)), (32, 3, (4, 4)), (64, 4, (4, 4)),
     ((16, 40), 3, (2, 5))],
)
def test_feature_map_size_follows_floor_pooling(image_size, depth, feature_hw) -> None:
    model = ConvNet(10, 1, image_size, width=8, depth=depth)
    hw = (image_size, image_size) if isinstance(image_size, int) else image_size
    feats = model.features(torch.rand(2, 1, *hw))
    assert feats.shape == (2, 8, *feature_hw)
    assert model.classifier.in_features == 8 * feature_hw[0] * feature_hw[1]


@pytest.mark.parametrize(("image_size", "depth"), [(8, 4), (4, 3), ((64, 4), 3), (1, 1)])
def test_too_deep_for_the_image_is_an_error(image_size, depth) -> None:
    with pytest.raises(ValueError, match=rf"too small for convnet depth={depth}"):
        create_model("convnet", 10, 1, image_size, depth=depth)


def test_smallest_image_for_a_depth_works() -> None:
    model = create_model("convnet", 10, 1, 8, depth=3, width=4)
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize("name", ["convnet", "mlp"])
def test_fixed_size_models_reject_another_image_size(name: str) -> None:
    model = create_model(name, 10, 1, 28)
    with pytest.raises(ValueError, match=r"built for image_size \(28, 28\).*image_size=\(32, 32\)"):
        model(torch.rand(2, 1, 32, 32))


def test_no_batchnorm_or_running_buffers_by_default() -> None:
    # vmap over stacked copies needs per-sample statistics, no running-stat updates.
    model = ConvNet(10)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert {name for name, _ in model.named_buffers()} == {"normalize.mean", "normalize.std"}


def _stack(seed: int, count: int, **kwargs) -> list[torch.nn.Module]:
    torch.manual_seed(seed)
    return [create_model("convnet", 10, 3, 32, **kwargs) for _ in range(count)]


def test_vmap_over_stacked_convnets_matches_a_loop() -> None:
    models = _stack(0, 3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def call(p, b, data):
        return functional_call(base, (p, b), (data,))

    batched = vmap(call, in_dims=(0, 0, None))(params, buffers, x)
    looped = torch.stack([m(x) for m in models])
    assert batched.shape == (3, 4, 10)
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-5)
    # The copies differ, so a vmap that broadcast one model would fail the check above.
    assert not torch.allclose(looped[0], looped[1])


def test_vmap_gradients_match_a_loop() -> None:
    # With the dataset normalisation in place, as in real use. On raw [0, 1] inputs the
    # first InstanceNorm's backward is ill-conditioned in float32 (large channel means):
    # eager and vmapped kernels then differ by ~1% on some seeds, and float64 shows the
    # eager result is the inaccurate one, so that is a PyTorch numerics issue, not vmap.
    models = _stack(2, 3, width=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 5, 3, 32, 32, generator=gen)  # a different batch per model
    y = torch.randint(10, (3, 5), generator=gen)

    def loss(p, b, data, target):
        return F.cross_entropy(functional_call(base, (p, b), (data,)), target)

    grads = vmap(grad(loss), in_dims=(0, 0, 0, 0))(params, buffers, x, y)
    for i, model in enumerate(models):
        model.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        for name, param in model.named_parameters():
            torch.testing.assert_close(grads[name][i], param.grad, rtol=1e-4, atol=1e-6)


def test_mlp_hidden_widths() -> None:
    model = MLP(10, 1, 8, hidden=(32, 16))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 10)]
