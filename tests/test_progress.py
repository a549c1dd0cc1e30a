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


def _render(width: int) -> list[str]:
    """The live display of a sweep's bar and two cells' bars on a terminal of ``width``."""
    import io
    import re

    from rich.console import Console
    from rich.progress import Progress

    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    with Progress(*progress_module._columns(), console=console, auto_refresh=False,
                  expand=True) as bar:
        bar.add_task(progress_module._label("", "distill cells"), total=120, completed=7,
                     status="running test-random-ipc10-topk-e20-T1-k3, test-dm-ipc1-hard")
        bar.add_task(progress_module._label("test-random-ipc10-topk-e20-T1-k3",
                                            "3 students (vectorised)"),
                     total=3000, completed=1234, status="loss 0.1234 acc 0.5678")
        bar.add_task(progress_module._label("x" * 30 + "-the-end-of-a-long-cell-name", "train"),
                     total=30, status="loss 0.1")
        bar.refresh()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).replace("\r", "\n")
    return [line for line in text.split("\n") if line.strip()][-3:]


def test_bars_name_their_cell_and_fit_80_columns() -> None:
    lines = _render(80)
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].startswith("distill cells")
    assert lines[1].startswith("test-random-ipc10-topk-e20-T1-k3 ")  # the whole cell name
    assert "1234/3000" in lines[1]
    assert "eta" in lines[1]
    # A name longer than the label column keeps both ends, which tell cells apart.
    assert lines[2].startswith("xxxx")
    assert "…" in lines[2]
    assert "cell-name" in lines[2]
    wide = _render(120)
    assert "loss 0.1234 acc 0.5678" in wide[1]  # a wider terminal shows more status
