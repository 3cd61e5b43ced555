"""Ablation config, per-variant configs and the tables (the 2-variant flow run is in test_eval_flows.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from mgll.ablation import _evaluate_config, _find_metric, _pretrain_config, write_tables
from mgll.config import ConfigError, build_config, load_config
from mgll.eval_config import AblationConfig

REPO = Path(__file__).resolve().parent.parent


def _row(name, table, kind, grans, value, ci):
    return {"variant": name, "table": table, "loss_kind": kind, "G": len(grans), "granularities": ",".join(grans),
            "linear_probe/auc_macro": value, "linear_probe/auc_macro ci": ci}


def test_tables_mirror_loss_and_granularity_ablations(tmp_path):
    rows = [
        _row("clip", "loss", "clip", ["diagnosis"], 0.61, (0.55, 0.66)),
        _row("mgll-g3", "both", "mgll", ["modality", "diagnosis", "explanation"], 0.7, (0.64, 0.75)),
        _row("mgll-g1", "granularity", "mgll", ["diagnosis"], math.nan, (math.nan, math.nan)),
    ]
    paths = write_tables(rows, ["linear_probe/auc_macro"], tmp_path, "unit")
    md = paths["markdown"].read_text()
    loss_part, gran_part = md.split("## Number of granularities")
    assert "| clip (clip) |  |  |  | 1 | 0.610 [0.550, 0.660] |" in loss_part
    assert "| mgll-g3 (mgll) | x | x | x | 3 | 0.700 [0.640, 0.750] |" in loss_part
    assert "mgll-g1" not in loss_part
    # granularity table ordered by G; an undefined metric says so
    assert gran_part.index("| mgll-g1 | 1 |") < gran_part.index("| mgll-g3 | 3 |")
    assert "| mgll-g1 | 1 | diagnosis | undefined |" in gran_part
    csv = pd.read_csv(paths["csv"])
    assert list(csv["variant"]) == ["clip", "mgll-g3", "mgll-g1"]
    assert csv.loc[1, "linear_probe/auc_macro_ci_low"] == 0.64


def test_find_metric_strips_dataset_prefix_and_finds_ci():
    metrics = {"demo/linear_probe/auc_macro": 0.8, "demo/linear_probe/auc_macro_ci_low": 0.7,
               "demo/linear_probe/auc_macro_ci_high": 0.9}
    assert _find_metric(metrics, "linear_probe/auc_macro") == (0.8, 0.7, 0.9)
    value, low, high = _find_metric(metrics, "zero_shot/auc_macro")
    assert math.isnan(value) and math.isnan(low) and math.isnan(high)


def test_demo_config_variants_become_valid_pretrain_and_evaluate_configs(tmp_path):
    cfg = load_config(AblationConfig, REPO / "configs" / "ablation_demo.yaml")
    nested = {**cfg.pretrain_overrides, "data": {"dataset": str(tmp_path / "ds")}}  # as --set a.b.c=X nests
    cfg = cfg.model_copy(update={"pretrain_config": str(REPO / cfg.pretrain_config), "pretrain_overrides": nested,
                                 "evaluate_config": str(REPO / cfg.evaluate_config)})
    names = [v.name for v in cfg.variants]
    assert {"clip", "pointwise", "sclip", "sclip+pointwise", "mgll-g1", "mgll-g2", "mgll-g3"} == set(names)
    seen = set()
    for variant in cfg.variants:
        pcfg = _pretrain_config(cfg, variant, tmp_path, "parent123")
        ecfg = _evaluate_config(cfg, variant, pcfg, tmp_path)
        # same data, seed and budget for every variant; only the loss / granularities differ
        seen.add((pcfg.data.dataset, pcfg.train.seed, pcfg.train.steps, pcfg.train.batch_size, pcfg.model.name))
        assert pcfg.tracking.parent_run_id == "parent123"
        assert pcfg.data.dataset == str(tmp_path / "ds") and pcfg.data.missing_text == "mask"  # one field replaced
        assert pcfg.output.dir == str(tmp_path / "runs" / variant.name)
        assert ecfg.tags["mgll.loss_kind"] == pcfg.loss.kind and ecfg.checkpoint is None
    assert len(seen) == 1


def test_bad_variant_override_names_the_variant(tmp_path):
    cfg = load_config(AblationConfig, REPO / "configs" / "ablation_demo.yaml")
    cfg = cfg.model_copy(update={"pretrain_config": str(REPO / cfg.pretrain_config)})
    bad = cfg.variants[0].model_copy(update={"overrides": {"loss.knd": "clip"}})
    with pytest.raises(ConfigError, match="ablation variant 'clip'.*loss.knd"):
        _pretrain_config(cfg, bad, tmp_path, None)


def test_duplicate_variant_names_are_rejected():
    with pytest.raises(ConfigError, match="variant names must be unique"):
        build_config(AblationConfig, {"pretrain_config": "p.yaml", "evaluate_config": "e.yaml",
                                      "variants": [{"name": "a"}, {"name": "a"}]})
