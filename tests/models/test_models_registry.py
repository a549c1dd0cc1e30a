"""create_model / list_models, and properties every registered model must have."""

from __future__ import annotations

import copy
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from softlabels.models import Normalize, check_model, create_model, list_models, model_kwargs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import (
    assert_close_on,
    assert_on,
    assert_states_close,
    device_fixture,  # noqa: F401  (the device fixture)
    gen,
    grads,
    off_cpu,
    seeded,
)


@dataclass(frozen=True)
class Case:
    """One way to build and call a model: arguments, input shape and expected output shape."""

    name: str
    label: str
    num_classes: int = 10
    in_channels: int = 3
    image_size: int | tuple[int, int] = 32
    kwargs: dict = field(default_factory=dict)
    batch: int = 2

    @property
    def input_hw(self) -> tuple[int, int]:
        if isinstance(self.image_size, int):
            return self.image_size, self.image_size
        return tuple(self.image_size)

    def input(self, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(self.batch, self.in_channels, *self.input_hw, generator=gen)

    def output_shape(self) -> tuple[int, ...]:
        if self.name in SEGMENTATION:
            return (self.batch, self.num_classes, *self.input_hw)
        return (self.batch, self.num_classes)


# Models whose output is per-pixel logits at the input resolution.
SEGMENTATION = {"unet"}

# Expected input sizes of the studies; a registered model missing here gets a generic
# 3x32x32 classification case, so a new model is still exercised (and a segmentation model
# must be added to SEGMENTATION for its shape check to pass).
CASES: dict[str, list[Case]] = {
    "mlp": [
        Case("mlp", "cifar"),
        Case("mlp", "digits", in_channels=1, image_size=8),
        Case("mlp", "linear", in_channels=1, image_size=(8, 6), kwargs={"hidden": ()}),
    ],
    "convnet": [
        Case("convnet", "cifar-d3"),
        Case("convnet", "digits-d3", in_channels=1, image_size=8),
        Case("convnet", "mnist-d3", in_channels=1, image_size=28),
        Case("convnet", "64px-d4", image_size=64, kwargs={"depth": 4, "width": 32}),
        Case("convnet", "batchnorm", image_size=8, kwargs={"norm": "batchnorm", "width": 16}),
        Case("convnet", "layernorm", image_size=8, kwargs={"norm": "layernorm", "width": 16}),
        Case("convnet", "groupnorm", image_size=8, kwargs={"norm": "groupnorm", "width": 16}),
        Case("convnet", "nonorm", image_size=(8, 12), kwargs={"norm": "none", "width": 16}),
    ],
    "resnet18": [
        Case("resnet18", "cifar"),
        Case("resnet18", "8px-nonsquare", image_size=(8, 12), num_classes=3),
        Case("resnet18", "instancenorm", in_channels=1, image_size=16,
             kwargs={"norm": "instancenorm"}),
    ],
    "mobilenetv2": [
        Case("mobilenetv2", "cifar"),
        Case("mobilenetv2", "half-width", num_classes=100, kwargs={"width_mult": 0.5}),
    ],
    "wrn": [
        Case("wrn", "wrn-34-10"),
        Case("wrn", "wrn-16-2-dropout", kwargs={"depth": 16, "widen_factor": 2,
                                                 "dropout": 0.3}),
    ],
    "unet": [
        Case("unet", "camvid-half", num_classes=12, image_size=(180, 240)),
        Case("unet", "camvid-full", num_classes=12, image_size=(360, 480), batch=1),
        Case("unet", "odd", num_classes=5, image_size=(37, 53)),
        Case("unet", "odd-d4-transpose-gn", num_classes=5, image_size=(37, 53),
             kwargs={"depth": 4, "upsample": "transpose", "norm": "groupnorm"}),
        Case("unet", "digits-scene", num_classes=11, in_channels=1, image_size=(24, 40),
             kwargs={"norm": "instancenorm", "base_width": 8}),
    ],
}


def cases_for(name: str) -> list[Case]:
    return CASES.get(name, [Case(name, "generic")])


ALL_CASES = [case for name in list_models() for case in cases_for(name)]
CASE_IDS = [f"{case.name}-{case.label}" for case in ALL_CASES]


def build(case: Case, seed: int = 0, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(case.name, case.num_classes, case.in_channels, case.image_size,
                        **case.kwargs, **extra)


def expected_zero_grad(case: Case, param_name: str) -> bool:
    """Parameters whose gradient is mathematically zero.

    A conv bias followed by a per-channel normalisation (BatchNorm, or GroupNorm with one
    channel per group) is removed by the mean subtraction, so it gets no gradient; the
    ConvNet keeps that bias only for parity with the DC/DSA/MTT parameter counts.
    """
    norm = case.kwargs.get("norm", "instancenorm")
    return (case.name == "convnet" and norm in ("instancenorm", "batchnorm")
            and param_name.endswith("conv.bias"))


def test_list_models_names_the_registry() -> None:
    assert list_models() == sorted(
        ["mlp", "convnet", "resnet18", "mobilenetv2", "wrn", "unet"]
    )


@pytest.mark.parametrize("case", ALL_CASES, ids=CASE_IDS)
def test_forward_backward(case: Case) -> None:
    model = build(case)
    model.train()
    x = case.input()
    out = model(x)
    assert out.shape == case.output_shape()
    assert out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())
    gen = torch.Generator().manual_seed(1)
    if case.name in SEGMENTATION:
        target = torch.randint(case.num_classes, (case.batch, *case.input_hw), generator=gen)
    else:
        target = torch.randint(case.num_classes, (case.batch,), generator=gen)
    F.cross_entropy(out, target).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert bool(torch.isfinite(param.grad).all()), f"{name} has a non-finite gradient"
        largest = float(param.grad.abs().max())
        if expected_zero_grad(case, name):
            assert largest < 1e-5, f"{name} should get no gradient, got max |grad| {largest}"
        else:
            assert largest > 0, f"{name} got an all-zero gradient"
    # Eval mode (BatchNorm running statistics) with a batch of one must also work.
    model.eval()
    with torch.no_grad():
        single = model(x[:1])
    assert single.shape == (1, *case.output_shape()[1:])


@pytest.mark.parametrize("name", list_models())
def test_normalize_is_the_input_layer(name: str) -> None:
    # If Normalize really sits at the input, doubling std is the same as halving the input.
    case = cases_for(name)[0]
    model = build(case).eval()
    assert isinstance(model.normalize, Normalize)
    x = case.input()
    with torch.no_grad():
        before = model(x / 2)
        model.normalize.std.mul_(2)
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_init_is_deterministic_given_the_seed(name: str) -> None:
    case = cases_for(name)[-1]
    first, again, other = build(case, 0).state_dict(), build(case, 0).state_dict(), build(
        case, 1
    ).state_dict()
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("name", list_models())
def test_state_dict_round_trip(name: str, tmp_path) -> None:
    case = cases_for(name)[-1]
    stats = {"mean": [0.1 * (c + 1) for c in range(case.in_channels)],
             "std": [0.2 + 0.05 * c for c in range(case.in_channels)]}
    model = build(case, 0, **stats)
    x = case.input()
    model.train()
    model(x)  # move BatchNorm running statistics away from their initial values
    model.eval()
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    # Built without mean/std and from another seed: everything must come from the file.
    fresh = build(case, 1).eval()
    with torch.no_grad():
        expected = model(x)
        assert not torch.allclose(fresh(x), expected)
        fresh.load_state_dict(torch.load(path, weights_only=True))
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(fresh.normalize.std.flatten(), torch.tensor(stats["std"]))


def test_model_kwargs_lists_model_specific_options() -> None:
    assert model_kwargs("convnet") == {"width": 128, "depth": 3, "norm": "instancenorm"}
    assert model_kwargs("wrn") == {"depth": 34, "widen_factor": 10, "dropout": 0.0}
    assert model_kwargs("mlp") == {"hidden": (256, 256)}


def test_image_size_accepts_a_pair() -> None:
    model = create_model("convnet", 4, 1, (8, 16), width=8)
    assert model(torch.rand(3, 1, 8, 16)).shape == (3, 4)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="name must be one of") as info:
        create_model("resnet50", 10)
    for name in list_models():
        assert name in str(info.value)
    assert "resnet50" in str(info.value)


def test_unknown_kwarg_names_kwarg_and_model() -> None:
    with pytest.raises(TypeError, match=r"'convnet'.*'widht'"):
        create_model("convnet", 10, widht=64)
    with pytest.raises(TypeError, match=r"'resnet18'.*'depth'"):
        create_model("resnet18", 10, depth=50)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 0}, ValueError, "num_classes must be > 0, got 0"),
        ({"num_classes": -3}, ValueError, "num_classes must be > 0, got -3"),
        ({"num_classes": 2.0}, TypeError, "num_classes must be an int, got float"),
        ({"num_classes": True}, TypeError, "num_classes must be an int, got bool"),
        ({"in_channels": 0}, ValueError, "in_channels must be > 0, got 0"),
        ({"image_size": 0}, ValueError, "image_size must be > 0, got 0"),
        ({"image_size": (32,)}, ValueError, r"image_size must be an int or a \(H, W\) pair"),
        ({"image_size": (32, -1)}, ValueError, r"image_size\[1\] must be > 0, got -1"),
        ({"image_size": "32"}, TypeError, "image_size must be an int or a"),
        ({"mean": (0.5, 0.5)}, ValueError, r"mean must have one value per input channel \(3\)"),
        ({"std": (0.5, 0.0, 0.5)}, ValueError, "std must be > 0"),
    ],
)
@pytest.mark.parametrize("name", list_models())
def test_invalid_common_arguments(name: str, kwargs: dict, error: type, match: str) -> None:
    args = {"num_classes": 10, "in_channels": 3, "image_size": 32, **kwargs}
    with pytest.raises(error, match=match):
        create_model(name, **args)


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("convnet", {"depth": 0}, ValueError, "depth must be > 0"),
        ("convnet", {"width": 2.5}, TypeError, "width must be an int"),
        ("convnet", {"norm": "weightnorm"}, ValueError, "norm must be one of"),
        ("mlp", {"hidden": (64, 0)}, ValueError, r"hidden\[1\] must be > 0"),
        ("mlp", {"hidden": 64}, TypeError, "hidden must be a sequence"),
        ("resnet18", {"norm": "batch"}, ValueError, "norm must be one of"),
        ("mobilenetv2", {"width_mult": 0}, ValueError, "width_mult must be > 0"),
        ("wrn", {"widen_factor": 0}, ValueError, "widen_factor must be > 0"),
        ("wrn", {"dropout": 1.5}, ValueError, r"dropout must be in \[0.0, 1.0\]"),
        ("unet", {"upsample": "nearest"}, ValueError, "upsample must be one of"),
        ("unet", {"norm": "layernorm"}, ValueError, "norm must be one of"),
        ("unet", {"base_width": -1}, ValueError, "base_width must be > 0"),
    ],
)
def test_invalid_model_options(name: str, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        create_model(name, 10, **kwargs)


@pytest.mark.parametrize("depth", [30, 33, 4, 7])
def test_wrn_depth_must_be_6n_plus_4(depth: int) -> None:
    with pytest.raises(ValueError, match=rf"depth must satisfy \(depth - 4\) % 6 == 0.*{depth}"):
        create_model("wrn", 10, depth=depth)


@pytest.mark.parametrize("name", list_models())
def test_wrong_channel_count_at_forward(name: str) -> None:
    case = cases_for(name)[-1]
    model = build(case)
    x = torch.rand(2, case.in_channels + 1, *case.input_hw)
    with pytest.raises(ValueError, match=rf"x must have shape \(N, {case.in_channels}, H, W\)"):
        model(x)


# Small versions of every architecture and option that matters on a GPU (cuDNN kernels,
# BatchNorm statistics, the U-Net's padding and upsampling).
DEVICE_CASES = [
    ("mlp", {"hidden": (16,)}, 8),
    ("convnet", {"width": 8, "depth": 2}, 8),
    ("convnet", {"width": 8, "depth": 2, "norm": "batchnorm"}, 8),
    ("resnet18", {}, 8),
    ("wrn", {"depth": 10, "widen_factor": 1}, 8),
    # 16 pixels: at 8 the last BatchNorms see 4 values per channel (see below).
    ("mobilenetv2", {"width_mult": 0.25}, 16),
    # 10 is not a multiple of 2 ** depth: the U-Net pads its input and crops its output.
    ("unet", {"base_width": 4, "depth": 2}, 10),
    ("unet", {"base_width": 4, "depth": 2, "upsample": "transpose", "norm": "groupnorm"}, 10),
]


@pytest.mark.parametrize(("name", "kwargs", "size"), DEVICE_CASES,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(DEVICE_CASES)])
def test_models_on_device(device: str, name: str, kwargs: dict, size: int) -> None:
    """create_model moved to the device: train and eval outputs, gradients and buffers live
    there; off the CPU, outputs, BatchNorm statistics and gradients equal the CPU model's."""
    # mean/std given as a device tensor: the Normalize layer copies it to the CPU first.
    mean = torch.tensor([0.4, 0.5, 0.6], device=device)
    model = seeded(lambda: create_model(name, 5, 3, size, mean=mean, std=(0.2, 0.25, 0.3),
                                        **kwargs), 0)
    assert_close_on(model.normalize.mean.flatten(), mean.cpu(), "cpu", atol=0, rtol=0)
    reference = copy.deepcopy(model) if off_cpu(device) else None
    model.to(device)
    assert_on(model.normalize.mean, device)
    x = torch.rand(4, 3, size, size, generator=gen(11))
    shape = (4, 5, size, size) if name in SEGMENTATION else (4, 5)
    # Train-mode BatchNorm normalises each channel over few values (4 images of 1x1 or 2x2 at
    # the end of a deep network), which amplifies rounding: 1e-4 there, 1e-5 elsewhere (an
    # H100 measured 1.5e-6 in eval mode and 1.3e-5 for resnet18 in train mode).
    batchnorm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                    for m in model.modules())
    for mode, tol in (("train", 1e-4 if batchnorm else 1e-5), ("eval", 1e-5)):
        model.train(mode == "train")
        out = model(x.to(device))
        assert out.shape == shape
        assert_on(out, device)
        assert bool(torch.isfinite(out).all())
        if reference is not None:
            reference.train(mode == "train")
            expected = reference(x)
            assert_close_on(out.detach(), expected.detach(), device, atol=tol, rtol=tol)
    # Gradients of the eval-mode output: the backward of train-mode BatchNorm over 4 values is
    # ill-conditioned (differences of 1e-2 relative measured), a property of the numbers, not
    # of the device.
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * weights.to(device)).sum().backward()
    for value in grads(model).values():
        assert_on(value, device)
    if reference is not None:
        # The running statistics the train-mode pass updated, and the other buffers.
        assert_states_close(model.state_dict(), reference.state_dict(), atol=1e-5, rtol=1e-5)
        (expected * weights).sum().backward()
        expected_grads = grads(reference)
        for key, value in grads(model).items():
            # atol: a conv bias right before a norm has a true gradient of 0; rounding noise
            # is all that is compared there.
            torch.testing.assert_close(value.cpu(), expected_grads[key], atol=1e-5, rtol=1e-4,
                                       msg=functools.partial("{}: {}".format, key))


def test_check_model_refuses_what_create_model_would_without_building() -> None:
    check_model("convnet", width=8, depth=1)
    check_model("json:dumps")  # a callable: what it makes of the arguments shows at build
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['heads'\]"):
        check_model("unet", heads=2)
    with pytest.raises(ValueError, match="name must be one of"):
        check_model("vit")
    with pytest.raises(ValueError, match="has no attribute 'nothing'"):
        check_model("json:nothing")
    with pytest.raises(TypeError, match="not a callable"):
        check_model("json:__doc__")
    with pytest.raises(ValueError, match="width must be > 0, got -5"):
        check_model("convnet", width=-5)  # the model's own check, on the meta device
    with pytest.raises(TypeError, match="width must be an int"):
        check_model("convnet", width="wide")


@pytest.mark.parametrize("name", list_models())
def test_check_model_accepts_every_model_at_its_defaults_and_draws_nothing(name: str) -> None:
    state = torch.get_rng_state()
    check_model(name)
    assert torch.equal(torch.get_rng_state(), state)
