"""Process-wide locations, read from the environment once (no config file needed)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    """All local service state (Prefect DB, MLflow DB and artifacts, PIDs, logs, demo data): ``MGLL_HOME``."""
    return Path(os.environ.get("MGLL_HOME", REPO_ROOT / ".mgll")).resolve()


def external_dir() -> Path:
    """Public test material (``../shared/external`` by default; ``MGLL_EXTERNAL_DIR`` overrides)."""
    return Path(os.environ.get("MGLL_EXTERNAL_DIR", REPO_ROOT.parent / "shared" / "external")).resolve()
