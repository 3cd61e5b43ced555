"""Prefect flow ``evaluate-mgll``: load an ``EvaluateConfig`` and run ``mgll.evaluate.evaluate`` on a checkpoint.

Standalone (deployment ``evaluate-mgll/default`` with ``checkpoint`` = a path, ``runs:/<id>/...`` or
``models:/<name>/<version>``) or as a subflow of ``pretrain-mgll``, which passes the new checkpoint and its
MLflow run id as ``parent_run_id`` so the evaluation run nests under the training run.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from mgll.config import load_config
from mgll.eval_config import EvaluateConfig


@task(name="evaluate-checkpoint", retries=0)
def evaluate_task(cfg: EvaluateConfig, checkpoint: str | None, parent_run_id: str | None) -> dict:
    from mgll.evaluate import evaluate

    result = evaluate(cfg, checkpoint=checkpoint, parent_run_id=parent_run_id)
    return {k: result[k] for k in ("metrics", "run_id", "out_dir", "model", "checkpoint")}


@flow(name="evaluate-mgll", log_prints=True)
def evaluate_flow(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    checkpoint: str | None = None,
    parent_run_id: str | None = None,
) -> dict:
    """Evaluate ``checkpoint`` (or the config's) on every configured dataset; returns metrics, run id, out dir."""
    logger = get_run_logger()
    cfg = load_config(EvaluateConfig, config_path, overrides)
    result = evaluate_task(cfg, checkpoint, parent_run_id)
    headline = {k: v for k, v in result["metrics"].items() if k.endswith(("auc_macro", "r5_mean")) and v is not None}
    for name, value in sorted(headline.items()):
        logger.info("%s = %.4f", name, value)
    logger.info("tables and plots in %s (MLflow run %s)", result["out_dir"], result["run_id"])
    return result
