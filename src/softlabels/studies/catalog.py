"""``softlabels list WHAT``: the names every flag accepts, read from the registries.

Nothing is listed by hand twice: models come from the model registry, datasets from the data
registries, label modes from each study's declaration, losses from the segmentation losses.
"""

from __future__ import annotations

import importlib.util

from ..data.registry import SOURCES
from ..data.segmentation import SEGMENTATION_SOURCES
from ..models import list_models, model_kwargs
from ..results import Table
from ..seg import LOSSES
from .registry import STUDIES

__all__ = ["CATALOGS", "catalog"]

#: ``--losses`` of ``softlabels seg``: weights --w-ce and --w-metric.
LOSS_DESCRIPTIONS = {
    "ce": "cross-entropy only",
    "ce+sjl": "CE + soft Jaccard loss (correct for hard labels only)",
    "ce+jml": "CE + Jaccard metric loss (correct for soft labels)",
    "ce+dml": "CE + Dice semimetric loss (correct for soft labels)",
}


def _models() -> list[Table]:
    table = Table("models (--model, --teacher-model)", ("model", "options (--model-args)"),
                  text_columns=2)
    for name in list_models():
        table.rows.append((name, " ".join(f"{k}={v}" for k, v in model_kwargs(name).items())))
    timm = "installed" if importlib.util.find_spec("timm") else \
        "not installed: pip install 'softlabels[timm]'"
    table.rows.append(("module.path:factory", "your callable(num_classes=, in_channels=, "
                                               "image_size=(H, W), **model args) -> nn.Module"))
    table.rows.append(("timm:NAME", f"timm.create_model(NAME, ...); timm {timm}"))
    table.notes = ["Images reach every model in [0, 1]; your model is wrapped with the "
                   "dataset's Normalize unless it sets normalizes_input = True."]
    return [table]


def _datasets() -> list[Table]:
    table = Table("datasets (--dataset)", ("dataset", "studies", "what"), text_columns=3)
    for name in sorted(SOURCES):
        table.rows.append((name, "train, distill, robust", SOURCES[name].description))
    for name in sorted(SEGMENTATION_SOURCES):
        table.rows.append((name, "seg", SEGMENTATION_SOURCES[name].description))
    table.notes = ["Files are found under --data-root, or $SOFTLABELS_DATA/<dataset>."]
    return [table]


def _losses() -> list[Table]:
    table = Table("losses (softlabels seg --losses)", ("loss", "what"), text_columns=2)
    table.rows += [(name, LOSS_DESCRIPTIONS.get(name, "")) for name in LOSSES]
    return [table]


def _label_modes() -> list[Table]:
    table = Table("label modes (--labels)", ("study", "mode", "what"), text_columns=3)
    for study in STUDIES.values():
        table.rows += [(study.name, mode, text) for mode, text in study.label_modes.items()]
    return [table]


def _studies() -> list[Table]:
    table = Table("studies (softlabels STUDY --help)", ("study", "what"), text_columns=2)
    table.rows += [(study.name, study.help) for study in STUDIES.values()]
    return [table]


CATALOGS = {"models": _models, "datasets": _datasets, "losses": _losses,
            "label-modes": _label_modes, "studies": _studies}


def catalog(what: str) -> list[Table]:
    """The tables of ``softlabels list what``.

    Raises:
        ValueError: ``what`` is not one of :data:`CATALOGS`.
    """
    if what not in CATALOGS:
        raise ValueError(f"softlabels list takes one of {list(CATALOGS)}, got {what!r}")
    return CATALOGS[what]()
