"""Tests of ResultsLog: resumable sweeps never lose or damage finished rows."""

import json
from pathlib import Path

import pytest

from softlabels.results import ResultsLog, json_safe


def test_append_and_resume(tmp_path: Path) -> None:
    log = ResultsLog(tmp_path / "results.jsonl")
    assert log.rows() == []
    assert log.append({"ipc": 1, "seed": 0, "acc": 0.5, "k": (1, 2)}) == {
        "ipc": 1, "seed": 0, "acc": 0.5, "k": [1, 2]}  # as it reads back
    log.append({"ipc": 10, "seed": 0, "acc": 0.7})
    again = ResultsLog(tmp_path / "results.jsonl")
    assert [r["acc"] for r in again.rows()] == [0.5, 0.7]


def test_torn_last_line_from_a_killed_run_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path)
    log.append({"cell": "a", "v": 1})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"cell": "b", "v"')  # killed mid-write
    assert log.rows() == [{"cell": "a", "v": 1}]
    log.append({"cell": "b", "v": 2})
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"cell": "a", "v": 1}, {"cell": "b", "v": 2}]


def test_corruption_in_the_middle_is_an_error_not_a_silent_loss(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"cell": "a"}\nnot json\n{"cell": "c"}\n')
    with pytest.raises(ValueError, match=r"results\.jsonl. line 2 is not valid JSON"):
        ResultsLog(path).rows()
    assert path.read_text() == '{"cell": "a"}\nnot json\n{"cell": "c"}\n'


def test_a_line_that_is_not_an_object_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"cell": "a"}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2 is a JSON list, not an object"):
        ResultsLog(path).rows()


def test_a_file_that_is_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"cell": "a"}\n{"cell": "\xff\xfe"}\n')
    with pytest.raises(ValueError, match=r"results.jsonl' line 2 is not UTF-8"):
        ResultsLog(path).rows()


def test_rows_must_be_dicts_of_json_values(tmp_path: Path) -> None:
    log = ResultsLog(tmp_path / "r.jsonl")
    with pytest.raises(TypeError, match="must be a dict"):
        log.append([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not JSON serializable"):
        log.append({"cell": object()})
    assert not (tmp_path / "r.jsonl").exists()


def test_json_safe_turns_non_finite_numbers_into_null() -> None:
    assert json_safe({"a": [float("nan"), 1.0], "b": (float("inf"),)}) == {"a": [None, 1.0],
                                                                           "b": [None]}
