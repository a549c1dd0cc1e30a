"""``softlabels distill``: end to end in --quick mode, resuming, and every bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from softlabels.cli import main
from softlabels.configuration import build_config
from softlabels.distill.grid import Cell
from softlabels.store import LabelMetadata, LabelStore
from softlabels.studies import distill
from softlabels.studies.distill import DistillStudyConfig
from softlabels.studies.registry import run_study
from softlabels.studies.sweep import SweepFailedError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("acc_vs_ipc.png", "expert_epoch.png", "pareto.png", "topk_heatmap.png")

# A sweep of a few seconds: tiny ConvNet, few epochs, digits.
TINY: dict[str, Any] = {
    "model_args": ("width=4", "depth=1"), "expert_epochs": 2, "expert_batch_size": 128,
    "expert_lr": 0.05, "ipc": (1,), "labels": ("hard", "teacher"), "expert_epoch": (1, 2),
    "seeds": (0,), "student_epochs": 4, "eval_every": 2, "student_augment": "none",
    "expert_augment": "none",
}


def _config(tmp_path: Path, **changes: Any) -> DistillStudyConfig:
    return build_config(DistillStudyConfig, TINY, {"out": str(tmp_path / "run"),
                                                   "device": "cpu", **changes})


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def _students(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The student cells' rows (not the experts', their test accuracy or DM images')."""
    return [r for r in rows if r["phase"] in ("select", "test")]


def _run(config: DistillStudyConfig, **options: Any) -> list[dict[str, Any]]:
    """The student rows of a run."""
    return _students(run_study("distill", config, **options).rows)


@pytest.fixture
def quick_run(quick_reproduction: Path) -> Path:
    """``distill --quick``, run once by the session's reproduction."""
    return quick_reproduction / "distill"


def test_quick_writes_every_artifact(quick_run: Path) -> None:
    rows = _students(_rows(quick_run))
    config = DistillStudyConfig(**{**distill.QUICK, "out": str(quick_run)})
    selects = [r for r in rows if r["phase"] == "select" and r["labels"] == "teacher"]
    tests = [r for r in rows if r["phase"] == "test"]
    # One selection cell per (IPC, candidate epoch), scored on the validation split, and one
    # of hard labels per IPC (the baseline the expert's labels must beat).
    assert {(r["ipc"], r["expert_epoch"]) for r in selects} == {
        (i, e) for i in config.ipc for e in config.expert_epoch}
    assert sorted(r["ipc"] for r in rows if r["phase"] == "select"
                  and r["labels"] == "hard") == sorted(config.ipc)
    assert {r["eval_split"] for r in selects} == {"val"}
    assert {r["eval_split"] for r in tests} == {"test"}
    assert {r["backend"] for r in rows} == {"sequential"}  # --student-backend auto on a CPU
    # Every label mode on random images, hard and expert on DM images, at every IPC.
    expected = {("random", mode, ipc) for mode in config.labels for ipc in config.ipc} | {
        ("dm", mode, ipc) for mode in ("hard", "teacher") for ipc in config.ipc}
    assert {(r["images"], r["labels"], r["ipc"]) for r in tests} == expected
    for row in tests:
        assert len(row["best"]) == len(row["final"]) == len(config.seeds)
        assert all(0.0 <= a <= 1.0 for a in row["best"] + row["final"])
        assert all(b >= f for b, f in zip(row["best"], row["final"], strict=True))
        assert row["num_images"] == 10 * row["ipc"]
        assert row["bytes"] > row["num_images"] * 64  # 8x8 uint8 images plus labels
        cell = Cell(**{k: row[k] for k in Cell.__dataclass_fields__})
        store = LabelStore.load(quick_run / "labels" / f"{cell.name()}.safetensors")
        assert store.num_classes == 10
        assert len(store) == row["num_images"]
    # Test cells use the epoch chosen on validation for their IPC.
    for ipc in config.ipc:
        candidates = [r for r in selects if r["ipc"] == ipc]
        chosen = max(candidates, key=lambda r: (r["best_mean"], -r["expert_epoch"]))
        used = {r["expert_epoch"] for r in tests if r["ipc"] == ipc and r["labels"] == "teacher"}
        assert used == {chosen["expert_epoch"]}
    learned = [r for r in tests if r["labels"] == "learned"]
    assert all(set(r["js_to_expert"]) == {str(e) for e in range(config.expert_epochs + 1)}
               for r in learned)
    # The first stages: the expert, its test accuracy at every epoch used, the DM images.
    others = {(r["phase"], r.get("seed", r.get("expert_epoch", r.get("ipc"))))
              for r in _rows(quick_run) if r not in rows}
    assert others == {("expert", 0), *(("expert_test", e) for e in config.expert_epoch),
                      *(("dm", i) for i in config.ipc)}


def test_quick_report_and_figures(quick_run: Path) -> None:
    report = (quick_run / "report.md").read_text()
    for heading in ("## Accuracy by IPC", "## Expert epoch selection", "## Scaling law",
                    "## Pareto frontier", "## DD-Ranking label-robust score",
                    "## Learned labels"):
        assert heading in report
    assert "| random hard |" in report
    for name in FIGURES:
        data = (quick_run / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert len(data) > 5000, name
        assert f"]({name})" in report  # linked under its title
    assert sorted(p.name for p in (quick_run / "dm").iterdir()) == [
        "ipc1.pt", "ipc2.pt", "ipc5.pt"]
    assert sorted(p.name for p in (quick_run / "selection").iterdir()) == [
        "ipc1.json", "ipc2.json", "ipc5.json"]


def test_rerun_redoes_nothing(quick_run: Path, capsys: pytest.CaptureFixture) -> None:
    before = (quick_run / "results.jsonl").read_text()
    labels = {p.name: p.stat().st_mtime_ns for p in (quick_run / "labels").iterdir()}
    assert main(["distill", "--quick", "--out", str(quick_run), "--json"]) == 0
    # No cell retrained: no label store was rewritten.
    assert {p.name: p.stat().st_mtime_ns for p in (quick_run / "labels").iterdir()} == labels
    assert (quick_run / "results.jsonl").read_text() == before
    assert len(json.loads(capsys.readouterr().out)) == len(before.splitlines())


def test_killed_sweep_resumes_without_redoing_cells(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "softlabels.cli", "distill", "--out", str(out), "--device",
            "cpu", "--model-args", "width=4", "depth=1", "--expert-epochs", "1",
            "--expert-augment", "none", "--expert-epoch", "1", "--ipc", "1", "2", "3",
            "--labels", "hard", "teacher", "--seeds", "0", "--student-epochs", "30",
            "--eval-every", "10"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = _rows(out)
    # 8 cells: the expert, its test accuracy, then hard and expert labels at 3 IPCs.
    assert 2 <= len(first) < 8, "the sweep should be killed mid-way"
    assert main(argv[3:]) == 0
    rows = _rows(out)
    assert len(rows) == 8
    assert rows[:len(first)] == first  # finished cells kept as they were, not recomputed
    keys = [(r["ipc"], r["labels"]) for r in _students(rows)]
    assert len(set(keys)) == len(keys) == 6


def test_file_labels_are_checked_against_the_dataset(tmp_path: Path) -> None:
    config = _config(tmp_path, labels=("hard",))
    _run(config, show_progress=False)
    stored = LabelStore.load(next((tmp_path / "run" / "labels").glob("*hard*")))
    # A store covering the selected images works and reproduces the hard cell exactly.
    good = tmp_path / "good.safetensors"
    LabelStore(stored.indices, stored.labels, LabelMetadata(dataset="digits")).save(good, "fp32")
    rows = _run(_config(tmp_path, labels=("file",), label_file=str(good),
                               out=str(tmp_path / "file")), show_progress=False)
    hard = _students(_rows(tmp_path / "run"))[0]
    assert rows[0]["best"] == hard["best"]
    cases = {
        "classes": (LabelStore(stored.indices, torch.full((len(stored), 4), 0.25),
                               LabelMetadata(dataset="digits")), "has 4 classes"),
        "indices": (LabelStore(stored.indices + 1, stored.labels,
                               LabelMetadata(dataset="digits")), "does not cover"),
        "dataset": (LabelStore(stored.indices, stored.labels,
                               LabelMetadata(dataset="cifar10")), "made for dataset"),
    }
    for name, (store, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        store.save(path, "fp32")
        with pytest.raises(ValueError, match=message):
            _run(_config(tmp_path, labels=("file",), label_file=str(path),
                                out=str(tmp_path / name)), show_progress=False)
    corrupt = tmp_path / "corrupt.safetensors"
    data = bytearray(good.read_bytes())
    data[-3] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError,
                       match="is corrupt: its header and tensors do not match the checksum"):
        _run(_config(tmp_path, labels=("file",), label_file=str(corrupt),
                            out=str(tmp_path / "corrupt")), show_progress=False)


def test_index_file_selects_the_images(tmp_path: Path) -> None:
    first = _run(_config(tmp_path, labels=("hard",)), show_progress=False)
    chosen = json.loads((tmp_path / "run" / "selection" / "ipc1.json").read_text())
    pool_indices = LabelStore.load(next((tmp_path / "run" / "labels").glob("*"))).indices
    index_file = tmp_path / "index.json"
    index_file.write_text(json.dumps(pool_indices.tolist()))
    again = _run(_config(tmp_path, labels=("hard",), index_file=str(index_file),
                                out=str(tmp_path / "again")), show_progress=False)
    assert again[0]["best"] == first[0]["best"]
    assert len(chosen if isinstance(chosen, list) else chosen["positions"]) == 10
    index_file.write_text(json.dumps(pool_indices[:5].tolist()))
    with pytest.raises(ValueError, match="images per class; --ipc is 1"):
        _run(_config(tmp_path, labels=("hard",), index_file=str(index_file),
                            out=str(tmp_path / "short")), show_progress=False)


def test_report_covers_every_sweep_in_the_folder(tmp_path: Path) -> None:
    first = _run(_config(tmp_path, labels=("hard",)), show_progress=False)
    second = _run(_config(tmp_path, labels=("hard",), ipc=(2,)), show_progress=False)
    assert [r["ipc"] for r in first] == [1]
    assert [r["ipc"] for r in second] == [2]
    header = next(line for line in (tmp_path / "run" / "report.md").read_text().splitlines()
                  if line.startswith("| images, labels"))
    assert "IPC 1 best" in header
    assert "IPC 2 best" in header


def test_ipc_larger_than_a_class(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ipc=1000 images per class requested but class 0 has"):
        _run(_config(tmp_path, ipc=(1000,)), show_progress=False)


def test_unsaved_expert_epoch_lists_the_saved_ones(tmp_path: Path) -> None:
    _run(_config(tmp_path, expert_epoch=(2,)), show_progress=False)
    (tmp_path / "run" / "experts" / "seed0" / "epoch_0001.pt").unlink()
    with pytest.raises(SweepFailedError,
                       match=r"expert-test-e1: FileNotFoundError: .*saved epochs: \[0, 2\]"):
        _run(_config(tmp_path, expert_epoch=(1, 2)), show_progress=False)


def test_expert_epochs_inside_an_epoch(tmp_path: Path) -> None:
    # Digits' training split at batch 128: 12 steps per epoch, so 4 checkpoints are possible.
    argv = ["distill", "--out", str(tmp_path / "run"), "--device", "cpu",
            "--model-args", "width=4", "depth=1", "--expert-epochs", "2",
            "--expert-batch-size", "128", "--expert-lr", "0.05", "--ipc", "1",
            "--labels", "teacher", "--expert-epoch", "0.25", "0.5", "2.0", "--seeds", "0",
            "--student-epochs", "4", "--eval-every", "2", "--student-augment", "none",
            "--expert-augment", "none", "--expert-checkpoints-per-epoch", "4",
            "--expert-early-epochs", "1"]
    assert main(argv) == 0
    run = tmp_path / "run"
    assert sorted(row["expert_epoch"] for row in _students(_rows(run))) == [0.25, 0.5, 2]
    assert (run / "experts" / "seed0" / "epoch_0000.2500.pt").is_file()
    assert not (run / "experts" / "seed0" / "epoch_0001.5000.pt").exists()  # not an early epoch
    assert "test-random-ipc1-teacher-e2-T1" in {  # whole epochs keep their short names
        Cell(**{k: r[k] for k in Cell.__dataclass_fields__}).name()
        for r in _students(_rows(run))}
    accuracy = {r["expert_epoch"] for r in _rows(run) if r["phase"] == "expert_test"}
    assert accuracy == {0.25, 0.5, 2}


@pytest.mark.parametrize(("changes", "message"), [
    ({"expert_epoch": (0.5,)}, r"expert_epoch \[0.5\] falls inside an epoch.*whole epochs"),
    ({"expert_epoch": (1.5,), "expert_checkpoints_per_epoch": 2, "expert_early_epochs": 1},
     r"keep only \[0.5\]"),
    ({"expert_checkpoints_per_epoch": 0}, "expert_checkpoints_per_epoch must be >= 1"),
    ({"expert_early_epochs": -1}, "expert_early_epochs must be >= 0"),
])
def test_bad_fractional_expert_epochs(tmp_path: Path, changes: dict[str, Any],
                                      message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **changes)


@pytest.mark.parametrize(("changes", "message"), [
    ({"ipc": ()}, "ipc must name at least one value"),
    ({"labels": ()}, "labels must name at least one"),
    ({"seeds": ()}, "seeds must name at least one value"),
    ({"temperature": ()}, "temperature must name at least one value"),
    ({"ipc": (0,)}, "ipc must be >= 1, got 0"),
    ({"ipc": (1, 1)}, "must not repeat"),
    ({"expert_epoch": (3,)}, r"expert_epoch values must lie in \[0, expert_epochs=2\]"),
    ({"temperature": (0.0,)}, "temperature must be > 0.0, got 0.0"),
    ({"labels": ("swap",), "k": (0,)}, "swap needs k >= 1"),
    ({"labels": ("file",)}, "needs --label-file"),
    ({"index_file": "x.json", "ipc": (1, 2)}, "give the single ipc"),
    ({"val_fraction": 1.0}, r"val_fraction must be > 0.0 and < 1.0, got 1.0"),
    ({"images": ("synthetic",)}, "images"),
])
def test_bad_config(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **changes)


def test_cli_reports_bad_input_as_an_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    assert main(["distill", "--quick", "--ipc", "500", "--out", str(tmp_path / "big")]) == 2
    assert "images" in capsys.readouterr().err


def test_k_above_the_class_count_is_refused_before_any_cell(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture
                                                            ) -> None:
    assert main(["distill", "--quick", "--k", "1", "11", "--out", str(tmp_path)]) == 2
    assert "k must be at most the 10 classes of digits" in capsys.readouterr().err
    assert not (tmp_path / "results.jsonl").exists()
    assert not (tmp_path / "experts").exists()  # no expert trained
