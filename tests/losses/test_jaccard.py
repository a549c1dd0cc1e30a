"""Tests of the Jaccard/Dice/Tversky metric losses."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from softlabels.losses import (
    DiceMetricLoss,
    JaccardMetricLoss,
    TverskyMetricLoss,
    jaccard_metric_loss,
)

LEVELS = [{"dataset": 1.0}, {"image": 1.0}, {"class": 1.0}, {"dataset": 0.5, "image": 0.5}]


def batch(b: int = 3, c: int = 5, h: int = 6, w: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g) * 2
    labels = torch.randint(0, c, (b, h, w), generator=g)
    return logits, labels


def one_hot(labels: torch.Tensor, c: int) -> torch.Tensor:
    return F.one_hot(labels, c).movedim(-1, 1).float()


def test_hand_computed_example() -> None:
    probs = torch.tensor([[[0.8, 0.3], [0.2, 0.7]]])  # (B=1, C=2, N=2)
    labels = torch.tensor([[0, 1]])
    # class 0: tp 0.8, fp 0.3, fn 0.2 -> IoU 0.8/1.3; class 1: tp 0.7, fp 0.2, fn 0.3 -> 0.7/1.2.
    expected = 1 - (0.8 / 1.3 + 0.7 / 1.2) / 2
    for variant in ("jml1", "jml2", "sjl"):
        loss = jaccard_metric_loss(probs, labels, from_logits=False, variant=variant,
                                   smooth=1e-12)
        assert loss.item() == pytest.approx(expected, abs=1e-6)
    dice = jaccard_metric_loss(probs, labels, from_logits=False, alpha=0.5, beta=0.5,
                               smooth=1e-12)
    assert dice.item() == pytest.approx(1 - (1.6 / 2.1 + 1.4 / 1.9) / 2, abs=1e-6)
    log = jaccard_metric_loss(probs, labels, from_logits=False, log_loss=True, smooth=1e-12)
    assert log.item() == pytest.approx(-(math.log(0.8 / 1.3) + math.log(0.7 / 1.2)) / 2,
                                       abs=1e-6)
    focal = jaccard_metric_loss(probs, labels, from_logits=False, gamma=2.0, smooth=1e-12)
    assert focal.item() == pytest.approx(((0.5 / 1.3) ** 2 + (0.5 / 1.2) ** 2) / 2, abs=1e-6)


def test_levels_differ_as_defined() -> None:
    # Image 0 holds only class 0 (perfectly predicted); image 1 holds classes 0 and 1.
    probs = torch.tensor([[[1.0, 1.0], [0.0, 0.0]],
                          [[0.5, 0.0], [0.5, 1.0]]])
    labels = torch.tensor([[0, 0], [0, 1]])
    kwargs = {"from_logits": False, "smooth": 1e-12}
    # image 1: class 0 tp .5 fp 0 fn .5 -> .5; class 1 tp 1 fp .5 fn 0 -> 2/3.
    image = 1 - (1.0 + (0.5 + 2 / 3) / 2) / 2
    klass = 1 - ((1.0 + 0.5) / 2 + 2 / 3) / 2
    # dataset: class 0 tp 2.5 fp 0 fn .5 -> 2.5/3; class 1 tp 1 fp .5 fn 0 -> 2/3.
    dataset = 1 - (2.5 / 3 + 2 / 3) / 2
    for level, expected in (("image", image), ("class", klass), ("dataset", dataset)):
        loss = jaccard_metric_loss(probs, labels, levels={level: 1.0}, **kwargs)
        assert loss.item() == pytest.approx(expected, abs=1e-6), level


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("p", [1, 2])
def test_hard_path_equals_one_hot_path(levels, p) -> None:
    logits, labels = batch()
    labels[0, :2] = 255
    keep = labels != 255
    for variant in ("jml1", "jml2", "sjl"):
        for alpha, beta in ((1.0, 1.0), (0.3, 0.7)):
            hard = jaccard_metric_loss(logits, labels, variant=variant, p=p, levels=levels,
                                       alpha=alpha, beta=beta, ignore_index=255)
            soft = jaccard_metric_loss(logits, one_hot(labels.where(keep, 0), 5),
                                       variant=variant, p=p, levels=levels, alpha=alpha,
                                       beta=beta, keep=keep, active_classes="present")
            assert hard.item() == pytest.approx(soft.item(), abs=1e-6)


@pytest.mark.parametrize("levels", LEVELS)
def test_hard_labels_all_variants_agree(levels) -> None:
    for seed in range(3):
        logits, labels = batch(seed=seed)
        values = [jaccard_metric_loss(logits, labels, variant=v, levels=levels).item()
                  for v in ("jml1", "jml2", "sjl")]
        assert values[0] == pytest.approx(values[1], abs=1e-6)
        assert values[0] == pytest.approx(values[2], abs=1e-6)


def test_gradients_of_hard_path_match_one_hot_path() -> None:
    logits, labels = batch()
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    jaccard_metric_loss(a, labels, levels={"image": 1.0}).backward()
    jaccard_metric_loss(b, one_hot(labels, 5), levels={"image": 1.0},
                        active_classes="present").backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_hard_path_builds_no_one_hot(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("one_hot called")

    monkeypatch.setattr(F, "one_hot", forbidden)
    monkeypatch.setattr(torch.nn.functional, "one_hot", forbidden)
    logits, labels = batch()
    jaccard_metric_loss(logits.requires_grad_(), labels, levels=LEVELS[3]).backward()


@pytest.mark.parametrize("variant", ["jml1", "jml2"])
@pytest.mark.parametrize("levels", LEVELS)
def test_soft_jml_is_zero_with_zero_gradient_at_target(variant, levels) -> None:
    target = torch.softmax(torch.randn(2, 4, 5, 5), dim=1)
    probs = target.clone().requires_grad_()
    loss = jaccard_metric_loss(probs, target, from_logits=False, variant=variant,
                               levels=levels)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert probs.grad.abs().max().item() < 1e-5
    other = torch.softmax(torch.randn(2, 4, 5, 5), dim=1)
    assert jaccard_metric_loss(other, target, from_logits=False, variant=variant,
                               levels=levels).item() > 1e-3


def test_sjl_is_not_minimised_at_a_soft_target() -> None:
    # One pixel, binary, y = 0.5: SJL = 1 - x / (1 + x) decreases up to x = 1 (refs.md).
    y = torch.tensor([[[0.5]]])

    def loss(x: float, variant: str) -> float:
        return jaccard_metric_loss(torch.tensor([[[x]]]), y, mode="binary", from_logits=False,
                                   variant=variant, smooth=1e-12).item()

    assert loss(1.0, "sjl") < loss(0.5, "sjl")
    assert loss(0.5, "sjl") == pytest.approx(1 - 0.5 / 1.5, abs=1e-6)
    assert loss(0.5, "jml1") == pytest.approx(0.0, abs=1e-6)
    assert loss(1.0, "jml1") > 0.3


vectors = st.integers(1, 8).flatmap(lambda n: st.tuples(
    *[st.lists(st.floats(0, 1, allow_nan=False), min_size=n, max_size=n) for _ in range(3)]))


@given(vectors)
@settings(max_examples=150, deadline=None)
def test_jml1_triangle_inequality(abc) -> None:
    a, b, c = (torch.tensor(v, dtype=torch.float64).reshape(1, 1, -1) for v in abc)

    def d(x: torch.Tensor, y: torch.Tensor) -> float:
        return jaccard_metric_loss(x, y, mode="binary", from_logits=False, smooth=1e-12,
                                   active_classes="all").item()

    assert d(a, c) <= d(a, b) + d(b, c) + 1e-7
    assert d(a, b) == pytest.approx(d(b, a), abs=1e-9)
    assert d(a, a) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("batch_level", [False, True])
def test_matches_monai_soft_dice_jaccard_and_tversky(batch_level: bool) -> None:
    monai_losses = pytest.importorskip("monai.losses")
    target = torch.softmax(torch.randn(3, 4, 6, 6) * 2, dim=1)
    probs = torch.softmax(torch.randn(3, 4, 6, 6), dim=1)
    s = 1e-3
    levels = {"dataset": 1.0} if batch_level else {"image": 1.0}
    ours_dice = jaccard_metric_loss(probs, target, from_logits=False, alpha=0.5, beta=0.5,
                                    smooth=s, levels=levels)
    theirs_dice = monai_losses.DiceLoss(soft_label=True, smooth_nr=2 * s, smooth_dr=2 * s,
                                        batch=batch_level)(probs, target)
    assert ours_dice.item() == pytest.approx(theirs_dice.item(), abs=1e-6)
    ours_jac = jaccard_metric_loss(probs, target, from_logits=False, smooth=s, levels=levels)
    theirs_jac = monai_losses.DiceLoss(soft_label=True, jaccard=True, smooth_nr=2 * s,
                                       smooth_dr=2 * s, batch=batch_level)(probs, target)
    assert ours_jac.item() == pytest.approx(theirs_jac.item(), abs=1e-6)
    ours_tv = jaccard_metric_loss(probs, target, from_logits=False, alpha=0.3, beta=0.7,
                                  smooth=s, levels=levels)
    theirs_tv = monai_losses.TverskyLoss(alpha=0.3, beta=0.7, soft_label=True, smooth_nr=s,
                                         smooth_dr=s, batch=batch_level)(probs, target)
    assert ours_tv.item() == pytest.approx(theirs_tv.item(), abs=1e-6)


def test_binary_and_multilabel_modes() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 4, 4, generator=g)
    labels = torch.randint(0, 2, (2, 4, 4), generator=g)
    hard = jaccard_metric_loss(logits, labels, mode="binary")
    soft = jaccard_metric_loss(logits, labels.unsqueeze(1).float(), mode="binary",
                               active_classes="present")
    assert hard.item() == pytest.approx(soft.item(), abs=1e-6)
    x = torch.sigmoid(logits)
    y = labels.unsqueeze(1).float()
    tp = (x * y).sum()
    expected = 1 - (tp + 1e-3) / ((x + y).sum() - tp + 1e-3)
    assert hard.item() == pytest.approx(expected.item(), abs=1e-6)
    multi = torch.randn(2, 3, 4, 4, generator=g)
    targets = (torch.rand(2, 3, 4, 4, generator=g) > 0.5).float()
    loss = jaccard_metric_loss(multi, targets, mode="multilabel")
    per_channel = [jaccard_metric_loss(multi[:, c:c + 1], targets[:, c:c + 1], mode="binary")
                   for c in range(3)]
    assert loss.item() == pytest.approx(sum(v.item() for v in per_channel) / 3, abs=1e-6)


def test_absent_classes_are_left_out_with_present_and_counted_with_all() -> None:
    probs = torch.tensor([[[0.9, 0.8], [0.05, 0.1], [0.05, 0.1]]])  # class 2 never labelled
    labels = torch.tensor([[0, 1]])
    present = jaccard_metric_loss(probs, labels, from_logits=False, smooth=1e-12)
    # class 0: tp .9 fp .8 fn .1 -> .9/1.8; class 1: tp .1 fp .05 fn .9 -> .1/1.05.
    assert present.item() == pytest.approx(1 - (0.9 / 1.8 + 0.1 / 1.05) / 2, abs=1e-6)
    all_classes = jaccard_metric_loss(probs, labels, from_logits=False, smooth=1e-12,
                                      active_classes="all")
    # class 2: tp 0, fp .15, fn 0 -> IoU ~0, loss ~1 counted too.
    assert all_classes.item() == pytest.approx(1 - (0.9 / 1.8 + 0.1 / 1.05) / 3, abs=1e-6)


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("active", ["present", "all"])
def test_every_pixel_ignored_gives_zero_and_zero_gradient(levels, active) -> None:
    logits, labels = batch()
    logits.requires_grad_()
    loss = jaccard_metric_loss(logits, torch.full_like(labels, 255), ignore_index=255,
                               levels=levels, active_classes=active)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    soft = torch.softmax(torch.randn(3, 5, 6, 7), 1)
    logits.grad = None
    keep = torch.zeros(3, 6, 7, dtype=torch.bool)
    loss = jaccard_metric_loss(logits, soft, keep=keep, levels=levels, active_classes=active)
    loss.backward()
    assert loss.item() == 0.0
    assert not torch.isnan(logits.grad).any()


def test_ignored_pixels_do_not_matter() -> None:
    logits, labels = batch()
    labels[:, :2] = 255
    other = logits.clone()
    other[:, :, :2] = torch.randn_like(other[:, :, :2]) * 10
    assert jaccard_metric_loss(logits, labels, ignore_index=255).item() == pytest.approx(
        jaccard_metric_loss(other, labels, ignore_index=255).item(), abs=1e-6)


def test_class_weights() -> None:
    logits, labels = batch()
    weights = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    weighted = jaccard_metric_loss(logits.double(), labels, class_weights=weights)
    only0 = jaccard_metric_loss(logits.double(), labels, class_weights=[1.0, 0, 0, 0, 0])
    assert weighted.item() == pytest.approx(only0.item())
    module = JaccardMetricLoss(class_weights=[2.0] * 5)
    assert "class_weights" in module.state_dict()
    assert module(logits, labels).item() == pytest.approx(
        2 * jaccard_metric_loss(logits, labels).item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"class_weights must have shape \(5,\)"):
        jaccard_metric_loss(logits, labels, class_weights=[1.0, 2.0])


def test_modules_match_function() -> None:
    logits, labels = batch()
    assert JaccardMetricLoss()(logits, labels).item() == pytest.approx(
        jaccard_metric_loss(logits, labels).item())
    assert DiceMetricLoss(levels={"image": 1.0})(logits, labels).item() == pytest.approx(
        jaccard_metric_loss(logits, labels, alpha=0.5, beta=0.5, levels={"image": 1.0}).item())
    assert TverskyMetricLoss(0.2, 0.8)(logits, labels).item() == pytest.approx(
        jaccard_metric_loss(logits, labels, alpha=0.2, beta=0.8).item())
    with pytest.raises(ValueError, match="variant must be one of"):
        JaccardMetricLoss(variant="jml3")
    with pytest.raises(ValueError, match="gamma must be in"):
        DiceMetricLoss(gamma=0.5)


@pytest.mark.parametrize(
    ("make_target", "kwargs", "error", "message"),
    [
        (lambda y: y[:, :3], {}, ValueError, "hard target must have shape"),
        (lambda y: torch.full_like(y, 7), {}, ValueError, "never clamped"),
        (lambda y: torch.full_like(y, 255), {}, ValueError, r"in \[0, 5\), got"),
        (lambda y: torch.full_like(y, -1), {"ignore_index": 255}, ValueError, "never clamped"),
        (lambda y: torch.full((3, 5, 6, 7), 0.5), {}, ValueError, "must sum to 1"),
        (lambda y: torch.full((3, 4, 6, 7), 0.25), {}, ValueError, "shape of logits"),
        (lambda y: one_hot(y, 5) * 2 - 0.5, {}, ValueError, r"lie in \[0, 1\]"),
        (lambda y: one_hot(y, 5).index_fill(2, torch.tensor([0]), math.nan), {}, ValueError,
         "finite"),
        (lambda y: y.to(torch.int32), {}, TypeError, "int64"),
        (lambda y: one_hot(y, 5), {"ignore_index": 0}, ValueError, "keep mask"),
        (lambda y: y, {"keep": torch.ones(3, 6, dtype=torch.bool)}, ValueError,
         "keep must have shape"),
        (lambda y: y, {"keep": torch.ones(3, 6, 7)}, TypeError, "keep must be a bool"),
        (lambda y: y, {"variant": "iou"}, ValueError, "variant must be one of"),
        (lambda y: y, {"p": 3}, ValueError, "p must be 1 or 2"),
        (lambda y: y, {"levels": {"pixel": 1.0}}, ValueError, "unknown keys"),
        (lambda y: y, {"levels": {"dataset": 0.0}}, ValueError, "at least one > 0"),
        (lambda y: y, {"smooth": -1.0}, ValueError, "smooth must be in"),
        (lambda y: y, {"mode": "binary"}, ValueError, "one channel"),
        (lambda y: y, {"active_classes": "some"}, ValueError, "active_classes must be"),
    ],
)
def test_bad_input(make_target, kwargs, error, message) -> None:
    logits, labels = batch()
    with pytest.raises(error, match=message):
        jaccard_metric_loss(logits, make_target(labels), **kwargs)


def test_nan_logits_rejected() -> None:
    logits, labels = batch()
    logits[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="logits must be finite"):
        jaccard_metric_loss(logits, labels)


def assert_gradient_matches_finite_differences(loss, x: torch.Tensor) -> None:
    """One backward (the hard path reuses its buffer, so gradcheck's repeated backward through
    a retained graph is refused) against central differences on every coordinate."""
    x = x.detach().clone().requires_grad_()
    loss(x).backward()
    numeric = torch.zeros_like(x)
    flat, eps = x.detach().view(-1), 1e-6
    for i in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[i] += eps
        minus[i] -= eps
        numeric.view(-1)[i] = (loss(plus.view_as(x)) - loss(minus.view_as(x))) / (2 * eps)
    assert torch.allclose(x.grad, numeric, atol=1e-6)


def test_hard_path_refuses_a_second_backward_through_a_retained_graph() -> None:
    logits, labels = batch()
    logits.requires_grad_()
    loss = jaccard_metric_loss(logits, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("variant", ["jml1", "jml2", "sjl"])
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
@pytest.mark.parametrize("with_keep", [False, True])
def test_fused_gradients_match_finite_differences(variant, mode, with_keep) -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g).requires_grad_()
    keep = (torch.rand(2, 4, 5, generator=g) > 0.3) if with_keep else None
    if mode == "multiclass":
        targets = [torch.randint(0, 3, (2, 4, 5), generator=g),
                   torch.softmax(torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g), 1)]
    else:
        targets = [torch.rand(2, 3, 4, 5, dtype=torch.float64, generator=g)]
    for target in targets:
        def loss(x: torch.Tensor, target: torch.Tensor = target) -> torch.Tensor:
            return jaccard_metric_loss(x, target, variant=variant, mode=mode, keep=keep,
                                       levels={"dataset": 0.3, "image": 0.3, "class": 0.4})
        assert_gradient_matches_finite_differences(loss, logits)
    probs = torch.softmax(torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g), 1)
    probs.requires_grad_()
    assert_gradient_matches_finite_differences(
        lambda x: jaccard_metric_loss(x, targets[0], from_logits=False, variant=variant,
                                      mode=mode, keep=keep), probs)


@pytest.mark.parametrize("variant", ["jml1", "jml2", "sjl"])
def test_gradient_reaches_soft_targets(variant) -> None:
    """Learned labels differentiate the loss in y: compare with plain autograd formulas."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 5, dtype=torch.float64, generator=g)
    target = torch.softmax(torch.randn(2, 3, 5, dtype=torch.float64, generator=g), 1)
    y = target.clone().requires_grad_()
    jaccard_metric_loss(logits, y, variant=variant, smooth=1e-3).backward()
    y_ref = target.clone().requires_grad_()
    x = torch.softmax(logits, 1)
    if variant == "jml1":
        tp = (x.sum(-1) + y_ref.sum(-1) - (x - y_ref).abs().sum(-1)) / 2
        fp, fn = x.sum(-1) - tp, y_ref.sum(-1) - tp
    elif variant == "jml2":
        tp = (x * y_ref).sum(-1)
        fp, fn = (x - y_ref).clamp_min(0).sum(-1), (y_ref - x).clamp_min(0).sum(-1)
    else:
        tp = (x * y_ref).sum(-1)
        fp, fn = x.sum(-1) - tp, y_ref.sum(-1) - tp
    tp, fp, fn = tp.sum(0), fp.sum(0), fn.sum(0)
    (1 - (tp + 1e-3) / (tp + fp + fn + 1e-3)).mean().backward()
    assert torch.allclose(y.grad, y_ref.grad, atol=1e-10)


def test_half_precision_is_accumulated_in_float32() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 300, 300, generator=g)
    labels = torch.randint(0, 2, (1, 300, 300), generator=g)
    reference = jaccard_metric_loss(logits, labels)
    half = jaccard_metric_loss(logits.half(), labels)
    assert half.dtype == torch.float16
    assert half.item() == pytest.approx(reference.item(), abs=2e-3)


def test_empty_spatial_dims_and_multilabel_module() -> None:
    logits = torch.randn(2, 3, 0, requires_grad=True)
    loss = jaccard_metric_loss(logits, torch.zeros(2, 0, dtype=torch.int64))
    loss.backward()
    assert loss.item() == 0.0
    module = JaccardMetricLoss(mode="multilabel")
    x = torch.randn(2, 3, 4, 4)
    assert module(x, (torch.rand(2, 3, 4, 4) > 0.5).float()).item() > 0
    with pytest.raises(ValueError, match="levels weights"):
        jaccard_metric_loss(x, torch.zeros(2, 4, 4, dtype=torch.int64),
                            levels={"dataset": float("nan")})
    with pytest.raises(ValueError, match="class_weights must be"):
        JaccardMetricLoss(class_weights=[1.0, -2.0])
