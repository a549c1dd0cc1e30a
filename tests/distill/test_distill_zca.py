"""``--zca``: experts and students see whitened images, and their labels never meet raw ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from softlabels.configuration import build_config
from softlabels.data import load_dataset
from softlabels.data.zca import ZCA, fit_zca
from softlabels.distilled import load_distilled
from softlabels.store import LabelStore
from softlabels.studies.distill import DistillStudyConfig
from softlabels.studies.export import export_cell
from softlabels.studies.registry import run_study

TINY: dict[str, Any] = {
    "device": "cpu", "model_args": ("width=4", "depth=1"), "expert_epochs": 2,
    "expert_epoch": (2,), "expert_augment": "none", "ipc": (1,), "seeds": (0,),
    "student_epochs": 4, "eval_every": 2, "student_augment": "none",
    "labels": ("hard", "teacher"),
}


def _run(out: Path, **changes: Any) -> list[dict[str, Any]]:
    config = build_config(DistillStudyConfig, TINY, {"out": str(out), **changes})
    return run_study("distill", config, show_progress=False).rows


@pytest.fixture(scope="module")
def whitened(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zca") / "run"
    _run(out, zca=True)
    return out


@pytest.mark.slow
def test_the_run_keeps_its_whitening_and_every_label_store_names_it(whitened: Path) -> None:
    zca = ZCA.from_state(torch.load(whitened / "zca.pt", weights_only=True))
    train = load_dataset("digits", split="train")
    assert zca.digest() == fit_zca(train.images, 0.1).digest()  # fitted on the training split
    for path in (whitened / "labels").glob("*.safetensors"):
        assert LabelStore.load(path).metadata.extra["zca"] == zca.digest()
    exported = load_distilled(export_cell(whitened, "test-random-ipc1-teacher-e2-T1", "npz",
                                          whitened.parent / "set.npz"))
    assert ZCA.from_state(exported.zca).digest() == zca.digest()
    assert exported.provenance["zca_digest"] == zca.digest()


@pytest.mark.slow
def test_whitened_labels_are_refused_for_raw_inputs_and_the_reverse(whitened: Path,
                                                                     tmp_path: Path) -> None:
    store = next((whitened / "labels").glob("test-random-ipc1-teacher*"))
    with pytest.raises(ValueError, match=r"was made for ZCA-whitened inputs .* but this run's "
                                         r"models see raw pixels"):
        _run(tmp_path / "raw", labels=("file",), label_file=str(store))
    raw = tmp_path / "raw-run"
    _run(raw)
    raw_store = next((raw / "labels").glob("test-random-ipc1-teacher*"))
    with pytest.raises(ValueError, match="was made for raw pixels, but this run's models see "
                                         "ZCA-whitened inputs"):
        _run(tmp_path / "white", labels=("file",), label_file=str(raw_store), zca=True)


def test_the_zca_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"zca_eps must be > 0\.0"):
        DistillStudyConfig(zca=True, zca_eps=0.0)
