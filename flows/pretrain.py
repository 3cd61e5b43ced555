"""Prefect flow ``pretrain-mgll``: train (in process, or under torchrun) then evaluate the new checkpoint.

- One process (``distributed.nproc_per_node == 1`` and ``nnodes == 1``): ``mgll.train.train`` runs inside the task.
- Several processes or nodes: the task launches ``torchrun --nproc-per-node N [--nnodes M --node-rank R
  --rdzv-backend c10d --rdzv-endpoint HOST:PORT] -m mgll.train --config <resolved config>`` as a subprocess,
  streams every output line into the Prefect run logger, and fails the flow run with the trainer's own
  ``error: ...`` message when any rank fails. Rank 0 reports checkpoint, MLflow run id and metrics on a
  ``MGLL_RESULT`` line.
- Evaluation runs as a *subflow* (``flows.evaluate.evaluate_flow`` called directly), not via ``run_deployment``:
  it shares this flow run's process, environment and files (the checkpoint is a local path), appears nested
  under this flow run in the Prefect UI, needs no second worker slot, and its MLflow run nests under the
  training run (``parent_run_id``). Use the ``evaluate-mgll`` deployment to evaluate on another machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task

from mgll.config import load_config
from mgll.train_config import PretrainConfig


class TrainingFailed(RuntimeError):
    pass


def torchrun_command(cfg: PretrainConfig, config_file: str) -> list[str]:
    d = cfg.distributed
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(d.nproc_per_node)]
    if d.nnodes > 1:
        cmd += ["--nnodes", str(d.nnodes), "--rdzv-backend", d.rdzv_backend, "--rdzv-endpoint", str(d.rdzv_endpoint)]
        if d.node_rank is not None:
            cmd += ["--node-rank", str(d.node_rank)]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", "mgll.train", "--config", config_file]


def run_torchrun(cfg: PretrainConfig, log_line=print, env: dict | None = None) -> dict:
    """Run the trainer under torchrun; stream its output to ``log_line``; return rank 0's result summary."""
    from mgll.train import RESULT_PREFIX

    with tempfile.TemporaryDirectory(prefix="mgll-pretrain-") as tmp:
        config_file = str(Path(tmp) / "pretrain.yaml")
        Path(config_file).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        cmd = torchrun_command(cfg, config_file)
        log_line("launching: " + " ".join(cmd))
        child_env = {**os.environ, **(env or {})}
        child_env.setdefault("OMP_NUM_THREADS", str(cfg.train.threads or 1))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env)
        result, errors, tail = None, [], deque(maxlen=30)
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX) :])
                continue
            tail.append(line)
            if line.startswith("error: "):
                errors.append(line[len("error: ") :])
            log_line(line)
        code = proc.wait()
    if code != 0 or result is None:
        reason = errors[0] if errors else "\n".join(tail)
        raise TrainingFailed(f"training under torchrun failed (exit code {code}): {reason}")
    return result


@task(name="train-mgll", retries=0)
def train_task(cfg: PretrainConfig) -> dict:
    logger = get_run_logger()
    if cfg.world_launch:
        return run_torchrun(cfg, log_line=logger.info)
    from mgll.train import train

    result = train(cfg)
    logger.info("trained %d steps: loss %.4f; checkpoint %s", result.steps, result.metrics.get("loss", float("nan")),
                result.checkpoint)
    return {k: getattr(result, k) for k in ("checkpoint", "run_id", "metrics", "best_checkpoint", "run_dir", "steps")}


@flow(name="pretrain-mgll", log_prints=True)
def pretrain_flow(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    evaluate_config_path: str | None = None,
) -> dict:
    """Train per the PretrainConfig, then run ``evaluate-mgll`` on the new checkpoint as a subflow.

    ``evaluate_config_path`` (else the config's ``evaluation.config``) selects the EvaluateConfig; when neither is
    set, evaluation is skipped and the result says so.
    """
    logger = get_run_logger()
    cfg = load_config(PretrainConfig, config_path, overrides)
    result = train_task(cfg)
    evaluate_config = evaluate_config_path or cfg.evaluation.config
    if evaluate_config:
        from flows.evaluate import evaluate_flow

        result["evaluation"] = evaluate_flow(
            config_path=evaluate_config, checkpoint=result["checkpoint"], parent_run_id=result.get("run_id")
        )
    else:
        logger.info("no evaluate config (evaluate_config_path / evaluation.config): evaluation skipped")
        result["evaluation"] = None
    return result
