"""The paper's ablations as one run: train every variant on the same data, seed and budget, evaluate each with the
same ``EvaluateConfig``, and write a loss-ablation and a granularity-ablation table (markdown + CSV, with 95%
bootstrap CIs) into MLflow.

Variants are ``PretrainConfig`` overrides (``loss.kind``, ``loss.alpha``, ``data.granularities``); everything else
comes from one base config, so differences in the table come from the loss terms / granularities alone. The
ordering the paper reports (MGLL > sCLIP+P > single terms > CLIP) is a hypothesis the table tests, not an input.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from mgll import tracking
from mgll.config import ConfigError, _flatten, apply_overrides, build_config, load_config, read_yaml
from mgll.eval_config import AblationConfig, AblationVariant, EvaluateConfig

# Which loss terms each kind trains with (the paper's loss-ablation table has one column per term).
LOSS_TERMS = {
    "clip": ("InfoNCE",),
    "pointwise": ("L_P",),
    "sclip": ("L_sCLIP",),
    "sclip+pointwise": ("L_sCLIP", "L_P"),
    "mgll": ("L_sCLIP", "L_P", "L_sKL"),
}


def _flat(overrides: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys for nested overrides (``--set pretrain_overrides.data.dataset=X`` nests), so that an override
    replaces one field and never a whole section."""
    return dict(_flatten(overrides))


def _pretrain_config(cfg: AblationConfig, variant: AblationVariant, out_dir: Path, parent_run_id: str | None):
    from mgll.train_config import PretrainConfig

    overrides = {
        **_flat(cfg.pretrain_overrides),
        **_flat(variant.overrides),
        "output.dir": str(out_dir / "runs" / variant.name),
        "output.run_name": f"ablation-{variant.name}",
        "output.resume": "never",
        "tracking.parent_run_id": parent_run_id,
    }
    try:
        return load_config(PretrainConfig, cfg.pretrain_config, data=overrides)
    except ConfigError as exc:
        raise ConfigError(f"ablation variant {variant.name!r}: {exc}") from None


def _evaluate_config(cfg: AblationConfig, variant: AblationVariant, pcfg, out_dir: Path) -> EvaluateConfig:
    data = apply_overrides(read_yaml(cfg.evaluate_config), _flat(cfg.evaluate_overrides))
    data["out_dir"] = str(out_dir / "eval" / variant.name)
    data["run_name"] = f"ablation-eval-{variant.name}"
    data["tags"] = {**(data.get("tags") or {}), **variant_tags(variant, pcfg)}
    return build_config(EvaluateConfig, data, origin=f"{cfg.evaluate_config} (variant {variant.name})")


def variant_tags(variant: AblationVariant, pcfg) -> dict[str, str]:
    return {
        "mgll.ablation_variant": variant.name,
        "mgll.loss_kind": pcfg.loss.kind,
        "mgll.granularities": ",".join(pcfg.data.granularities),
        "mgll.alpha": ",".join(str(a) for a in pcfg.loss.alpha),
    }


def run_variant(cfg: AblationConfig, variant: AblationVariant, out_dir: Path, parent_run_id: str | None) -> dict:
    """Train one variant with ``mgll.train.train`` and evaluate its checkpoint; returns one table row."""
    from mgll.evaluate import evaluate
    from mgll.train import train

    pcfg = _pretrain_config(cfg, variant, out_dir, parent_run_id)
    t0 = time.perf_counter()
    trained = train(pcfg)
    train_s = time.perf_counter() - t0
    ecfg = _evaluate_config(cfg, variant, pcfg, out_dir)
    result = evaluate(ecfg, checkpoint=str(trained.checkpoint), parent_run_id=trained.run_id or parent_run_id)
    row: dict[str, Any] = {
        "variant": variant.name,
        "table": variant.table,
        "loss_kind": pcfg.loss.kind,
        "terms": "+".join(LOSS_TERMS.get(pcfg.loss.kind, (pcfg.loss.kind,))),
        "G": len(pcfg.data.granularities),
        "granularities": ",".join(pcfg.data.granularities),
        "train_steps": pcfg.train.steps,
        "train_s": round(train_s, 1),
        "eval_s": round(time.perf_counter() - t0 - train_s, 1),
        "checkpoint": str(trained.checkpoint),
    }
    metrics = result["metrics"]
    for name in cfg.headline:
        value, low, high = _find_metric(metrics, name)
        row[name] = value
        row[f"{name} ci"] = (low, high)
    return row


def _find_metric(metrics: dict, name: str) -> tuple[float, float, float]:
    """``name`` without its dataset prefix: the first dataset's value and its CI (NaN when not computed)."""
    nan = math.nan
    for key, value in metrics.items():
        if key.split("/", 1)[-1] == name:
            prefix = key[: -len(name)]
            low = metrics.get(f"{prefix}{name}_ci_low")
            high = metrics.get(f"{prefix}{name}_ci_high")
            return (nan if value is None else value, nan if low is None else low, nan if high is None else high)
    return nan, nan, nan


def _cell(value: float, ci: tuple[float, float]) -> str:
    if value is None or math.isnan(value):
        return "undefined"
    if ci and not any(c is None or math.isnan(c) for c in ci):
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{value:.3f}"


def write_tables(rows: list[dict], headline: list[str], out_dir: Path, title: str = "") -> dict[str, Path]:
    """``ablation.md`` (loss table + granularity table, value [95% CI]) and ``ablation.csv`` (one row per variant)."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    flat = []
    for row in rows:
        item = {k: v for k, v in row.items() if not k.endswith(" ci")}
        for name in headline:
            low, high = row.get(f"{name} ci", (math.nan, math.nan))
            item[f"{name}_ci_low"], item[f"{name}_ci_high"] = low, high
        flat.append(item)
    csv_path = out_dir / "ablation.csv"
    pd.DataFrame(flat).to_csv(csv_path, index=False)

    lines = [f"# Ablation{': ' + title if title else ''}", "",
             "Values are test-split metrics with 95% bootstrap confidence intervals; every variant shares the data, "
             "seed and training budget.", ""]
    loss_rows = [r for r in rows if r["table"] in ("loss", "both")]
    if loss_rows:
        lines += ["## Loss terms", "", "| Variant | L_sCLIP | L_P | L_sKL | G | " + " | ".join(headline) + " |",
                  "|---|---|---|---|---|" + "---|" * len(headline)]
        for r in loss_rows:
            terms = LOSS_TERMS.get(r["loss_kind"], ())
            marks = ["x" if t in terms else "" for t in ("L_sCLIP", "L_P", "L_sKL")]
            cells = [_cell(r[name], r[f"{name} ci"]) for name in headline]
            lines.append(f"| {r['variant']} ({r['loss_kind']}) | " + " | ".join(marks) + f" | {r['G']} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    gran_rows = sorted([r for r in rows if r["table"] in ("granularity", "both")], key=lambda r: r["G"])
    if gran_rows:
        lines += ["## Number of granularities", "", "| Variant | G | granularities | " + " | ".join(headline) + " |",
                  "|---|---|---|" + "---|" * len(headline)]
        for r in gran_rows:
            cells = [_cell(r[name], r[f"{name} ci"]) for name in headline]
            lines.append(f"| {r['variant']} | {r['G']} | {r['granularities']} | " + " | ".join(cells) + " |")
        lines.append("")
    md_path = out_dir / "ablation.md"
    md_path.write_text("\n".join(lines))
    return {"markdown": md_path, "csv": csv_path}


def _default_out_dir(cfg: AblationConfig) -> Path:
    from mgll.settings import state_dir

    return Path(cfg.out_dir) if cfg.out_dir else state_dir() / "ablation" / time.strftime("%Y%m%d-%H%M%S")


def open_ablation_run(cfg: AblationConfig, parent_run_id: str | None = None) -> str | None:
    """Create the ablation's MLflow run and close it again, so the variants' runs can nest under it by id."""
    from mgll.config import flatten_for_logging

    tags = {"mgll.ablation": "true", "mgll.variants": ",".join(v.name for v in cfg.variants)}
    with tracking.tracking_run("evaluate", cfg.run_name, flatten_for_logging(cfg), tags, parent_run_id) as run:
        return run.info.run_id if run is not None else None


def publish(cfg: AblationConfig, rows: list[dict], out_dir: Path, run_id: str | None) -> dict[str, Path]:
    """Write the tables and log them (plus one metric per variant and headline) into the ablation's run."""
    paths = write_tables(rows, cfg.headline, out_dir, cfg.run_name or "")
    if run_id:
        with tracking.tracking_run("evaluate", run_id=run_id):
            for row in rows:
                tracking.log_metrics({f"{row['variant']}/{name}": row[name] for name in cfg.headline
                                      if row[name] is not None and not math.isnan(row[name])})
            tracking.log_artifact(paths["markdown"], "ablation")
            tracking.log_artifact(paths["csv"], "ablation")
    return paths


def run_ablation(cfg: AblationConfig, parent_run_id: str | None = None) -> dict:
    """Train + evaluate every variant, then write and log the tables. Returns paths, rows and the MLflow run id."""
    out_dir = _default_out_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = open_ablation_run(cfg, parent_run_id)
    rows = [run_variant(cfg, variant, out_dir, run_id) for variant in cfg.variants]
    paths = publish(cfg, rows, out_dir, run_id)
    return {"markdown": str(paths["markdown"]), "csv": str(paths["csv"]), "rows": rows, "run_id": run_id,
            "out_dir": str(out_dir)}
