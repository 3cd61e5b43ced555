"""Prefect flow ``ablate-mgll``: the paper's loss and granularity ablations in one flow run.

Each variant (train with ``mgll.train.train`` + evaluate) is one task, so a failed variant is reported on its
own; the tables are written and logged into the ablation's MLflow run by ``mgll.ablation.publish``.
"""

from __future__ import annotations

import math
from pathlib import Path

from prefect import flow, get_run_logger, task

from mgll.config import load_config
from mgll.eval_config import AblationConfig, AblationVariant


@task(name="train-and-evaluate-variant", retries=0, task_run_name="variant-{variant.name}")
def variant_task(cfg: AblationConfig, variant: AblationVariant, out_dir: str, parent_run_id: str | None) -> dict:
    from mgll.ablation import run_variant

    return run_variant(cfg, variant, Path(out_dir), parent_run_id)


@flow(name="ablate-mgll", log_prints=True)
def ablation_flow(config_path: str | None = None, overrides: list[str] | None = None) -> dict:
    """Train and evaluate every variant of the AblationConfig; returns the table paths and rows."""
    from mgll.ablation import _default_out_dir, open_ablation_run, publish

    logger = get_run_logger()
    cfg = load_config(AblationConfig, config_path, overrides)
    out_dir = _default_out_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = open_ablation_run(cfg)
    rows = []
    for variant in cfg.variants:  # sequential: every variant gets the same cores, so timings compare
        rows.append(variant_task(cfg, variant, str(out_dir), run_id))
        logger.info("variant %s: %s", variant.name,
                    {k: round(rows[-1][k], 4) for k in cfg.headline if not math.isnan(rows[-1][k])})
    paths = publish(cfg, rows, out_dir, run_id)
    logger.info("ablation table:\n%s", paths["markdown"].read_text())
    return {"markdown": str(paths["markdown"]), "csv": str(paths["csv"]), "run_id": run_id, "rows": rows,
            "out_dir": str(out_dir)}
