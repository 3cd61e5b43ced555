"""``mgll evaluate``: zero-shot, linear-probe, fine-tune and retrieval benchmarks of one checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def evaluate(
    config: Path = typer.Option(..., "--config", "-c", help="EvaluateConfig YAML (e.g. configs/evaluate_demo.yaml)."),
    checkpoint: Optional[str] = typer.Option(
        None, "--checkpoint", help="Checkpoint file / run folder, runs:/<id>/<path> or models:/<name>/<version>."
    ),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a config field: key=value."),
    ablation: bool = typer.Option(False, "--ablation", help="CONFIG is an AblationConfig: run the ablation."),
) -> None:
    """Evaluate a checkpoint (or, with --ablation, train and evaluate every ablation variant)."""
    import json
    import math

    from mgll.benchmarks import BenchmarkError
    from mgll.checkpoint import CheckpointError
    from mgll.config import ConfigError, load_config

    try:
        if ablation:
            from mgll.ablation import run_ablation
            from mgll.eval_config import AblationConfig

            result = run_ablation(load_config(AblationConfig, config, overrides))
            typer.echo(Path(result["markdown"]).read_text())
            typer.echo(f"tables: {result['markdown']} and {result['csv']}")
            return
        from mgll.eval_config import EvaluateConfig
        from mgll.evaluate import evaluate as run_evaluate

        result = run_evaluate(load_config(EvaluateConfig, config, overrides), checkpoint=checkpoint)
    except (ConfigError, CheckpointError, BenchmarkError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for name, value in sorted(result["metrics"].items()):
        if value is not None and not math.isnan(value) and not name.endswith(("n_queries", "n_candidates")):
            typer.echo(f"{name:60s} {value:.4f}")
    for name, data in result["datasets"].items():
        skipped = data["summary"]["read"]["skipped"]
        if skipped:
            typer.echo(f"{name}: rows skipped while reading: {json.dumps(skipped)}")
    typer.echo(f"tables and plots: {result['out_dir']}" + (f" (MLflow run {result['run_id']})" if result["run_id"] else ""))
