"""After `make demo`: the MLflow server lists a finished build, pretraining and evaluation run, each with metrics
and artifacts, and Prefect lists the six required deployments. Exits non-zero with the reason otherwise.

Run with the stack's environment loaded (`eval "$(mgll status --env)"`): without PREFECT_API_URL, Prefect would
quietly start a temporary server of its own and find no deployments there."""

from __future__ import annotations

import asyncio
import os
import sys

from mlflow.tracking import MlflowClient

from mgll import stack
from mgll.tracking import EXPERIMENTS

REQUIRED_METRICS = {
    "build": ["samples"],
    "pretrain": ["loss", "sclip", "pointwise", "skl", "lr", "logit_scale"],
    "evaluate": [],
}


def check_mlflow() -> list[str]:
    problems = []
    client = MlflowClient(tracking_uri=stack.mlflow_uri(stack.current_ports().mlflow))
    for kind, name in EXPERIMENTS.items():
        experiment = client.get_experiment_by_name(name)
        runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'") if experiment else []
        if not runs:
            problems.append(f"experiment {name}: no finished run")
            continue
        run = runs[0]
        metrics = run.data.metrics
        missing = [m for m in REQUIRED_METRICS[kind] if m not in metrics]
        if not metrics or missing:
            problems.append(f"{name} run {run.info.run_id}: metrics missing {missing or 'all'}")
        if not client.list_artifacts(run.info.run_id):
            problems.append(f"{name} run {run.info.run_id}: no artifacts")
        print(f"{name}: run {run.info.run_id} with {len(metrics)} metrics")
    return problems


async def deployment_names() -> set[str]:
    from prefect import get_client

    async with get_client() as client:
        deployments = await client.read_deployments()
        flows = {f.id: f.name for f in await client.read_flows()}
    return {f"{flows[d.flow_id]}/{d.name}" for d in deployments}


def main() -> int:
    if not os.environ.get("PREFECT_API_URL"):
        print('demo check: PREFECT_API_URL is unset; run eval "$(mgll status --env)" first', file=sys.stderr)
        return 2
    problems = check_mlflow()
    required = {f"{f}/{d}" for f in ("build-dataset", "pretrain-mgll", "evaluate-mgll") for d in ("demo", "default")}
    missing = required - asyncio.run(deployment_names())
    if missing:
        problems.append(f"deployments missing: {sorted(missing)}")
    for problem in problems:
        print(f"demo check failed: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
