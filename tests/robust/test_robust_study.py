"""``softlabels robust``: end to end in --quick mode, resuming, and bad settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from softlabels.cli import main
from softlabels.configuration import build_config
from softlabels.studies import robust
from softlabels.studies.robust import RobustStudyConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def quick_run(quick_reproduction: Path) -> Path:
    """``robust --quick``, run once by the session's reproduction."""
    return quick_reproduction / "robust"


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_one_row_per_method_and_seed(quick_run: Path) -> None:
    rows = _rows(quick_run)
    teacher = rows.pop(0)  # the first stage: the teacher, scored like the students
    assert teacher["phase"] == "teacher"
    assert teacher["teacher_method"] == "trades"
    assert teacher["scores"]["clean"]["accuracy"] > 0.8
    config = RobustStudyConfig(**robust.QUICK)
    assert {(r["method"], r["seed"]) for r in rows} == {
        (m, s) for m in config.methods for s in config.seeds}
    for row in rows:
        assert set(row["scores"]) == {"clean", "fgsm", "pgd5", "cw"}
        for score in row["scores"].values():
            assert 0.0 <= score["worst_class_accuracy"] <= score["accuracy"] <= 1.0
            assert len(score["classwise_accuracy"]) == 10
            assert score["nsd"] >= 0.0
        # An attack never raises accuracy above the clean one (same images, same model).
        assert row["scores"]["pgd5"]["accuracy"] <= row["scores"]["clean"]["accuracy"]
        assert row["selected_epoch"] in {int(e) for e in row["selection"]}
        assert set(row["selection"]) == {"2", "4", "6"}
    absld = [r for r in rows if r["method"] == "absld"]
    for row in absld:
        adv = row["temperatures"]["adv"]
        assert len(adv) == config.epochs + 1  # initial + one update per epoch
        assert adv[0] == [1.0] * 10
        assert all(config.tau_min <= t <= config.tau_max for t in adv[-1])
        assert adv[-1] != adv[0]


def test_report_figures_and_teacher(quick_run: Path) -> None:
    report = (quick_run / "report.md").read_text()
    assert "| method | clean Avg | clean Worst | clean NSD | fgsm Avg |" in report
    assert "| teacher (trades) |" in report
    for method in ("rslad", "absld", "ard"):
        assert f"| {method} |" in report
    for name in ("classwise_robust.png", "temperatures.png"):
        data = (quick_run / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert f"]({name})" in report  # linked under its title


def test_rerun_redoes_nothing(quick_run: Path) -> None:
    before = (quick_run / "results.jsonl").read_text()
    checkpoints = {p: p.stat().st_mtime_ns for p in (quick_run / "checkpoints").rglob("*.pt")}
    assert main(["robust", "--quick", "--out", str(quick_run)]) == 0
    assert {p: p.stat().st_mtime_ns
            for p in (quick_run / "checkpoints").rglob("*.pt")} == checkpoints  # no retraining
    assert (quick_run / "results.jsonl").read_text() == before


@pytest.mark.parametrize(("changes", "message"), [
    ({"eps": -0.1}, "eps must be >= 0"),
    ({"train_steps": 0}, "steps must be >= 1"),
    ({"seeds": (-1,)}, "seeds must be >= 0, got -1"),
    ({"eval_steps": 0}, "eval_steps must be >= 1"),
    ({"tau_min": 3.0, "tau_max": 1.0}, "tau_min must be <= tau_max"),
    ({"methods": ()}, "methods must name at least one value"),
    ({"methods": ("rslad", "rslad")}, "must not repeat"),
    ({"methods": ("trades",)}, "methods"),
    ({"test_fraction": 0.0}, "test_fraction must be > 0.0 and < 1.0, got 0.0"),
    ({"select_every": 0}, "select_every must be >= 1"),
])
def test_bad_config(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_config(RobustStudyConfig, robust.QUICK, changes)


def test_source_split_is_divided_into_train_and_test(tmp_path: Path) -> None:
    config = build_config(RobustStudyConfig, robust.QUICK, {"source_split": "test",
                                                           "out": str(tmp_path)})
    data = robust._load(config)
    train_ids = set(data.train.indices.tolist()) | set(data.val.indices.tolist())
    assert not train_ids & set(data.test.indices.tolist())
    assert len(train_ids) + len(data.test) == 359  # the digits test split
