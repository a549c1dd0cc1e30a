"""``softlabels reproduce``: the three quick studies end to end, one report, failures kept apart."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from softlabels.cli import main
from softlabels.studies import reproduce
from softlabels.studies.claims import CLAIMS, VERDICTS
from softlabels.studies.registry import STUDIES
from softlabels.studies.reproduce import ReproduceConfig, StudyFailedError
from softlabels.studies.sweep import Cell, Stage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def quick_run(quick_reproduction: Path) -> Path:
    return quick_reproduction


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


def _studies_table(report: str) -> list[str]:
    part = report.split("## The studies in this run", 1)[1].split("\n## ", 1)[0]
    return [line for line in part.splitlines() if line.startswith("| ")]


def test_rerun_resumes(quick_run: Path) -> None:
    results = {p: p.read_bytes() for p in quick_run.glob("*/results.jsonl")}
    checkpoints = {p: p.stat().st_mtime_ns for p in quick_run.rglob("*.pt")}
    before = _studies_table((quick_run / "report.md").read_text())
    assert main(["reproduce", "--out", str(quick_run)]) == 0
    assert {p: p.read_bytes() for p in quick_run.glob("*/results.jsonl")} == results
    assert {p: p.stat().st_mtime_ns for p in quick_run.rglob("*.pt")} == checkpoints
    # The resumed report keeps the cells' own wall times, not the seconds the resume took.
    after = _studies_table((quick_run / "report.md").read_text())
    assert after == before
    seconds = [float(re.search(r"\| (\d+) s \|", line).group(1)) for line in after[1:]]
    assert all(s > 0 for s in seconds), after


def _claims_rows(report: str) -> list[list[str]]:
    part = report.split("## What reproduced", 1)[1].split("\n\n")
    table = next(p for p in part if p.startswith("| study | claim |"))
    return [[cell.strip() for cell in line.strip("|").split(" | ")]
            for line in table.splitlines()[2:]]


def test_the_report_opens_with_the_claims_table(quick_run: Path) -> None:
    report = (quick_run / "report.md").read_text()
    assert report.index("## What reproduced") < report.index("## distill")
    header = report.split("## What reproduced", 1)[1].split("| claim |", 1)[1].split("\n")[0]
    assert "verdict" in header
    assert "paper" in header
    assert "ours (committed full runs)" in header
    assert "smoke test on embedded data" in header
    rows = _claims_rows(report)
    assert len(rows) == len(CLAIMS)
    for row, claim in zip(rows, CLAIMS, strict=True):
        study, claim_text, _paper, ours, verdict, _quick = row
        assert (study, claim_text) == (claim.study, claim.text)
        assert verdict.strip("*") in VERDICTS
        assert re.search(r"\d", ours), row  # committed numbers, never n/a
    quick = {claim.key: row[5] for claim, row in zip(CLAIMS, rows, strict=True)}
    # The quick run measures what its cells allow (it has no IPC 10 or 50, no AutoAttack).
    assert quick["distill-soft-beats-hard"].startswith("IPC 1: teacher ")
    assert quick["robust-trades-teacher"] == "n/a"
    for term in ("**mIoU^D**", "**mIoU^I**", "**mIoU^C**", "**NSD**"):
        assert term in report


_PROBE = """<script>
window.addEventListener("load", () => {
  const body = document.body, images = Array.from(document.images);
  body.dataset.images = images.length;
  body.dataset.loaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  const claims = Array.from(document.querySelectorAll("table")).find(
    t => t.querySelectorAll("th").length > 1
         && t.querySelectorAll("th")[1].textContent.trim() === "claim");
  body.dataset.claims = claims ? claims.querySelectorAll("tbody tr").length : -1;
  body.dataset.claimsAlign = claims ? getComputedStyle(claims.querySelector("td")).textAlign
                                    : "";
  const details = Array.from(document.querySelectorAll("details"));
  body.dataset.details = details.length;
  body.dataset.open = details.filter(d => d.open).length;
  body.dataset.configs = details.filter(d => d.querySelector("pre")).length;
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    pytest.skip("no chromium on this machine (apt-get install chromium; .ci/run installs it)")


def test_report_html_renders_in_a_real_browser(quick_run: Path, tmp_path: Path) -> None:
    browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    page = quick_run / "report.html"
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    dom = subprocess.run([*browser, "--virtual-time-budget=10000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=180,
                         check=True).stdout
    found = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', dom.split("<body", 1)[1][:2000]))
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (quick_run / "report.md").read_text())
    assert int(found["images"]) == len(links) > 0
    assert found["loaded"] == found["images"]  # every figure decoded and drawn
    assert int(found["claims"]) == len(CLAIMS)
    assert found["claims-align"] == "left"  # text columns read left-aligned
    assert int(found["configs"]) == 3  # one collapsed config per study
    assert found["open"] == "0"
    screenshot = quick_run / "report.png"
    subprocess.run([*browser, f"--screenshot={screenshot}", "--window-size=1200,3000",
                    page.as_uri()], capture_output=True, timeout=180, check=True)
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)
    print(f"screenshot of report.html: {screenshot}")


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


def test_overwrite_moves_a_previous_reproduction_aside(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def plan(config: Any, rows: Any) -> list[Stage]:
        return [Stage("students", (Cell({"method": "rslad", "seed": 0}, "rslad-s0"),))]

    def cell(config: Any, cell: Cell, folder: Path, **_: Any) -> dict[str, Any]:
        score = {"accuracy": 0.5, "worst_class_accuracy": 0.25, "nsd": 0.1}
        return {"scores": {"pgd5": score}, "seconds": 2.0}

    def report(config: Any, folder: Path, rows: Any, figures: bool) -> None:
        (folder / "report.md").write_text("# Robust\n")

    monkeypatch.setitem(STUDIES, "robust", dataclasses.replace(
        STUDIES["robust"], plan=plan, run_cell=cell, report=report))
    out = tmp_path / "reproduce"
    (out / "robust").mkdir(parents=True)
    (out / "robust" / "config.json").write_text('{"config": {"lr": 1}}')  # another config
    (out / "summary.json").write_text("[]")
    config = ReproduceConfig(studies=("robust",), out=str(out))
    reproduce.run(config, show_progress=False, overwrite=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("reproduce.replaced-")]
    assert len(aside) == 1
    assert (aside[0] / "robust" / "config.json").read_text() == '{"config": {"lr": 1}}'
    assert json.loads((out / "summary.json").read_text())[0]["cell_seconds"] == 2.0


def test_an_output_path_that_is_a_file_is_refused(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["reproduce", "--out", str(tmp_path / "notes.txt")]) == 2
    assert "is an existing file; choose a folder with --out" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_data_root_without_full_is_refused_not_ignored(capsys: pytest.CaptureFixture) -> None:
    assert main(["reproduce", "--data-root", "/nowhere"]) == 2
    assert "--data-root is read by --full only" in capsys.readouterr().err
