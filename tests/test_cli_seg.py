"""End-to-end test of ``softlabels seg --quick`` on the embedded digit scenes."""

import json
import math
from pathlib import Path

import pytest

from softlabels.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def seg_run(quick_reproduction: Path) -> Path:
    """``seg --quick`` (CE and CE+JML under hard, smooth, teacher and semi labels), run once
    by the session's reproduction."""
    return quick_reproduction / "seg"


def test_one_row_per_cell_with_scores(seg_run: Path) -> None:
    rows = [json.loads(line) for line in (seg_run / "results.jsonl").read_text().splitlines()]
    teachers = [r for r in rows if r.get("phase") == "teacher"]
    students = [r for r in rows if "loss" in r]
    assert len(teachers) + len(students) == len(rows)
    assert {(r["loss"], r["labels"]) for r in students} == {
        (loss, labels) for loss in ("ce", "ce+jml")
        for labels in ("hard", "smooth", "teacher", "semi")}
    # One teacher per label mode that needs one, scored on the test split like the students.
    assert sorted(r["labels"] for r in teachers) == ["semi", "teacher"]
    for row in rows:
        for key in ("miou_dataset", "miou_image", "miou_class", "miou_image_worst"):
            assert 0.0 <= row[key] <= 1.0
        assert row["miou_image_worst"] <= row["miou_image"]
        assert 0.0 <= row["ece_dataset"] <= 100.0
        assert len(row["iou_per_class"]) == 11
    for row in students:
        assert math.isfinite(row["train_loss"])
    # Teachers are trained once per label mode that needs one, and checkpointed.
    names = sorted(p.name for p in (seg_run / "checkpoints").iterdir())
    assert "teacher-s0" in names
    assert "teacher-semi-s0" in names


def test_report_and_figure(seg_run: Path) -> None:
    report = (seg_run / "report.md").read_text()
    assert "| ce+jml | teacher | 1 |" in report
    assert "| teacher | 0 |" in report  # the teachers' own scores
    assert "predictions.png" in report
    figure = (seg_run / "predictions.png").read_bytes()
    assert figure.startswith(PNG_SIGNATURE)
    assert len(figure) > 5000


def test_rerun_resumes(seg_run: Path, capsys: pytest.CaptureFixture) -> None:
    before = (seg_run / "results.jsonl").read_text()
    assert main(["seg", "--quick", "--losses", "ce", "ce+jml", "--labels", "hard", "smooth",
                 "teacher", "semi", "--out", str(seg_run), "--json"]) == 0
    assert (seg_run / "results.jsonl").read_text() == before
    assert len(json.loads(capsys.readouterr().out)) == 10  # 8 students and 2 teachers


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--losses", "ce+lovasz"], "invalid choice"),
        (["--labeled-fraction", "1.0"], "labeled_fraction must be > 0.0 and < 1.0, got 1.0"),
        (["--dataset", "camvid", "--data-root", "/nonexistent/camvid"], "camvid"),
        (["--dataset", "pascal"], "pascal"),
    ],
)
def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture, argv, message) -> None:
    try:
        code = main(["seg", "--quick", "--out", str(tmp_path / "r"), *argv])
    except SystemExit as exit_:  # argparse rejects invalid choices itself
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("seeds", (0, 0), "seeds must not repeat"), ("losses", ("ce", "ce"), "losses must not"),
     ("teacher_epochs", 0, "teacher_epochs must be >= 1"), ("kernel", 2, "kernel must be an odd"),
     ("temperature", -1.0, "temperature must be > 0"),
     ("smoothing", 1.5, "smoothing must be >= 0.0"),
     ("figure_images", -1, "figure_images must be >= 0"), ("seeds", (), "seeds must name")],
)
def test_config_errors_are_raised_at_construction(field, value, message) -> None:
    from softlabels.studies.seg import SegStudyConfig

    with pytest.raises(ValueError, match=message):
        SegStudyConfig(**{field: value})
