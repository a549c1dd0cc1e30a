"""Tests of the segmentation objectives (CE + metric loss under each label mode)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softlabels.labels import one_hot
from softlabels.losses import jaccard_metric_loss
from softlabels.seg import UNLABELLED, SegLoss, SegObjective


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (4, 8, 8), generator=g)
    y[0, :2] = 255
    return x, y


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Conv2d(1, 3, 3, padding=1)


def test_seg_loss_is_weighted_ce_plus_metric() -> None:
    x, y = batch()
    logits = model()(x)
    terms = SegLoss("ce+jml", 3, 255, w_ce=0.25, w_metric=0.75)(logits, y)
    assert terms["ce"].item() == pytest.approx(
        0.25 * F.cross_entropy(logits, y, ignore_index=255).item())
    assert terms["metric"].item() == pytest.approx(
        0.75 * jaccard_metric_loss(logits, y, ignore_index=255).item())
    assert set(SegLoss("ce", 3)(logits, y)) == {"ce"}


def test_hard_and_one_hot_soft_targets_agree_on_cross_entropy() -> None:
    x, y = batch()
    logits = model()(x)
    keep = y != 255
    soft = one_hot(torch.where(keep, y, 0), 3)
    loss = SegLoss("ce+dml", 3)
    assert loss(logits, soft, keep)["ce"].item() == pytest.approx(
        loss(logits, y)["ce"].item(), abs=1e-6)


def test_every_pixel_ignored_is_zero_not_nan() -> None:
    x, _ = batch()
    logits = model()(x)
    terms = SegLoss("ce+jml", 3)(logits, torch.full((4, 8, 8), 255))
    assert all(v.item() == 0.0 for v in terms.values())


def test_ls_mode_uses_boundary_smoothed_targets() -> None:
    x, y = batch()
    net = model()
    objective = SegObjective(SegLoss("ce", 3, w_ce=1.0), "ls", eps=0.5)
    logits = net(x)
    from softlabels.labels import boundary_smooth

    soft = boundary_smooth(y, 3, 0.5, 3, 255)
    keep = y != 255
    expected = (-(soft * F.log_softmax(logits, 1)).sum(1) * keep).sum() / keep.sum()
    assert objective(net, x, y)["ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    hard = SegObjective(SegLoss("ce", 3, w_ce=1.0), "hard")(net, x, y)["ce"]
    assert abs(hard.item() - expected.item()) > 1e-5


def test_kd_with_identical_teacher_has_zero_distillation_terms() -> None:
    x, y = batch()
    student = model()
    objective = SegObjective(SegLoss("ce+jml", 3), "kd", teacher=copy.deepcopy(student))
    terms = objective(student, x, y)
    assert terms["kd_kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["kd_metric"].item() == pytest.approx(0.0, abs=1e-5)
    assert terms["hard_ce"].item() > 0
    other = SegObjective(SegLoss("ce+jml", 3), "kd", teacher=model(seed=5))(student, x, y)
    assert other["kd_kl"].item() > 1e-4


def test_semi_ignores_unconfident_pseudo_labels() -> None:
    x, y = batch()
    student = model()
    teacher = model(seed=3)
    masks = y.clone()
    masks[2:] = UNLABELLED
    never_confident = SegObjective(SegLoss("ce+jml", 3), "semi", teacher=teacher,
                                   confidence=1.0)
    only_labelled = SegLoss("ce+jml", 3)(student(x[:2]), one_hot(
        torch.where(y[:2] != 255, y[:2], 0), 3), y[:2] != 255)
    got = never_confident(student, x, masks)
    # Unlabelled images contribute no kept pixels, so the CE equals the labelled-only CE.
    assert got["ce"].item() == pytest.approx(only_labelled["ce"].item(), rel=1e-5)
    trusting = SegObjective(SegLoss("ce+jml", 3), "semi", teacher=teacher, confidence=0.0)
    assert trusting(student, x, masks)["ce"].item() != pytest.approx(got["ce"].item())


def test_objective_errors() -> None:
    with pytest.raises(ValueError, match="needs a teacher"):
        SegObjective(SegLoss("ce", 3), "kd")
    with pytest.raises(ValueError, match="labels must be one of"):
        SegObjective(SegLoss("ce", 3), "noisy")
    with pytest.raises(ValueError, match="loss must be one of"):
        SegLoss("ce+lovasz", 3)
    with pytest.raises(ValueError, match="confidence must be in"):
        SegObjective(SegLoss("ce", 3), "semi", teacher=model(), confidence=2.0)


def test_kd_keeps_kl_and_ce_balanced_for_every_loss() -> None:
    x, y = batch()
    student, teacher = model(), model(seed=4)
    for loss in ("ce", "ce+jml"):
        terms = SegObjective(SegLoss(loss, 3, w_ce=0.25), "kd", teacher=teacher)(student, x, y)
        probs = torch.softmax(teacher(x), 1).detach()
        kl = F.kl_div(F.log_softmax(student(x), 1), probs, reduction="none").sum(1)
        keep = y != 255
        expected = 0.5 * 0.25 * (kl * keep).sum() / keep.sum()
        assert terms["kd_kl"].item() == pytest.approx(expected.item(), rel=1e-5)
        assert ("kd_metric" in terms) == (loss != "ce")
