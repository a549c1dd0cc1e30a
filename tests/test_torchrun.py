"""``torchrun -m softlabels <study>``: two gloo ranks write what one process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from softlabels.cli import main

ARGS = ["train", "--labels", "hard", "smooth", "--seeds", "0", "--ipc", "5", "--epochs", "30",
        "--model-args", "width=8", "depth=1", "--device", "cpu", "--cell-cpus", "1"]


def _rows(folder: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (folder / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_ranks_write_the_rows_of_one_process_once(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "softlabels", *ARGS, "--out",
               str(tmp_path / "ranks")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert main([*ARGS, "--out", str(tmp_path / "one")]) == 0
    assert _rows(tmp_path / "ranks") == _rows(tmp_path / "one")  # two rows, written once
    assert sorted(p.name for p in (tmp_path / "ranks" / "checkpoints").iterdir()) == [
        "hard-s0", "smooth-s0"]


def test_other_executors_are_refused_under_torchrun(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    from softlabels import distributed

    monkeypatch.setattr("softlabels.studies.sweep.init_from_environment",
                        lambda device: distributed.World(0, 2, "gloo"))
    assert main([*ARGS, "--executor", "processes", "--out", str(tmp_path)]) == 2
    assert "under torchrun the ranks share each cell: use --executor serial" in \
        capsys.readouterr().err
