"""End to end with real services: Prefect server + process worker + MLflow server (mgll/stack.py) on free ports,
`prefect deploy --all` from prefect.yaml, then the pipeline run through deployments on a tiny generated corpus.

build-dataset runs through the CLI users type (`prefect deployment run build-dataset/default --watch`),
pretrain-mgll (with its evaluate-mgll subflow) through the Python API (`run_deployment`). Every process the
module starts is stopped by PID in the `live_stack` fixture's finalizer, also when a test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.stack import flow_name

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).parent / "prefect")
REQUIRED = {f"{flow}/{name}" for flow in ("build-dataset", "pretrain-mgll", "evaluate-mgll") for name in ("demo", "default")}


def _deployments_in_yaml() -> list[dict]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]


def _worker_log(live_stack: dict, chars: int = 6000) -> str:
    """Flow-run output lands in the worker's log: show it when a run fails."""
    path = Path(live_stack["home"]) / "logs" / "prefect-worker.log"
    return "\n--- worker log (tail) ---\n" + (path.read_text(errors="replace")[-chars:] if path.exists() else "(missing)")


def _prefect(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PREFECT, "--no-prompt", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def stack_env(live_stack: dict) -> dict:
    return {**os.environ, **live_stack["env"], "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


@pytest.fixture(scope="module")
def mlflow_client(live_stack: dict):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=live_stack["mlflow_tracking_uri"])


@pytest.fixture(scope="module")
def deployed(stack_env: dict, live_stack: dict) -> set[str]:
    for deployment in _deployments_in_yaml():
        flow_name(deployment["entrypoint"])  # every entrypoint exists and is a @flow(name=...)
    result = _prefect(stack_env, "deploy", "--all")
    assert result.returncode == 0 and "Traceback" not in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]

    import httpx

    api = live_stack["prefect_api_url"]
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}).json()}
    deployments = httpx.post(f"{api}/deployments/filter", json={}).json()
    for deployment in deployments:
        # `{{ $MGLL_REPO_ROOT }}` resolves to this checkout (the stack exports it); no clone, no image
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        ]
        assert deployment["work_pool_name"] == "mgll-process"
    return {f"{flows[d['flow_id']]}/{d['name']}" for d in deployments}


def test_all_required_deployments_exist(deployed: set[str]) -> None:
    missing = REQUIRED - deployed
    assert not missing, f"prefect deploy --all did not create {sorted(missing)}"


@pytest.fixture(scope="module")
def built_dataset(deployed: set[str], stack_env: dict, live_stack: dict, tmp_path_factory) -> Path:
    assert "build-dataset/default" in deployed, f"build-dataset/default was not deployed: {sorted(deployed)}"
    assert (REPO / "configs" / "build_demo.yaml").is_file(), "configs/build_demo.yaml does not exist"
    work = tmp_path_factory.mktemp("pipeline")
    overrides = [
        f"sources=[{{kind: synthetic, root: {work / 'raw'}, n_studies: 40, n_fundus: 12, image_size: 64}}]",
        f"out={work / 'dataset'}",
        "image_size=64",
        "runner={kind: local, workers: 1}",
    ]
    result = _prefect(
        stack_env, "deployment", "run", "build-dataset/default",
        "--param", "config_path=configs/build_demo.yaml", "--param", f"overrides={json.dumps(overrides)}",
        "--watch", "--watch-timeout", "300",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:] + _worker_log(live_stack)
    assert "Completed" in result.stdout
    return work / "dataset"


def test_build_dataset_deployment_writes_shards_and_tracks_them(built_dataset: Path, mlflow_client) -> None:
    card = json.loads((built_dataset / "dataset.json").read_text())
    assert card["counts"]["total"] > 0
    assert list(built_dataset.glob("shards/train/*.tar"))

    experiment = mlflow_client.get_experiment_by_name("mgll-build-dataset")
    assert experiment is not None
    runs = mlflow_client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
    run = next(r for r in runs if r.data.params.get("out") == str(built_dataset))
    assert run.data.params["image_size"] == "64"
    assert run.data.metrics, "the build run logged no metrics"
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    nested = {a.path for top in artifacts for a in mlflow_client.list_artifacts(run.info.run_id, top)}
    names = {Path(p).name for p in artifacts | nested}
    assert "dataset.json" in names and "manifest.parquet" in names, sorted(artifacts | nested)


@pytest.fixture(scope="module")
def pretrained(built_dataset: Path, deployed: set[str], live_stack: dict, tmp_path_factory):
    for name in ("pretrain-mgll/demo", "evaluate-mgll/demo"):
        assert name in deployed, f"{name} was not deployed: {sorted(deployed)}"
    for name in ("pretrain_demo.yaml", "evaluate_demo.yaml"):
        assert (REPO / "configs" / name).is_file(), f"configs/{name} does not exist"
    work = tmp_path_factory.mktemp("pretrain")
    # The evaluation config of the subflow, pointed at the tiny dataset and kept small.
    evaluation = yaml.safe_load((REPO / "configs" / "evaluate_demo.yaml").read_text())
    evaluation.pop("checkpoint", None)
    for dataset in evaluation.get("datasets", []):
        dataset["root"] = str(built_dataset)
        dataset["max_samples"] = 40
    for section, changes in {"retrieval": {"max_samples": 40}, "metrics": {"bootstrap": 20},
                             "fine_tune": {"enabled": False}}.items():
        if isinstance(evaluation.get(section), dict):
            evaluation[section].update(changes)
    evaluate_config = work / "evaluate.yaml"
    evaluate_config.write_text(yaml.safe_dump(evaluation))

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    overrides = [
        f"data.dataset={built_dataset}", "data.workers=0", "data.shuffle_buffer=16", "data.shuffle_initial=8",
        "train.steps=3", "train.batch_size=8", "train.warmup_steps=1", "train.val_batches=1",
        f"output.dir={work / 'run'}", "tracking.log_model=false",
    ]
    with temporary_settings({PREFECT_API_URL: live_stack["prefect_api_url"]}):
        flow_run = run_deployment(
            "pretrain-mgll/demo",
            parameters={"overrides": overrides, "evaluate_config_path": str(evaluate_config)},
            timeout=420,
        )
    return flow_run


def test_pretrain_deployment_completes_and_runs_evaluation(pretrained, mlflow_client, live_stack: dict) -> None:
    assert pretrained.state is not None and pretrained.state.is_completed(), f"{pretrained.state}{_worker_log(live_stack)}"

    experiment = mlflow_client.get_experiment_by_name("mgll-pretrain")
    assert experiment is not None
    runs = mlflow_client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
    assert runs, "no finished pretraining run in MLflow"
    train_run = runs[0]
    assert train_run.data.params.get("train.steps") == "3"
    assert train_run.data.params.get("loss.kind") == "mgll"
    loss_metrics = [k for k in train_run.data.metrics if "loss" in k]
    assert len(loss_metrics) >= 2, f"expected the loss and its terms, got {sorted(train_run.data.metrics)}"
    history = mlflow_client.get_metric_history(train_run.info.run_id, "loss" if "loss" in train_run.data.metrics else loss_metrics[0])
    assert len(history) >= 2, "loss was logged for fewer than two steps"

    evaluation = mlflow_client.get_experiment_by_name("mgll-evaluate")
    assert evaluation is not None, "the evaluate-mgll subflow logged nothing"
    eval_runs = mlflow_client.search_runs([evaluation.experiment_id])
    nested = [r for r in eval_runs if r.data.tags.get("mlflow.parentRunId") == train_run.info.run_id]
    assert nested, "no evaluation run nested under the pretraining run"
    assert nested[0].info.status == "FINISHED"
    assert any(v == v for v in nested[0].data.metrics.values()), "evaluation logged no metric"  # v == v: not NaN


def test_status_lists_the_pipeline_runs(built_dataset: Path, live_stack: dict, stack_env: dict) -> None:
    # what `make demo` prints at the end: UI URLs and the MLflow run ids
    result = subprocess.run([sys.executable, "-m", "mgll.cli", "status", "--json", "--runs"], cwd=REPO,
                            env={**os.environ, "MGLL_HOME": str(live_stack["home"])}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["healthy"], info["services"]
    experiments = {run["experiment"] for run in info["runs"]}
    assert "mgll-build-dataset" in experiments
    assert all(len(run["run_id"]) == 32 for run in info["runs"])
