"""``mgll pretrain``: train an open_clip model with the MGLL loss (or a baseline) on build-dataset shards."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def pretrain(
    config: Path = typer.Option(..., "--config", "-c", help="PretrainConfig YAML (e.g. configs/pretrain_demo.yaml)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a config field: key=value."),
    flow: bool = typer.Option(
        False, "--flow", help="Run the pretrain-mgll Prefect flow (torchrun when several processes, then evaluate)."
    ),
    evaluate_config: Optional[Path] = typer.Option(
        None, "--evaluate-config", help="With --flow: EvaluateConfig YAML for the evaluation after training."
    ),
) -> None:
    """Train per CONFIG; prints the checkpoint and MLflow run. Several processes (distributed.nproc_per_node > 1)
    go through torchrun: use --flow, or run `torchrun --nproc-per-node N -m mgll.train --config FILE` yourself."""
    from mgll.checkpoint import CheckpointError
    from mgll.config import ConfigError, load_config
    from mgll.data import DataError
    from mgll.model import ModelError
    from mgll.train import TrainingError, train
    from mgll.train_config import PretrainConfig

    try:
        cfg = load_config(PretrainConfig, config, overrides)
        if flow or cfg.world_launch:
            from flows.pretrain import pretrain_flow

            result = pretrain_flow(
                config_path=str(config), overrides=list(overrides or []),
                evaluate_config_path=str(evaluate_config) if evaluate_config else None,
            )
            typer.echo(f"checkpoint: {result['checkpoint']}")
            if result.get("run_id"):
                typer.echo(f"MLflow run: {result['run_id']}")
            return
        result = train(cfg, progress=True)
    except (ConfigError, DataError, ModelError, CheckpointError, TrainingError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for name in ("loss", "sclip", "pointwise", "skl", "val_loss", "samples_per_s"):
        if name in result.metrics:
            typer.echo(f"{name:16s} {result.metrics[name]:.4f}")
    typer.echo(f"checkpoint: {result.checkpoint}")
    if result.best_checkpoint:
        typer.echo(f"best checkpoint: {result.best_checkpoint}")
    if result.run_id:
        typer.echo(f"MLflow run: {result.run_id}")
