"""Shared fixtures: where the real development datasets are; a folder another process holds.

``make test`` runs the suite on two pytest-xdist workers; the hooks here give each worker one
thread and keep the users of each run-building fixture on one worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers of two threads each on two cores run far slower than half speed (OpenMP
    # threads spin against the other worker); the variable reaches the CLI subprocesses too.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _uses(item: pytest.Item, fixture: str) -> bool:
    return fixture in getattr(item, "fixturenames", ())


def _reproduction_shared(items: list[pytest.Item]) -> bool:
    """Whether tests outside tests/robust take the session's reproduction, so that the
    robust tests read its ``robust/`` folder instead of running the study again."""
    robust = Path(__file__).parent / "robust"
    return any(_uses(item, "quick_reproduction") and robust not in item.path.parents
               for item in items)


def _shared_run(item: pytest.Item, reproduction_shared: bool) -> str | None:
    """The run-building fixture ``item`` uses: one of module or session scope that writes
    files (it takes ``tmp_path_factory``), as ``where::name``; ``None`` for none."""
    if reproduction_shared and _uses(item, "quick_robust"):
        return "tests::quick_reproduction"  # quick_robust takes it at run time
    chosen = None
    # pytest's record of the test's fixture definitions; no public API exposes their scopes.
    info = getattr(item, "_fixtureinfo", None)
    for name in info.names_closure if info is not None else ():
        definitions = info.name2fixturedefs.get(name)
        if not definitions:
            continue
        fixture = definitions[-1]
        if fixture.scope in ("module", "session") and "tmp_path_factory" in fixture.argnames:
            key = f"{fixture.baseid}::{name}"
            if chosen is None or fixture.scope == "session":
                chosen = key
    return chosen


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the test ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` the tests sharing a run-building fixture go to one worker,
    so the run (up to a minute and a half of studies) is built once, not once per worker."""
    reproduction_shared = _reproduction_shared(items)
    for item in items:
        group = _shared_run(item, reproduction_shared)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


# ../shared/data beside the repository root (tests/ -> repository root -> its parent).
_DEFAULT_TEST_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def test_data_root() -> Path:
    """Folder of real datasets: ``$SOFTLABELS_TEST_DATA`` or ``../shared/data``; skip if absent."""
    root = Path(os.environ.get("SOFTLABELS_TEST_DATA") or _DEFAULT_TEST_DATA)
    if not root.is_dir():
        pytest.skip(
            f"real test data not found at {root} (set SOFTLABELS_TEST_DATA to a folder holding "
            "mnist/ and cifar10/)"
        )
    return root


@pytest.fixture
def locked_elsewhere(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path`` with its run-folder lock (``.lock``) held by another live process."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
        "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"),
        str(tmp_path / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield tmp_path
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def lockable_elsewhere() -> Callable[[Path], bool]:
    """Whether another process could take a run folder's lock (``.lock``) right now."""
    def probe(folder: Path) -> bool:
        code = ("import fcntl, sys; f = open(sys.argv[1], 'a+'); "
                "fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)")
        return subprocess.run([sys.executable, "-c", code, str(folder / ".lock")],
                              capture_output=True).returncode == 0
    return probe


@pytest.fixture(scope="session")
def quick_reproduction(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``softlabels reproduce``: every study's ``--quick`` run, once per test session.

    The study tests read its ``distill/``, ``seg/`` and ``robust/`` folders (the same configs
    as ``softlabels <study> --quick``) instead of running the studies again; they only read
    them or rerun them unchanged, so sharing is safe in any order.
    """
    from softlabels.cli import main

    out = tmp_path_factory.mktemp("reproduce")
    assert main(["reproduce", "--out", str(out), "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="session")
def quick_robust(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Path:
    """``robust --quick``: the session's reproduction's when other tests need it anyway, else
    this study alone (a quarter of the reproduction's time)."""
    from softlabels.cli import main

    if _reproduction_shared(request.session.items):
        return request.getfixturevalue("quick_reproduction") / "robust"
    out = tmp_path_factory.mktemp("robust-quick")
    assert main(["robust", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    return out
