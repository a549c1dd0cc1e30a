"""Bad inputs found by the second hostile-input trial: each is refused with an error that
names the argument, before anything is computed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from softlabels.attacks import autoattack
from softlabels.data import augmentation
from softlabels.data.types import DatasetInfo
from softlabels.engine import TrainConfig
from softlabels.engine.optim import build_scheduler
from softlabels.labels import soften
from softlabels.losses import jaccard_metric_loss, soft_cross_entropy
from softlabels.metrics import accuracy, classwise_from_confusion
from softlabels.models import ConvNet, UNet
from softlabels.robust import ABSLD, AttackConfig, CropFlipVariants, TRADESObjective, fair_weights
from softlabels.seg import SegLoss, SegObjective, predict_segmentation

NET = ConvNet(3, in_channels=3, width=4, depth=1, image_size=8)
ATTACK = AttackConfig(0.03, 0.01, 1)
META = torch.randn(4, 3, device="meta")
OPTIMIZER = torch.optim.SGD(NET.parameters(), lr=0.1)

CASES: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    "meta logits": (lambda: soften(META), ValueError, "on the meta device"),
    "meta target": (lambda: soft_cross_entropy(torch.randn(4, 3), torch.zeros(4, 3,
                                                                          device="meta")),
                    ValueError, "on the meta device"),
    "meta predictions": (lambda: accuracy(META, torch.zeros(4, dtype=torch.long)),
                         ValueError, "on the meta device"),
    "jml without spatial dims": (lambda: jaccard_metric_loss(torch.randn(4, 3),
                                                             torch.tensor([0, 1, 2, 1])),
                                 ValueError, "at least one spatial dimension"),
    "confusion not square": (lambda: classwise_from_confusion(torch.ones(2, 3)), ValueError,
                             r"square \(C, C\) confusion matrix, got shape \(2, 3\)"),
    "confusion negative": (lambda: classwise_from_confusion(torch.tensor([[-1.0, 0], [0, 1]])),
                           ValueError, "counts >= 0"),
    "kappa NaN": (lambda: fair_weights(torch.tensor([float("nan"), 1.0])), ValueError,
                  "kappa must be finite"),
    "beta negative": (lambda: fair_weights(torch.tensor([0.5, 1.0]), beta=-1), ValueError,
                      "beta must be in"),
    "decay epoch negative": (lambda: ABSLD(NET, NET, ATTACK, 3, decay_epochs=(-1,)),
                             ValueError, "decay_epochs must hold epoch numbers >= 0"),
    "padding negative": (lambda: CropFlipVariants(padding=-1), ValueError,
                         "padding must be an int >= 0"),
    "padding mode": (lambda: CropFlipVariants(padding_mode="wrap"), ValueError,
                     "padding_mode must be one of"),
    "TRADES beta NaN": (lambda: TRADESObjective(ATTACK, beta=float("nan")), ValueError,
                        "beta must be a finite number"),
    "no class names": (lambda: DatasetInfo("d", (), (0.0,) * 3, (1.0,) * 3), ValueError,
                       "must name at least one class"),
    "std negative": (lambda: DatasetInfo("d", ("a",), (0.0,), (-1.0,)), ValueError,
                     "stds >= 0"),
    "scheduler steps 0": (lambda: build_scheduler(OPTIMIZER, TrainConfig(), 0), ValueError,
                          "steps_per_epoch must be"),
    "augmentation size 0": (lambda: augmentation("flip_crop", 0), ValueError,
                            "image_size must be"),
    "seg ignore inside the classes": (lambda: SegLoss(num_classes=3, ignore_index=1),
                                      ValueError, "ignore_index"),
    "seg one class": (lambda: SegLoss(num_classes=1), ValueError, "num_classes must be >= 2"),
    "seg even kernel": (lambda: SegObjective(SegLoss(), "ls", kernel=4), ValueError,
                        "kernel must be odd"),
    "predict batch 0": (lambda: predict_segmentation(UNet(2, image_size=8, depth=1,
                                                          base_width=4),
                                                     torch.rand(2, 3, 8, 8), batch_size=0),
                        ValueError, "batch_size must be"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_refused_naming_it(case: str) -> None:
    call, error, message = CASES[case]
    with pytest.raises(error, match=message):
        call()


def test_an_unknown_autoattack_version_names_the_argument() -> None:
    pytest.importorskip("torchattacks")
    with pytest.raises(ValueError, match="version must be one of"):
        autoattack(NET, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), 0.03, version="fast")
