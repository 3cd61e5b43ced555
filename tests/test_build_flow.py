"""The ``build-dataset`` Prefect flow on a real (temporary) Prefect server, tracked in a real MLflow sqlite store.

Runs the chunk tasks on ProcessPoolTaskRunner (the demo config's runner) and on prefect_dask.DaskTaskRunner.
"""

from __future__ import annotations

import json

import pytest
import yaml


@pytest.mark.integration
def test_build_flow_runs_chunks_as_tasks_and_logs_one_mlflow_run(dicom_tree, tmp_path, monkeypatch):
    import mlflow
    from prefect.testing.utilities import prefect_test_harness

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    config = tmp_path / "build.yaml"
    config.write_text(yaml.safe_dump({
        "sources": [{"kind": "dicom_xray", "root": str(dicom_tree)}], "out": str(tmp_path / "out"),
        "image_size": 32, "chunk_size": 8, "salt": "flow-salt-value", "runner": {"kind": "processes", "workers": 2},
    }))
    from flows.build_dataset import build_dataset_flow

    with prefect_test_harness(server_startup_timeout=120):
        result = build_dataset_flow(str(config), ["image_format=jpg"])
        on_dask = build_dataset_flow(
            str(config), ["image_format=jpg", f"out={tmp_path / 'out-dask'}", "runner.kind=dask", "plots=false"])
    import pandas as pd

    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "manifest.parquet"),
                                  pd.read_parquet(tmp_path / "out-dask" / "manifest.parquet"))
    assert on_dask["chunks_run"] == 3 and on_dask["samples"] == result["samples"]
    assert result["samples"] > 0 and result["inputs"] == result["samples"] + result["rejects"] + result["duplicates"]
    assert result["chunks_run"] == 3
    card = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert card["build_config"]["image_format"] == "jpg"

    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.metrics["samples"] == result["samples"]
    assert run.data.metrics["rejects"] == result["rejects"]
    assert "flow-salt-value" not in json.dumps(run.data.params)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"dataset.json", "manifest.parquet", "rejects.parquet", "plots"} <= artifacts
