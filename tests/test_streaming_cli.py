"""``--stream``: a study trains on a folder read image by image, as it would from memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from softlabels.cli import main


def _tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 3)):
        for name in ("cat", "dog", "owl"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    folder / f"{i}.png")


def _rows(folder: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (folder / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_streamed_folder_gives_the_rows_of_the_decoded_one(tmp_path: Path) -> None:
    _tree(tmp_path / "data")
    argv = ["train", "--dataset", "imagefolder", "--data-root", str(tmp_path / "data"),
            "--labels", "hard", "teacher", "--ipc", "2", "--epochs", "3", "--teacher-epochs",
            "2", "--model-args", "width=4", "depth=1", "--teacher-args", "width=4", "depth=1",
            "--device", "cpu", "--cell-cpus", "1"]
    assert main([*argv, "--out", str(tmp_path / "memory")]) == 0
    assert main([*argv, "--stream", "--data-workers", "1", "--out",
                 str(tmp_path / "streamed")]) == 0
    assert _rows(tmp_path / "streamed") == _rows(tmp_path / "memory")


def test_studies_that_hold_their_data_refuse_stream(capsys: pytest.CaptureFixture) -> None:
    assert main(["distill", "--quick", "--stream"]) == 2
    assert "--stream is not available here: distillation" in capsys.readouterr().err
    assert main(["seg", "--quick", "--stream", "--labels", "semi"]) == 2
    assert "label mode semi rewrites the training masks" in capsys.readouterr().err
