"""SIGKILL of the driver at a moment inside a cell, then a rerun: exactly the rows of an
uninterrupted run, for every study (timing fields aside)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from softlabels.cli import main
from softlabels.results import ResultsLog

# Tiny sweeps of a few seconds each, with a first stage (teacher or expert) and several cells.
SWEEPS: dict[str, list[str]] = {
    "train": ["--labels", "hard", "teacher", "--seeds", "0", "1", "--ipc", "3",
              "--epochs", "30", "--teacher-epochs", "4", "--model-args", "width=8", "depth=1",
              "--teacher-args", "width=8", "depth=1"],
    "seg": ["--labels", "hard", "teacher", "--losses", "ce", "ce+jml", "--epochs", "3",
            "--teacher-epochs", "2", "--model-args", "base_width=4", "--teacher-args",
            "base_width=4", "--figure-images", "0", "--batch-size", "32"],
    "robust": ["--quick", "--methods", "rslad", "absld", "--seeds", "0", "--epochs", "4",
               "--teacher-epochs", "3", "--select-every", "2"],
    "distill": ["--model-args", "width=4", "depth=1", "--expert-epochs", "3",
                "--expert-augment", "none", "--expert-epoch", "1", "3", "--select-epoch",
                "--ipc", "1", "2", "--labels", "hard", "teacher", "--seeds", "0",
                "--student-epochs", "100", "--eval-every", "50", "--images", "random", "dm",
                "--dm-iterations", "30"],
}


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "seconds"}
            for row in ResultsLog(folder / "results.jsonl").rows()]


def _inside_a_cell(folder: Path, since: float, study: str) -> bool:
    """A row is written and a later cell has saved a training checkpoint since then: the
    driver is in the middle of that cell. Distillation students keep no checkpoint (they
    restart), so there the moment is just after the sixth row."""
    rows = folder / "results.jsonl"
    if not rows.exists() or not rows.read_text().strip():
        return False
    if study == "distill":
        return len(rows.read_text().splitlines()) >= 6
    written = rows.stat().st_mtime
    return any(p.stat().st_mtime > max(written, since) for p in folder.rglob("*.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("study", list(SWEEPS))
def test_a_killed_driver_resumes_to_the_rows_of_an_uninterrupted_run(tmp_path: Path,
                                                                      study: str) -> None:
    argv = [study, *SWEEPS[study], "--device", "cpu", "--cell-cpus", "1"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    whole = _rows(tmp_path / "whole")

    killed = tmp_path / "killed"
    began = time.time()
    process = subprocess.Popen([sys.executable, "-m", "softlabels.cli", *argv, "--out",
                                str(killed)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if _inside_a_cell(killed, began, study):
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = _rows(killed)
    assert 1 <= len(partial) < len(whole), "the driver should be killed inside a later cell"

    assert main([*argv, "--out", str(killed)]) == 0
    assert _rows(killed)[:len(partial)] == partial  # finished rows kept as they were
    assert _rows(killed) == whole
