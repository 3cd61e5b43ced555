"""The ``evaluate-mgll`` and ``ablate-mgll`` flows against a real Prefect server and MLflow server (mgll up)."""

from __future__ import annotations

import pytest

from mgll.checkpoint import save_checkpoint

pytestmark = pytest.mark.integration


@pytest.fixture()
def stack_client_env(live_stack, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = live_stack["env"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.delenv("MGLL_PARENT_RUN_ID", raising=False)
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        yield env


def _artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_evaluate_flow_from_runs_uri_nests_and_logs_everything(stack_client_env, tiny_corpus, eval_bundle, tmp_path):
    import mlflow
    from prefect import get_client

    from flows.evaluate import evaluate_flow

    ckpt = save_checkpoint(tmp_path / "last.pt", model=eval_bundle.model, model_name=eval_bundle.name,
                           model_config=eval_bundle.model_config, step=7,
                           config={"loss": {"kind": "sclip"}, "data": {"granularities": ["modality", "diagnosis"]}})
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("mgll-pretrain") or client.get_experiment(
        client.create_experiment("mgll-pretrain"))
    parent = client.create_run(experiment.experiment_id, run_name="stand-in training run")
    client.log_artifact(parent.info.run_id, str(ckpt), "checkpoints")
    client.set_terminated(parent.info.run_id)

    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"model: {{name: mgll-micro}}\ndatasets: [{{kind: corpus, root: {tiny_corpus}, name: demo}}]\n"
                   f"metrics: {{bootstrap: 30}}\nout_dir: {tmp_path / 'out'}\n")
    state = evaluate_flow(config_path=str(cfg), checkpoint=f"runs:/{parent.info.run_id}/checkpoints/last.pt",
                          parent_run_id=parent.info.run_id, return_state=True)
    result = state.result()
    with get_client(sync_client=True) as prefect_client:
        flow_run = prefect_client.read_flow_run(state.state_details.flow_run_id)
        assert flow_run.state.is_completed() and prefect_client.read_flow(flow_run.flow_id).name == "evaluate-mgll"

    run = client.get_run(result["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "mgll-evaluate"
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["mgll.model"] == "mgll-micro"
    assert run.data.tags["mgll.checkpoint"].startswith("runs:/")
    assert run.data.tags["mgll.loss_kind"] == "sclip" and run.data.tags["mgll.granularities"] == "modality,diagnosis"
    assert run.data.tags["mgll.train_step"] == "7"
    for key in ("demo/zero_shot/auc_macro", "demo/linear_probe/auc_macro_ci_low", "demo/retrieval/explanation/i2t_r10",
                "demo/retrieval/i2t_r5_mean"):
        assert key in run.data.metrics, key
    assert "demo/zero_shot/labels_undefined" in run.data.metrics
    artifacts = _artifact_paths(client, run.info.run_id)
    for name in ("demo/roc_linear_probe.png", "demo/pr_zero_shot.png", "demo/per_label_linear_probe.csv",
                 "demo/per_label_linear_probe.md", "demo/embeddings_pca.png", "demo/retrieval_examples_diagnosis.png",
                 "metrics.csv", "metrics.md"):
        assert name in artifacts, (name, sorted(artifacts))


def test_registered_model_version_resolves_to_its_run_checkpoint(stack_client_env, tiny_corpus, eval_bundle, tmp_path):
    import mlflow

    from mgll.checkpoint import CheckpointError
    from mgll.config import build_config
    from mgll.eval_config import EvaluateConfig
    from mgll.evaluate import evaluate

    ckpt = save_checkpoint(tmp_path / "last.pt", model=eval_bundle.model, model_name=eval_bundle.name,
                           model_config=eval_bundle.model_config, step=1)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("mgll-pretrain") or client.get_experiment(
        client.create_experiment("mgll-pretrain"))
    run = client.create_run(experiment.experiment_id, run_name="registered training run")
    client.log_artifact(run.info.run_id, str(ckpt), "checkpoints")
    client.create_registered_model("eval-test-model")
    client.create_model_version("eval-test-model", f"runs:/{run.info.run_id}/checkpoints", run_id=run.info.run_id)
    cfg = build_config(EvaluateConfig, {
        "model": {"name": "mgll-micro"}, "datasets": [{"kind": "corpus", "root": str(tiny_corpus), "max_samples": 12}],
        "linear_probe": {"enabled": False}, "retrieval": {"enabled": False}, "plots": False,
        "metrics": {"bootstrap": 0}, "out_dir": str(tmp_path / "out")})
    result = evaluate(cfg, checkpoint="models:/eval-test-model/1")
    assert result["model"] == "mgll-micro"
    assert client.get_run(result["run_id"]).data.tags["mgll.checkpoint"] == "models:/eval-test-model/1"
    with pytest.raises(CheckpointError, match="cannot resolve registered model"):
        evaluate(cfg, checkpoint="models:/eval-test-model/7")


def test_ablation_flow_two_variants_writes_tables_into_mlflow(stack_client_env, tiny_corpus, tmp_path):
    import mlflow

    from flows.ablation import ablation_flow

    pretrain = tmp_path / "pretrain.yaml"
    pretrain.write_text(
        f"model: {{name: mgll-micro}}\ndata: {{dataset: {tiny_corpus}, workers: 0, shuffle_buffer: 16}}\n"
        "train: {steps: 3, batch_size: 8, warmup_steps: 1, checkpoint_every: 100, val_every: 0}\n"
        "tracking: {log_model: false}\n"
    )
    evaluate = tmp_path / "eval.yaml"
    evaluate.write_text(f"datasets: [{{kind: corpus, root: {tiny_corpus}, name: demo}}]\n"
                        "metrics: {bootstrap: 30}\nretrieval: {examples: 2}\n")
    ablation = tmp_path / "ablation.yaml"
    ablation.write_text(
        f"pretrain_config: {pretrain}\nevaluate_config: {evaluate}\nout_dir: {tmp_path / 'ablation'}\n"
        "variants:\n"
        "  - {name: clip, table: loss, overrides: {loss.kind: clip, data.granularities: [diagnosis]}}\n"
        "  - {name: mgll-g2, table: both, overrides: {loss.kind: mgll, data.granularities: [modality, diagnosis]}}\n"
    )
    result = ablation_flow(config_path=str(ablation))
    markdown = (tmp_path / "ablation" / "ablation.md").read_text()
    assert "## Loss terms" in markdown and "## Number of granularities" in markdown
    assert "| clip (clip) |" in markdown and "| mgll-g2 | 2 | modality,diagnosis |" in markdown
    assert [r["variant"] for r in result["rows"]] == ["clip", "mgll-g2"]
    for row in result["rows"]:
        low, high = row["linear_probe/auc_macro ci"]
        assert low <= row["linear_probe/auc_macro"] <= high
    client = mlflow.MlflowClient()
    run = client.get_run(result["run_id"])
    assert run.data.tags["mgll.ablation"] == "true"
    assert "mgll-g2/linear_probe/auc_macro" in run.data.metrics
    assert {"ablation/ablation.md", "ablation/ablation.csv"} <= _artifact_paths(client, run.info.run_id)
    evals = client.search_runs([run.info.experiment_id], filter_string="tags.`mgll.ablation_variant` = 'mgll-g2'")
    assert len(evals) == 1
    assert evals[0].data.tags["mgll.loss_kind"] == "mgll"
    assert evals[0].data.tags["mgll.granularities"] == "modality,diagnosis"
