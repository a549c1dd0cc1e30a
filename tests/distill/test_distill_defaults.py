"""Defaults that hold on any dataset size: the expert's length, its candidate epochs, hard
labels among the candidates, and the warnings a reader must not miss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from softlabels.configuration import build_config
from softlabels.studies.distill import DistillStudyConfig, selection_warnings
from softlabels.studies.registry import run_study


def test_the_expert_trains_a_number_of_steps_on_any_dataset() -> None:
    config = DistillStudyConfig(expert_steps=600)
    # 1,294 images in batches of 256: 6 steps an epoch (the last batch of 14 is its own).
    resolved = config.resolve_experts(1294)
    assert resolved.expert_epochs == 100
    assert resolved.expert_epoch == (10, 25, 50, 100)
    # CIFAR-10's pool of 45,000 images: 176 steps an epoch, so the default 3,500 steps are
    # the 20 epochs (and the candidates 2, 5, 10, 20) of the CPU reproduction.
    cifar = DistillStudyConfig().resolve_experts(45000)
    assert (cifar.expert_epochs, cifar.expert_epoch) == (20, (2, 5, 10, 20))
    given = DistillStudyConfig(expert_epochs=7, expert_epoch=(3,))
    assert given.resolve_experts(1294) is given


def _select(ipc: int, labels: str, best: float, epoch: int | None = None) -> dict[str, Any]:
    return {"phase": "select", "ipc": ipc, "labels": labels, "expert_epoch": epoch,
            "best_mean": best}


def test_warnings_name_a_last_candidate_and_hard_labels_that_win() -> None:
    rows = [_select(10, "teacher", 0.70, 2), _select(10, "teacher", 0.80, 20),
            _select(10, "hard", 0.92),
            _select(1, "teacher", 0.40, 2), _select(1, "teacher", 0.30, 20),
            _select(1, "hard", 0.20)]
    notes = selection_warnings(rows)
    assert len(notes) == 2
    assert notes[0].startswith("IPC 10: the chosen expert epoch (20) is the last candidate")
    assert "IPC 10: hard labels beat the best expert labels on the validation split (92.0% " \
        "against 80.0% at epoch 20)" in notes[1]
    assert selection_warnings([r for r in rows if r["ipc"] == 1]) == []


@pytest.mark.slow
def test_a_small_dataset_selects_among_hard_and_spread_expert_epochs(tmp_path: Path) -> None:
    config = build_config(DistillStudyConfig, {
        "out": str(tmp_path / "run"), "device": "cpu", "model_args": ("width=4", "depth=1"),
        "expert_steps": 60, "expert_augment": "none", "ipc": (2,), "select_epoch": True,
        "seeds": (0,), "student_epochs": 10, "eval_every": 5, "student_augment": "none"})
    assert config.expert_epochs is None
    assert config.expert_epoch == ()
    results = run_study("distill", config, show_progress=False)
    rows = results.rows
    selects = [r for r in rows if r["phase"] == "select"]
    # 1,294 digits in batches of 256: 6 steps an epoch, 60 steps = 10 epochs.
    assert sorted(r["expert_epoch"] for r in selects if r["labels"] == "teacher") == [
        1, 2, 5, 10]
    assert [r["labels"] for r in selects if r["labels"] == "hard"] == ["hard"]
    tested = {r["labels"]: r for r in rows if r["phase"] == "test"}
    assert set(tested) == {"hard", "teacher"}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| 2 | hard labels |" in report  # the baseline row of the selection table
    notes = results.tables[0].notes
    assert [n for n in notes if n.startswith("warning:")] == [
        f"warning: {w}" for w in selection_warnings(rows)]
