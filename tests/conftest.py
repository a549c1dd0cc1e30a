"""Shared fixtures: where the real development datasets are."""

from __future__ import annotations

import os
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
