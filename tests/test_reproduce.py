"""``softlabels reproduce``: the three quick studies end to end, one report, failures kept apart."""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from softlabels.cli import main
from softlabels.studies import reproduce
from softlabels.studies.registry import STUDIES
from softlabels.studies.reproduce import ReproduceConfig, StudyFailedError
from softlabels.studies.sweep import Cell, Stage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reproduce")
    assert main(["reproduce", "--out", str(out), "--device", "cpu"]) == 0
    return out


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")
        self.tables += tag == "table"


def test_every_study_ran_and_reported_numbers(quick_run: Path) -> None:
    summary = json.loads((quick_run / "summary.json").read_text())
    assert [s["study"] for s in summary] == ["distill", "seg", "robust"]
    assert all(s["status"] == "ok" and s["headline"] for s in summary)
    report = (quick_run / "report.md").read_text()
    for study, row_start in (("distill", "| random hard |"), ("seg", "| ce+jml | hard |"),
                             ("robust", "| absld |")):
        assert f"## {study}" in report
        row = next(line for line in report.splitlines() if line.startswith(row_start))
        numbers = re.findall(r"\d+\.\d+", row)
        assert len(numbers) >= 3, row


def test_every_figure_is_a_png_and_the_html_embeds_them(quick_run: Path) -> None:
    report = (quick_run / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {link.split("/")[0] for link in links} == {"distill", "seg", "robust"}
    for link in links:
        assert (quick_run / link).read_bytes().startswith(PNG_SIGNATURE), link
    parser = _Images()
    parser.feed((quick_run / "report.html").read_text())
    assert len(parser.sources) == len(links)
    assert all(src.startswith("data:image/png;base64,") for src in parser.sources)
    assert parser.tables >= 4


def test_rerun_resumes(quick_run: Path) -> None:
    results = {p: p.read_bytes() for p in quick_run.glob("*/results.jsonl")}
    checkpoints = {p: p.stat().st_mtime_ns for p in quick_run.rglob("*.pt")}
    assert main(["reproduce", "--out", str(quick_run)]) == 0
    assert {p: p.read_bytes() for p in quick_run.glob("*/results.jsonl")} == results
    assert {p: p.stat().st_mtime_ns for p in quick_run.rglob("*.pt")} == checkpoints


def test_full_names_the_missing_datasets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    assert main(["reproduce", "--full", "--data-root", str(tmp_path / "data"),
                 "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "cifar10 (needed by distill)" in error
    assert "camvid (needed by seg)" in error
    assert "mnist" not in error.replace(str(tmp_path), "")
    assert not (tmp_path / "out").exists()


def test_full_needs_a_data_root() -> None:
    with pytest.raises(ValueError, match="--full needs --data-root"):
        ReproduceConfig(full=True)


def test_a_failing_study_leaves_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    def plan(config: Any, rows: Any) -> list[Stage]:
        return [Stage("students", (Cell({"method": "rslad", "seed": 0}, "rslad-s0"),))]

    def good(config: Any, cell: Cell, folder: Path, **_: Any) -> dict[str, Any]:
        return {"scores": {"pgd5": {"accuracy": 0.5, "worst_class_accuracy": 0.25, "nsd": 0.1}}}

    def report(config: Any, folder: Path, rows: Any, figures: bool) -> None:
        (folder / "report.md").write_text("# Robust\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")

    def bad(config: Any, cell: Cell, folder: Path, **_: Any) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(STUDIES, "robust", dataclasses.replace(
        STUDIES["robust"], plan=plan, run_cell=good, report=report))
    monkeypatch.setitem(STUDIES, "seg", dataclasses.replace(STUDIES["seg"], run_cell=bad))
    config = ReproduceConfig(studies=("seg", "robust"), out=str(tmp_path))
    with pytest.raises(StudyFailedError, match=r"study 'seg' failed: .*RuntimeError: disk on fire"):
        reproduce.run(config, show_progress=False)
    summary = {s["study"]: s for s in json.loads((tmp_path / "summary.json").read_text())}
    assert summary["seg"]["status"] == "failed"
    assert summary["robust"]["status"] == "ok"
    report_text = (tmp_path / "report.md").read_text()
    assert "**Failed**: `SweepFailedError: " in report_text
    assert "RuntimeError: disk on fire" in report_text
    assert "### Robust" in report_text  # the study's own report, its headings two levels down
