"""Tests of softlabels.distill.students: S students trained together as one vectorised model."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from softlabels.data.dsa import DSA
from softlabels.distill import StudentsResult, train_students
from softlabels.engine import NonFiniteLossError, TrainConfig, evaluate, fit
from softlabels.models import create_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import (
    TRAIN_TOL,
    assert_states_close,
    device_fixture,  # noqa: F401  (the device fixture)
    gen,
    quadrant_blobs,
    tiny_convnet,
)

NUM_CLASSES = 4
SIZE = 8


def convnet(seed: int, width: int = 8) -> nn.Module:
    # With the input normalisation, as in real use: on raw [0, 1] inputs the first
    # instance norm's backward is ill-conditioned in float32 (see test_models_convnet).
    return create_model("convnet", NUM_CLASSES, 1, SIZE, width=width, mean=(0.5,), std=(0.25,))


def mlp(seed: int) -> nn.Module:
    return create_model("mlp", NUM_CLASSES, 1, SIZE, hidden=(16,))


def random_set(count: int, seed: int, soft: bool) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, SIZE, SIZE, generator=generator)
    if soft:
        targets = torch.softmax(2 * torch.randn(count, NUM_CLASSES, generator=generator), 1)
    else:
        targets = torch.randint(NUM_CLASSES, (count,), generator=generator)
    return images, targets


def run(build=convnet, images=None, targets=None, config=None, seeds=(0, 1, 2), **kwargs):
    if images is None:
        images, targets = random_set(12, 0, soft=True)
    config = config or TrainConfig(epochs=2, batch_size=5, lr=0.05)
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("show_progress", False)
    kwargs.setdefault("vectorize", True)
    return train_students(build, images, targets, config, seeds, **kwargs)


def initial_weights(build, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build(seed).state_dict()


def logits(build, seed: int, state: dict[str, torch.Tensor], images: torch.Tensor):
    model = build(seed)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        return model(images)


def assert_state_dicts_close(a: dict, b: dict, atol: float, rtol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=rtol, msg=name)


@pytest.mark.parametrize(
    ("build", "backend", "expected", "optimizer", "schedule", "soft", "count", "augment"),
    [
        # 12 images in batches of 5: steps of 5, 5 and 2 images.
        (convnet, "auto", "grouped", "sgd", "step", True, 12, True),
        (convnet, "vmap", "vmap", "adamw", "cosine", False, 12, True),
        # 11 images: the last batch of one joins the one before (5 + 6), as in fit.
        (convnet, "grouped", "grouped", "sgd", "cosine", False, 11, False),
        (mlp, "auto", "vmap", "sgd", "constant", True, 12, True),
    ],
)
def test_vectorized_matches_sequential(build, backend, expected, optimizer, schedule, soft,
                                       count, augment):
    images, targets = random_set(count, 1, soft)
    eval_images, eval_labels = random_set(30, 2, soft=False)
    config = TrainConfig(epochs=4, batch_size=5, lr=0.05, optimizer=optimizer,
                         schedule=schedule, eval_every=2)
    common = {"build": build, "images": images, "targets": targets, "config": config,
              "augment": DSA() if augment else None,
              "eval_data": (eval_images, eval_labels)}
    vectorized = run(backend=backend, **common)
    sequential = run(vectorize=False, **common)
    assert vectorized.backend == expected
    assert vectorized.vectorized
    assert sequential.backend == "sequential"
    assert not sequential.vectorized
    for i, seed in enumerate((0, 1, 2)):
        # Same computation up to floating-point summation order.
        vec_state, seq_state = vectorized.state_dicts[i], sequential.state_dicts[i]
        if optimizer == "adamw":
            # A conv bias right before an instance norm has no effect on the output, so its
            # true gradient is 0 and what is computed is rounding noise; AdamW divides that by
            # its own size and takes steps of ~lr in a noise-given direction, different in
            # each summation order. Every other weight must still agree.
            vec_state = {k: v for k, v in vec_state.items() if not k.endswith("conv.bias")}
            seq_state = {k: v for k, v in seq_state.items() if not k.endswith("conv.bias")}
        assert_state_dicts_close(vec_state, seq_state, atol=1e-4, rtol=1e-3)
        # The trained functions agree, conv biases included.
        torch.testing.assert_close(logits(build, seed, vectorized.state_dicts[i], eval_images),
                                   logits(build, seed, sequential.state_dicts[i], eval_images),
                                   atol=1e-4, rtol=1e-3)
        # ... and not trivially: both really trained.
        start = initial_weights(build, seed)
        assert any(not torch.allclose(start[k], sequential.state_dicts[i][k], atol=1e-3)
                   for k in start)
    assert vectorized.final_accuracy == sequential.final_accuracy
    assert vectorized.best_accuracy == sequential.best_accuracy
    assert [h["epoch"] for h in vectorized.history] == [1, 2, 3, 4]
    for a, b in zip(vectorized.history, sequential.history, strict=True):
        assert a["lr"] == pytest.approx(b["lr"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert ("eval_accuracy" in a) == ("eval_accuracy" in b) == (a["epoch"] % 2 == 0)


def test_sequential_student_is_fit_with_its_seed():
    # The reference loop is not a second implementation of its own: student i is exactly what
    # the engine's fit gives for build_model(seed) with config.seed = seed.
    images, targets = random_set(12, 3, soft=True)
    config = TrainConfig(epochs=3, batch_size=5, lr=0.05, schedule="step")
    result = run(images=images, targets=targets, config=config, seeds=(4, 7),
                 vectorize=False, augment=DSA())
    for seed, trained in zip((4, 7), result.state_dicts, strict=True):
        torch.manual_seed(seed)
        model = convnet(seed)
        fit(model, images, targets, TrainConfig(**{**config.to_dict(), "seed": seed}),
            augment=DSA(), device="cpu", show_progress=False)
        assert_state_dicts_close(trained, model.state_dict(), atol=1e-6, rtol=1e-5)


def fixed_init_convnet(seed: int) -> nn.Module:
    torch.manual_seed(0)  # the same initial weights whatever the seed
    return convnet(seed)


def test_students_differ_by_seed_even_from_one_init_and_runs_repeat():
    images, targets = random_set(12, 4, soft=True)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    # One init for all: only the per-seed data order and DSA draws tell the students apart.
    first = run(fixed_init_convnet, images, targets, augment=DSA())
    assert torch.equal(torch.rand(1), expected_next), "the global RNG was disturbed"
    weights = [sd["classifier.weight"] for sd in first.state_dicts]
    for i in range(3):
        for j in range(i + 1, 3):
            assert (weights[i] - weights[j]).abs().max() > 1e-3
    again = run(fixed_init_convnet, images, targets, augment=DSA())
    for a, b in zip(first.state_dicts, again.state_dicts, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # Per-seed initialisation: with the default builder the students start apart.
    assert not torch.equal(initial_weights(convnet, 0)["classifier.weight"],
                           initial_weights(convnet, 1)["classifier.weight"])


def stripes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: bright left half, class 1: bright right half, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    images = 0.3 * torch.rand(count, 1, SIZE, SIZE, generator=generator)
    images[labels == 0, :, :, : SIZE // 2] += 0.6
    images[labels == 1, :, :, SIZE // 2:] += 0.6
    return images, labels


@pytest.mark.parametrize("vectorize", [True, False])
def test_each_student_learns_a_separable_problem(vectorize):
    images, labels = stripes(8, 5)
    soft = torch.full((8, NUM_CLASSES), 0.02)
    soft[torch.arange(8), labels] = 0.94
    eval_data = stripes(64, 6)
    config = TrainConfig(epochs=40, batch_size=256, lr=0.1, eval_every=10)
    result = run(images=images, targets=soft, config=config, vectorize=vectorize,
                 eval_data=eval_data)
    assert isinstance(result, StudentsResult)
    assert result.seeds == [0, 1, 2]
    assert len(result.final_accuracy) == len(result.best_accuracy) == 3
    assert min(result.final_accuracy) >= 0.95, result.final_accuracy
    assert all(b >= f for b, f in zip(result.best_accuracy, result.final_accuracy, strict=True))
    evaluated = [h["epoch"] for h in result.history if "eval_accuracy" in h]
    assert evaluated == [10, 20, 30, 40]
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    # From ~1.5 to ~0.75 (the soft labels' own entropy, 0.29, is the floor).
    assert all(b < a - 0.4 for a, b in zip(first, last, strict=True))
    # The returned weights are the students that were scored.
    for seed, state, accuracy in zip(result.seeds, result.state_dicts, result.final_accuracy,
                                     strict=True):
        model = convnet(seed)
        model.load_state_dict(state)
        assert evaluate(model, *eval_data, device="cpu").accuracy == pytest.approx(accuracy)
    summary = result.summary()
    assert summary["final_mean"] == pytest.approx(sum(result.final_accuracy) / 3)
    assert summary["best_mean"] >= summary["final_mean"]
    assert summary["final_std"] >= 0.0


def test_without_eval_data_there_are_no_accuracies():
    result = run(seeds=(5,))
    assert result.final_accuracy is None
    assert result.best_accuracy is None
    assert result.summary() == {}
    assert len(result.state_dicts) == 1


class NaNForSeedTwo(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        self.linear = nn.Linear(SIZE * SIZE, NUM_CLASSES)
        if seed == 2:
            with torch.no_grad():
                self.linear.weight[0, 0] = math.inf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("vectorize", [True, False])
def test_non_finite_loss_names_the_student(vectorize):
    with pytest.raises(NonFiniteLossError, match=r"seed \[2\]"):
        run(NaNForSeedTwo, seeds=(0, 2), vectorize=vectorize)


def seed_dependent_width(seed: int) -> nn.Module:
    return convnet(seed, width=8 + seed)


def batchnorm_convnet(seed: int) -> nn.Module:
    return create_model("convnet", NUM_CLASSES, 1, SIZE, width=4, norm="batchnorm")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seeds": ()}, ValueError, "seeds is empty"),
        ({"seeds": (1, 2, 1)}, ValueError, r"seeds must be distinct.*\[1\]"),
        ({"seeds": (-1,)}, ValueError, "seeds must be >= 0"),
        ({"seeds": (0.5,)}, TypeError, "seeds must hold ints"),
        ({"seeds": 3}, TypeError, "seeds must be a sequence"),
        ({"targets": torch.full((11, NUM_CLASSES), 0.25)}, ValueError,
         "targets has 11 rows but images has 12"),
        ({"targets": torch.full((12, 5), 0.2)}, ValueError,
         "soft targets have 5 classes but the model returns 4"),
        ({"targets": torch.full((12,), NUM_CLASSES)}, ValueError, r"targets must hold class"),
        ({"targets": torch.zeros(12, dtype=torch.int32)}, TypeError, "int64"),
        ({"targets": torch.full((12, NUM_CLASSES), 0.5)}, ValueError, "targets"),
        ({"images": torch.rand(12, SIZE, SIZE)}, ValueError, "images must have 4 dimensions"),
        ({"build": seed_dependent_width}, ValueError,
         r"same architecture.*build_model\(1\) differs from build_model\(0\)"),
        ({"build": lambda seed: "not a model"}, TypeError, "must return an nn.Module"),
        ({"build": "convnet"}, TypeError, "build_model must be callable"),
        ({"build": batchnorm_convnet}, ValueError, "BatchNorm"),
        ({"build": mlp, "backend": "grouped"}, ValueError, "backend='grouped' needs"),
        ({"backend": "loop"}, ValueError, "backend must be one of"),
        ({"config": {"epochs": 1}}, TypeError, "config must be a TrainConfig"),
        ({"eval_data": (torch.rand(5, 1, SIZE, SIZE), torch.zeros(4, dtype=torch.int64))},
         ValueError, r"eval_data\[1\] must have shape \(5,\)"),
        ({"eval_data": (torch.rand(5, 1, SIZE, SIZE), torch.full((5,), 9))},
         ValueError, r"eval_data\[1\] must hold class"),
        ({"eval_data": (torch.rand(5, 3, SIZE, SIZE), torch.zeros(5, dtype=torch.int64))},
         ValueError, r"eval_data\[0\] has images of shape"),
        ({"eval_batch_size": 0}, ValueError, "eval_batch_size must be > 0"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    images, targets = random_set(12, 0, soft=True)
    arguments = {"images": images, "targets": targets, **kwargs}
    with pytest.raises(error, match=match):
        run(**arguments)


def test_batchnorm_students_train_sequentially():
    result = run(batchnorm_convnet, config=TrainConfig(epochs=1, batch_size=6), seeds=(0, 1),
                 vectorize=False)
    assert result.backend == "sequential"
    assert "features.0.norm.running_mean" in result.state_dicts[0]


def test_the_default_trains_sequentially_on_a_cpu_and_with_batchnorm() -> None:
    """``vectorize=None``: sequential on a CPU (measured faster there) and for BatchNorm
    students (whose running statistics a vectorised run cannot keep), on any device."""
    assert run(vectorize=None).backend == "sequential"
    assert run(build=batchnorm_convnet, vectorize=None).backend == "sequential"
    with pytest.raises(ValueError, match="vectorize=None to fall back to sequential"):
        run(build=batchnorm_convnet, vectorize=True)


@pytest.mark.parametrize("backend", ["sequential", "vmap", "grouped"])
def test_students_on_device(device, backend):
    """train_students with each backend, its data and evaluation data on the device: student
    i is what fit gives on the device for build_model(seed) with config.seed = seed (as on
    the CPU, see test_sequential_student_is_fit_with_its_seed), its state dict returned on
    the CPU, its accuracy that of the fitted model."""
    x, _ = quadrant_blobs(4)
    soft = torch.softmax(2 * torch.randn(12, 3, generator=gen(18)), 1)
    xt, yt = quadrant_blobs(5, seed=1)
    config = TrainConfig(epochs=3, batch_size=5, lr=0.05, eval_every=1)
    result = train_students(tiny_convnet, x.to(device), soft.to(device), config, [0, 1, 2],
                            augment=DSA(), eval_data=(xt.to(device), yt.to(device)),
                            device=device, vectorize=backend != "sequential",
                            backend="auto" if backend == "sequential" else backend,
                            show_progress=False)
    assert result.backend == backend
    assert len(result.state_dicts) == 3
    # The same computation: equal up to a GPU's non-deterministic sums; the vectorised
    # backends also sum in another order, over a training loop.
    tol = 1e-5 if backend == "sequential" else TRAIN_TOL
    for seed, state in enumerate(result.state_dicts):
        assert all(t.device.type == "cpu" for t in state.values())  # documented: on the CPU
        torch.manual_seed(seed)
        model = tiny_convnet(seed)
        fit(model, x, soft, TrainConfig(**{**config.to_dict(), "seed": seed}), augment=DSA(),
            device=device, show_progress=False)
        assert_states_close(state, model.state_dict(), atol=tol, rtol=tol)
        # An argmax right at a tie could flip on rounding noise: allow one image of 15.
        accuracy = evaluate(model, xt, yt, device=device).accuracy
        assert result.final_accuracy[seed] == pytest.approx(accuracy, abs=1.5 / 15)
    # The students trained, and apart.
    torch.manual_seed(0)
    start = tiny_convnet(0).state_dict()
    assert any(not torch.allclose(start[k], result.state_dicts[0][k]) for k in start)
    assert not torch.allclose(result.state_dicts[0]["classifier.weight"],
                              result.state_dicts[1]["classifier.weight"])
