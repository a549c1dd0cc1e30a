"""The argument mappings of docs/migrating.md: MONAI (installed, run side by side) and
segmentation_models_pytorch (not installed: its conventions, read from its source and its own
test cases, worked out by hand)."""

import math

import pytest
import torch

from softlabels.losses import jaccard_metric_loss

monai_losses = pytest.importorskip("monai.losses", reason="MONAI is the dev extra's cross-check")


def monai_options(*, jaccard: bool = False, tversky: tuple[float, float] | None = None,
                  squared_pred: bool = False, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                  batch: bool = False, weight: list[float] | None = None,
                  soft_label: bool = False, include_background: bool = True,
                  num_classes: int = 4) -> dict:
    """Options of jaccard_metric_loss equal to a MONAI DiceLoss / TverskyLoss (migrating.md)."""
    if tversky is not None:  # TverskyLoss: (tp + nr) / (tp + a fp + b fn + dr)
        alpha, beta, smooth = *tversky, (smooth_nr, smooth_dr)
    else:  # DiceLoss: (2 tp + nr) / (2 tp + fp + fn + dr), Jaccard: 2 (tp + fp + fn) + dr
        alpha = beta = 1.0 if jaccard else 0.5
        smooth = (smooth_nr / 2, smooth_dr / 2)
    scored = num_classes if include_background else num_classes - 1
    weights = torch.tensor(weight if weight is not None else [1.0] * scored)
    if not include_background:  # MONAI drops channel 0 and averages the others
        weights = torch.cat([torch.zeros(1), weights * num_classes / (num_classes - 1)])
    return {"alpha": alpha, "beta": beta, "smooth": smooth, "p": 2 if squared_pred else 1,
            "levels": {"dataset": 1.0} if batch else {"image": 1.0},
            "variant": "jml1" if soft_label else "sjl", "active_classes": "all",
            "class_weights": weights}


def data(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (3, 6, 6), generator=g)
    labels[1] = labels[1].where(labels[1] != 2, 0)  # a class absent from one image
    return {"logits": torch.randn(3, 4, 6, 6, generator=g) * 2, "labels": labels,
            "soft": torch.softmax(torch.randn(3, 4, 6, 6, generator=g) * 2, 1)}


DICE_CASES = [
    {},
    {"batch": True, "jaccard": True},
    {"soft_label": True, "smooth_nr": 0.0, "smooth_dr": 1e-3},
    {"soft_label": True, "batch": True, "weight": [1.0, 0.5, 2.0, 1.0], "smooth_nr": 0.1},
    {"squared_pred": True, "smooth_nr": 1e-2, "smooth_dr": 1e-2},
    {"include_background": False, "jaccard": True, "soft_label": True},
]


@pytest.mark.parametrize("case", DICE_CASES)
@pytest.mark.parametrize("target", ["labels", "soft"])
def test_monai_dice_and_jaccard(case: dict, target: str) -> None:
    d = data()
    theirs = monai_losses.DiceLoss(softmax=True, to_onehot_y=target == "labels", **case)
    their_target = d["labels"].unsqueeze(1) if target == "labels" else d["soft"]
    ours = jaccard_metric_loss(d["logits"], d[target], **monai_options(**case))
    assert ours.item() == pytest.approx(theirs(d["logits"], their_target).item(), abs=1e-6)


@pytest.mark.parametrize("case", [
    {"tversky": (0.3, 0.7)},
    {"tversky": (0.7, 0.3), "batch": True, "soft_label": True, "smooth_nr": 0.0},
    {"tversky": (0.5, 0.5), "soft_label": True, "include_background": False},
])
def test_monai_tversky(case: dict) -> None:
    d = data(1)
    alpha, beta = case["tversky"]
    their_case = {k: v for k, v in case.items() if k != "tversky"}
    theirs = monai_losses.TverskyLoss(softmax=True, alpha=alpha, beta=beta, **their_case)
    ours = jaccard_metric_loss(d["logits"], d["soft"], **monai_options(**case))
    assert ours.item() == pytest.approx(theirs(d["logits"], d["soft"]).item(), abs=1e-6)


def test_monai_multilabel_and_ignore_index() -> None:
    d = data(2)
    multilabel = (torch.rand(3, 4, 6, 6, generator=torch.Generator().manual_seed(4)) > 0.6)
    theirs = monai_losses.DiceLoss(sigmoid=True, batch=True)(d["logits"], multilabel.float())
    ours = jaccard_metric_loss(d["logits"], multilabel.float(), mode="multilabel",
                               **monai_options(batch=True))
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    labels = d["labels"].clone()
    labels[0, :2] = 255
    theirs = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, ignore_index=255)
    ours = jaccard_metric_loss(d["logits"], labels, ignore_index=255, **monai_options())
    assert ours.item() == pytest.approx(theirs(d["logits"], labels.unsqueeze(1)).item(),
                                        abs=1e-6)


# segmentation_models_pytorch >= 0.4 (|x - y| form; 0.3 used <x, y>, i.e. variant="sjl"):
# per class score = (tp + smooth) / max(tp + a fp + b fn + smooth, eps), classes without a
# labelled pixel count 0 but stay in the mean over all C; class_weights w give
# sum(w loss) / sum(w); TverskyLoss raises that mean to gamma.
SMP = {"smooth": 0.0, "class_mean": "all", "active_classes": "present", "threshold": 0.0,
       "from_logits": False}
# Two pixels, three classes; class 2 never labelled.
PROBS = torch.tensor([[[0.8, 0.3], [0.1, 0.6], [0.1, 0.1]]], dtype=torch.float64)
LABELS = torch.tensor([[0, 1]])
# Per class: class 0 tp .8 fp .3 fn .2; class 1 tp .6 fp .1 fn .4.
JACCARD = (0.8 / 1.3, 0.6 / 1.1)


@pytest.mark.parametrize(("options", "expected"), [
    ({}, (2 - sum(JACCARD)) / 3),  # JaccardLoss(mode="multiclass", from_logits=False)
    ({"alpha": 0.5, "beta": 0.5}, (2 - 0.8 / 1.05 - 0.6 / 0.85) / 3),  # DiceLoss
    ({"log_loss": True}, -(math.log(JACCARD[0]) + math.log(JACCARD[1])) / 3),
    # class_weights=[1, 2, 3]: (1 * L0 + 2 * L1 + 3 * 0) / 6, here w * C / sum(w).
    ({"class_weights": [0.5, 1.0, 1.5]}, ((1 - JACCARD[0]) + 2 * (1 - JACCARD[1])) / 6),
    # classes=[0, 2]: the mean over those two, here weights C / 2 on them.
    ({"class_weights": [1.5, 0.0, 1.5]}, (1 - JACCARD[0]) / 2),
])
def test_smp_multiclass_by_hand(options: dict, expected: float) -> None:
    ours = jaccard_metric_loss(PROBS, LABELS, **SMP, **options)
    assert ours.item() == pytest.approx(expected, abs=1e-9)


def test_smp_tversky_gamma_and_ignore_index_by_hand() -> None:
    # TverskyLoss(alpha=.3, beta=.7, gamma=2): (mean of per-class losses) ** 2, i.e. our
    # gamma = 1 loss squared (our gamma acts on each class).
    tversky = (1 - 0.8 / (0.8 + 0.09 + 0.14) + 1 - 0.6 / (0.6 + 0.03 + 0.28)) / 3
    ours = jaccard_metric_loss(PROBS, LABELS, alpha=0.3, beta=0.7, **SMP) ** 2
    assert ours.item() == pytest.approx(tversky ** 2, abs=1e-9)
    # ignore_index=255 on the second pixel: class 0 tp .8 fp 0 fn .2; classes 1, 2 empty.
    ours = jaccard_metric_loss(PROBS, torch.tensor([[0, 255]]), ignore_index=255, **SMP)
    assert ours.item() == pytest.approx((1 - 0.8) / 3, abs=1e-9)


@pytest.mark.parametrize(("pred", "true", "expected"), [
    # SMP's own test cases (tests/test_losses.py), binary mode, from_logits=False.
    ([1.0, 1.0, 1.0], [1, 1, 1], 0.0),
    ([1.0, 0.0, 1.0], [1, 0, 1], 0.0),
    ([0.0, 0.0, 0.0], [0, 0, 0], 0.0),  # no foreground: the class is left out
    ([1.0, 1.0, 1.0], [0, 0, 0], 0.0),  # ... even when predicted everywhere
    ([1.0, 0.0, 1.0], [0, 1, 0], 1.0),
    ([0.0, 0.0, 0.0], [1, 1, 1], 1.0),
])
@pytest.mark.parametrize("dice", [False, True])
def test_smp_binary_cases(pred, true, expected, dice: bool) -> None:
    weights = {"alpha": 0.5, "beta": 0.5} if dice else {}
    ours = jaccard_metric_loss(torch.tensor(pred).view(1, 1, -1), torch.tensor([true]),
                               mode="binary", **SMP, **weights)
    assert ours.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(("pred", "true", "expected"), [
    # SMP's multiclass and multilabel JaccardLoss cases.
    ([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]], [0, 0, 1, 1], 0.0),
    ([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]], [1, 1, 0, 0], 1.0),
    ([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]], [1, 1, 0, 0], 1 - 1 / 3),
    ([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]],
     [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]], 1 - 1 / 3),
    ([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]],
     [[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]], 1.0),
])
def test_smp_multiclass_and_multilabel_cases(pred, true, expected) -> None:
    target = torch.tensor([true])
    mode = "multilabel" if target.is_floating_point() else "multiclass"
    ours = jaccard_metric_loss(torch.tensor([pred]), target, mode=mode, **SMP)
    assert ours.item() == pytest.approx(expected, abs=1e-5)


def test_conventions_that_differ_by_default() -> None:
    """Without the mapping the numbers differ: classes averaged over the active ones, weights
    multiplying, smooth added everywhere."""
    default = jaccard_metric_loss(PROBS, LABELS, from_logits=False, smooth=0.0)
    assert default.item() == pytest.approx((2 - sum(JACCARD)) / 2, abs=1e-9)
    weighted = jaccard_metric_loss(PROBS, LABELS, from_logits=False, smooth=0.0,
                                   class_weights=[1.0, 2.0, 3.0])
    assert weighted.item() == pytest.approx((1 - JACCARD[0] + 2 * (1 - JACCARD[1])) / 2,
                                            abs=1e-9)
    # A class absent from both, under active_classes="all": score 0 with smooth = 0 (the
    # floor of 1e-7 keeps it finite), score 1 with smooth > 0.
    empty = torch.tensor([[[1.0], [0.0]]], dtype=torch.float64)
    label = torch.tensor([[0]])
    assert jaccard_metric_loss(empty, label, from_logits=False, smooth=0.0,
                               active_classes="all").item() == pytest.approx(0.5)
    assert jaccard_metric_loss(empty, label, from_logits=False, smooth=1e-3,
                               active_classes="all").item() == pytest.approx(0.0)
