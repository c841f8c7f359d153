"""Shared fixtures for the liveness tests: where the team's test data lives (skip when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The team data folder: $FACEMON_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("FACEMON_DATA")
    return Path(env) if env else (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data() -> Path:
    """Path of ../shared/data; skips the test when it is not there (a fresh clone)."""
    d = data_dir()
    if not d.is_dir():
        pytest.skip(f"test data not found at {d} (set FACEMON_DATA)")
    return d
