"""Tests of the segmentation objectives (CE + metric loss under each label mode)."""

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softlabels.data.segmentation import (
    PairedAugment,
    PairedFlip,
    PairedRandomCrop,
    SegmentationDataset,
)
from softlabels.data.types import DatasetInfo
from softlabels.engine import TrainConfig, fit
from softlabels.labels import boundary_smooth, one_hot
from softlabels.losses import jaccard_metric_loss
from softlabels.metrics import segmentation_metrics
from softlabels.models import create_model
from softlabels.seg import UNLABELLED, SegLoss, SegObjective
from softlabels.seg.evaluation import evaluate_segmentation, predict_segmentation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devices import (
    TRAIN_TOL,
    assert_close_on,
    assert_on,
    assert_states_close,
    device_fixture,  # noqa: F401  (the device fixture)
    grads,
    off_cpu,
    seeded,
)


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


def test_seg_loss_passes_its_smooth_to_the_metric_loss() -> None:
    x, y = batch()
    logits = model()(x)
    soft = one_hot(torch.where(y == 255, 0, y), 3)
    for target in (y, soft):
        hard = not target.is_floating_point()
        options = {"ignore_index": 255} if hard else {}
        official = SegLoss("ce+jml", 3, smooth=1.0)
        assert official(logits, target)["metric"].item() == pytest.approx(
            0.75 * jaccard_metric_loss(logits, target, smooth=1.0, **options).item())
        assert official.metric_term(logits, target).item() == pytest.approx(
            official(logits, target)["metric"].item())
        # The default is the loss's own (1e-3), and 1.0 is a different loss on 4x8x8 pixels.
        assert SegLoss("ce+jml", 3)(logits, target)["metric"].item() == pytest.approx(
            0.75 * jaccard_metric_loss(logits, target, **options).item())
        assert SegLoss("ce+jml", 3)(logits, target)["metric"].item() != pytest.approx(
            official(logits, target)["metric"].item(), rel=1e-3)
    with pytest.raises(ValueError, match="smooth"):
        SegLoss("ce+jml", 3, smooth=-1.0)


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


def test_soft_ce_is_finite_where_a_class_without_mass_has_log_probability_minus_inf() -> None:
    # Class 2 has no target mass and a log-probability of -inf (its logit is 4e38 below the
    # others', beyond the float32 range); 0 * -inf would make the loss NaN.
    logits = torch.full((1, 3, 2, 2), 2e38)
    logits[:, 2] = -2e38
    logits.requires_grad_(True)
    assert torch.isinf(F.log_softmax(logits, 1)[:, 2]).all()
    target = torch.zeros(1, 3, 2, 2)
    target[:, 0] = 1.0
    keep = torch.ones(1, 2, 2, dtype=torch.bool)
    keep[0, 0, 0] = False
    ce = SegLoss("ce", 3, w_ce=1.0)(logits, target, keep)["ce"]
    assert ce.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    ce.backward()
    assert torch.isfinite(logits.grad).all()
    assert SegLoss("ce", 3, w_ce=1.0)(logits, target)["ce"].item() == pytest.approx(ce.item())


def test_a_small_teacher_temperature_gives_finite_soft_labels() -> None:
    # Teacher logits of +-1e20 at T = 2e-19 (T^2 still a normal float32): divided first they
    # overflow to +-inf, and the softmax gives NaN; shifted by the max first, one-hot labels.
    teacher = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        teacher.weight.zero_()
        teacher.bias.copy_(torch.tensor([1e20, 0.0, -1e20]))
    assert torch.isnan(torch.softmax(teacher(torch.rand(1, 1, 1, 1)) / 2e-19, 1)).any()
    objective = SegObjective(SegLoss("ce", 3), "kd", teacher=teacher, temperature=2e-19)
    probs = objective._teacher_probs(torch.rand(2, 1, 4, 4))
    assert torch.equal(probs, one_hot(torch.zeros(2, 4, 4, dtype=torch.long), 3))
    with pytest.raises(ValueError, match="temperature must lie in"):
        SegObjective(SegLoss("ce", 3), "kd", teacher=teacher, temperature=1e-19)


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


# ------------------------------------------------------------------------ devices


def _unet() -> nn.Module:
    return create_model("unet", 3, 1, 8, base_width=4, depth=1, norm="groupnorm")


def _learnable_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """batch() with masks that follow the images (the class is the brightness band)."""
    x, _ = batch(19)
    y = (x[:, 0] * 3).long().clamp_max(2)
    y[0, :2] = 255
    return x, y


def _terms_by_hand(labels: str, logits: torch.Tensor, teacher: torch.Tensor | None,
                   y: torch.Tensor) -> dict[str, torch.Tensor]:
    """SegObjective's terms for SegLoss("ce+jml", 3) at T = 2, from the module docstring."""
    keep = (y != 255) & (y != UNLABELLED)

    def kept_mean(per_pixel: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return (per_pixel * where).sum() / where.sum()

    def soft_terms(target: torch.Tensor, where: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = kept_mean(-(target * F.log_softmax(logits, 1)).sum(1), where)
        return {"ce": 0.25 * ce, "metric": 0.75 * jaccard_metric_loss(logits, target,
                                                                        keep=where)}

    if labels in ("hard", "kd"):
        hard = {"ce": 0.25 * F.cross_entropy(logits, y, ignore_index=255),
                "metric": 0.75 * jaccard_metric_loss(logits, y, ignore_index=255)}
    if labels == "hard":
        return hard
    if labels == "ls":
        return soft_terms(boundary_smooth(y, 3, 0.5, 3, 255), keep)
    probs = torch.softmax(teacher / 2.0, 1)
    if labels == "kd":  # 0.5 hard + 0.5 (w_ce T^2 KL + w_metric metric against the teacher)
        kl = 4.0 * (probs * (probs.log() - F.log_softmax(logits / 2.0, 1))).sum(1)
        return {"hard_ce": 0.5 * hard["ce"], "hard_metric": 0.5 * hard["metric"],
                "kd_kl": 0.5 * 0.25 * kept_mean(kl, keep),
                "kd_metric": 0.5 * 0.75 * jaccard_metric_loss(logits, probs, keep=keep)}
    # semi, confidence 0: the unlabelled image learns every pixel from the teacher.
    unlabelled = (y == UNLABELLED).flatten(1).any(1)[:, None, None]
    target = torch.where(unlabelled[:, None], probs, one_hot(y.where(keep, 0), 3))
    return soft_terms(target, torch.where(unlabelled, y != 255, keep))


@pytest.mark.parametrize("labels", ["hard", "ls", "kd", "semi"])
def test_objectives_on_device(device: str, labels: str) -> None:
    """SegObjective in every label mode with model and teacher on the device: on the device,
    the terms and gradients of the formulas by hand on the CPU."""
    x, y = _learnable_batch()
    if labels == "semi":
        y[3] = UNLABELLED
    teacher = seeded(_unet, 1) if labels in ("kd", "semi") else None
    reference = seeded(_unet, 0)
    with torch.no_grad():
        teacher_logits = None if teacher is None else teacher(x)
    expected = _terms_by_hand(labels, reference(x), teacher_logits, y)
    sum(expected.values()).backward()
    model = seeded(_unet, 0).to(device)
    objective = SegObjective(SegLoss("ce+jml", 3), labels, temperature=2.0,
                             teacher=None if teacher is None else teacher.to(device))
    terms = objective(model, x.to(device), y.to(device))
    sum(terms.values()).backward()
    assert terms.keys() == expected.keys()
    for name, value in terms.items():
        assert_close_on(value.detach(), expected[name].detach(), device, atol=1e-5, rtol=1e-4)
    reference_grads = grads(reference)
    for name, value in grads(model).items():
        assert_close_on(value, reference_grads[name], device, atol=1e-5, rtol=1e-4)


def test_fit_predict_and_evaluate_on_device(device: str) -> None:
    """fit with a paired augmentation and a smoothed-label objective on the device, then
    predict_segmentation (on the CPU, by contract) and evaluate_segmentation: the trained
    model's softmax and the metrics of its predictions; off the CPU, the CPU's run."""
    x, y = _learnable_batch()
    data = SegmentationDataset(x, y, DatasetInfo("toy", ("a", "b", "c"), (0.5,), (0.25,)), 255)

    def run(where: str) -> tuple[nn.Module, torch.Tensor, dict]:
        model = seeded(_unet, 0)
        fit(model, x, y, TrainConfig(epochs=2, batch_size=2, lr=0.05),
            objective=SegObjective(SegLoss("ce+dml", 3), "ls"),
            paired_augment=PairedAugment(PairedRandomCrop(8), PairedFlip()), device=where,
            show_progress=False)
        assert all(p.device.type == torch.device(where).type for p in model.parameters())
        probs = predict_segmentation(model, x, batch_size=3, device=where)
        assert_on(probs, "cpu")
        return model, probs, evaluate_segmentation(model, data, device=where)

    model, probs, scores = run(device)
    trained = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        torch.testing.assert_close(probs, torch.softmax(trained(x), 1), atol=1e-6, rtol=1e-5)
    start = seeded(_unet, 0).state_dict()
    assert any(not torch.allclose(start[k], v.cpu()) for k, v in model.state_dict().items())
    expected = segmentation_metrics(probs, y, 3, 255)
    for key in ("miou_dataset", "miou_image", "pixel_accuracy"):
        assert scores[key] == pytest.approx(expected[key], abs=1e-9), key
    if off_cpu(device):
        model_cpu, probs_cpu, scores_cpu = run("cpu")
        # A training loop: rounding differences grow over the steps.
        assert_states_close(model.state_dict(), model_cpu.state_dict(), atol=TRAIN_TOL,
                            rtol=TRAIN_TOL)
        torch.testing.assert_close(probs, probs_cpu, atol=TRAIN_TOL, rtol=TRAIN_TOL)
        for key in ("miou_dataset", "miou_image", "pixel_accuracy"):
            # One pixel's argmax may flip on a near tie: 1 of 240 kept pixels.
            assert scores[key] == pytest.approx(scores_cpu[key], abs=0.02), key


def test_kd_teacher_left_on_the_cpu_follows_fit(device: str) -> None:
    """A SegObjective whose teacher was built (or loaded) on the CPU: fit moves only the
    student, and the objective makes the teacher follow its inputs. The student trains (its
    head moves); off the CPU, to the CPU run's weights."""
    x, y = _learnable_batch()
    heads = {}
    for where in [device, "cpu"] if off_cpu(device) else [device]:
        student, teacher = seeded(_unet, 0), seeded(_unet, 1)
        result = fit(student, x, y, TrainConfig(epochs=2, batch_size=6, lr=0.05),
                     objective=SegObjective(SegLoss("ce+jml", 3), "kd", teacher=teacher),
                     device=where, show_progress=False)
        assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
        heads[where] = student.state_dict()["head.weight"]
    assert_on(heads[device], device)
    assert not torch.allclose(heads[device].cpu(), seeded(_unet, 0).state_dict()["head.weight"])
    if off_cpu(device):
        # A training loop: rounding differences grow over the steps.
        torch.testing.assert_close(heads[device].cpu(), heads["cpu"], atol=TRAIN_TOL,
                                   rtol=TRAIN_TOL)
