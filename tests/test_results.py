"""Tests of ResultsLog: resumable sweeps never lose or damage finished rows."""

import json
from pathlib import Path

import pytest

from softlabels.results import ResultsLog


def test_append_and_resume(tmp_path: Path) -> None:
    log = ResultsLog(tmp_path / "results.jsonl", key_fields=("ipc", "seed"))
    assert log.rows() == []
    log.append({"ipc": 1, "seed": 0, "acc": 0.5})
    log.append({"ipc": 10, "seed": 0, "acc": 0.7})
    again = ResultsLog(tmp_path / "results.jsonl", key_fields=("ipc", "seed"))
    assert [r["acc"] for r in again.rows()] == [0.5, 0.7]
    assert again.done() == {again.key({"ipc": 1, "seed": 0}), again.key({"ipc": 10, "seed": 0})}


def test_torn_last_line_from_a_killed_run_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path, key_fields=("cell",))
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
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        ResultsLog(path, key_fields=("cell",)).rows()
    assert path.read_text() == '{"cell": "a"}\nnot json\n{"cell": "c"}\n'


def test_rows_must_carry_key_fields(tmp_path: Path) -> None:
    log = ResultsLog(tmp_path / "r.jsonl", key_fields=("cell", "seed"))
    with pytest.raises(ValueError, match=r"lacks key fields \['seed'\]"):
        log.append({"cell": "a"})
    assert not (tmp_path / "r.jsonl").exists()
    with pytest.raises(ValueError, match="at least one field"):
        ResultsLog(tmp_path / "r.jsonl", key_fields=())
