"""``softlabels export RUN_FOLDER --cell NAME``: one distillation cell as a distilled dataset.

The cell's images (the selected real training images, its DM images, or the images of
``--image-file``) and the labels it trained its students on (its label store under
``labels/``) are written with the dataset's class names and normalisation and the cell's
provenance, in the format of :mod:`softlabels.distilled` (``.npz`` or ``.safetensors``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import __version__
from .._io import torch_load
from ..configuration import build_config, upgrade_fields
from ..data import load_dataset
from ..data.zca import ZCA
from ..distill.grid import Cell as GridCell
from ..distilled import DistilledSet, load_distilled, save_distilled
from ..store import LabelStore
from .distill import DistillStudyConfig
from .run_folder import read_rows, read_run_config

__all__ = ["distilled_cell", "export_cell", "exportable_cells"]

_CELL_FIELDS = tuple(GridCell.__dataclass_fields__)
# Facts of a row worth carrying with the exported set.
_ROW_FACTS = ("best_mean", "best_std", "final_mean", "final_std", "eval_split", "seeds",
              "num_images", "label_entropy", "backend")


def _distill_config(folder: Path) -> DistillStudyConfig:
    stored = read_run_config(folder)
    study = stored.get("study", "distill")
    if study != "distill":
        raise ValueError(f"softlabels export writes distilled datasets of distill runs; "
                         f"{str(folder)!r} holds a {study!r} run")
    fields = upgrade_fields(DistillStudyConfig, stored["config"], warn=False)
    return build_config(DistillStudyConfig, fields)


def exportable_cells(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{cell name: row}`` of the finished student cells (selection and test) of a run."""
    rows = read_rows(DistillStudyConfig, folder)
    cells = {}
    for row in rows:
        if row.get("phase") in ("select", "test"):
            cells[GridCell(**{k: row[k] for k in _CELL_FIELDS}).name()] = row
    return cells


def distilled_cell(folder: str | os.PathLike[str], cell: str) -> DistilledSet:
    """The distilled dataset of ``cell`` in the run folder ``folder``.

    Raises:
        ValueError: the folder is not a distill run, has no finished cell of that name (the
            message lists those it has), or lacks the cell's label store or images.
    """
    run = Path(folder)
    config = _distill_config(run)
    cells = exportable_cells(run)
    if cell not in cells:
        listing = ", ".join(cells) if cells else "none"
        raise ValueError(f"run folder {str(run)!r} has no finished cell {cell!r}; its cells: "
                         f"{listing}")
    row = cells[cell]
    store = LabelStore.load(_label_store(run, cell, row))
    train = load_dataset(config.dataset, config.data_root, split="train")
    images, labels = _images(config, run, row, store.indices, train)
    provenance = {
        "softlabels_version": __version__, "study": "distill", "cell": cell,
        "cell_key": {k: row[k] for k in _CELL_FIELDS}, "dataset": config.dataset,
        "data_source": train.info.source, "model": config.model,
        "model_args": list(config.model_args), "student_epochs": config.student_epochs,
        "expert_epochs": config.expert_epochs, "selection": config.selection,
        "selection_seed": config.selection_seed,
        "row": {k: row[k] for k in _ROW_FACTS if k in row},
    }
    # The images are pixels; a run whose models saw them whitened ships its whitening, so
    # the labels are used with the same inputs (apply ZCA.from_state(zca) to the images).
    zca: dict[str, Any] = {}
    if getattr(config, "zca", False):
        zca = ZCA.from_state(torch_load(run / "zca.pt")).state_dict()
        provenance["zca_digest"] = ZCA.from_state(zca).digest()
    return DistilledSet(images, labels, train.info.class_names, store.labels,
                        train.info.mean, train.info.std, provenance, zca)


def _label_store(run: Path, cell: str, row: dict[str, Any]) -> Path:
    """The cell's label store; runs of the previous release named it with the old spelling
    of the label mode (``expert`` for ``teacher``)."""
    names = [cell]
    for old, new in DistillStudyConfig.RENAMED_VALUES["labels"].items():
        if row["labels"] == new:
            key = {k: row[k] for k in _CELL_FIELDS}
            names.append(GridCell(**{**key, "labels": old}).name())
    for name in names:
        path = run / "labels" / f"{name}.safetensors"
        if path.is_file():
            return path
    raise ValueError(f"cell {cell!r} has no label store {str(run / 'labels' / names[0])!r}"
                     ".safetensors (a run folder that kept only its rows, such as "
                     "docs/runs, cannot be exported; rerun the cell)")


def _images(config: DistillStudyConfig, run: Path, row: dict[str, Any], indices: Tensor,
            train: Any) -> tuple[Tensor, Tensor]:
    """(images (N, C, H, W), classes (N,)) of the cell, in the order of its label store."""
    if row["images"] == "random":
        return train.images[indices], train.labels[indices]
    if row["images"] == "dm":
        path = run / "dm" / f"ipc{row['ipc']}.pt"
        if not path.is_file():
            raise ValueError(f"cell {row!r} needs its DM images {str(path)!r}, which are gone")
        saved = torch_load(path)
        return saved["images"], saved["labels"].to(torch.int64)  # DM keeps them in [0, 1]
    given = load_distilled(config.image_file,  # type: ignore[arg-type]  # file cells have it
                           train.num_classes)
    return given.images, given.labels


def export_cell(folder: str | os.PathLike[str], cell: str, format: str = "npz",
                out: str | os.PathLike[str] | None = None) -> Path:
    """Write ``cell`` of the run ``folder`` to ``out`` (default:
    ``<folder>/exports/<cell>.<format>``); returns the path written."""
    target = Path(out) if out is not None else Path(folder) / "exports" / f"{cell}.{format}"
    return save_distilled(target, distilled_cell(folder, cell), format)
