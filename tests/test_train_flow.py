"""The ``pretrain-mgll`` flow on a real (temporary) Prefect server: train, then the evaluate-mgll subflow."""

from __future__ import annotations

import pytest
import yaml

from tests.fixtures.train import write_tiny_dataset

pytestmark = pytest.mark.integration


@pytest.fixture
def temporary_prefect_server(monkeypatch):
    """Prefect's own temporary server (real API, SQLite), given time to start on a busy 2-core machine."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180}):
        yield


def test_pretrain_flow_trains_then_evaluates_as_subflow(tmp_path, temporary_prefect_server):
    from prefect import get_client

    from flows.pretrain import pretrain_flow

    dataset = write_tiny_dataset(tmp_path / "dataset", n_train=32, n_val=16, n_test=32)
    pretrain = tmp_path / "pretrain.yaml"
    pretrain.write_text(yaml.safe_dump({
        "model": {"name": "mgll-micro"},
        "data": {"dataset": str(dataset), "workers": 0, "shuffle_buffer": 16},
        "train": {"steps": 2, "batch_size": 8, "warmup_steps": 1, "val_batches": 1},
        "output": {"dir": str(tmp_path / "run")},
        "tracking": {"log_model": False},
    }))
    evaluate = tmp_path / "evaluate.yaml"
    evaluate.write_text(yaml.safe_dump({
        "model": {"name": "mgll-micro"}, "datasets": [{"kind": "corpus", "root": str(dataset), "name": "tiny"}],
        "metrics": {"bootstrap": 10}, "out_dir": str(tmp_path / "eval"),
        "linear_probe": {"enabled": False}, "retrieval": {"enabled": False},  # zero-shot is enough to prove the wiring
    }))
    state = pretrain_flow(config_path=str(pretrain), evaluate_config_path=str(evaluate), return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["checkpoint"] == str(tmp_path / "run" / "last.pt") and result["steps"] == 2
    assert result["evaluation"]["checkpoint"] and "tiny/zero_shot/auc_macro" in result["evaluation"]["metrics"]
    with get_client(sync_client=True) as client:
        parent = client.read_flow_run(state.state_details.flow_run_id)
        assert client.read_flow(parent.flow_id).name == "pretrain-mgll"
        children = client.read_flow_runs()
        evaluate_runs = [r for r in children if r.parent_task_run_id is not None and
                         client.read_flow(r.flow_id).name == "evaluate-mgll"]
        assert evaluate_runs and evaluate_runs[0].state.is_completed()

    failed = pretrain_flow(config_path=str(pretrain), overrides=["data.granularities=[impression]",
                                                                   f"output.dir={tmp_path / 'run2'}"],
                           return_state=True)
    assert failed.is_failed()
    assert "granularities ['impression'] are not in the dataset card" in failed.message
