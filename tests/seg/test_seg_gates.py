"""The seg study's checks: classes at IoU 0, the sanity gate, the teachers' margins."""

from __future__ import annotations

import shutil
from pathlib import Path

from softlabels.cli import main
from softlabels.studies import seg
from softlabels.studies.run_folder import read_rows
from softlabels.studies.seg_gates import (
    margin_verdicts,
    sanity_gate,
    teacher_margins,
    zero_classes,
)

RUNS = Path(__file__).resolve().parents[2] / "docs" / "runs"


def _student(seed: int, miou: float, loss: str = "ce", labels: str = "hard",
             zeros: tuple[int, ...] = ()) -> dict:
    ious = [0.0 if c in zeros else 0.5 for c in range(11)]
    return {"loss": loss, "labels": labels, "seed": seed, "miou_dataset": miou,
            "iou_per_class": ious}


def test_the_gate_passes_when_every_class_is_learned_and_seeds_agree() -> None:
    gate = sanity_gate("camvid", [_student(s, m) for s, m in enumerate((0.500, 0.505, 0.51))])
    assert gate.passed
    assert gate.seeds == 3
    assert gate.std is not None
    assert abs(gate.std - 0.5) < 1e-9
    assert gate.line().startswith("PASS: CE + hard labels, 3 seed(s), mIoU^D 50.50 (std 0.50")


def test_the_gate_fails_on_a_class_at_zero_on_a_noisy_std_and_on_one_seed() -> None:
    missing = sanity_gate("camvid", [_student(0, 0.5), _student(1, 0.5, zeros=(2, 9))])
    assert not missing.passed
    assert missing.zeros == {1: ["pole", "pedestrian"]}
    assert "seed 1: pole, pedestrian" in missing.line()
    noisy = sanity_gate("camvid", [_student(0, 0.40), _student(1, 0.43)])
    assert not noisy.passed
    assert "seed std 2.12 > 1" in noisy.line()
    assert "one seed" in sanity_gate("camvid", [_student(0, 0.5)]).reason
    # Other students do not count; none at all is "not checked", not a verdict.
    absent = sanity_gate("camvid", [_student(0, 0.5, loss="ce+jml")])
    assert (absent.passed, absent.line()) == (
        False, "not checked: no CE + hard-label students in this run")


def test_zero_classes_are_grouped_by_cell_and_named() -> None:
    rows = [_student(0, 0.5, zeros=(2,)), _student(1, 0.5, zeros=(2, 3)),
            {**_student(0, 0.5, "ce+jml", "smooth", zeros=(10,)), "smoothing": 0.25}]
    assert zero_classes("camvid", rows) == {
        ("ce", "hard", None): {"pole": [0, 1], "road": [1]},
        ("ce+jml", "smooth", 0.25): {"bicyclist": [0]}}
    assert zero_classes("own", [_student(0, 0.5, zeros=(4,))]) == {
        ("ce", "hard", None): {"class 4": [0]}}


def test_the_teacher_margin_is_per_seed_against_every_hard_student() -> None:
    rows = [{"phase": "teacher", "labels": "teacher", "seed": 0, "miou_dataset": 0.40},
            {"phase": "teacher", "labels": "teacher", "seed": 1, "miou_dataset": 0.45},
            {"phase": "teacher", "labels": "semi", "seed": 0, "miou_dataset": 0.90},
            _student(0, 0.30), _student(0, 0.36, "ce+jml"), _student(1, 0.38, "ce+jml"),
            _student(0, 0.10, "ce+jml", "teacher")]
    margins = teacher_margins(rows)
    assert [(m.seed, m.loss, round(m.margin, 6), m.holds) for m in margins] == [
        (0, "ce", 10.0, True), (0, "ce+jml", 4.0, False), (1, "ce+jml", 7.0, True)]
    assert margin_verdicts(margins) == {0: False, 1: True}


def test_the_committed_camvid_run_fails_the_gate(tmp_path: Path) -> None:
    folder = tmp_path / "camvid"
    shutil.copytree(RUNS / "camvid", folder)
    assert main(["report", "--study", "seg", str(folder)]) == 0
    report = (folder / "report.md").read_text()
    gate = next(line for line in report.splitlines() if line.startswith("**Sanity gate**"))
    assert "FAIL: CE + hard labels, 3 seed(s), mIoU^D 27.75 (std 2.16, limit 1)" in gate
    assert "seed 0: pole, sign/symbol, fence, pedestrian, bicyclist" in gate
    assert "| ce | hard | 88." in report  # the per-class table starts with sky
    assert report.count("**0 in 3/3**") >= 5 * 9  # five classes never learned, in every cell
    config = seg.SegStudyConfig(dataset="camvid")
    notes = seg.summary(config, read_rows(seg.SegStudyConfig, folder))[0].notes
    assert "IoU 0 on test: ce hard: pole (seed 0, 1, 2), sign/symbol (seed 0, 1, 2)" in notes[1]
    assert any(n.startswith("sanity gate: FAIL") for n in notes)
