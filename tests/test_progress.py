"""Tests of the progress reporter's plain-log mode."""

import pytest

from softlabels import progress as progress_module
from softlabels.progress import progress


def test_plain_log_throttles_and_reports_the_end(capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with progress(500, "train") as bar:  # stderr is not a terminal under pytest
        for _ in range(500):
            bar.advance("loss 0.1")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("[train] 500/500 loss 0.1")
    monkeypatch.setattr(progress_module, "_LOG_EVERY", 0.0)
    with progress(4, "eval", start=2) as bar:
        bar.advance()
        bar.advance()
    assert [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()] == [
        "[eval] 3/4 ", "[eval] 4/4 "]


def test_disabled_prints_nothing(capsys: pytest.CaptureFixture) -> None:
    with progress(3, "train", enabled=False) as bar:
        for _ in range(3):
            bar.advance("x")
    captured = capsys.readouterr()
    assert captured.err == captured.out == ""
