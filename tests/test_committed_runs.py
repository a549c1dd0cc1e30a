"""The committed full runs (docs/runs): their reports rebuild with the numbers of
docs/results.md, and the claims table ships their numbers inside the package."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from softlabels.cli import main
from softlabels.studies.claims import CLAIMS, RUNS, VERDICTS, committed, committed_values

ROOT = Path(__file__).resolve().parents[1]
RESULTS = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")


def _report(name: str, study: str, tmp_path: Path) -> str:
    folder = tmp_path / name
    shutil.copytree(ROOT / "docs" / "runs" / name, folder)
    assert main(["report", "--study", study, str(folder)]) == 0
    return (folder / "report.md").read_text(encoding="utf-8")


def test_the_camvid_report_has_every_row_of_the_results_page(tmp_path: Path) -> None:
    report = _report("camvid", "seg", tmp_path)
    table = RESULTS.split("| loss | labels | seeds |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert len(rows) == 9
    for row in rows:
        assert row in report, row


@pytest.mark.parametrize(("name", "expected"), [
    # (images, labels): IPC 1, 10 and 50 as docs/results.md gives them, best / final.
    ("distill-cifar10", ["| random hard | 14.4 ± 1.1 / 14.3 ± 1.1 | 30.0 ± 0.6 / 30.0 ± 0.6 | "
                         "45.2 ± 0.7 / 45.2 ± 0.7 |",
                         "| random teacher | 19.2 ± 0.5 / 19.1 ± 0.5 (e2) | 39.7 ± 1.2 / "
                         "39.6 ± 1.3 (e5) | 53.4 ± 0.4 / 53.4 ± 0.4 (e20) |",
                         "| dm hard | 17.2 ± 0.9 / 17.1 ± 1.0 | 37.0 ± 0.6 / 37.0 ± 0.6 | "
                         "51.9 ± 0.7 / 51.9 ± 0.7 |",
                         "| 1 | 2 | 19.4 ± 0.4 | yes |", "| 50 | 20 | 54.0 ± 0.6 | yes |"]),
    ("distill-cifar10-early", ["| random teacher | 19.2 ± 0.4 / 19.2 ± 0.4 (e2) |",
                               "| 1 | 2 | 19.6 ± 0.3 | yes |"]),
])
def test_the_distill_reports_keep_their_numbers(name: str, expected: list[str],
                                                tmp_path: Path) -> None:
    report = _report(name, "distill", tmp_path)
    for line in expected:
        assert line in report, line
    assert "<details" in report  # the config block is collapsed


def test_the_robust_report_keeps_its_numbers(tmp_path: Path) -> None:
    report = _report("robust-mnist", "robust", tmp_path)
    # PGD-20 average / worst class / NSD of docs/results.md, each mean ± std over seeds.
    for method, pgd in (("rslad", "49.8 ± 2.4 | 29.4 ± 1.1 | 0.345 ± 0.031"),
                        ("absld", "42.9 ± 2.8 | 21.7 ± 9.7 | 0.367 ± 0.111"),
                        ("ard", "51.9 ± 1.5 | 14.4 ± 0.5 | 0.416 ± 0.006")):
        row = next(line for line in report.splitlines() if line.startswith(f"| {method} |"))
        assert pgd in row, row
    assert "**NSD**: normalized standard deviation" in report


def test_the_shipped_claims_match_the_committed_runs() -> None:
    shipped, measured = committed(), committed_values(ROOT / "docs" / "runs")
    assert set(shipped) == set(measured) == {c.key for c in CLAIMS}
    for key, groups in measured.items():
        assert set(shipped[key]) == set(groups), key
        for group, values in groups.items():
            assert shipped[key][group] == pytest.approx(values, abs=1e-5), (key, group)


def test_the_claims_carry_the_numbers_of_the_results_page() -> None:
    values = committed()
    soft = values["distill-soft-beats-hard"]
    assert round(soft["IPC 1"]["teacher"], 1) == 19.2
    assert round(soft["IPC 1"]["hard"], 1) == 14.4
    assert round(soft["IPC 50"]["teacher"], 1) == 53.4
    assert {g: v["epoch"] for g, v in values["distill-epoch-grows"].items()} == {
        "IPC 1": 2, "IPC 10": 5, "IPC 50": 20}
    assert round(values["seg-jml-beats-ce"]["mIoU^D"]["CE + JML"], 2) == 30.40
    assert round(values["seg-jml-beats-ce"]["mIoU^D"]["CE"], 2) == 27.75
    fair = values["robust-absld-fairer"]
    assert round(fair["Worst (pgd20)"]["absld"], 1) == 21.7
    assert round(fair["NSD (pgd20)"]["rslad"], 3) == 0.345
    assert round(values["robust-trades-teacher"]["AutoAttack, 100 images"]["accuracy"],
                 1) == 29.0


def test_every_claim_has_a_verdict_and_a_committed_run() -> None:
    for claim in CLAIMS:
        assert claim.verdict in VERDICTS, claim.key
        assert claim.study in RUNS, claim.key
        assert committed()[claim.key], f"{claim.key}: no committed number"


def test_the_committed_numbers_and_the_type_hints_install() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    data = project["tool"]["setuptools"]["package-data"]["softlabels"]
    assert "studies/claims_committed.json" in data
    assert "py.typed" in data
    assert (ROOT / "src" / "softlabels" / "py.typed").is_file()
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
