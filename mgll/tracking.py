"""MLflow tracking helpers shared by all flows.

Everything goes through ``tracking_run`` so that every run gets the same tags, the tracking URI comes from the
environment exported by ``mgll up`` (``MLFLOW_TRACKING_URI``), and parameters are flattened and screened for PHI
before they leave the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

EXPERIMENTS = {
    "build": "mgll-build-dataset",
    "pretrain": "mgll-pretrain",
    "evaluate": "mgll-evaluate",
}

# Parameters whose names say they could carry secrets or identifiers are never logged.
_SECRET_KEY = re.compile(r"(salt|secret|password|token|patient_?id|accession)", re.I)
_MAX_PARAM_CHARS = 6000


def tracking_enabled() -> bool:
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) and os.environ.get("MGLL_DISABLE_MLFLOW", "") not in ("1", "true")


def safe_params(params: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in params.items():
        if _SECRET_KEY.search(key):
            value = "<redacted>"
        text = str(value)
        out[key] = text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."
    return out


@contextlib.contextmanager
def tracking_run(
    kind: str,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
) -> Iterator[Any]:
    """Start (or nest) an MLflow run in the experiment for ``kind``; yields the active run, or None when disabled.

    ``parent_run_id`` (or ``MGLL_PARENT_RUN_ID`` in the environment) nests the run under a pipeline run.
    ``run_id`` continues an existing run (a resumed training keeps logging into its own run).
    """
    if not tracking_enabled():
        yield None
        return
    import mlflow

    mlflow.set_experiment(EXPERIMENTS.get(kind, kind))
    parent = parent_run_id or os.environ.get("MGLL_PARENT_RUN_ID") or None
    all_tags = {"mgll.kind": kind, **(tags or {})}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=all_tags) as run:
        if params:
            items = list(safe_params(params).items())
            for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
                mlflow.log_params(dict(items[i : i + 100]))
        yield run


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    if not tracking_enabled():
        return
    import mlflow

    if mlflow.active_run() is None:
        return
    clean = {re.sub(r"[^0-9A-Za-z_\-./ ]", "_", k): float(v) for k, v in metrics.items() if v is not None}
    mlflow.log_metrics(clean, step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    if not tracking_enabled():
        return
    import mlflow

    if mlflow.active_run() is None:
        return
    p = Path(path)
    if p.is_dir():
        mlflow.log_artifacts(str(p), artifact_path=artifact_path)
    elif p.exists():
        mlflow.log_artifact(str(p), artifact_path=artifact_path)


def log_json(data: Any, name: str, artifact_path: str | None = None) -> None:
    if not tracking_enabled():
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
        log_artifact(path, artifact_path)
