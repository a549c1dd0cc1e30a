"""The sweep driver and its executors: same rows everywhere, retries, failures, bad input."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from softlabels.cli import main
from softlabels.results import ResultsLog
from softlabels.studies.executors import (
    ExecutorConfig,
    ExecutorUnavailableError,
    runtime_env,
)
from softlabels.studies.registry import STUDIES, register_study, run_study
from softlabels.studies.sweep import SweepFailedError, run_sweep
from softlabels.studies.train import TrainStudyConfig

sys.path.insert(0, str(Path(__file__).parent))
import sweep_fixture_study as fixture

_NO_RAY = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                             reason="ray is not installed (pip install 'softlabels[ray]')")
EXECUTORS = [pytest.param(ExecutorConfig(cell_cpus=1), id="serial"),
             pytest.param(ExecutorConfig(executor="processes", workers=2, cell_cpus=1),
                          id="processes"),
             pytest.param(ExecutorConfig(executor="ray", cell_cpus=1), id="ray",
                          marks=_NO_RAY)]


def _rows(folder: Path) -> list[dict[str, Any]]:
    return ResultsLog(folder / "results.jsonl").rows()


def _without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in rows),
                  key=lambda r: json.dumps(r, sort_keys=True))


def _attempts(folder: Path) -> list[str]:
    return [line.split()[0] for line in (folder / "attempts.log").read_text().splitlines()]


@pytest.fixture(autouse=True, scope="module")
def _registered() -> Iterator[None]:
    """The fixture study is known, and one local Ray session serves every Ray test (the
    executor uses a session the process opened, so the cluster starts once)."""
    register_study(fixture.STUDY)
    ray = None if importlib.util.find_spec("ray") is None else importlib.import_module("ray")
    if ray is not None:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False, runtime_env=runtime_env(sys.path))
    yield
    if ray is not None:
        ray.shutdown()
    STUDIES.pop("fixture", None)


TINY_TRAIN = {"labels": ("hard", "smooth"), "seeds": (0, 1), "ipc": 2,
              "epochs": 2, "model_args": ("width=8", "depth=1")}


@_NO_RAY
def test_a_tiny_digits_sweep_gives_the_same_rows_on_every_executor(tmp_path: Path) -> None:
    results = {}
    for param in EXECUTORS:
        name, executor = param.id, param.values[0]
        out = tmp_path / name
        run_study("train", executor=executor, show_progress=False, out=str(out),
                  device="cpu", **TINY_TRAIN)
        results[name] = _without_timing(_rows(out))
    assert len(results["serial"]) == 4
    assert results["processes"] == results["serial"]
    assert results["ray"] == results["serial"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_cell_that_fails_once_is_retried_and_succeeds(tmp_path: Path,
                                                        executor: ExecutorConfig) -> None:
    (tmp_path / "fail-base-1.once").write_text("")
    retrying = ExecutorConfig(**{**executor.__dict__, "retries": 1})
    results = run_study("fixture", executor=retrying, show_progress=False, out=str(tmp_path))
    assert [r["i"] for r in results.rows] == [0, 1, 2, 0, 1, 2]
    assert sorted(_attempts(tmp_path)) == sorted(
        ["base-0", "base-1", "base-1", "base-2", "top-0", "top-1", "top-2"])
    assert {r["threads"] for r in results.rows} == {1}  # each worker runs its cell's CPUs


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_cell_that_keeps_failing_leaves_the_others_and_a_rerun_runs_only_it(
        tmp_path: Path, executor: ExecutorConfig) -> None:
    (tmp_path / "fail-base-2").write_text("")
    with pytest.raises(SweepFailedError, match="base-2: RuntimeError: permanent failure") as err:
        run_study("fixture", executor=executor, show_progress=False, out=str(tmp_path))
    assert list(err.value.failed) == ["base-2"]
    assert sorted(r["i"] for r in _rows(tmp_path)) == [0, 1]  # the others were written
    assert "permanent failure of base-2" in (tmp_path / "failures" / "base-2.log").read_text()
    (tmp_path / "fail-base-2").unlink()
    (tmp_path / "attempts.log").unlink()
    run_study("fixture", executor=executor, show_progress=False, out=str(tmp_path))
    assert sorted(_attempts(tmp_path)) == ["base-2", "top-0", "top-1", "top-2"]
    assert len(_rows(tmp_path)) == 6


def test_a_sweep_holds_its_folder_only_while_it_runs(
        tmp_path: Path, lockable_elsewhere: Callable[[Path], bool]) -> None:
    seen = []
    study = dataclasses.replace(fixture.STUDY, report=lambda config, folder, rows, final:
                                seen.append(lockable_elsewhere(folder)))
    run_sweep(study, fixture.FixtureConfig(out=str(tmp_path)), show_progress=False)
    assert seen
    assert not any(seen)  # locked at every report, the last one included
    assert lockable_elsewhere(tmp_path)
    (tmp_path / "fail-top-1").write_text("")
    with pytest.raises(SweepFailedError):
        run_sweep(study, fixture.FixtureConfig(out=str(tmp_path), cells=4), show_progress=False)
    assert lockable_elsewhere(tmp_path)  # released by the failed sweep as well
    with pytest.raises(ValueError, match="different config"):
        run_sweep(study, fixture.FixtureConfig(out=str(tmp_path), seeds=(5,), cells=4),
                  show_progress=False)
    assert lockable_elsewhere(tmp_path)  # and by a refused one


def test_the_cli_exits_non_zero_naming_the_failed_cell(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "fail-base-0").write_text("")
    assert main(["fixture", "--out", str(tmp_path)]) == 2
    assert "cell(s) of fixture failed: base-0" in capsys.readouterr().err


def test_resumed_sweep_says_how_much_is_done(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    run_study("fixture", out=str(tmp_path), cells=2, show_progress=False)
    capsys.readouterr()
    run_study("fixture", out=str(tmp_path), cells=3)
    assert "[fixture] 2 of 6 cells done, running 4" in capsys.readouterr().err


def test_a_driver_of_another_study_cannot_take_the_folder(tmp_path: Path) -> None:
    run_study("fixture", out=str(tmp_path), show_progress=False)
    with pytest.raises(ValueError, match="holds a run of study 'fixture', not 'train'"):
        run_sweep(STUDIES["train"], TrainStudyConfig(out=str(tmp_path)))


@pytest.mark.parametrize(("fields", "message"), [
    ({"executor": "slurm"}, "executor must be one of"),
    ({"executor": "processes", "workers": 0}, "workers must be >= 1, got 0"),
    ({"address": "localhost:1"}, "only applies to --executor ray"),
    ({"executor": "ray", "cell_cpus": 0}, "cell_cpus must be >= 1"),
])
def test_bad_executor_settings(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExecutorConfig(**fields)


def test_an_unknown_executor_on_the_command_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--executor", "slurm"])
    assert exit_.value.code == 2
    assert "invalid choice: 'slurm'" in capsys.readouterr().err


def test_ray_missing_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ExecutorUnavailableError, match=r"pip install 'softlabels\[ray\]'"):
        run_study("fixture", executor=ExecutorConfig(executor="ray"), out=str(tmp_path),
                  show_progress=False)
    assert not (tmp_path / "results.jsonl").exists()


def test_an_unreachable_ray_address_fails_within_the_timeout(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    began = time.perf_counter()
    executor = ExecutorConfig(executor="ray", address=f"127.0.0.1:{port}", connect_timeout=2)
    with pytest.raises(ValueError, match=f"cannot reach a Ray cluster at '127.0.0.1:{port}'"):
        run_study("fixture", executor=executor, out=str(tmp_path), show_progress=False)
    assert time.perf_counter() - began < 10
    with pytest.raises(ValueError, match="HOST:PORT"):
        run_study("fixture", executor=ExecutorConfig(executor="ray", address="nowhere"),
                  out=str(tmp_path), show_progress=False)


@_NO_RAY
def test_an_address_beside_an_open_ray_session_is_refused(tmp_path: Path) -> None:
    with socket.socket() as server:  # something listens, so the address is reachable
        server.bind(("127.0.0.1", 0))
        server.listen()
        executor = ExecutorConfig(executor="ray", address=f"127.0.0.1:{server.getsockname()[1]}")
        with pytest.raises(ValueError, match="a Ray session is already open"):
            run_study("fixture", executor=executor, out=str(tmp_path), show_progress=False)
