"""Shared test setup. Fixture modules live in tests/fixtures/ (one per area) and are loaded as plugins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep every tool's state out of $HOME and off the network, before any of them is imported.
_STATE = Path(os.environ.setdefault("MGLL_TEST_STATE", str(Path(__file__).resolve().parent.parent / ".mgll" / "test-state")))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLCONFIGDIR", str(_STATE / "matplotlib"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYDICOM_DATA_HOME", str(_STATE / "pydicom"))
os.environ["PREFECT_HOME"] = str(_STATE / "prefect-home")  # never the profile of a stack the user has running
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Tests never talk to a server they did not start (a shell with `eval "$(mgll status --env)"` exports these).
for _var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
    os.environ.pop(_var, None)

pytest_plugins = [
    f"tests.fixtures.{p.stem}"
    for p in sorted((Path(__file__).parent / "fixtures").glob("*.py"))
    if p.stem != "__init__"
]


@pytest.fixture(scope="session")
def external_dir() -> Path:
    """``../shared/external`` (or ``MGLL_EXTERNAL_DIR``); skips the test with a visible reason when absent."""
    from mgll.settings import external_dir as _external_dir

    path = _external_dir()
    if not path.is_dir():
        pytest.skip(f"public test material not found at {path} (set MGLL_EXTERNAL_DIR)")
    return path
