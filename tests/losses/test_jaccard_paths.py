"""The metric losses' PyTorch and Triton paths against a textbook reference; determinism,
host synchronisations, the fused cross-entropy and deferred validation."""

import importlib
import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from softlabels.losses import (
    CEJaccardMetricLoss,
    DiceMetricLoss,
    JaccardMetricLoss,
    TverskyMetricLoss,
    ce_jaccard_metric_loss,
    jaccard_metric_loss,
)

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jaccard_helpers import (
    LEVELS,
    inputs,
    reference_ce,
    reference_loss,
    value_and_grad,
)

from devices import assert_close_on, device_fixture  # noqa: F401

WEIGHTS = torch.tensor([1.0, 0.5, 2.0, 0.0, 1.5], dtype=torch.float64)
# Options varied together with levels, variant and p; each combination is drawn in turn.
EXTRAS = [
    {},
    {"alpha": 0.5, "beta": 0.5, "log_loss": True},
    {"alpha": 0.3, "beta": 0.7, "gamma": 2.0, "class_weights": WEIGHTS},
    {"smooth": 0.0, "class_mean": "all"},
    {"smooth": (0.0, 1e-2), "gamma": 1.5, "log_loss": True, "class_weights": WEIGHTS},
    {"smooth": (1e-2, 1e-4), "alpha": 0.7, "beta": 0.3, "class_mean": "all"},
]
GRID = [(levels, variant, p, EXTRAS[(3 * i + 2 * j + k) % len(EXTRAS)])
        for i, levels in enumerate(LEVELS) for j, variant in enumerate(("jml1", "jml2", "sjl"))
        for k, p in enumerate((1, 2))]


def targets(data: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor, dict]]:
    """name -> (logits, target, call options) for each kind of target."""
    logits, labels, keep, soft = data["logits"], data["labels"], data["keep"], data["soft"]
    multilabel = torch.rand(logits.shape, generator=torch.Generator().manual_seed(5),
                            dtype=logits.dtype)
    return {
        "hard": (logits, labels, {"ignore_index": 255, "keep": keep}),
        "hard_all_classes": (logits, labels, {"ignore_index": 255, "active_classes": "all"}),
        "soft": (logits, soft, {"keep": keep}),
        "soft_present": (logits, soft, {"active_classes": "present"}),
        "multilabel": (logits, multilabel, {"mode": "multilabel"}),
        "binary": (logits[:, :1], labels.where(labels < 2, 0) * (labels != 255)
                   + 255 * (labels == 255), {"mode": "binary", "ignore_index": 255}),
        "probabilities": (logits.softmax(1), soft, {"from_logits": False, "keep": keep}),
    }


def assert_matches_reference(logits, target, options, backend: str, atol: float) -> None:
    value, grad = value_and_grad(
        lambda x: jaccard_metric_loss(x, target, backend=backend, **options), logits)
    reference = {**options, "class_weights": options.get("class_weights")}
    if reference["class_weights"] is not None:
        reference["class_weights"] = reference["class_weights"].double()
    ref_value, ref_grad = value_and_grad(
        lambda x: reference_loss(x, target if not target.is_floating_point()
                                 else target.double(), **reference), logits.double())
    torch.testing.assert_close(value.double(), ref_value, atol=atol, rtol=0)
    torch.testing.assert_close(grad.double(), ref_grad, atol=atol, rtol=0)


def assert_identical(first: tuple, second: tuple) -> None:
    """Values and gradients equal bit for bit."""
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("levels", "variant", "p", "extra"), GRID)
def test_torch_path_equals_reference(levels, variant, p, extra) -> None:
    data = inputs()
    for name, (logits, target, call) in targets(data).items():
        options = {"levels": levels, "variant": variant, "p": p, **extra, **call}
        if name == "binary":
            options.pop("class_weights", None)
        assert_matches_reference(logits, target, options, "torch", atol=1e-9)


def test_validate_false_gives_the_same_numbers() -> None:
    data = inputs()
    for logits, target, call in targets(data).values():
        checked = value_and_grad(lambda x, t=target, c=call: jaccard_metric_loss(x, t, **c),
                                 logits)
        unchecked = value_and_grad(
            lambda x, t=target, c=call: jaccard_metric_loss(x, t, validate=False, **c), logits)
        assert_identical(checked, unchecked)


def count_ops(fn, names: tuple[str, ...]) -> dict[str, int]:
    """How often each aten op ran during ``fn()`` (forward and backward)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    counts = dict.fromkeys(names, 0)
    for event in prof.events():
        if event.name in counts:
            counts[event.name] += 1
    return counts


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_host_synchronisations(kind: str) -> None:
    """A host read of a tensor (``.item()``, ``bool()``, ``int()``) runs
    ``aten::_local_scalar_dense``; data-dependent shapes run ``aten::nonzero``. On a GPU
    each is a synchronisation: none with validate=False, one with validate=True."""
    data = inputs(dtype=torch.float32)
    logits, target = data["logits"], data["labels"] if kind == "hard" else data["soft"]
    names = ("aten::_local_scalar_dense", "aten::nonzero", "aten::item")

    def step(**options) -> None:
        x = logits.clone().requires_grad_()
        ce, metric = ce_jaccard_metric_loss(x, target, keep=data["keep"], ignore_index=(
            255 if kind == "hard" else None), levels=LEVELS[3], **options)
        (ce + metric).backward()

    assert count_ops(lambda: step(validate=False), names) == dict.fromkeys(names, 0)
    checked = count_ops(lambda: step(validate=True), names)
    assert checked["aten::_local_scalar_dense"] == 1
    assert checked["aten::nonzero"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_no_host_synchronisation_on_cuda(backend: str) -> None:
    """``set_sync_debug_mode("error")`` raises on any synchronising CUDA call."""
    data = {k: v.float().cuda() if v.is_floating_point() else v.cuda()
            for k, v in inputs(b=2, c=19, h=32, w=48, dtype=torch.float32).items()}
    weights = torch.rand(19, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for target, call in ((data["labels"], {"ignore_index": 255}),
                             (data["soft"], {"keep": data["keep"]})):
            for dtype in (torch.float32, torch.bfloat16):
                x = data["logits"].to(dtype).clone().requires_grad_()
                ce, metric = ce_jaccard_metric_loss(x, target, validate=False, backend=backend,
                                                    class_weights=weights, levels=LEVELS[3],
                                                    **call)
                (ce + metric).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_gradients_are_bitwise_reproducible() -> None:
    data = inputs(dtype=torch.float32)
    for logits, target, call in targets(data).values():
        first = value_and_grad(lambda x, t=target, c=call: jaccard_metric_loss(x, t, **c),
                               logits)
        second = value_and_grad(lambda x, t=target, c=call: jaccard_metric_loss(x, t, **c),
                                logits)
        assert_identical(first, second)


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("p", [1, 2])
def test_fused_cross_entropy_equals_the_two_losses(kind: str, p: int) -> None:
    data = inputs()
    keep = data["keep"]
    target = data["labels"] if kind == "hard" else data["soft"]
    ignore = 255 if kind == "hard" else None
    options = {"levels": LEVELS[3], "variant": "jml2", "keep": keep, "ignore_index": ignore,
               "p": p}

    def fused(x: torch.Tensor) -> torch.Tensor:
        ce, metric = ce_jaccard_metric_loss(x, target, backend="torch", **options)
        return 0.25 * ce + 0.75 * metric

    def apart(x: torch.Tensor) -> torch.Tensor:
        return (0.25 * reference_ce(x, target, keep, ignore)
                + 0.75 * reference_loss(x, target, **options))

    value, grad = value_and_grad(fused, data["logits"])
    expected = value_and_grad(apart, data["logits"])
    torch.testing.assert_close(value, expected[0], atol=1e-9, rtol=0)
    torch.testing.assert_close(grad, expected[1], atol=1e-9, rtol=0)
    if kind == "hard":
        assert ce_jaccard_metric_loss(data["logits"], target, ignore_index=255)[0].item() == \
            pytest.approx(F.cross_entropy(data["logits"], target, ignore_index=255).item())


def test_fused_cross_entropy_of_learned_labels_and_no_kept_pixel() -> None:
    data = inputs()
    soft = data["soft"].clone().requires_grad_()
    ce, metric = ce_jaccard_metric_loss(data["logits"], soft, keep=data["keep"])
    (ce + metric).backward()
    reference = data["soft"].clone().requires_grad_()
    (reference_ce(data["logits"], reference, data["keep"])
     + reference_loss(data["logits"], reference, keep=data["keep"])).backward()
    torch.testing.assert_close(soft.grad, reference.grad, atol=1e-9, rtol=0)
    x = data["logits"].clone().requires_grad_()
    ce, metric = ce_jaccard_metric_loss(x, torch.full_like(data["labels"], 255),
                                        ignore_index=255)
    (ce + metric).backward()
    assert ce.item() == 0.0
    assert metric.item() == 0.0
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_ce_jaccard_module_terms() -> None:
    data = inputs()
    module = CEJaccardMetricLoss(levels={"image": 1.0}, ignore_index=255, class_weights=[
        1.0, 2.0, 1.0, 1.0, 1.0])
    terms = module.terms(data["logits"], data["labels"])
    assert terms["ce"].item() == pytest.approx(
        0.25 * reference_ce(data["logits"], data["labels"], ignore_index=255).item())
    assert terms["metric"].item() == pytest.approx(0.75 * reference_loss(
        data["logits"], data["labels"], levels={"image": 1.0}, ignore_index=255,
        class_weights=torch.tensor([1.0, 2.0, 1.0, 1.0, 1.0], dtype=torch.float64)).item())
    assert module(data["logits"], data["labels"]).item() == pytest.approx(
        sum(terms.values()).item())
    assert "ce_weight=0.25" in repr(module)
    with pytest.raises(ValueError, match="multiclass logits"):
        CEJaccardMetricLoss(mode="multilabel")
    with pytest.raises(ValueError, match="ce_weight must be"):
        CEJaccardMetricLoss(ce_weight=-1.0)
    with pytest.raises(ValueError, match="multiclass logits"):
        ce_jaccard_metric_loss(data["logits"], data["soft"], from_logits=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": lambda d: d["labels"].where(d["labels"] != 255, 9)}, "never clamped"),
        ({"target": lambda d: d["soft"] * 0.5}, "must sum to 1"),
        ({"target": lambda d: d["soft"].index_fill(1, torch.tensor([0]), 2.0)},
         r"lie in \[0, 1\]"),
        ({"logits": lambda d: d["logits"].index_fill(3, torch.tensor([1]), math.inf)},
         "logits must be finite"),
        ({"class_weights": lambda d: torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0])},
         "class_weights must be finite and non-negative"),
    ],
)
def test_checked_values_raise_and_validate_false_skips_them(change, message) -> None:
    data = inputs(dtype=torch.float32)
    args = {"logits": data["logits"], "target": data["labels"], "class_weights": None}
    args.update({key: make(data) for key, make in change.items()})
    options = {"ignore_index": 255} if not args["target"].is_floating_point() else {}
    if "never clamped" in message:
        options = {}
    with pytest.raises(ValueError, match=message):
        jaccard_metric_loss(args["logits"], args["target"],
                            class_weights=args["class_weights"], **options)
    if "never clamped" not in message:  # an invalid label is undefined without checks
        jaccard_metric_loss(args["logits"], args["target"], class_weights=args["class_weights"],
                            validate=False, **options)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"sync_dist": True}, ValueError, "initialised default process group"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        ({"backend": "triton", "p": 2}, ValueError, "backend='triton' runs"),
        ({"class_mean": "some"}, ValueError, "class_mean must be one of"),
        ({"smooth": (1.0, 2.0, 3.0)}, ValueError, "smooth must be a number or a"),
        ({"smooth": (1.0, -1.0)}, ValueError, "smooth must be in"),
        ({"validate": 1}, TypeError, "validate must be a bool"),
        ({"ignore_index": 2.5}, TypeError, "ignore_index must be an int"),
    ],
)
def test_bad_options(options, error, message) -> None:
    data = inputs()
    with pytest.raises(error, match=message):
        jaccard_metric_loss(data["logits"], data["labels"].clamp_max(4), **options)
    with pytest.raises(error, match=message):
        JaccardMetricLoss(**options)(data["logits"], data["labels"].clamp_max(4))


# ------------------------------------------------------------------ devices

DEVICE_WEIGHTS = [1.0, 0.5, 2.0, 1.0, 1.5]
# name -> (target, options): jaccard_metric_loss's cases, with "keep" naming where keep lives
# ("cpu": left on the CPU with the logits elsewhere, the library moves it).
FUNCTION_CASES: dict[str, tuple[str, dict]] = {
    "hard": ("labels", {"ignore_index": 255}),
    "soft": ("soft", {"keep": "cpu"}),
    "p2": ("kept_labels", {"p": 2, "levels": {"image": 1.0}}),
    "soft_p2": ("soft", {"p": 2, "keep": "device"}),
    "weighted": ("soft", {"keep": "device", "class_weights": DEVICE_WEIGHTS}),
    "multilabel": ("multilabel", {"mode": "multilabel"}),
    "binary": ("binary", {"mode": "binary", "active_classes": "all"}),
}
# name -> (module class, its arguments, the same in the reference's terms).
MODULE_CASES: dict[str, tuple[type, dict, dict]] = {
    "jaccard": (JaccardMetricLoss, {"levels": {"dataset": 0.5, "image": 0.5}},
                {"levels": {"dataset": 0.5, "image": 0.5}}),
    "dice": (DiceMetricLoss, {"levels": {"class": 1.0}, "class_weights": DEVICE_WEIGHTS},
             {"alpha": 0.5, "beta": 0.5, "levels": {"class": 1.0},
              "class_weights": DEVICE_WEIGHTS}),
    "tversky": (TverskyMetricLoss, {"alpha": 0.3, "beta": 0.7, "gamma": 2.0, "log_loss": True},
                {"alpha": 0.3, "beta": 0.7, "gamma": 2.0, "log_loss": True}),
}


def _device_data(device: str) -> tuple[dict, dict]:
    """The float32 inputs on the CPU and on ``device``, with every target the cases use."""
    data = inputs(b=2, dtype=torch.float32)
    labels = data["labels"]
    data["kept_labels"] = labels.where(labels != 255, 0)
    data["binary"] = (labels == 1).long()
    data["multilabel"] = torch.rand(2, 5, 6, 7, generator=torch.Generator().manual_seed(5))
    return data, {key: value.to(device) for key, value in data.items()}


def _metric_losses(logits: torch.Tensor, data: dict, variant: str, *,
                   reference: bool) -> dict[str, torch.Tensor]:
    """Every case by the library on ``logits``' device, or by the float64 reference."""
    def call(target: str, options: dict, module: tuple | None = None) -> torch.Tensor:
        options = {"variant": variant, **options}
        keep = options.pop("keep", None)
        keep = None if keep is None else data["keep"].cpu() if keep == "cpu" else data["keep"]
        x = logits[:, :1] if options.get("mode") == "binary" else logits
        y = data[target]
        if reference:
            weights = options.get("class_weights")
            if weights is not None:
                options["class_weights"] = torch.tensor(weights, dtype=torch.float64)
            return reference_loss(x, y.double() if y.is_floating_point() else y,
                                  keep=None if keep is None else keep.cpu(), **options)
        if module is not None:
            # The class_weights buffer follows .to(device), as for any module.
            return module[0](variant=variant, **module[1]).to(x.device)(x, y, keep)
        return jaccard_metric_loss(x, y, keep=keep, **options)

    out = {name: call(target, options) for name, (target, options) in FUNCTION_CASES.items()}
    for name, (cls, arguments, options) in MODULE_CASES.items():
        module = None if reference else (cls, arguments)
        out[name] = call("kept_labels", {**options, "keep": "device"}, module)
        out[f"{name}_soft"] = call("soft", {**options, "keep": "device"}, module)
    return out


@pytest.mark.parametrize("variant", ["jml1", "jml2", "sjl"])
def test_metric_losses_on_device(device: str, variant: str) -> None:
    """jaccard_metric_loss (hard, soft, p = 2, weighted, multilabel, binary, float16) and the
    Jaccard / Dice / Tversky modules on device tensors: on the device, values and gradients
    equal to the textbook reference in float64 on the CPU."""
    data, on_device = _device_data(device)
    logits = on_device["logits"].clone().requires_grad_(True)
    values = _metric_losses(logits, on_device, variant, reference=False)
    sum(values.values()).backward()
    reference = data["logits"].double().requires_grad_(True)
    expected = _metric_losses(reference, data, variant, reference=True)
    sum(expected.values()).backward()
    assert values.keys() == expected.keys()
    for name, value in values.items():
        assert_close_on(value.detach(), expected[name].detach().float(), device, atol=1e-5,
                        rtol=1e-5)
    assert_close_on(logits.grad, reference.grad.float(), device, atol=1e-5, rtol=1e-4)
    # Half-precision logits: computed in float32, returned rounded to float16 (~1e-3).
    half = jaccard_metric_loss(on_device["logits"].half(), on_device["labels"],
                               variant=variant, ignore_index=255)
    assert_close_on(half, expected["hard"].detach().half(), device, atol=1e-3, rtol=1e-3)


# ------------------------------------------------------------------ Triton kernels


def _interpret_triton_on_the_cpu() -> None:
    """Without a GPU, import triton with TRITON_INTERPRET=1 so that its kernels run on the CPU.

    triton decorates its own library functions when first imported (and the profiler used
    above imports it), and imports more on its first launch, so this runs when the file is
    collected, before any test, and ends with one tiny launch. The variable is then restored:
    only decoration and those imports read it. Compiled kernels cannot run on such a machine,
    so nothing else is lost.
    """
    if (importlib.util.find_spec("triton") is None or torch.cuda.is_available()
            or "triton" in sys.modules):
        return
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        importlib.import_module("triton")
        importlib.import_module("softlabels.losses._jaccard_kernels")
        jaccard_metric_loss(torch.zeros(1, 2, 1), torch.zeros(1, 1, dtype=torch.int64),
                            backend="triton")
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved


_interpret_triton_on_the_cpu()


@pytest.fixture
def triton_device() -> str:
    """Where the Triton kernels run: compiled on a CUDA device, else interpreted on the CPU."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("the Triton path needs the triton package")
    if torch.cuda.is_available():
        return "cuda"
    kernels = importlib.import_module("softlabels.losses._jaccard_kernels")
    if type(kernels.hard_forward).__name__ != "InterpretedFunction":
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set; run this "
                    "file on its own to test the kernels on the CPU")
    return "cpu"


def on(device: str, data: dict) -> dict:
    return {key: value.to(device) for key, value in data.items()}


TRITON_CASES = [
    ("hard", {"levels": LEVELS[3], "ignore_index": 255, "keep": True}),
    ("soft", {"keep": True}),
    ("soft", {"variant": "jml2", "levels": {"image": 1.0}, "alpha": 0.3, "beta": 0.7}),
    ("soft", {"variant": "sjl", "levels": {"class": 1.0}, "log_loss": True, "gamma": 2.0,
              "active_classes": "present", "keep": True}),
]


@pytest.mark.parametrize(("kind", "options"), TRITON_CASES)
def test_triton_path_equals_reference(triton_device, kind, options) -> None:
    data = on(triton_device, inputs(b=2, c=5, dtype=torch.float32))
    target = data["labels"] if kind == "hard" else data["soft"]
    call = {**options, "keep": data["keep"] if options.get("keep") else None}
    # Float32 kernels against a float64 reference: rounding of sums over ~80 pixels.
    assert_matches_reference(data["logits"], target, call, "triton", atol=2e-6)


def test_triton_fused_cross_entropy_many_tiles_and_determinism(triton_device) -> None:
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(1, 3, 50, 61, generator=g) * 3).to(triton_device)  # several tiles
    labels = torch.randint(0, 3, (1, 50, 61), generator=g).to(triton_device)
    labels[0, :5] = 255

    def loss(x: torch.Tensor, backend: str) -> torch.Tensor:
        ce, metric = ce_jaccard_metric_loss(x, labels, ignore_index=255, backend=backend,
                                            levels=LEVELS[3])
        return 0.25 * ce + 0.75 * metric

    first = value_and_grad(lambda x: loss(x, "triton"), logits)
    second = value_and_grad(lambda x: loss(x, "triton"), logits)
    assert_identical(first, second)
    expected = value_and_grad(lambda x: loss(x, "torch"), logits.double())
    torch.testing.assert_close(first[0].double(), expected[0], atol=2e-6, rtol=0)
    torch.testing.assert_close(first[1].double(), expected[1], atol=1e-7, rtol=0)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN case
def test_triton_half_precision_and_checks(triton_device) -> None:
    data = on(triton_device, inputs(b=2, c=5, dtype=torch.float32))
    half = data["logits"].to(torch.bfloat16)
    value, grad = value_and_grad(
        lambda x: jaccard_metric_loss(x, data["soft"], keep=data["keep"], backend="triton"),
        half)
    expected = value_and_grad(
        lambda x: jaccard_metric_loss(x, data["soft"], keep=data["keep"], backend="torch"),
        half)
    assert value.dtype == torch.bfloat16
    assert grad.dtype == torch.bfloat16
    expanded = data["keep"][:1].expand_as(data["keep"])  # strides the kernels must not assume
    torch.testing.assert_close(
        value_and_grad(lambda x: jaccard_metric_loss(x, data["labels"], ignore_index=255,
                                                     keep=expanded, backend="triton"),
                       data["logits"])[1],
        value_and_grad(lambda x: jaccard_metric_loss(x, data["labels"], ignore_index=255,
                                                     keep=expanded, backend="torch"),
                       data["logits"])[1], atol=1e-7, rtol=0)
    torch.testing.assert_close(value.float(), expected[0].float(), atol=1e-2, rtol=0)
    torch.testing.assert_close(grad.float(), expected[1].float(), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="never clamped"):
        jaccard_metric_loss(data["logits"], data["labels"].where(data["labels"] != 255, -1),
                            backend="triton")
    with pytest.raises(ValueError, match="must sum to 1"):
        jaccard_metric_loss(data["logits"], data["soft"] * 0.9, backend="triton")
    broken = data["logits"].clone()
    broken[:, :, 0] = math.nan
    with pytest.raises(ValueError, match="logits must be finite"):
        jaccard_metric_loss(broken, data["labels"], ignore_index=255, backend="triton")
