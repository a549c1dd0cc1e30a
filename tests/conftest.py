"""Shared fixtures: where the real development datasets are; a folder another process holds."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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
