"""Run folders: --overwrite never deletes, and folders of the previous release resume."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from softlabels import cli
from softlabels.configuration import build_config, upgrade_fields
from softlabels.studies import distill, seg, train
from softlabels.studies.run_folder import (
    FolderInUseError,
    move_aside,
    prepare_run_folder,
    read_rows,
    release_run_folder,
)
from softlabels.studies.sweep import RowIndex, run_sweep
from softlabels.studies.train import TrainStudyConfig

RUNS = Path(__file__).resolve().parents[1] / "docs" / "runs"


def _boom(*args: Any, **kwargs: Any) -> dict[str, Any]:
    raise AssertionError("a finished cell was computed again")


def test_overwrite_moves_the_old_run_aside(tmp_path: Path) -> None:
    out = tmp_path / "run"
    prepare_run_folder(TrainStudyConfig(out=str(out)), out)
    (out / "results.jsonl").write_text('{"labels": "hard", "seed": 0}\n')
    different = TrainStudyConfig(out=str(out), lr=0.5)
    with pytest.raises(ValueError, match=r"different config \(fields \['lr'\]\).*--overwrite"):
        prepare_run_folder(different, out)
    prepare_run_folder(different, out, overwrite=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1
    assert (aside[0] / "results.jsonl").read_text() == '{"labels": "hard", "seed": 0}\n'
    assert json.loads((aside[0] / "config.json").read_text())["config"]["lr"] == 0.1
    assert not (out / "results.jsonl").exists()
    assert json.loads((out / "config.json").read_text())["config"]["lr"] == 0.5
    prepare_run_folder(different, out, overwrite=True)  # twice in a second: a second name
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]) == 2
    release_run_folder(out)


def test_a_refused_prepare_keeps_a_lock_this_process_already_held(
        tmp_path: Path, lockable_elsewhere: Callable[[Path], bool]) -> None:
    prepare_run_folder(TrainStudyConfig(out=str(tmp_path), lr=0.5), tmp_path)
    release_run_folder(tmp_path)
    with pytest.raises(ValueError, match="different config"):
        prepare_run_folder(TrainStudyConfig(out=str(tmp_path)), tmp_path)
    assert lockable_elsewhere(tmp_path)  # a refusal leaves nothing locked
    prepare_run_folder(TrainStudyConfig(out=str(tmp_path), lr=0.5), tmp_path)
    with pytest.raises(ValueError, match="different config"):
        prepare_run_folder(TrainStudyConfig(out=str(tmp_path)), tmp_path)
    assert not lockable_elsewhere(tmp_path)  # the first, accepted call still holds it
    release_run_folder(tmp_path)
    assert lockable_elsewhere(tmp_path)


def test_overwrite_of_a_missing_or_empty_folder_just_runs(tmp_path: Path) -> None:
    assert move_aside(tmp_path / "none") is None
    (tmp_path / "empty").mkdir()
    assert move_aside(tmp_path / "empty") is None


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("my thesis")
    with pytest.raises(ValueError, match="replaces only a softlabels run folder"):
        prepare_run_folder(TrainStudyConfig(out=str(tmp_path)), tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "my thesis"


def test_overwrite_refuses_a_run_in_use(locked_elsewhere: Path) -> None:
    (locked_elsewhere / "config.json").write_text("{}")
    with pytest.raises(FolderInUseError):
        move_aside(locked_elsewhere)
    assert (locked_elsewhere / "config.json").exists()


def test_the_cli_passes_overwrite_to_the_sweep(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(study: Any, config: Any, executor: Any, **kwargs: Any) -> Any:
        seen.update(kwargs, study=study.name)
        raise ValueError("stop here")

    monkeypatch.setattr(cli, "run_sweep", fake)
    assert cli.main(["seg", "--quick", "--out", str(tmp_path), "--overwrite"]) == 2
    assert seen == {"study": "seg", "overwrite": True}


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(RUNS / name, target)
    return target


def test_a_seg_run_of_the_previous_release_resumes_without_computing(tmp_path: Path) -> None:
    """docs/runs/camvid spells smoothing ``eps`` and the label modes ``ls`` and ``kd``."""
    folder = _copy("camvid", tmp_path)
    stored = json.loads((folder / "config.json").read_text())["config"]
    assert "eps" in stored
    assert set(stored["labels"]) == {"hard", "ls", "kd"}
    # That run predates the teachers' own cells; a folder of the previous release has their
    # rows, with the old spelling too.
    student = json.loads((folder / "results.jsonl").read_text().splitlines()[0])
    teachers = [{**{k: v for k, v in student.items() if k not in ("loss", "train_loss")},
                 "phase": "teacher", "labels": "kd", "seed": seed} for seed in (0, 1, 2)]
    with open(folder / "results.jsonl", "a") as handle:
        handle.writelines(json.dumps(row, sort_keys=True) + "\n" for row in teachers)
    before = (folder / "results.jsonl").read_bytes()
    config = build_config(seg.SegStudyConfig, {**upgrade_fields(
        seg.SegStudyConfig, stored, warn=False), "out": str(folder)})
    assert config.labels == ("hard", "smooth", "teacher")
    results = run_sweep(dataclasses.replace(seg.STUDY, run_cell=_boom), config,
                        show_progress=False)
    assert results.cells_run == 0
    assert len(results.rows) == 27 + 3
    assert {r["labels"] for r in results.rows} == {"hard", "smooth", "teacher"}
    assert "| teacher | 0 |" in (folder / "report.md").read_text()  # the teachers' table
    assert (folder / "results.jsonl").read_bytes() == before  # the user's rows are untouched
    assert json.loads((folder / "config.json").read_text())["config"]["smoothing"] == 0.5


def test_a_distill_run_of_the_previous_release_finds_its_cells(tmp_path: Path) -> None:
    """docs/runs/distill-cifar10 spells the teacher labels ``expert``; every student cell of
    its plan is found among its rows (it kept no expert rows, so those would retrain)."""
    folder = RUNS / "distill-cifar10"
    stored = json.loads((folder / "config.json").read_text())["config"]
    assert "expert" in stored["labels"]
    config = build_config(distill.DistillStudyConfig, upgrade_fields(
        distill.DistillStudyConfig, stored, warn=False))
    rows = read_rows(distill.DistillStudyConfig, folder)
    index = RowIndex(rows)
    stages = {s.name: s for s in distill.plan(config, rows)}
    assert stages["test"].pending == 0
    students = [c for name in ("select", "test") for c in stages[name].cells]
    # The folder's last sweep: IPC 50, selection over 4 epochs, then hard, teacher, 4 top-k.
    # This release also scores hard labels on the validation split: that one cell is new.
    missing = [c.name for c in students if index.find(c) is None]
    assert missing == ["select-random-ipc50-hard"]
    assert len(students) == 4 + 1 + 6


def test_a_train_run_with_images_per_class_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = TrainStudyConfig(out=str(out), labels=("hard", "smooth"), ipc=2, seeds=(0,))
    prepare_run_folder(config, out, train.STUDY.sweep_fields, "train")
    record = json.loads((out / "config.json").read_text())
    record["config"]["images_per_class"] = record["config"].pop("ipc")  # as written before
    (out / "config.json").write_text(json.dumps(record))
    rows = [{"labels": mode, "seed": 0, "accuracy": 0.5, "worst_class_accuracy": 0.1,
             "nsd": 0.2, "classwise_accuracy": [0.5] * 10, "train_images": 20,
             "seconds": 1.0} for mode in ("hard", "smooth")]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = run_sweep(dataclasses.replace(train.STUDY, run_cell=_boom), config,
                        show_progress=False)
    assert results.cells_run == 0
    assert [r["labels"] for r in results.rows] == ["hard", "smooth"]


def test_seg_checkpoints_of_the_previous_release_are_found(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / "teacher-kd-s0").mkdir(parents=True)
    found = seg._checkpoints(tmp_path, seg._teacher_name("teacher", 0), "teacher-kd-s0")
    assert found == tmp_path / "checkpoints" / "teacher-kd-s0"
    fresh = seg._checkpoints(tmp_path, "ce-smooth-s0", "ce-ls-s0")
    assert fresh == tmp_path / "checkpoints" / "ce-smooth-s0"
