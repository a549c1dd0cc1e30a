"""The ``device`` fixture, and helpers of the tests that run an API on every available device.

A test that takes ``device`` runs once on ``"cpu"`` and, where a GPU is present, once more on
``"cuda"``. It runs the API on that device, checks that returned tensors live where the API
says, and checks the result against the same independent reference as the module's other
tests (a formula, a brute-force loop, a contract), so it tests something real on a machine
without a GPU too. Where the only reference is the same computation on the CPU (a training
loop, the draws of a CPU generator), that comparison is made off the CPU only
(:func:`off_cpu`): on the CPU it would compare a run with itself.

Random numbers come from explicit CPU generators or int seeds: the library draws on the
generator's device and moves the draws, so a CUDA run sees the CPU's draws.

Tolerances against a CPU or float64 reference: 1e-5 for float32 operations, networks included
(a GPU sums in another order); 1e-4 where train-mode BatchNorm normalises over a handful of
values, which amplifies rounding; ``TRAIN_TOL`` (1e-3) for training loops, where every
optimizer step amplifies the earlier rounding differences. Each looser case says why where it
is used. CUDA runs with TF32 off (see :func:`device_fixture`).

A test module puts this folder on ``sys.path`` and imports the fixture by its function name::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, from a subfolder
    from devices import device_fixture  # noqa: F401  (the ``device`` fixture)
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Loose tolerance of training loops (see the module docstring).
TRAIN_TOL = 1e-3


@pytest.fixture(params=DEVICES, name="device")
def device_fixture(request: pytest.FixtureRequest) -> Iterator[str]:
    """``"cpu"``, then ``"cuda"`` where a GPU is present, with two settings restored after.

    On CUDA, float32 matmuls and convolutions run in full float32: Ampere and later GPUs run
    them in TF32 by default (a 10-bit mantissa, errors around 1e-3), which would force every
    comparison with a float32 reference to a loose tolerance; these tests are about devices,
    not that rounding. On the CPU, one intra-op thread: every tensor here is tiny, so threads
    cost more than they save, and where other work keeps the cores busy, OpenMP workers spin
    against it (the device tests took 66 s with two threads on a busy 2-core machine, 4.5 s
    with one).
    """
    device = request.param
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with contextlib.ExitStack() as restore:
        restore.callback(torch.set_num_threads, threads)
        if device == "cuda":
            saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
            restore.callback(_set_tf32, *saved)
            _set_tf32(False, False)
        yield device


def _set_tf32(cudnn: bool, matmul: bool) -> None:
    torch.backends.cudnn.allow_tf32 = cudnn
    torch.backends.cuda.matmul.allow_tf32 = matmul


def off_cpu(device: str) -> bool:
    """Whether ``device`` is not the CPU: only then is a comparison with a CPU run a test."""
    return torch.device(device).type != "cpu"


def gen(seed: int) -> torch.Generator:
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(seed)


def assert_on(tensor: Tensor, device: str) -> None:
    """Assert that ``tensor`` lives on ``device`` (any index of that device type)."""
    assert tensor.device.type == torch.device(device).type, (tensor.device, device)


def assert_close_on(result: Tensor, expected: Tensor, device: str, *, atol: float = 1e-5,
                    rtol: float = 1e-5) -> None:
    """``result`` lives on ``device``, has ``expected``'s dtype and equals it within tolerance
    (compared on the CPU; NaN equals NaN)."""
    assert_on(result, device)
    assert result.dtype == expected.dtype, (result.dtype, expected.dtype)
    torch.testing.assert_close(result.detach().cpu(), expected.detach().cpu(), atol=atol,
                               rtol=rtol, equal_nan=True)


def seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``build()`` with only the CPU generator seeded (and restored): models start on the CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return build()


def assert_states_close(actual: dict[str, Tensor], expected: dict[str, Tensor], *,
                        atol: float, rtol: float) -> None:
    """Two state dicts with the same keys and values within tolerance (compared on the CPU)."""
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name].detach().cpu(), value.detach().cpu(),
                                   atol=atol, rtol=rtol, msg=functools.partial(_named, name))


def _named(name: str, message: str) -> str:
    """An assert_close message that names the tensor it is about."""
    return f"{name}: {message}"


def grads(model: nn.Module) -> dict[str, Tensor]:
    """The parameters' gradients by name (every one must exist and be finite)."""
    out = {}
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert bool(torch.isfinite(parameter.grad).all()), name
        out[name] = parameter.grad
    return out


def quadrant_blobs(n_per_class: int = 6, channels: int = 1, size: int = 8, seed: int = 0, *,
          noise: float = 0.3, bright: float = 0.6) -> tuple[Tensor, Tensor]:
    """Three learnable classes of images in [0, 1]: a bright quadrant per class plus noise."""
    g = gen(seed)
    images, labels = [], []
    half = size // 2
    for c in range(3):
        x = noise * torch.rand(n_per_class, channels, size, size, generator=g)
        x[:, :, (c // 2) * half:(c // 2 + 1) * half, (c % 2) * half:(c % 2 + 1) * half] += bright
        images.append(x.clamp(0, 1))
        labels.append(torch.full((n_per_class,), c))
    return torch.cat(images), torch.cat(labels)


def tiny_convnet(seed: int = 0) -> nn.Module:
    """A tiny instance-norm ConvNet on 1x8x8 images, 3 classes (vmap-able, no running
    statistics); ``seed`` is for builders called with one and is not used."""
    from softlabels.models import create_model

    return create_model("convnet", 3, 1, 8, width=4, depth=1, mean=(0.5,), std=(0.25,))
