"""The public APIs on every available device, compared with the same computation on the CPU.

Each test runs once per entry of ``DEVICES``: always ``"cpu"``, plus ``"cuda"`` where a GPU is
present. A test computes something on ``device``, checks that returned tensors live there,
and compares the result with the same call on CPU tensors; the CPU run also checks the result
against an independent reference (a formula, a brute-force loop or a contract such as "inside
the epsilon ball"), so the module tests something real on a machine without a GPU too.

Random numbers always come from explicit CPU generators or int seeds (the library draws on
the generator's device and moves the draws), so the CPU and device runs see the same draws.

Tolerances: 1e-5 for float32 operations, networks included (a GPU sums in another order);
1e-4 where train-mode BatchNorm normalises over a handful of values, which amplifies rounding;
1e-3 for training loops (every optimizer step amplifies the earlier rounding differences).
Each looser case says why where it is used. CUDA runs with TF32 off (see ``_true_float32``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softlabels import labels as L
from softlabels.attacks import fgsm, pgd, robust_evaluate, standard_attacks
from softlabels.data import (
    DSA,
    DSA_STRATEGY,
    Augment,
    DSAParams,
    PairedAugment,
    RandomCrop,
    RandomFlip,
    augmentation,
    dsa,
    paired_flip,
    paired_random_crop,
    paired_random_scale,
    random_crop,
    random_flip,
    sample_per_class,
    train_val_split,
)
from softlabels.data.segmentation import SegmentationDataset
from softlabels.data.segmentation.augment import PairedFlip, PairedRandomCrop
from softlabels.data.types import DatasetInfo
from softlabels.distill import (
    make_labels,
    select_by_loss,
    select_random,
    train_students,
)
from softlabels.distill.dm import distribution_matching
from softlabels.distill.experts import train_experts
from softlabels.distill.learned import learn_labels
from softlabels.engine import TrainConfig, evaluate, fit, predict_logits
from softlabels.losses import (
    DiceMetricLoss,
    JaccardMetricLoss,
    KDLoss,
    SoftCrossEntropy,
    TverskyMetricLoss,
    jaccard_metric_loss,
    kd_loss,
    soft_cross_entropy,
)
from softlabels.metrics import (
    CalibrationError,
    SegmentationMetrics,
    accuracy,
    classwise_accuracy,
    confusion_matrix,
    expected_calibration_error,
    macc,
    mdice,
    miou,
    nsd,
    per_image_scores,
    segmentation_confusion,
    segmentation_metrics,
    worst_case,
    worst_class_accuracy,
)
from softlabels.models import create_model
from softlabels.robust import (
    ABSLD,
    ARD,
    RSLAD,
    AttackConfig,
    ClassTemperatures,
    NaturalObjective,
    PGDATObjective,
    TRADESObjective,
)
from softlabels.runtime import build_seeded
from softlabels.seg import UNLABELLED, SegLoss, SegObjective
from softlabels.seg.evaluation import evaluate_segmentation, predict_segmentation
from softlabels.store import LabelMetadata, LabelStore

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Loose tolerance of training loops (see the module docstring).
TRAIN_TOL = 1e-3


@pytest.fixture(autouse=True, scope="module")
def _true_float32() -> Iterator[None]:
    """Run CUDA float32 matmuls and convolutions in full float32, restoring the flags after.

    Ampere and later GPUs run float32 convolutions in TF32 by default (a 10-bit mantissa,
    errors around 1e-3), which would force every comparison with the CPU to a loose tolerance;
    these tests are about devices, not about that rounding.
    """
    if not torch.cuda.is_available():
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread() -> Iterator[None]:
    """One intra-op CPU thread for this module, restored after.

    Every tensor here is tiny, so threads cost more than they save; and where other work keeps
    the cores busy, OpenMP workers spin against it (this file took 66 s with two threads on a
    busy 2-core machine, 4.5 s with one).
    """
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


# ----------------------------------------------------------------------------- helpers


def _gen(seed: int) -> torch.Generator:
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(seed)


def _on(tensor: Tensor, device: str) -> None:
    """Assert that ``tensor`` lives on ``device`` (any index of that device type)."""
    assert tensor.device.type == torch.device(device).type, (tensor.device, device)


def _check(result: Tensor, expected: Tensor, device: str, *, atol: float = 1e-5,
           rtol: float = 1e-5) -> None:
    """``result`` lives on ``device`` and equals the CPU ``expected`` within tolerance."""
    _on(result, device)
    assert result.dtype == expected.dtype
    torch.testing.assert_close(result.detach().cpu(), expected.detach().cpu(), atol=atol,
                               rtol=rtol, equal_nan=True)


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``build()`` with only the CPU generator seeded (and restored): models start on the CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return build()


def _pair(build: Callable[[], nn.Module], seed: int, device: str) -> tuple[nn.Module, nn.Module]:
    """The same initial model twice: one on the CPU, one on ``device``."""
    model = _seeded(build, seed)
    return model, copy.deepcopy(model).to(device)


def _assert_states_close(actual: dict[str, Tensor], expected: dict[str, Tensor], *,
                         atol: float, rtol: float) -> None:
    """Two state dicts with the same keys and values within tolerance (compared on the CPU)."""
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name].detach().cpu(), value.detach().cpu(),
                                   atol=atol, rtol=rtol, msg=functools.partial(_named, name))


def _named(name: str, message: str) -> str:
    """An assert_close message that names the tensor it is about."""
    return f"{name}: {message}"


def _grads(model: nn.Module) -> dict[str, Tensor]:
    """The parameters' gradients by name (every one must exist and be finite)."""
    grads = {}
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert bool(torch.isfinite(parameter.grad).all()), name
        grads[name] = parameter.grad
    return grads


def _assert_terms_close(terms: dict[str, Tensor], terms_cpu: dict[str, Tensor],
                        grads: dict[str, Tensor], grads_cpu: dict[str, Tensor],
                        device: str) -> None:
    """Named loss terms (finite) and gradients from ``device`` equal the CPU run's."""
    assert terms.keys() == terms_cpu.keys()
    for name, value in terms.items():
        assert bool(torch.isfinite(value)), name
        _check(value.detach(), terms_cpu[name].detach(), device, atol=1e-5, rtol=1e-4)
    for name, value in grads.items():
        _check(value, grads_cpu[name], device, atol=1e-5, rtol=1e-4)


def _assert_scores_close(actual: dict[str, Any], expected: dict[str, Any], *,
                         abs_tol: float = 1e-9) -> None:
    """Metric dicts with the same keys and numbers (lists element-wise, NaN equal to NaN)."""
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        values = value if isinstance(value, list) else [value]
        found = actual[key] if isinstance(value, list) else [actual[key]]
        assert found == pytest.approx(values, abs=abs_tol, nan_ok=True), key


def _blobs(n_per_class: int = 6, channels: int = 1, size: int = 8,
           seed: int = 0) -> tuple[Tensor, Tensor]:
    """Three learnable classes of images in [0, 1]: a bright quadrant per class plus noise."""
    g = _gen(seed)
    images, labels = [], []
    for c in range(3):
        x = 0.3 * torch.rand(n_per_class, channels, size, size, generator=g)
        half = size // 2
        x[:, :, (c // 2) * half:(c // 2 + 1) * half, (c % 2) * half:(c % 2 + 1) * half] += 0.6
        images.append(x.clamp(0, 1))
        labels.append(torch.full((n_per_class,), c))
    return torch.cat(images), torch.cat(labels)


def _convnet(seed: int = 0, classes: int = 3, width: int = 4) -> nn.Module:
    """A tiny instance-norm ConvNet on 1x8x8 images (vmap-able, no running statistics)."""
    return create_model("convnet", classes, 1, 8, width=width, depth=1, mean=(0.5,),
                        std=(0.25,))


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize("device", DEVICES)
def test_label_ops(device: str) -> None:
    """soften, classwise_soften, smooth, boundary_smooth, topk, swap_ranks, ensemble, entropy,
    js_distance and shuffle_tail (CPU generator) on device tensors."""
    g = _gen(0)
    logits_cpu = 3 * torch.randn(6, 5, generator=g)
    hard_cpu = torch.randint(0, 5, (6,), generator=g)
    masks_cpu = torch.randint(0, 4, (2, 6, 6), generator=g)
    masks_cpu[:, 0, :2] = 255
    dense_cpu = torch.softmax(torch.randn(2, 4, 3, 3, generator=g), 1)
    temps_cpu = torch.tensor([0.5, 1.0, 2.0, 1.5, 3.0])
    logits, hard, masks = logits_cpu.to(device), hard_cpu.to(device), masks_cpu.to(device)
    dense = dense_cpu.to(device)

    def ops(logits: Tensor, hard: Tensor, masks: Tensor, dense: Tensor) -> dict[str, Tensor]:
        probs = L.soften(logits, 2.0)
        return {
            "soften": probs,
            # The temperatures stay on the CPU: the library moves them to the logits' device.
            "classwise": L.classwise_soften(logits, hard, temps_cpu),
            "smooth": L.smooth(hard, 5, 0.1),
            "smooth_ignore": L.smooth(masks, 4, 0.2, ignore_index=255),
            "boundary": L.boundary_smooth(masks, 4, 0.5, ignore_index=255),
            "topk": L.topk(probs, 2),
            "topk_partial": L.topk(probs, 3, renormalize=False),
            "swap": L.swap_ranks(probs, 1),
            "swap_dense": L.swap_ranks(dense, 2),
            # Smoothed labels tie on every wrong class: the stable sort must break the ties
            # alike on every device. (No such case for topk: torch.topk's tie order is not
            # the documented lowest-index-first even on the CPU.)
            "swap_ties": L.swap_ranks(L.smooth(hard, 5, 0.1), 1),
            "ensemble": L.ensemble([logits, 2 * logits], 1.5),
            "entropy": L.entropy(probs),
            "js": L.js_distance(probs, L.topk(probs, 2)),
            "shuffle": L.shuffle_tail(probs, _gen(7)),
            "shuffle_dense": L.shuffle_tail(dense, _gen(8)),
        }

    expected = ops(logits_cpu, hard_cpu, masks_cpu, dense_cpu)
    for name, value in ops(logits, hard, masks, dense).items():
        _check(value, expected[name], device, atol=1e-6)

    # Independent references, on the CPU results.
    probs = torch.softmax(logits_cpu / 2.0, 1)
    torch.testing.assert_close(expected["smooth"], 0.9 * F.one_hot(hard_cpu, 5).float() + 0.02)
    torch.testing.assert_close(expected["entropy"], -(probs * probs.log()).sum(1))
    top2 = probs.topk(2, 1)
    assert torch.equal(expected["topk"].topk(2, 1).indices, top2.indices)
    torch.testing.assert_close(expected["topk"].sum(1), torch.ones(6))
    for name, source in (("shuffle", probs), ("shuffle_dense", dense_cpu)):
        assert torch.equal(expected[name].argmax(1), source.argmax(1))  # top class stays
        torch.testing.assert_close(expected[name].sort(1).values, source.sort(1).values)
    assert not torch.equal(expected["shuffle"], probs)  # and the tail really moved
    # Ties go to the lowest index first, so the top class swaps with the highest other class.
    highest_other = torch.where(hard_cpu == 4, 3, 4)
    assert torch.equal(expected["swap_ties"].argmax(1), highest_other)
    assert bool((expected["smooth_ignore"].sum(1)[masks_cpu == 255] == 0).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("mode", "k"), [("fp32", None), ("fp16", None), ("topk", 3)])
def test_label_store_round_trip(device: str, mode: str, k: int | None, tmp_path: Path) -> None:
    """A LabelStore built from device probabilities saves, loads and looks up like a CPU one."""
    g = _gen(1)
    probs_cpu = torch.softmax(2 * torch.randn(20, 6, generator=g), 1)
    indices_cpu = torch.randperm(50, generator=g)[:20]
    metadata = LabelMetadata(source="expert", expert_epoch=3, temperature=2.0)
    wanted = indices_cpu[[3, 0, 7]]
    runs = []
    for run, where in enumerate(("cpu", device)):
        store = LabelStore(indices_cpu.to(where), probs_cpu.to(where), metadata)
        path = tmp_path / f"run{run}.safetensors"
        report = store.save(path, mode=mode, k=k)
        assert report.file_bytes == path.stat().st_size
        assert dataclasses.replace(report, file_bytes=None) == store.report(mode, k)
        loaded = LabelStore.load(path)
        # Look-ups with indices on the device (a GPU training loop holds its batch there).
        runs.append((report, loaded, loaded.labels_for(wanted.to(where))))
    (report_cpu, cpu, lookup_cpu), (report_dev, dev, lookup_dev) = runs
    assert report_dev == report_cpu
    assert torch.equal(dev.indices.cpu(), cpu.indices)
    assert torch.equal(dev.labels.cpu(), cpu.labels)
    assert torch.equal(lookup_dev.cpu(), lookup_cpu)
    assert dev.metadata == cpu.metadata == metadata
    # Independent reference: the stored labels are the originals up to the mode's rounding.
    bound = {"fp32": 0.0, "fp16": 1e-3}.get(mode)
    if bound is None:  # top-k keeps the 3 largest (in fp16) and drops the rest
        values, classes = probs_cpu.topk(3, 1)
        reference = torch.zeros_like(probs_cpu).scatter(1, classes, values.half().float())
        bound = 0.0
    else:
        reference = probs_cpu
    assert float((cpu.labels - reference).abs().max()) <= bound
    torch.testing.assert_close(lookup_cpu, reference[[3, 0, 7]], atol=bound, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_label_modes_and_selection(device: str) -> None:
    """make_labels in every mode from device logits; image selection from device labels."""
    g = _gen(2)
    logits_cpu = 2 * torch.randn(9, 4, generator=g)
    hard_cpu = torch.arange(9) % 4
    logits, hard = logits_cpu.to(device), hard_cpu.to(device)
    modes: list[dict[str, Any]] = [
        {"mode": "hard", "num_classes": 4}, {"mode": "expert", "temperature": 2.0},
        {"mode": "smooth"}, {"mode": "topk", "k": 2}, {"mode": "topk", "k": 0},
        {"mode": "swap", "k": 1}, {"mode": "shuffle", "seed": 3},
    ]
    for kwargs in modes:
        result = make_labels(hard=hard, logits=logits, **kwargs)
        expected = make_labels(hard=hard_cpu, logits=logits_cpu, **kwargs)
        _check(result, expected, device, atol=1e-6)
    ensemble = make_labels("expert", logits=[logits, logits + 1.0])
    _check(ensemble, torch.softmax(logits_cpu, 1), device, atol=1e-6)  # a shift cancels
    # Independent references on the CPU.
    assert torch.equal(make_labels("hard", hard=hard_cpu, num_classes=4),
                       F.one_hot(hard_cpu, 4).float())
    assert torch.equal(make_labels("topk", logits=logits_cpu, k=0).argmax(1),
                       logits_cpu.argmax(1))

    labels_cpu = torch.arange(30) % 3
    losses_cpu = torch.rand(30, generator=g)
    labels, losses = labels_cpu.to(device), losses_cpu.to(device)
    for result, expected in (
        (select_random(labels, 2, seed=1), select_random(labels_cpu, 2, seed=1)),
        (select_by_loss(labels, losses, 2, "hardest"),
         select_by_loss(labels_cpu, losses_cpu, 2, "hardest")),
        (sample_per_class(labels, 3, seed=4), sample_per_class(labels_cpu, 3, seed=4)),
        *zip(train_val_split(labels, 0.2, seed=5), train_val_split(labels_cpu, 0.2, seed=5),
             strict=True),
    ):
        assert torch.equal(result.cpu(), expected)
        # Positions index device data whatever device they are returned on.
        assert torch.equal(labels[result].cpu(), labels_cpu[expected])
    hardest = select_by_loss(labels_cpu, losses_cpu, 2, "hardest")
    for c in range(3):  # the two largest losses of each class
        members = (labels_cpu == c).nonzero().flatten()
        top = members[losses_cpu[members].topk(2).indices].sort().values
        assert torch.equal(hardest[labels_cpu[hardest] == c], top)


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("device", DEVICES)
def test_classification_losses(device: str) -> None:
    """soft_cross_entropy (hard/soft, 2-D/4-D, reductions), kd_loss and their modules:
    values and gradients equal across devices."""
    g = _gen(3)
    cases: list[tuple[Tensor, Tensor]] = [
        (torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)),
        (torch.randn(6, 4, generator=g), torch.softmax(torch.randn(6, 4, generator=g), 1)),
        (torch.randn(2, 4, 3, 3, generator=g), torch.randint(0, 4, (2, 3, 3), generator=g)),
        (torch.randn(2, 4, 3, 3, generator=g),
         torch.softmax(torch.randn(2, 4, 3, 3, generator=g), 1)),
    ]
    teacher_cpu = torch.randn(6, 4, generator=g)

    def losses(logits: Tensor, target: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        out = {f"ce_{r}": soft_cross_entropy(logits, target, r) for r in ("mean", "sum", "none")}
        out["module"] = SoftCrossEntropy("sum")(logits, target)
        if logits.ndim == 2:
            out["kd"] = kd_loss(logits, teacher, 3.0)
            out["kd_probs"] = KDLoss(2.0, "probs", "none")(logits, teacher.softmax(1))
        return out

    for logits_cpu, target_cpu in cases:
        results = {}
        for where in ("cpu", device):
            logits = logits_cpu.clone().to(where).requires_grad_(True)
            values = losses(logits, target_cpu.to(where), teacher_cpu.to(where))
            sum(v.sum() for v in values.values()).backward()
            results[where] = (values, logits.grad)
        (expected, grad_cpu), (values, grad) = results["cpu"], results[device]
        for name, value in values.items():
            _check(value.detach(), expected[name].detach(), device)
        _check(grad, grad_cpu, device)
        assert bool(torch.isfinite(grad).all())
        # Independent reference: a one-hot target gives the usual cross-entropy.
        if not target_cpu.is_floating_point():
            soft = L.one_hot(target_cpu, 4)
            torch.testing.assert_close(soft_cross_entropy(logits_cpu, soft),
                                       F.cross_entropy(logits_cpu, target_cpu))
    # A student equal to its teacher has zero KD loss.
    assert float(kd_loss(teacher_cpu, teacher_cpu)) == pytest.approx(0.0, abs=1e-6)


def _reference_jaccard(logits: Tensor, labels: Tensor, keep: Tensor, smooth: float = 1e-3
                       ) -> Tensor:
    """Dataset-level Jaccard loss of hard labels, written out with one-hot tensors."""
    num_classes = logits.shape[1]
    probs = logits.softmax(1) * keep[:, None]
    onehot = L.one_hot(labels.where(keep, 0), num_classes) * keep[:, None]
    tp = (probs * onehot).sum((0, 2, 3))
    fp, fn = probs.sum((0, 2, 3)) - tp, onehot.sum((0, 2, 3)) - tp
    present = onehot.sum((0, 2, 3)) > 0
    return (1 - (tp + smooth) / (tp + fp + fn + smooth))[present].mean()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["jml1", "jml2", "sjl"])
def test_metric_losses(device: str, variant: str) -> None:
    """jaccard_metric_loss and the Jaccard/Dice/Tversky modules with hard and soft labels:
    values and gradients equal across devices."""
    g = _gen(4)
    logits_cpu = torch.randn(2, 4, 6, 6, generator=g)
    hard_cpu = torch.randint(0, 4, (2, 6, 6), generator=g)
    hard_cpu[0, :2] = 255
    keep_cpu = hard_cpu != 255
    soft_cpu = L.boundary_smooth(hard_cpu, 4, 0.5, ignore_index=255)
    multilabel_cpu = torch.rand(2, 4, 6, 6, generator=g)
    binary_cpu = torch.randint(0, 2, (2, 6, 6), generator=g)
    weights = [1.0, 0.5, 2.0, 1.0]
    modules = {
        "jaccard": JaccardMetricLoss(variant=variant, levels={"dataset": 0.5, "image": 0.5}),
        "dice": DiceMetricLoss(variant=variant, levels={"class": 1.0}, class_weights=weights),
        "tversky": TverskyMetricLoss(0.3, 0.7, variant=variant, gamma=2.0, log_loss=True),
    }

    def losses(logits: Tensor, hard: Tensor, keep: Tensor, soft: Tensor, multilabel: Tensor,
               binary: Tensor, mods: dict[str, nn.Module]) -> dict[str, Tensor]:
        out = {
            "hard": jaccard_metric_loss(logits, hard, variant=variant, ignore_index=255),
            # keep may be on another device than the logits: the library moves it.
            "soft": jaccard_metric_loss(logits, soft, variant=variant, keep=keep.cpu()),
            "p2": jaccard_metric_loss(logits, hard.where(keep, 0), variant=variant, p=2,
                                      levels={"image": 1.0}),
            "soft_p2": jaccard_metric_loss(logits, soft, variant=variant, p=2, keep=keep),
            "weighted": jaccard_metric_loss(logits, soft, variant=variant, keep=keep,
                                            class_weights=weights),
            "multilabel": jaccard_metric_loss(logits, multilabel, variant=variant,
                                              mode="multilabel"),
            "binary": jaccard_metric_loss(logits[:, :1], binary, variant=variant,
                                          mode="binary", active_classes="all"),
            "half": jaccard_metric_loss(logits.half(), hard, variant=variant, ignore_index=255),
        }
        out.update({name: module(logits, hard.where(keep, 0), keep)
                    for name, module in mods.items()})
        out.update({f"{name}_soft": module(logits, soft, keep) for name, module in mods.items()})
        return out

    results = {}
    for where in ("cpu", device):
        logits = logits_cpu.clone().to(where).requires_grad_(True)
        # The modules' class_weights buffer follows .to(device), as for any module.
        mods = {name: copy.deepcopy(m).to(where) for name, m in modules.items()}
        args = [t.to(where) for t in (hard_cpu, keep_cpu, soft_cpu, multilabel_cpu, binary_cpu)]
        values = losses(logits, *args, mods)
        sum(v.float() for v in values.values()).backward()
        results[where] = (values, logits.grad)
    (expected, grad_cpu), (values, grad) = results["cpu"], results[device]
    for name, value in values.items():
        # Half-precision logits: the result is rounded to float16 (about 1e-3 relative).
        tol = 1e-3 if name == "half" else 1e-5
        _check(value.detach(), expected[name].detach(), device, atol=tol, rtol=tol)
        assert bool(torch.isfinite(value)), name
    assert values["half"].dtype == torch.float16
    _check(grad, grad_cpu, device, atol=1e-5, rtol=1e-4)
    # Independent references on the CPU: hard labels with p = 1 are the same for all variants
    # and equal the one-hot formula; a soft label equal to the prediction costs nothing
    # (JML1 and JML2 only: SJL is not minimised at x = y, the reason JML exists).
    torch.testing.assert_close(expected["hard"], _reference_jaccard(logits_cpu, hard_cpu,
                                                                    keep_cpu))
    if variant != "sjl":
        probs = logits_cpu.softmax(1)
        assert float(jaccard_metric_loss(probs, probs, variant=variant,
                                         from_logits=False)) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("device", DEVICES)
def test_classification_metrics(device: str) -> None:
    """accuracy, confusion_matrix, classwise_accuracy, worst-class accuracy and NSD on device
    scores and labels."""
    g = _gen(5)
    scores_cpu = torch.randn(40, 5, generator=g)
    targets_cpu = torch.randint(0, 4, (40,), generator=g)  # class 4 never occurs: NaN row
    scores, targets = scores_cpu.to(device), targets_cpu.to(device)
    for preds, preds_cpu in ((scores, scores_cpu), (scores.argmax(1), scores_cpu.argmax(1))):
        assert accuracy(preds, targets) == accuracy(preds_cpu, targets_cpu)
        matrix = confusion_matrix(preds, targets, 5)
        assert torch.equal(matrix.cpu(), confusion_matrix(preds_cpu, targets_cpu, 5))
        per_class = classwise_accuracy(preds, targets, 5)
        expected = classwise_accuracy(preds_cpu, targets_cpu, 5)
        torch.testing.assert_close(per_class.cpu(), expected, equal_nan=True)
        assert worst_class_accuracy(per_class) == worst_class_accuracy(expected)
        assert nsd(per_class) == pytest.approx(nsd(expected))
    # Independent reference: counts by a loop.
    predicted = scores_cpu.argmax(1)
    brute = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in zip(targets_cpu.tolist(), predicted.tolist(), strict=True):
        brute[t, p] += 1
    assert torch.equal(confusion_matrix(scores_cpu, targets_cpu, 5), brute)
    assert accuracy(scores_cpu, targets_cpu) == pytest.approx(brute.trace().item() / 40)
    assert math.isnan(float(classwise_accuracy(scores_cpu, targets_cpu, 5)[4]))


def _reference_ece(probs: Tensor, target: Tensor, bins: int = 10) -> float:
    """ECE in percent of (N, C) probabilities by a loop over (b/M, (b+1)/M] bins."""
    confidence, predicted = probs.double().max(1)
    total = 0.0
    for b in range(bins):
        inside = (confidence > b / bins) & (confidence <= (b + 1) / bins)
        if inside.any():
            gap = (predicted[inside] == target[inside]).double().sum() - confidence[inside].sum()
            total += abs(float(gap))
    return 100 * total / probs.shape[0]


@pytest.mark.parametrize("device", DEVICES)
def test_calibration(device: str) -> None:
    """expected_calibration_error and CalibrationError on device probabilities, with ignored
    pixels and a keep mask."""
    g = _gen(6)
    # Probabilities are made on the CPU and moved, so both devices bin the very same numbers.
    dense_cpu = torch.softmax(2 * torch.randn(3, 4, 5, 5, generator=g), 1)
    masks_cpu = torch.randint(0, 4, (3, 5, 5), generator=g)
    masks_cpu[1, :2] = 255
    keep_cpu = torch.rand(3, 5, 5, generator=g) > 0.2
    flat_cpu = torch.softmax(2 * torch.randn(30, 4, generator=g), 1)
    labels_cpu = torch.randint(0, 4, (30,), generator=g)

    def compute(dense: Tensor, masks: Tensor, keep: Tensor, flat: Tensor, labels: Tensor
                ) -> dict[str, float]:
        out = {f"ece_{level}": expected_calibration_error(dense, masks, 10, 255, level,
                                                          keep=keep)
               for level in ("dataset", "image")}
        out["flat"] = expected_calibration_error(flat, labels, bins=15)
        metric = CalibrationError(ignore_index=255)
        metric.update(dense[:2], masks[:2], keep=keep[:2].cpu())  # keep moved by the library
        metric.update(dense[2:], masks[2:])
        out.update({f"metric_{k}": v for k, v in metric.compute().items()})
        classification = CalibrationError(bins=15)
        classification.update(flat, labels)
        out["metric_flat"] = classification.compute()["ece_dataset"]
        return out

    expected = compute(dense_cpu, masks_cpu, keep_cpu, flat_cpu, labels_cpu)
    result = compute(*(t.to(device) for t in (dense_cpu, masks_cpu, keep_cpu, flat_cpu,
                                              labels_cpu)))
    _assert_scores_close(result, expected)
    assert expected["flat"] == pytest.approx(_reference_ece(flat_cpu, labels_cpu, 15))
    assert expected["metric_flat"] == pytest.approx(expected["flat"])


def _reference_counts(pred: Tensor, target: Tensor, num_classes: int, keep: Tensor
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image TP, FP, FN by a loop over classes (CPU)."""
    tp = torch.zeros(pred.shape[0], num_classes, dtype=torch.int64)
    fp, fn = tp.clone(), tp.clone()
    for c in range(num_classes):
        p, t = (pred == c) & keep, (target == c) & keep
        tp[:, c] = (p & t).flatten(1).sum(1)
        fp[:, c] = (p & ~t).flatten(1).sum(1)
        fn[:, c] = (~p & t).flatten(1).sum(1)
    return tp, fp, fn


@pytest.mark.parametrize("device", DEVICES)
def test_segmentation_metrics(device: str) -> None:
    """segmentation_confusion, the mIoU family and the SegmentationMetrics accumulator fed
    device logits, class maps, ignored pixels and keep masks."""
    g = _gen(7)
    logits_cpu = torch.randn(4, 3, 6, 6, generator=g)
    target_cpu = torch.randint(0, 3, (4, 6, 6), generator=g)
    target_cpu[0, :3] = 255
    target_cpu[3] = 255  # an image without any kept pixel
    keep_cpu = torch.rand(4, 6, 6, generator=g) > 0.1
    logits, target, keep = (t.to(device) for t in (logits_cpu, target_cpu, keep_cpu))

    counts = segmentation_confusion(logits, target, 3, 255, keep=keep)
    expected_counts = segmentation_confusion(logits_cpu, target_cpu, 3, 255, keep=keep_cpu)
    for value, reference in zip(counts, expected_counts, strict=True):
        _check(value, reference, device, atol=0, rtol=0)  # on the target's device
    for score in (miou, mdice, macc):
        for level in ("dataset", "image", "class"):
            assert score(*counts, level=level) == pytest.approx(score(*expected_counts,
                                                                      level=level))
    per_image = per_image_scores(*counts)
    torch.testing.assert_close(per_image.cpu(), per_image_scores(*expected_counts),
                               equal_nan=True)
    assert worst_case(per_image.to(device), 50) == worst_case(per_image_scores(
        *expected_counts), 50)

    metrics = SegmentationMetrics(3, ignore_index=255, q=50)
    metrics.update(logits[:2], target[:2], keep=keep_cpu[:2])  # keep moved by the library
    metrics.update(logits[2:].argmax(1), target[2:], keep=keep[2:])
    reference = SegmentationMetrics(3, ignore_index=255, q=50)
    reference.update(logits_cpu, target_cpu, keep=keep_cpu)
    expected = reference.compute()
    _assert_scores_close(metrics.compute(), expected)
    _assert_scores_close(segmentation_metrics(logits, target, 3, 255, 50, keep=keep), expected)
    assert all(t.device.type == "cpu" for t in metrics.counts())  # state kept on the CPU

    # Independent reference: counts by a loop over classes.
    kept = keep_cpu & (target_cpu != 255)
    brute = _reference_counts(logits_cpu.argmax(1), target_cpu, 3, kept)
    for value, reference_count in zip(expected_counts, brute, strict=True):
        assert torch.equal(value, reference_count)
    assert expected["num_images"] == 4


@pytest.mark.parametrize("device", DEVICES)
def test_metric_accumulators_with_masks_on_the_cpu(device: str) -> None:
    """The usual evaluation loop moves only the images to the GPU: model outputs on the device,
    masks and labels still on the CPU. The accumulators keep their state on the CPU so that it
    is "independent of where each batch was computed", and they already move ``keep`` to the
    target's device, so they should take such batches."""
    g = _gen(20)
    logits_cpu = torch.randn(2, 3, 5, 5, generator=g)
    masks = torch.randint(0, 3, (2, 5, 5), generator=g)
    masks[0, 0] = 255
    scores_cpu = torch.randn(10, 3, generator=g)
    labels = torch.randint(0, 3, (10,), generator=g)
    logits, scores = logits_cpu.to(device), scores_cpu.to(device)

    metrics, reference = (SegmentationMetrics(3, ignore_index=255) for _ in range(2))
    metrics.update(logits, masks)
    reference.update(logits_cpu, masks)
    _assert_scores_close(metrics.compute(), reference.compute())
    calibration, calibration_ref = (CalibrationError(ignore_index=255) for _ in range(2))
    calibration.update(logits.softmax(1), masks)
    calibration_ref.update(logits_cpu.softmax(1), masks)
    _assert_scores_close(calibration.compute(), calibration_ref.compute(), abs_tol=1e-4)
    # Classification: classwise_accuracy already takes mixed devices; accuracy alike.
    torch.testing.assert_close(classwise_accuracy(scores, labels, 3),
                               classwise_accuracy(scores_cpu, labels, 3), equal_nan=True)
    assert accuracy(scores, labels) == accuracy(scores_cpu, labels)
    # Independent reference: the pixel accuracy by hand.
    kept = masks != 255
    hand = float((logits_cpu.argmax(1) == masks)[kept].double().mean())
    assert reference.compute()["pixel_accuracy"] == pytest.approx(hand)


# ----------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("device", DEVICES)
def test_augment(device: str) -> None:
    """random_flip, random_crop, Augment and the named presets with int seeds and CPU
    generators on device images: the same result as on the CPU, on the images' device."""
    x_cpu = torch.rand(8, 3, 16, 16, generator=_gen(8))
    x = x_cpu.to(device)

    def calls(images: Tensor) -> dict[str, Tensor]:
        return {
            "flip_int": random_flip(images, 0.5, generator=3),
            "flip_gen": random_flip(images, 0.5, generator=_gen(3)),
            "crop": random_crop(images, 2, generator=4),
            "crop_reflect": random_crop(images, 3, padding_mode="reflect", generator=_gen(5)),
            "augment": Augment(RandomCrop(2), RandomFlip())(images, generator=6),
            "preset_flip_crop": augmentation("flip_crop", 16)(images, _gen(6)),
            "preset_dsa": augmentation("dsa", 16)(images, 9),
        }

    expected = calls(x_cpu)
    for name, value in calls(x).items():
        # Pure indexing is exact; the DSA preset may resample (grid_sample) on the device.
        tol = 1e-5 if name == "preset_dsa" else 0.0
        _check(value, expected[name], device, atol=tol, rtol=tol)
    # A generator on the device itself works too (its draws differ from the CPU's).
    on_device = Augment(RandomCrop(2), RandomFlip())(x, torch.Generator(device=device))
    _on(on_device, device)
    assert on_device.shape == x.shape

    # Independent references: an int seed is a CPU generator with that seed; the crop offsets
    # are the generator's first two randint draws; each image is flipped or untouched.
    assert torch.equal(expected["flip_int"], expected["flip_gen"])
    flipped = (expected["flip_int"] == x_cpu.flip(3)).flatten(1).all(1)
    same = (expected["flip_int"] == x_cpu).flatten(1).all(1)
    assert bool((flipped | same).all())
    assert bool(flipped.any())
    assert bool(same.any())
    g = _gen(4)
    top, left = (torch.randint(0, 5, (8,), generator=g) for _ in range(2))
    padded = F.pad(x_cpu, (2, 2, 2, 2))
    for i in range(8):
        window = padded[i, :, top[i]:top[i] + 16, left[i]:left[i] + 16]
        assert torch.equal(expected["crop"][i], window)
    assert torch.equal(expected["augment"], expected["preset_flip_crop"])  # pad 16 // 8 = 2


@pytest.mark.parametrize("device", DEVICES)
def test_paired_augment(device: str) -> None:
    """paired_flip, paired_random_crop (with padding), paired_random_scale and PairedAugment on
    device images and masks."""
    g = _gen(9)
    masks_cpu = torch.randint(0, 4, (4, 10, 10), generator=g)
    # Channel 0 of the image is the mask itself, so a geometric transform that moves the two
    # together keeps them equal: an independent check of the pairing.
    images_cpu = torch.cat([masks_cpu[:, None].float() / 4,
                            torch.rand(4, 2, 10, 10, generator=g)], 1)
    images, masks = images_cpu.to(device), masks_cpu.to(device)

    def calls(x: Tensor, m: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        return {
            "flip": paired_flip(x, m, 1),
            "crop": paired_random_crop(x, m, 8, _gen(2)),
            "crop_pad": paired_random_crop(x, m, (12, 9), 3),
            "scale": paired_random_scale(x, m, (0.6, 1.4), 4),
            "augment": PairedAugment(PairedRandomCrop(8), PairedFlip())(x, m, 5),
        }

    expected = calls(images_cpu, masks_cpu)
    for name, (x, m) in calls(images, masks).items():
        x_ref, m_ref = expected[name]
        # Bilinear resizing may round differently on the device; the rest is pure indexing.
        tol = 1e-5 if name == "scale" else 0.0
        _check(x, x_ref, device, atol=tol, rtol=tol)
        _check(m, m_ref, device, atol=0, rtol=0)
    for name in ("flip", "crop", "augment"):
        x_ref, m_ref = expected[name]
        assert torch.equal(x_ref[:, 0] * 4, m_ref.float()), name
    x_ref, m_ref = expected["crop_pad"]
    assert x_ref.shape == (4, 3, 12, 9)
    assert m_ref.shape == (4, 12, 9)
    padded = m_ref == 255  # padding takes the ignore index, never a class
    assert bool(padded.any())
    assert torch.equal((x_ref[:, 0] * 4)[~padded], m_ref[~padded].float())
    assert set(expected["scale"][1].unique().tolist()) <= set(masks_cpu.unique().tolist())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("strategy", ["color", "crop", "cutout", "flip", "scale", "rotate",
                                      DSA_STRATEGY])
def test_dsa(device: str, strategy: str) -> None:
    """DSA ops with int seeds and CPU generators on device images: the CPU result, on the
    images' device, differentiable with respect to them."""
    x_cpu = torch.rand(8, 3, 16, 16, generator=_gen(10))
    every_op = DSAParams(single=False)  # the whole strategy, not one op drawn from it
    results = {}
    for where in ("cpu", device):
        x = x_cpu.clone().to(where).requires_grad_(True)
        out = {
            "per_image": dsa(x, strategy, generator=11, params=every_op),
            "siamese": dsa(x, strategy, generator=_gen(12), siamese=True, params=every_op),
            "module": DSA(strategy)(x, 13),
        }
        sum((v * torch.linspace(0, 1, v.numel(), device=where).view_as(v)).sum()
            for v in out.values()).backward()
        results[where] = (out, x.grad)
    (expected, grad_cpu), (values, grad) = results["cpu"], results[device]
    for name, value in values.items():
        # grid_sample (scale, rotate) and the colour statistics round differently on a GPU.
        _check(value.detach(), expected[name].detach(), device, atol=1e-5, rtol=1e-5)
        assert value.shape == x_cpu.shape
    _check(grad, grad_cpu, device, atol=1e-5, rtol=1e-5)
    assert bool(torch.isfinite(grad).all())
    # Independent references: one seed means one transform for every image of a siamese
    # batch, so identical images stay identical; an int seed equals that CPU generator.
    same = x_cpu[:1].expand(5, -1, -1, -1)
    out = dsa(same, strategy, generator=14, siamese=True, params=every_op)
    assert torch.equal(out, out[:1].expand_as(out))
    assert torch.equal(dsa(x_cpu, strategy, generator=15),
                       dsa(x_cpu, strategy, generator=_gen(15)))


# ----------------------------------------------------------------------------- models

MODEL_CASES = [
    ("mlp", {"hidden": (16,)}, 8),
    ("convnet", {"width": 8, "depth": 2}, 8),
    ("convnet", {"width": 8, "depth": 2, "norm": "batchnorm"}, 8),
    ("resnet18", {}, 8),
    ("wrn", {"depth": 10, "widen_factor": 1}, 8),
    # 16 pixels: at 8 the last BatchNorms see 4 values per channel (see test_models).
    ("mobilenetv2", {"width_mult": 0.25}, 16),
    # 10 is not a multiple of 2 ** depth: the U-Net pads its input and crops its output.
    ("unet", {"base_width": 4, "depth": 2}, 10),
    ("unet", {"base_width": 4, "depth": 2, "upsample": "transpose", "norm": "groupnorm"}, 10),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "kwargs", "size"), MODEL_CASES,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(MODEL_CASES)])
def test_models(device: str, name: str, kwargs: dict[str, Any], size: int) -> None:
    """create_model: eval and train forward, eval gradients and BatchNorm statistics on device
    equal the CPU's."""
    # mean/std given as a device tensor: the Normalize layer copies it to the CPU first.
    mean = torch.tensor([0.4, 0.5, 0.6], device=device)

    def build() -> nn.Module:
        return create_model(name, 5, 3, size, mean=mean, std=(0.2, 0.25, 0.3), **kwargs)

    model_cpu, model = _pair(build, 0, device)
    x_cpu = torch.rand(4, 3, size, size, generator=_gen(11))
    expected_shape = (4, 5, size, size) if name == "unet" else (4, 5)
    # Train-mode BatchNorm normalises each channel over few values (4 images of 1x1 or 2x2 at
    # the end of a deep network), which amplifies rounding: 1e-4 there, 1e-5 elsewhere (an
    # H100 measured 1.5e-6 in eval mode and 1.3e-5 for resnet18 in train mode).
    batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for mode, tol in (("train", 1e-4 if batchnorm else 1e-5), ("eval", 1e-5)):
        model_cpu.train(mode == "train")
        model.train(mode == "train")
        out_cpu = model_cpu(x_cpu)
        out = model(x_cpu.to(device))
        assert out.shape == expected_shape
        assert bool(torch.isfinite(out_cpu).all())
        _check(out.detach(), out_cpu.detach(), device, atol=tol, rtol=tol)
    # The running statistics the train-mode pass updated, and the other buffers.
    _assert_states_close(model.state_dict(), model_cpu.state_dict(), atol=1e-5, rtol=1e-5)
    # Gradients of the eval-mode output: the backward of train-mode BatchNorm over 4 values is
    # ill-conditioned (differences of 1e-2 relative measured), a property of the numbers, not
    # of the device.
    (out_cpu * torch.linspace(-1, 1, out_cpu.numel()).view_as(out_cpu)).sum().backward()
    (out * torch.linspace(-1, 1, out.numel(), device=device).view_as(out)).sum().backward()
    grads_cpu, grads = _grads(model_cpu), _grads(model)
    for key, value in grads.items():
        _on(value, device)
        # atol: a conv bias right before a norm has a true gradient of 0; rounding noise is
        # all that is compared there.
        torch.testing.assert_close(value.cpu(), grads_cpu[key], atol=1e-5, rtol=1e-4,
                                   msg=functools.partial(_named, key))
    _on(model.normalize.mean, device)
    torch.testing.assert_close(model_cpu.normalize.mean.flatten(), mean.cpu())


# ----------------------------------------------------------------------------- attacks

ATTACK_CASES: list[tuple[str, dict[str, Any]]] = [
    ("fgsm", {"loss": "ce"}),
    ("fgsm", {"loss": "kl"}),
    ("pgd", {"norm": "linf", "loss": "ce", "random_start": "uniform"}),
    ("pgd", {"norm": "linf", "loss": "cw", "random_start": True}),
    ("pgd", {"norm": "linf", "loss": "kl", "random_start": "normal"}),
    ("pgd", {"norm": "linf", "loss": "ce", "random_start": "none"}),
    ("pgd", {"norm": "l2", "loss": "ce", "random_start": "uniform"}),
    ("pgd", {"norm": "l2", "loss": "kl", "random_start": "normal"}),
    ("pgd", {"norm": "l2", "loss": "cw", "random_start": "normal"}),
]


def _attack_model() -> nn.Module:
    """A linear classifier with input normalisation: its input gradient has no ReLU zeros and
    is of order one, so rounding cannot flip the sign of an L-inf step between devices."""
    return create_model("mlp", 4, 3, 8, hidden=(), mean=(0.5, 0.5, 0.5),
                        std=(0.25, 0.25, 0.25))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("attack", "options"), ATTACK_CASES,
                         ids=[f"{a}-{'-'.join(str(v) for v in o.values())}"
                              for a, o in ATTACK_CASES])
def test_attacks(device: str, attack: str, options: dict[str, Any]) -> None:
    """fgsm and pgd (L-inf, L2; ce, cw, kl; uniform, normal and no start) with a CPU generator
    and a model and inputs on the device: the CPU's adversarial examples."""
    g = _gen(12)
    x_cpu = 0.1 + 0.8 * torch.rand(8, 3, 8, 8, generator=g)
    y_cpu = torch.randint(0, 4, (8,), generator=g)
    target_cpu = torch.softmax(2 * torch.randn(8, 4, generator=g), 1)
    model_cpu, model = _pair(_attack_model, 1, device)
    eps, alpha = (0.05, 0.02) if options.get("norm", "linf") == "linf" else (0.5, 0.2)

    def run(net: nn.Module, where: str, generator: torch.Generator | None) -> Tensor:
        x, y = x_cpu.to(where), y_cpu.to(where)
        target = target_cpu.to(where) if options["loss"] == "kl" else None
        if attack == "fgsm":
            return fgsm(net, x, y, eps, target_probs=target, **options)
        return pgd(net, x, y, eps, alpha, 3, target_probs=target, generator=generator,
                   **options)

    expected = run(model_cpu, "cpu", _gen(13))
    adv = run(model, device, _gen(13))  # the same CPU generator state: the same start
    _check(adv, expected, device, atol=1e-5, rtol=1e-5)
    assert not adv.requires_grad
    assert all(p.grad is None for p in model.parameters())  # attacks touch no .grad
    # A generator on the device, or none (the device's global RNG), also works.
    for generator in (torch.Generator(device=device).manual_seed(0), None):
        if attack == "pgd":
            _on(run(model, device, generator), device)

    # Independent references: inside the ball and the box, and the attack raised the loss.
    delta = (expected - x_cpu).flatten(1)
    if options.get("norm", "linf") == "linf":
        assert float(delta.abs().max()) <= eps + 1e-6
    else:
        assert float(delta.norm(dim=1).max()) <= eps * (1 + 1e-5)
    assert float(expected.min()) >= 0.0
    assert float(expected.max()) <= 1.0
    if options["loss"] == "ce":
        with torch.no_grad():
            assert float(F.cross_entropy(model_cpu(expected), y_cpu)) > float(
                F.cross_entropy(model_cpu(x_cpu), y_cpu))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("data_on_device", [False, True])
def test_robust_evaluate(device: str, data_on_device: bool) -> None:
    """robust_evaluate with device=device, for CPU data and for data already on the device."""
    g = _gen(14)
    x_cpu = torch.rand(32, 3, 8, 8, generator=g)
    y_cpu = torch.arange(32) % 4
    attacks = standard_attacks(0.05, pgd_steps=3)
    model_cpu, model = _pair(_attack_model, 2, device)
    expected = robust_evaluate(model_cpu, x_cpu, y_cpu, standard_attacks(0.05, pgd_steps=3),
                               batch_size=16, device="cpu")
    x, y = (x_cpu.to(device), y_cpu.to(device)) if data_on_device else (x_cpu, y_cpu)
    result = robust_evaluate(model, x, y, attacks, batch_size=16, device=device)
    assert list(result) == list(expected) == ["clean", "fgsm", "pgd3", "cw"]
    for name, scores in result.items():
        reference = expected[name]
        assert scores.accuracy == reference.accuracy, name
        torch.testing.assert_close(scores.classwise_accuracy.cpu(),
                                   reference.classwise_accuracy, equal_nan=True)
        assert scores.worst_class_accuracy == reference.worst_class_accuracy
        assert scores.nsd == pytest.approx(reference.nsd, nan_ok=True)
    # Independent reference: clean accuracy is the model's plain accuracy.
    with torch.no_grad():
        clean = float((model_cpu(x_cpu).argmax(1) == y_cpu).float().mean())
    assert expected["clean"].accuracy == clean
    assert expected["pgd3"].accuracy <= expected["clean"].accuracy


# ----------------------------------------------------------------------------- robust


@pytest.mark.parametrize("device", DEVICES)
def test_class_temperatures(device: str) -> None:
    """ClassTemperatures.update with device risks: the CPU's temperatures, by hand."""
    temps, reference = ClassTemperatures(4, rate=0.2), ClassTemperatures(4, rate=0.2)
    for risk in ([4.0, 2.0, 1.0, 1.0], [0.0, 1.0, 3.0, 0.5]):
        result = temps.update(torch.tensor(risk, device=device))
        expected = reference.update(torch.tensor(risk))
        torch.testing.assert_close(result.cpu(), expected)
    assert temps.history == reference.history
    assert temps.history[1] == pytest.approx([0.8, 1.0, 1.1, 1.1])  # the rule, by hand


DISTILLERS: dict[str, Callable[[nn.Module, nn.Module, AttackConfig, torch.Generator], Any]] = {
    "ard": lambda s, t, a, g: ARD(s, t, a, temperature=4.0, alpha=0.9, generator=g),
    "rslad": lambda s, t, a, g: RSLAD(s, t, a, generator=g),
    "absld": lambda s, t, a, g: ABSLD(s, t, a, 3, generator=g),
    "absld_official": lambda s, t, a, g: ABSLD(s, t, a, 3, official_product=True,
                                               generator=g),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", list(DISTILLERS))
def test_distillers(device: str, kind: str) -> None:
    """ARD / RSLAD / ABSLD with student and teacher on the device: one forward gives the CPU's
    finite terms, the backward the CPU's student gradients; ABSLD's temperatures update alike."""
    attack = AttackConfig(eps=0.1, alpha=0.05, steps=2)
    x_cpu, y_cpu = _blobs(4)
    runs = {}
    for where in ("cpu", device):
        student = _seeded(_convnet, 0).to(where)
        teacher = _seeded(_convnet, 1).to(where)
        distiller = DISTILLERS[kind](student, teacher, attack, _gen(15)).train()
        terms = distiller(x_cpu.to(where), y_cpu.to(where))
        sum(terms.values()).backward()
        temps = (distiller.epoch_end(1), distiller.soft_labels(
            teacher(x_cpu.to(where)).detach(), y_cpu.to(where))) if "absld" in kind else None
        runs[where] = (terms, _grads(student), temps, teacher)
    (terms_cpu, grads_cpu, temps_cpu, _), (terms, grads, temps, teacher) = (runs["cpu"],
                                                                           runs[device])
    _assert_terms_close(terms, terms_cpu, grads, grads_cpu, device)
    assert all(p.grad is None for p in teacher.parameters())  # the teacher stays frozen
    assert not teacher.training
    if temps is not None:
        assert temps[0] == pytest.approx(temps_cpu[0], abs=1e-6)
        for value, reference in zip(temps[1], temps_cpu[1], strict=True):
            _check(value, reference, device, atol=1e-5)
        assert temps_cpu[0]["tau_adv_min"] < 1.0 < temps_cpu[0]["tau_adv_max"]  # it moved


def _relative_error(actual: dict[str, Tensor], expected: dict[str, Tensor]) -> float:
    """||actual - expected|| / ||expected|| over all the tensors of two dicts (on the CPU)."""
    diff = torch.cat([(actual[k].cpu() - v.cpu()).flatten() for k, v in expected.items()])
    return float(diff.norm() / torch.cat([v.cpu().flatten() for v in expected.values()]).norm())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("objective", ["natural", "pgd_at", "trades"])
def test_teacher_objectives(device: str, objective: str) -> None:
    """NaturalObjective, PGD-AT and TRADES with a CPU generator: the CPU's terms and
    gradients."""
    attack = AttackConfig(eps=0.1, alpha=0.05, steps=2)
    make = {"natural": NaturalObjective,
            "pgd_at": lambda: PGDATObjective(attack, _gen(16)),
            "trades": lambda: TRADESObjective(attack, 6.0, _gen(16))}[objective]
    x_cpu, y_cpu = _blobs(4)
    runs = {}
    for where in ("cpu", device):
        model = _seeded(_convnet, 3).to(where).train()
        terms = make()(model, x_cpu.to(where), y_cpu.to(where))
        sum(terms.values()).backward()
        runs[where] = (terms, _grads(model))
    (terms_cpu, grads_cpu), (terms, grads) = runs["cpu"], runs[device]
    assert terms.keys() == terms_cpu.keys()
    # Independent references on the CPU: the clean cross-entropy is the plain one, and the
    # adversarial examples raise the loss.
    with torch.no_grad():
        clean = F.cross_entropy(_seeded(_convnet, 3)(x_cpu), y_cpu)
    if "ce" in terms_cpu:
        torch.testing.assert_close(terms_cpu["ce"].detach(), clean)
    if objective == "pgd_at":
        assert float(terms_cpu["adv_ce"].detach()) > float(clean)
    if objective == "trades":
        assert float(terms_cpu["trades_kl"].detach()) > 0.0
        # TRADES's attack ascends KL(f(x) || f(x')) from x' = x + 0.001 N(0, I), next to the
        # KL's minimum: its gradient is ~1e-3, so rounding decides the sign of the first
        # signed step at a few pixels, which then differ by 2 alpha (an H100 gave 9e-5 on the
        # KL term). A different random start would change the sign at most pixels instead.
        for name, value in terms.items():
            _check(value.detach(), terms_cpu[name].detach(), device, atol=1e-3, rtol=1e-3)
        assert _relative_error(grads, grads_cpu) < 0.05
        return
    for name, value in terms.items():
        _check(value.detach(), terms_cpu[name].detach(), device, atol=1e-5, rtol=1e-4)
    for name, value in grads.items():
        _check(value, grads_cpu[name], device, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["absld", "seg_kd"])
def test_teacher_built_on_the_cpu_follows_fit(device: str, kind: str) -> None:
    """Models are built on the CPU, then ``fit(student, ..., objective=...)`` trains the
    student on ``device``: the README's ABSLD recipe (``hooks=[absld]``, default
    ``device="auto"``), or a SegObjective whose teacher was loaded from a checkpoint. fit moves
    only the student, so the objective must cope with a teacher left on the CPU."""
    config = TrainConfig(epochs=2, batch_size=6, lr=0.05)
    outcome = {}
    for where in ("cpu", device):
        if kind == "absld":
            x, y = _blobs(4)
            student, teacher = _seeded(_convnet, 0), _seeded(_convnet, 1)
            absld = ABSLD(student, teacher, AttackConfig(eps=0.1, alpha=0.05, steps=2), 3,
                          generator=_gen(17))
            result = fit(student, x, y, config, objective=absld.objective, hooks=[absld],
                         device=where, show_progress=False)
            outcome[where] = absld.adv_temperatures.values
        else:
            x, y = _seg_batch()
            student, teacher = _seeded(_unet, 0), _seeded(_unet, 1)
            objective = SegObjective(SegLoss("ce+jml", 3), "kd", teacher=teacher)
            result = fit(student, x, y, config, objective=objective, device=where,
                         show_progress=False)
            outcome[where] = student.state_dict()["head.weight"]
        assert all(math.isfinite(h["loss"]) for h in result.history)
    # A training loop: rounding differences grow over the steps.
    torch.testing.assert_close(outcome[device].cpu(), outcome["cpu"], atol=TRAIN_TOL,
                               rtol=TRAIN_TOL)


# ----------------------------------------------------------------------------- engine


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("soft", [False, True])
def test_fit(device: str, soft: bool) -> None:
    """fit with augmentation and evaluation on the device: the CPU's weights and history."""
    x_cpu, y_cpu = _blobs(8, channels=3)
    xt_cpu, yt_cpu = _blobs(4, channels=3, seed=1)
    targets_cpu = L.smooth(y_cpu, 3, 0.1) if soft else y_cpu
    config = TrainConfig(epochs=3, batch_size=8, lr=0.05, eval_every=1)

    def build() -> nn.Module:
        return create_model("convnet", 3, 3, 8, width=8, depth=2)

    runs = {}
    for where in ("cpu", device):
        model = _seeded(build, 0)
        # The evaluation labels on the device too: evaluate must accept them there.
        result = fit(model, x_cpu, targets_cpu, config, augment=augmentation("flip_crop", 8),
                     eval_data=(xt_cpu.to(where), yt_cpu.to(where)), device=where,
                     show_progress=False)
        assert result.model is model
        assert all(p.device.type == torch.device(where).type for p in model.parameters())
        logits = predict_logits(model, xt_cpu.to(where), batch_size=5, device=where)
        _on(logits, "cpu")  # predict_logits returns CPU tensors, by contract
        evaluation = evaluate(model, xt_cpu, yt_cpu.to(where), device=where)
        runs[where] = (model.state_dict(), result, logits, evaluation)
    (state_cpu, result_cpu, logits_cpu, eval_cpu), (state, result, logits, evaluation) = (
        runs["cpu"], runs[device])
    # Training loops: rounding differences grow over the steps.
    _assert_states_close(state, state_cpu, atol=TRAIN_TOL, rtol=TRAIN_TOL)
    torch.testing.assert_close(logits, logits_cpu, atol=TRAIN_TOL, rtol=TRAIN_TOL)
    assert evaluation.loss == pytest.approx(eval_cpu.loss, abs=TRAIN_TOL)
    for record, reference in zip(result.history, result_cpu.history, strict=True):
        assert record["loss"] == pytest.approx(reference["loss"], rel=TRAIN_TOL)
        assert record["lr"] == reference["lr"]
    # Independent reference: the blobs are learnable, so the loss falls.
    assert result_cpu.history[-1]["loss"] < result_cpu.history[0]["loss"]
    assert eval_cpu.accuracy == float((logits_cpu.argmax(1) == yt_cpu).double().mean())


class _InterruptedError(Exception):
    """Raised by an augmentation to stop a fit run part-way, as a crash would."""


def _dropout_net() -> nn.Module:
    """A small classifier with dropout, which draws from the global RNG of its device."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(16, 3))


@pytest.mark.parametrize("device", DEVICES)
def test_fit_resumes_on_the_device(device: str, tmp_path: Path) -> None:
    """A run interrupted on the device resumes from its checkpoint (loaded on the CPU) into a
    device model and optimizer, and ends where the uninterrupted run ends, dropout included:
    the resumed process's RNG is reseeded to stand for a new process."""
    x_cpu, y_cpu = _blobs(6)
    config = TrainConfig(epochs=3, batch_size=6, lr=0.05)
    torch.manual_seed(0)  # fit's dropout draws from the global RNG of the device
    full = fit(_seeded(_dropout_net, 0), x_cpu, y_cpu, config, device=device,
               show_progress=False)
    steps = {"n": 0}

    def stop_in_epoch_three(batch: Tensor, generator: torch.Generator) -> Tensor:
        steps["n"] += 1
        if steps["n"] > 2 * 3:  # 18 images in batches of 6: three steps per epoch
            raise _InterruptedError
        return batch

    torch.manual_seed(0)
    with pytest.raises(_InterruptedError):
        fit(_seeded(_dropout_net, 0), x_cpu, y_cpu, config, augment=stop_in_epoch_three,
            checkpoint_dir=tmp_path, device=device, show_progress=False)
    torch.manual_seed(1234)  # a new process: the checkpoint must restore what dropout needs
    resumed = fit(_seeded(_dropout_net, 9), x_cpu, y_cpu, config,
                  augment=lambda batch, generator: batch, checkpoint_dir=tmp_path,
                  device=device, show_progress=False)
    assert resumed.start_epoch == 2
    # The same device and the same steps: equal up to the device's non-deterministic sums.
    _assert_states_close(resumed.model.state_dict(), full.model.state_dict(), atol=1e-5,
                         rtol=1e-5)
    assert all(p.device.type == torch.device(device).type for p in resumed.model.parameters())


STUDENT_BACKENDS = ["sequential", "vmap", "grouped"]


@functools.cache
def _students_reference() -> tuple[list[dict[str, Tensor]], list[float]]:
    """The sequential CPU run every backend and device is compared with (computed once)."""
    result = _train_students("cpu", "sequential")
    return result.state_dicts, result.final_accuracy


def _train_students(device: str, backend: str) -> Any:
    """Three students on a tiny soft-label set with DSA, on ``device`` with ``backend``."""
    x, _ = _blobs(4)
    soft = torch.softmax(2 * torch.randn(12, 3, generator=_gen(18)), 1)
    xt, yt = _blobs(5, seed=1)
    return train_students(_convnet, x.to(device), soft.to(device),
                          TrainConfig(epochs=3, batch_size=5, lr=0.05, eval_every=1),
                          [0, 1, 2], augment=DSA(), eval_data=(xt.to(device), yt.to(device)),
                          device=device, vectorize=backend != "sequential",
                          backend="auto" if backend == "sequential" else backend,
                          show_progress=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", STUDENT_BACKENDS)
def test_train_students(device: str, backend: str) -> None:
    """train_students with each backend on the device: the sequential CPU students."""
    result = _train_students(device, backend)
    states_cpu, accuracy_cpu = _students_reference()
    assert result.backend == backend
    assert len(result.state_dicts) == 3
    for state, reference in zip(result.state_dicts, states_cpu, strict=True):
        assert all(t.device.type == "cpu" for t in state.values())  # documented: on the CPU
        # Training loops (and summation orders that differ between backends): loose.
        _assert_states_close(state, reference, atol=TRAIN_TOL, rtol=TRAIN_TOL)
    # An argmax right at a tie could flip on rounding noise: allow one image of 15.
    assert result.final_accuracy == pytest.approx(accuracy_cpu, abs=1.5 / 15)
    # Independent reference: the students differ from their initial weights and each other.
    start = _seeded(_convnet, 0).state_dict()
    assert any(not torch.allclose(start[k], states_cpu[0][k]) for k in start)
    assert not torch.allclose(states_cpu[0]["classifier.weight"],
                              states_cpu[1]["classifier.weight"])


@pytest.mark.parametrize("device", DEVICES)
def test_build_seeded_leaves_the_callers_rng_alone(device: str) -> None:
    """build_seeded promises to leave the caller's RNG untouched: on a GPU that includes the
    CUDA generator, which attacks without a generator and dropout draw from."""
    def state() -> Tensor:
        return torch.cuda.get_rng_state() if device == "cuda" else torch.get_rng_state()

    # Draw first, so the state is not one that seeding could give back by chance (an earlier
    # build_seeded(5) in this process would otherwise leave exactly the state it sets).
    torch.rand(7, device=device)
    before = state()
    first = build_seeded(lambda seed: nn.Linear(4, 3), 5)
    assert torch.equal(state(), before)
    second = build_seeded(lambda seed: nn.Linear(4, 3), 5)
    assert torch.equal(first.weight, second.weight)  # seeded: the same model each time


# ----------------------------------------------------------------------------- distillation


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("data_on_device", [False, True])
def test_distribution_matching(device: str, data_on_device: bool) -> None:
    """distribution_matching for a few iterations on the device (real data on the CPU or on
    the device): the CPU's images and losses."""
    x, y = _blobs(6)
    init, init_labels = x[::6].clone(), y[::6].clone()

    def run(where: str, move: bool) -> Any:
        tensors = [t.to(where) if move else t for t in (x, y, init, init_labels)]
        return distribution_matching(_convnet, *tensors, iterations=3, batch_real=4,
                                     device=where, show_progress=False)

    expected, result = run("cpu", False), run(device, data_on_device)
    _check(result.images, expected.images, "cpu", atol=1e-4, rtol=1e-4)  # CPU, by contract
    assert result.losses == pytest.approx(expected.losses, rel=1e-4)
    assert torch.equal(result.labels.cpu(), init_labels)
    # Independent reference: the images stay images and did change.
    assert float(expected.images.min()) >= 0.0
    assert float(expected.images.max()) <= 1.0
    assert not torch.equal(expected.images, init)
    assert all(math.isfinite(v) and v > 0 for v in expected.losses)


@pytest.mark.parametrize("device", DEVICES)
def test_learn_labels(device: str) -> None:
    """learn_labels (unrolled students) on the device: the CPU's labels and losses."""
    x, y = _blobs(6)
    images, init = x[::3], L.one_hot(y[::3], 3)

    def build(seed: int) -> nn.Module:
        return create_model("mlp", 3, 1, 8, hidden=(8,))

    runs = [learn_labels(build, images.to(where), init.to(where), x.to(where), y.to(where),
                         outer_steps=2, inner_steps=2, batch_real=8, device=where,
                         show_progress=False) for where in ("cpu", device)]
    expected, result = runs
    _check(result.labels, expected.labels, "cpu", atol=1e-5)  # CPU, by contract
    assert result.losses == pytest.approx(expected.losses, rel=1e-5)
    L.validate(expected.labels)  # independent: still probabilities
    assert not torch.equal(expected.labels, init)


@pytest.mark.parametrize("device", DEVICES)
def test_experts(device: str, tmp_path: Path) -> None:
    """train_experts and Experts.logits on the device: the CPU's logits, returned on the CPU."""
    x, y = _blobs(4)
    config = TrainConfig(epochs=2, batch_size=6, lr=0.05)
    logits = {}
    for where in ("cpu", device):
        experts = train_experts(_convnet, x, y, config, [0, 1], tmp_path / f"{where}-run",
                                device=where, show_progress=False)
        logits[where] = experts.logits(2, x.to(where), batch_size=5)
        _on(logits[where], "cpu")
        assert experts.saved_epochs() == [0, 1, 2]
    # A training loop: rounding differences grow over the steps.
    torch.testing.assert_close(logits[device], logits["cpu"], atol=TRAIN_TOL, rtol=TRAIN_TOL)
    single = [train_experts(_convnet, x, y, config, [s], tmp_path / "cpu-run",
                            device="cpu", show_progress=False).logits(2, x) for s in (0, 1)]
    torch.testing.assert_close(logits["cpu"], (single[0] + single[1]) / 2)  # the ensemble


# ----------------------------------------------------------------------------- segmentation


def _seg_batch() -> tuple[Tensor, Tensor]:
    """Four 1x8x8 images and their 3-class masks, with void (255) pixels in the first."""
    g = _gen(19)
    x = torch.rand(4, 1, 8, 8, generator=g)
    y = (x[:, 0] * 3).long().clamp_max(2)  # learnable: the class is the brightness band
    y[0, :2] = 255
    return x, y


def _unet() -> nn.Module:
    return create_model("unet", 3, 1, 8, base_width=4, depth=1, norm="groupnorm")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("labels", ["hard", "ls", "kd", "semi"])
def test_seg_objectives(device: str, labels: str) -> None:
    """SegObjective in every label mode with model and teacher on the device: the CPU's terms
    and gradients."""
    x_cpu, y_cpu = _seg_batch()
    if labels == "semi":
        y_cpu[3] = UNLABELLED
    runs = {}
    for where in ("cpu", device):
        model = _seeded(_unet, 0).to(where)
        teacher = _seeded(_unet, 1).to(where) if labels in ("kd", "semi") else None
        objective = SegObjective(SegLoss("ce+jml", 3), labels, teacher=teacher,
                                 temperature=2.0)
        terms = objective(model, x_cpu.to(where), y_cpu.to(where))
        sum(terms.values()).backward()
        runs[where] = (terms, _grads(model))
    (terms_cpu, grads_cpu), (terms, grads) = runs["cpu"], runs[device]
    _assert_terms_close(terms, terms_cpu, grads, grads_cpu, device)
    if labels == "hard":  # independent reference: the weighted sum of the two losses
        model = _seeded(_unet, 0)
        logits = model(x_cpu)
        torch.testing.assert_close(terms_cpu["ce"], 0.25 * F.cross_entropy(logits, y_cpu,
                                                                          ignore_index=255))
        torch.testing.assert_close(terms_cpu["metric"], 0.75 * jaccard_metric_loss(
            logits, y_cpu, ignore_index=255))


@pytest.mark.parametrize("device", DEVICES)
def test_seg_fit_and_evaluate(device: str) -> None:
    """fit with a paired augmentation and evaluate_segmentation on the device."""
    x_cpu, y_cpu = _seg_batch()
    info = DatasetInfo("toy", ("a", "b", "c"), (0.5,), (0.25,))
    data = SegmentationDataset(x_cpu, y_cpu, info, 255)
    runs = {}
    for where in ("cpu", device):
        model = _seeded(_unet, 0)
        fit(model, x_cpu, y_cpu, TrainConfig(epochs=2, batch_size=2, lr=0.05),
            objective=SegObjective(SegLoss("ce+dml", 3), "ls"),
            paired_augment=PairedAugment(PairedRandomCrop(8), PairedFlip()), device=where,
            show_progress=False)
        probs = predict_segmentation(model, x_cpu, batch_size=3, device=where)
        _on(probs, "cpu")  # by contract
        runs[where] = (model.state_dict(), probs, evaluate_segmentation(model, data,
                                                                        device=where))
    (state_cpu, probs_cpu, scores_cpu), (state, probs, scores) = runs["cpu"], runs[device]
    # A training loop: rounding differences grow over the steps.
    _assert_states_close(state, state_cpu, atol=TRAIN_TOL, rtol=TRAIN_TOL)
    torch.testing.assert_close(probs, probs_cpu, atol=TRAIN_TOL, rtol=TRAIN_TOL)
    assert scores.keys() == scores_cpu.keys()
    for key in ("miou_dataset", "miou_image", "pixel_accuracy"):
        # One pixel's argmax may flip on a near tie: 1 of 240 kept pixels.
        assert scores[key] == pytest.approx(scores_cpu[key], abs=0.02), key
    # Independent reference: the probabilities are a softmax over the classes.
    torch.testing.assert_close(probs_cpu.sum(1), torch.ones(4, 8, 8))
