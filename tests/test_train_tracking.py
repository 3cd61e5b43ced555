"""MLflow tracking of a training run, against a real MLflow store (sqlite), nested under a parent run."""

from __future__ import annotations

import pytest

from mgll.config import load_config
from mgll.train import train
from mgll.train_config import PretrainConfig


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default artifact root (./mlruns) lands in tmp_path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield mlflow
    mlflow.set_tracking_uri(None)


def test_training_run_logs_terms_artifacts_and_model(tiny_dataset, tmp_path, mlflow_store):
    mlflow = mlflow_store
    mlflow.set_experiment("pipeline")
    with mlflow.start_run(run_name="parent") as parent:
        parent_id = parent.info.run_id
    cfg = load_config(PretrainConfig, data={
        "model": {"name": "mgll-micro"},
        "data": {"dataset": str(tiny_dataset), "workers": 0, "shuffle_buffer": 16},
        "train": {"steps": 3, "batch_size": 8, "checkpoint_every": 2, "val_batches": 1},
        "output": {"dir": str(tmp_path / "run")},
        "tracking": {"parent_run_id": parent_id, "log_model": True},
    })
    result = train(cfg)
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent_id
    assert run.data.params["train.batch_size"] == "8" and run.data.params["loss.kind"] == "mgll"
    for key in ("loss", "sclip", "pointwise", "skl", "lr", "logit_scale", "samples_per_s", "data_wait_fraction"):
        history = client.get_metric_history(result.run_id, key)
        assert [m.step for m in history] == [1, 2, 3], key
    assert client.get_metric_history(result.run_id, "val_loss")
    artifacts = {a.path for top in client.list_artifacts(result.run_id) for a in
                 (client.list_artifacts(result.run_id, top.path) if top.is_dir else [top])}
    assert {"checkpoints/last.pt", "checkpoints/best.pt", "plots/loss_curve.png", "config/config.json",
            "dataset/dataset.json", "metrics/metrics.jsonl"} <= artifacts
    logged = {m.name: m for m in mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")}
    assert {"image_encoder", "text_encoder"} <= set(logged)
    encoder = mlflow.pyfunc.load_model(logged["image_encoder"].model_uri)
    assert encoder.metadata.signature is not None
    import numpy as np

    embeddings = encoder.predict(np.zeros((3, 3, 64, 64), dtype=np.float32))
    assert embeddings.shape == (3, 64) and np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # the run's checkpoint is what evaluation loads
    from mgll.checkpoint import load_for_inference

    bundle = load_for_inference(f"runs:/{result.run_id}")
    assert bundle.name == "mgll-micro"
