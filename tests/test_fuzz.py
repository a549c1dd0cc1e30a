"""Property-based fuzzing of the public functions of labels, store, losses, metrics and attacks.

Every call gets random shapes (including empty and zero-class ones), dtypes (float16, bfloat16,
float32, float64, integers, bool), values (NaN, infinities, negatives, subnormals, huge) and
argument values (wrong types, NaN, out of range). Each call must either return a finite result
that has the function's defining property, or raise ``ValueError`` / ``TypeError`` whose message
names one of the call's arguments. Any other exception fails the test, and so does a NaN.

The strategies record whether they produced anything hostile for the current example; when
nothing was, the call must succeed: a check that refuses valid input fails too.

Deterministic (derandomized, no example database) and small, so that it runs in seconds.
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from softlabels import labels as L
from softlabels.attacks import fgsm, pgd, robust_evaluate
from softlabels.losses import kd_loss, soft_cross_entropy
from softlabels.metrics import (
    accuracy,
    classwise_accuracy,
    confusion_matrix,
    expected_calibration_error,
    nsd,
    segmentation_metrics,
    worst_class_accuracy,
)
from softlabels.store import LabelMetadata, LabelStore

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
SPECIAL = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 5e-324, 1e-45, 1e30, -1e30,
           3e38, -3e38)
# Finite but extreme: float32's largest magnitudes (a row holding both signs overflows the
# logits' spread), subnormals, float16's range edge.
EXTREME = (3e38, -3e38, 6e4, -6e4, 5e-324, 0.0, 1.0)
REFUSED = object()

# ----------------------------------------------------------------------------- strategies

_HOSTILE = [False]


def _mark(value: object) -> object:
    _HOSTILE[0] = True
    return value


def fuzz(test: Callable[[st.DataObject], None]) -> Callable[..., None]:
    """A fuzz test: each example draws its inputs in the body, from a clean hostility record."""
    @FUZZ
    @given(data=st.data())
    @functools.wraps(test)
    def run(data: st.DataObject) -> None:
        _HOSTILE[0] = False
        test(data)

    return run


def hostile_drawn() -> bool:
    return _HOSTILE[0]


def mostly(valid: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` three times in four, else ``hostile`` (recorded as such).

    Hypothesis favours small integers, so the hostile branch is the largest pick.
    """
    return st.integers(0, 3).flatmap(lambda pick: hostile.map(_mark) if pick == 3 else valid)


CLEAN = st.floats(-20, 20)
small_sizes = st.integers(0, 4)
shapes = mostly(
    st.one_of(st.tuples(small_sizes, st.integers(1, 4)),
              st.tuples(st.integers(0, 2), st.integers(1, 3), small_sizes, small_sizes)),
    st.lists(small_sizes, max_size=5).map(tuple),
)
# Scalar arguments: NaN, infinities, huge ints and things of the wrong type.
junk = st.one_of(st.none(), st.booleans(), st.text(max_size=2), st.just(torch.tensor(1.0)),
                 st.sampled_from(SPECIAL), st.integers(-3, 10**20), st.floats(-5, 5))
counts = mostly(st.integers(1, 5), junk)
unit = mostly(st.floats(0, 1), junk)
bases = mostly(st.sampled_from([2, math.e, 10]), junk)
reductions = mostly(st.sampled_from(["mean", "sum", "none"]), st.one_of(st.just("avg"), junk))


@st.composite
def tensors(draw, shape=None, dtypes=FLOATS, elements=None, clean=CLEAN) -> torch.Tensor:
    """A tensor of one of ``dtypes``; integer and bool dtypes get the values rounded/clamped.

    Without ``elements``, a tensor is all ``clean`` values, or extreme (finite, but with
    magnitudes near the float range or subnormal), or dirty (NaN and infinities too), decided
    once per tensor so that most tensors are usable; extreme and dirty ones are hostile.
    """
    shape = draw(shapes) if shape is None else shape
    dtype = draw(st.sampled_from(dtypes))
    if elements is None:
        mode = draw(st.integers(0, 4))
        if mode >= 3:
            _mark(mode)
        elements = {3: st.sampled_from(EXTREME),
                    4: st.one_of(clean, st.sampled_from(SPECIAL))}.get(mode, clean)
    flat = draw(st.lists(elements, min_size=math.prod(shape), max_size=math.prod(shape)))
    data = torch.tensor(flat, dtype=torch.float64).reshape(shape)
    if dtype.is_floating_point:
        return data.to(dtype)
    if dtype == torch.bool:
        return data.nan_to_num(0.0) > 0
    return data.nan_to_num(0.0, 99.0, -99.0).clamp(-99, 99).round().to(dtype)


def hostile_tensors(shape=None) -> st.SearchStrategy:
    """Tensors of integer or bool dtype, or of any shape: always hostile for a float input."""
    return tensors(shape, (torch.int64, torch.int32, torch.bool)).map(_mark)


@st.composite
def probabilities(draw, shape=None) -> torch.Tensor:
    """Mostly valid probabilities of ``shape`` (or (N, C) / (N, C, H, W)), sometimes anything.

    Valid ones are a softmax of finite logits (sharp ones have exact zeros) or normalised
    non-negative weights that may be subnormal next to ordinary ones.
    """
    kind = draw(st.integers(0, 4))
    if kind == 4 or (shape is not None and (len(shape) not in (2, 4) or shape[1] < 1)):
        _mark(kind)  # no probabilities of this shape exist: anything of it
        return draw(tensors(shape))
    shape = shape or draw(st.one_of(st.tuples(st.integers(0, 4), st.integers(1, 4)),
                                    st.tuples(st.integers(0, 2), st.integers(1, 3),
                                              st.integers(1, 3), st.integers(1, 3))))
    if kind == 3:
        weights = draw(tensors(shape, (torch.float64,), st.one_of(
            st.floats(0, 1), st.sampled_from([0.0, 5e-324, 1e-310, 1e-45]))))
        probs = weights / weights.sum(dim=1, keepdim=True).clamp_min(5e-324)
        probs = torch.where(probs.sum(dim=1, keepdim=True) > 0.5, probs, 1 / shape[1])
    else:
        logits = draw(tensors(shape, (torch.float64,), st.floats(-30, 30)))
        probs = torch.softmax(logits * draw(st.sampled_from([1.0, 10.0, 1e3])), dim=1)
    return probs.to(draw(st.sampled_from(FLOATS)))


@st.composite
def hard_labels(draw, shape: tuple[int, ...], num_classes: int) -> torch.Tensor:
    """Mostly int64 labels in [0, C), sometimes out of range, of another dtype or shape."""
    choice = draw(st.integers(0, 5))
    if choice == 5:
        return draw(tensors(None, (torch.int64, torch.int32, torch.float32, torch.bool)).map(
            _mark))
    high = num_classes if choice < 4 else num_classes + 3
    low = 0 if choice < 4 else -3
    if choice == 4:
        _mark(choice)
    flat = draw(st.lists(st.integers(low, high - 1), min_size=math.prod(shape),
                         max_size=math.prod(shape)))
    return torch.tensor(flat, dtype=torch.int64).reshape(shape)


# ----------------------------------------------------------------------------- the invariant


def call(fn: Callable, names: Iterable[str], *args, valid: bool = False, finite: bool = True,
         **kwargs):
    """``fn(*args, **kwargs)``, or ``REFUSED`` for a ValueError/TypeError naming an argument.

    Any other exception propagates and fails the test, and so does a refusal when ``valid``
    (nothing hostile was drawn). ``finite=False`` is for the metrics whose documented value for
    "nothing to average" is NaN; their callers check where.
    """
    try:
        result = fn(*args, **kwargs)
    except (ValueError, TypeError) as err:
        refusal = f"{type(err).__name__}: {err}"
    else:
        if finite:
            assert_finite(result)
        return result
    assert not valid, f"valid input refused: {refusal}"
    assert any(name in refusal for name in names), f"names none of {sorted(names)}: {refusal}"
    return REFUSED


def assert_finite(result: object) -> None:
    if isinstance(result, torch.Tensor) and result.is_floating_point():
        assert bool(torch.isfinite(result).all()), f"non-finite result {result}"
    elif isinstance(result, float):
        assert math.isfinite(result), f"non-finite result {result}"
    elif isinstance(result, dict | list | tuple):
        for item in result.values() if isinstance(result, dict) else result:
            assert_finite(item)


def largest(tensor: torch.Tensor) -> float:
    """The largest entry, 0 for an empty tensor."""
    return float(tensor.max()) if tensor.numel() else 0.0


def tolerance(tensor: torch.Tensor) -> float:
    return 2e-2 if tensor.dtype in (torch.float16, torch.bfloat16) else 1e-5


def assert_probabilities(out: torch.Tensor, partial: bool = False) -> None:
    assert bool((out >= 0).all())
    if out.numel():
        sums = out.double().sum(dim=1)
        assert float(sums.max()) <= 1 + tolerance(out)
        if not partial:
            assert float(sums.min()) >= 1 - tolerance(out)


def samples(tensor: torch.Tensor) -> int:
    """N (times H x W): what a mean reduction averages over."""
    return tensor.shape[0] * math.prod(tensor.shape[2:]) if tensor.ndim >= 2 else 0


# ----------------------------------------------------------------------------- labels


@fuzz
def test_validate(data) -> None:
    probs = data.draw(probabilities())
    allow_partial = data.draw(mostly(st.booleans(), st.sampled_from([None, "no", 1])))
    atol = data.draw(mostly(st.floats(0, 0.5), junk))
    out = call(L.validate, ("probs", "atol", "allow_partial"), probs,
               allow_partial=allow_partial, atol=atol, valid=not hostile_drawn())
    if out is not REFUSED:
        assert out is probs
        assert bool((probs >= 0).all())
        if probs.numel():
            sums = probs.double().sum(dim=1)
            slack = max(atol, torch.finfo(probs.dtype).eps) + 1e-6
            assert float(sums.max()) <= 1 + slack
            assert allow_partial or float(sums.min()) >= 1 - slack


@fuzz
def test_one_hot_and_smooth(data) -> None:
    num_classes = data.draw(st.integers(1, 5))
    ignore_index = data.draw(mostly(st.sampled_from([None, -1, 255]),
                                    st.one_of(st.just(0), junk)))
    dtype = data.draw(mostly(st.sampled_from([torch.float32, torch.float64]),
                             st.sampled_from([torch.int64, "float"])))
    shape = data.draw(st.one_of(st.tuples(small_sizes),
                                st.tuples(small_sizes, small_sizes, small_sizes)))
    labels = data.draw(hard_labels(shape, num_classes))
    names = ("labels", "num_classes", "ignore_index", "dtype")
    valid = not hostile_drawn()
    out = call(L.one_hot, names, labels, num_classes, ignore_index=ignore_index, dtype=dtype,
               valid=valid)
    if out is not REFUSED:
        kept = labels != ignore_index if ignore_index is not None else torch.ones_like(labels)
        assert torch.equal(out.sum(dim=1), kept.to(out.dtype))
        assert torch.equal(out.argmax(dim=1)[kept.bool()], labels[kept.bool()])
    eps = data.draw(unit)
    out = call(L.smooth, (*names, "eps"), labels, num_classes, eps, ignore_index=ignore_index,
               valid=not hostile_drawn())
    if out is not REFUSED and ignore_index is None:
        assert_probabilities(out)


@fuzz
def test_boundary_smooth(data) -> None:
    num_classes = data.draw(st.integers(1, 4))
    kernel = data.draw(mostly(st.sampled_from([1, 3, 5]), st.one_of(st.just(2), junk)))
    ignore_index = data.draw(mostly(st.sampled_from([None, -1, 255]), st.just(0)))
    hard = data.draw(hard_labels(data.draw(st.tuples(small_sizes, small_sizes, small_sizes)),
                                 num_classes))
    eps = data.draw(unit)
    out = call(L.boundary_smooth, ("hard", "num_classes", "eps", "kernel", "ignore_index"),
               hard, num_classes, eps, kernel, ignore_index, valid=not hostile_drawn())
    if out is not REFUSED:
        assert out.shape == (hard.shape[0], num_classes, *hard.shape[1:])
        if ignore_index is None:
            assert_probabilities(out)


@fuzz
def test_soften_and_ensemble(data) -> None:
    logits = data.draw(mostly(tensors(), hostile_tensors()))
    temperature = data.draw(mostly(st.floats(1e-30, 1e30), junk))
    valid = not hostile_drawn()
    out = call(L.soften, ("logits", "temperature"), logits, temperature, valid=valid)
    if out is not REFUSED:
        assert out.shape == logits.shape
        assert out.dtype == logits.dtype
        assert_probabilities(out)
    out = call(L.ensemble, ("logits", "temperature"), [logits, logits.flip(0)], temperature,
               valid=valid)
    if out is not REFUSED:
        assert_probabilities(out)


@fuzz
def test_classwise_soften(data) -> None:
    num_classes, n = data.draw(st.integers(1, 4)), data.draw(small_sizes)
    logits = data.draw(tensors((n, num_classes)))
    targets = data.draw(hard_labels((n,), num_classes))
    width = data.draw(mostly(st.just(num_classes), st.just(num_classes + 1)))
    temperatures = data.draw(tensors((width,), elements=mostly(
        st.floats(1e-3, 10), st.one_of(st.floats(-1, 0), st.sampled_from(SPECIAL)))))
    out = call(L.classwise_soften, ("logits", "targets", "temperatures"), logits, targets,
               temperatures, valid=not hostile_drawn())
    if out is not REFUSED:
        assert_probabilities(out)


@fuzz
def test_topk_swap_shuffle_entropy(data) -> None:
    probs, k = data.draw(probabilities()), data.draw(counts)
    renormalize = data.draw(mostly(st.booleans(), st.just("yes")))
    base = data.draw(bases)
    fits = not hostile_drawn() and k <= probs.shape[1]
    out = call(L.topk, ("probs", "k", "renormalize"), probs, k, renormalize, valid=fits)
    if out is not REFUSED:
        assert largest((out > 0).sum(dim=1)) <= k
        assert_probabilities(out, partial=not renormalize)
    out = call(L.swap_ranks, ("probs", "k"), probs, k, valid=fits)
    if out is not REFUSED:  # each row is a permutation of itself
        assert torch.equal(out.sort(dim=1).values, probs.sort(dim=1).values)
    out = call(L.shuffle_tail, ("probs",), probs, torch.Generator().manual_seed(0),
               valid=not hostile_drawn())
    if out is not REFUSED:
        assert torch.equal(out.sort(dim=1).values, probs.sort(dim=1).values)
        top = probs.argmax(dim=1, keepdim=True)  # stays in place (ties may then move argmax)
        assert torch.equal(out.gather(1, top), probs.gather(1, top))
    out = call(L.entropy, ("probs", "base"), probs, base=base, valid=not hostile_drawn())
    if out is not REFUSED and probs.numel():
        bound = math.log(probs.shape[1]) / math.log(base)
        assert float(out.min()) >= -1e-6
        assert float(out.max()) <= bound + 1e-2


@fuzz
def test_js_distance(data) -> None:
    p = data.draw(probabilities())
    q = data.draw(st.one_of(st.just(p.flip(0)), probabilities(p.shape)))
    base = data.draw(bases)
    out = call(L.js_distance, ("p", "q", "base"), p, q, base=base, valid=not hostile_drawn())
    if out is not REFUSED and out.numel():
        assert float(out.min()) >= 0
        assert float(out.max()) <= math.sqrt(math.log(2) / math.log(base)) + 1e-2


# ----------------------------------------------------------------------------- store


@fuzz
def test_store_round_trip_or_refusal(data) -> None:
    probs = data.draw(probabilities(data.draw(st.tuples(st.integers(0, 4), st.integers(1, 4)))))
    n = probs.shape[0] if probs.ndim else 0
    indices = data.draw(mostly(st.just(torch.arange(n) * 2), tensors(
        (n,), (torch.int64, torch.float32, torch.int32), st.integers(-2, 8))))
    store = call(LabelStore, ("indices", "labels"), indices, probs,
                 LabelMetadata(source="fuzz", class_names=()), valid=not hostile_drawn())
    if store is REFUSED:
        return
    mode = data.draw(mostly(st.sampled_from(["fp32", "fp16", "topk"]), st.just("int8")))
    k = data.draw(mostly(st.integers(1, store.num_classes), st.integers(-1, 6))
                  if mode == "topk" else mostly(st.none(), st.integers(0, 3)))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.safetensors"
        report = call(store.save, ("mode", "k"), path, mode=mode, k=k,
                      valid=not hostile_drawn())
        if report is REFUSED:
            return
        data_bytes = bytearray(path.read_bytes())
        loaded = LabelStore.load(path)
        assert torch.equal(loaded.indices, store.indices)
        assert largest((loaded.labels - store.labels).abs()) <= report.max_abs_error + 1e-7
        # One flipped bit anywhere: refused, or (padding) the very same store.
        position = data.draw(st.integers(0, len(data_bytes) - 1))
        data_bytes[position] ^= 1 << data.draw(st.integers(0, 7))
        path.write_bytes(bytes(data_bytes))
        damaged = call(LabelStore.load, (str(path),), path)
        if damaged is not REFUSED:
            assert torch.equal(damaged.labels, loaded.labels)
            assert torch.equal(damaged.indices, loaded.indices)
            assert damaged.metadata == loaded.metadata


# ----------------------------------------------------------------------------- losses


@fuzz
def test_soft_cross_entropy(data) -> None:
    logits = data.draw(mostly(tensors(), hostile_tensors()))
    reduction = data.draw(reductions)
    if logits.ndim in (2, 4) and data.draw(st.booleans()):
        target = data.draw(hard_labels(logits.shape[:1] + logits.shape[2:],
                                       max(1, logits.shape[1])))
    else:
        target = data.draw(probabilities(logits.shape if logits.ndim in (2, 4) else None))
    valid = not hostile_drawn() and (reduction != "mean" or samples(logits) > 0)
    out = call(soft_cross_entropy, ("logits", "target", "reduction"), logits, target,
               reduction, valid=valid)
    if out is not REFUSED and out.numel():
        assert float(out.min()) >= -tolerance(logits)  # -sum t log p >= 0 for sum t <= 1


@fuzz
def test_kd_loss(data) -> None:
    student = data.draw(mostly(tensors(), hostile_tensors()))
    kind = data.draw(mostly(st.sampled_from(["logits", "probs"]), junk))
    same = student.shape if student.ndim in (2, 4) else None
    teacher = data.draw(probabilities(same) if kind == "probs" else tensors(same))
    temperature = data.draw(mostly(st.floats(1e-3, 1e3), junk))
    reduction = data.draw(reductions)
    valid = not hostile_drawn() and (reduction != "mean" or samples(student) > 0)
    out = call(kd_loss, ("student_logits", "teacher", "temperature", "teacher_kind",
                         "reduction"), student, teacher,
               temperature, teacher_kind=kind, reduction=reduction, valid=valid)
    if out is not REFUSED and out.numel():
        assert float(out.min()) >= -1e-2 * max(1.0, float(temperature) ** 2)  # KL >= 0


# ----------------------------------------------------------------------------- metrics


@fuzz
def test_classification_metrics(data) -> None:
    num_classes, n = data.draw(st.integers(1, 4)), data.draw(small_sizes)
    given_classes = data.draw(mostly(st.sampled_from([None, num_classes]), st.integers(0, 5)))
    targets = data.draw(hard_labels((n,), num_classes))
    preds = data.draw(st.one_of(hard_labels((n,), num_classes), tensors((n, num_classes))))
    valid = not hostile_drawn()
    out = call(accuracy, ("preds", "targets", "num_classes"), preds, targets, given_classes,
               valid=valid and n > 0)
    if out is not REFUSED:
        assert 0.0 <= out <= 1.0
    matrix = call(confusion_matrix, ("preds", "targets", "num_classes"), preds, targets,
                  num_classes, valid=valid)
    if matrix is REFUSED:
        return
    assert int(matrix.sum()) == n
    per_class = classwise_accuracy(preds, targets, num_classes)
    absent = matrix.sum(dim=1) == 0
    assert torch.equal(per_class.isnan(), absent)  # NaN exactly where a class has no sample
    present = int((~absent).sum())
    worst = call(worst_class_accuracy, ("classwise_acc",), per_class, valid=present > 0)
    if worst is not REFUSED:
        assert 0.0 <= worst <= 1.0
    spread = call(nsd, ("classwise_acc", "nsd needs"), per_class, finite=False,
                  valid=present > 1)
    if spread is not REFUSED:
        # Documented: NaN when every class has accuracy 0 (std / mean is undefined).
        assert math.isnan(spread) == (float(per_class.nansum()) == 0)
        assert math.isnan(spread) or spread >= 0


@fuzz
def test_calibration_and_segmentation_metrics(data) -> None:
    num_classes = data.draw(st.integers(1, 3))
    ignore_index = data.draw(mostly(st.sampled_from([None, -1, 255]), st.just(0)))
    b, h, w = (data.draw(st.integers(1, 2)) for _ in range(3))
    probs = data.draw(probabilities((b, num_classes, h, w)))
    target = data.draw(hard_labels((b, h, w), num_classes))
    bins = data.draw(counts)
    names = ("probs", "target", "ignore_index", "num_classes", "bins", "pred")
    valid = not hostile_drawn()
    ece = call(expected_calibration_error, names, probs, target, bins, ignore_index,
               finite=False, valid=valid)
    kept = int((target != ignore_index).sum()) if ignore_index is not None else target.numel()
    if ece is not REFUSED:
        assert math.isnan(ece) == (kept == 0)  # NaN only over no pixel, as documented
        assert math.isnan(ece) or 0.0 <= ece <= 100.0
    result = call(segmentation_metrics, names, probs, target, num_classes, ignore_index,
                  finite=False, valid=valid)
    if result is not REFUSED:
        for key in ("miou_dataset", "pixel_accuracy", "mdice_dataset"):
            assert math.isnan(result[key]) == (kept == 0)
            assert math.isnan(result[key]) or 0.0 <= result[key] <= 1.0


# ----------------------------------------------------------------------------- attacks


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


@fuzz
def test_pgd_and_fgsm(data) -> None:
    eps = data.draw(mostly(st.floats(0, 0.5), junk))
    alpha = data.draw(mostly(st.floats(1e-3, 0.3), junk))
    loss = data.draw(mostly(st.sampled_from(["ce", "cw", "kl"]), junk))
    norm = data.draw(mostly(st.sampled_from(["linf", "l2"]), junk))
    start = data.draw(mostly(st.sampled_from([True, False, "uniform", "normal", "none"]), junk))
    n = data.draw(small_sizes)
    x = data.draw(mostly(tensors((n, 1, 2, 2), clean=st.floats(0, 1)), tensors((n, 1, 2, 2))))
    y = data.draw(hard_labels((n,), 3))
    target = data.draw(probabilities((n, 3)))
    names = ("x", "y", "eps", "alpha", "steps", "target_probs", "model", "loss", "norm",
             "random_start")
    adv = call(pgd, names, _tiny_model(), x, y, eps, alpha, 2, loss=loss, norm=norm,
               random_start=start,
               target_probs=target, generator=torch.Generator().manual_seed(0),
               valid=not hostile_drawn())
    if adv is not REFUSED:
        _assert_in_ball(adv, x, eps, norm)
    adv = call(fgsm, names, _tiny_model(), x, y, eps, valid=not hostile_drawn())
    if adv is not REFUSED:
        _assert_in_ball(adv, x, eps, "linf")


def _assert_in_ball(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    assert adv.shape == x.shape
    assert adv.dtype == x.dtype
    assert bool(((adv >= 0) & (adv <= 1)).all())
    delta = (adv.double() - x.double()).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert largest(size) <= float(eps) + tolerance(x) * 2


@fuzz
def test_robust_evaluate(data) -> None:
    batch_size = data.draw(counts)
    num_classes = data.draw(mostly(st.sampled_from([None, 3]), st.integers(1, 4)))
    n = data.draw(mostly(st.integers(1, 3), st.just(0)))
    images = data.draw(mostly(tensors((n, 1, 2, 2), clean=st.floats(0, 1)),
                              tensors((n, 1, 2, 2))))
    labels = data.draw(hard_labels((n,), 3))
    attacks = {"clean": None, "fgsm": lambda model, x, y: fgsm(model, x, y, 0.1)}
    names = ("images", "labels", "batch_size", "num_classes")
    result = call(robust_evaluate, names, _tiny_model(), images, labels, attacks,
                  num_classes=num_classes, batch_size=batch_size, device="cpu",
                  valid=not hostile_drawn())
    if result is not REFUSED:
        for item in result.values():
            assert 0.0 <= item.accuracy <= 1.0
            assert math.isnan(item.nsd) or item.nsd >= 0
