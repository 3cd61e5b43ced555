"""``mgll.evaluate`` end to end on a micro open_clip model: every task, artifacts, bad input, the CLI."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from mgll.checkpoint import CheckpointError, save_checkpoint
from mgll.config import build_config
from mgll.eval_config import EvaluateConfig
from mgll.evaluate import evaluate
from tests.fixtures.evaluation import write_generic_csv


def config(**data) -> EvaluateConfig:
    data.setdefault("metrics", {"bootstrap": 60})
    return build_config(EvaluateConfig, data)


def test_corpus_all_tasks_metrics_and_artifacts(tiny_corpus, eval_bundle, tmp_path):
    cfg = config(
        datasets=[{"kind": "corpus", "root": str(tiny_corpus), "name": "demo"}],
        fine_tune={"enabled": True, "epochs": 2, "batch_size": 16, "lr": 1e-3},
        out_dir=str(tmp_path / "out"),
    )
    result = evaluate(cfg, bundle=eval_bundle)
    m = result["metrics"]
    for task in ("zero_shot", "linear_probe", "fine_tune"):
        value, low, high = m[f"demo/{task}/auc_macro"], m[f"demo/{task}/auc_macro_ci_low"], m[f"demo/{task}/auc_macro_ci_high"]
        assert 0 <= low <= value <= high <= 1, (task, low, value, high)
        assert m[f"demo/{task}/labels_undefined"] == 1  # "Fracture" never positive in the test split
    # the fixture's images carry a label pattern: a probe on frozen features must find it
    assert m["demo/linear_probe/auc_macro"] > 0.7
    for g in ("modality", "diagnosis", "explanation"):
        assert 0 <= m[f"demo/retrieval/{g}/i2t_r1"] <= m[f"demo/retrieval/{g}/i2t_r5"] <= 1
        assert m[f"demo/retrieval/{g}/t2i_median_rank"] >= 1
    assert m["demo/retrieval/diagnosis/unique_texts"] < 24  # identical texts collapse into one candidate
    details = result["datasets"]["demo"]["details"]
    assert details["linear_probe"]["undefined"]["Fracture"].startswith("only negative samples")
    assert details["linear_probe"]["C_selection"] == "best val macro AUC"
    assert details["linear_probe"]["constant_labels"] == []  # every label has both classes in train
    assert details["fine_tune"]["steps"] == 6
    out = tmp_path / "out" / "demo"
    expected = ["roc_zero_shot.png", "pr_linear_probe.png", "per_label_fine_tune.csv", "per_label_zero_shot.md",
                "embeddings_pca.png", "retrieval_examples_explanation.png", "summary.json"]
    for name in expected:
        assert (out / name).stat().st_size > 0, name
    assert "undefined" in (out / "per_label_linear_probe.md").read_text()
    assert json.loads((out / "summary.json").read_text())["summary"]["sizes"]["test"] == 24


def test_multiclass_csv_with_confusion_matrix(tmp_path, eval_bundle):
    root = write_generic_csv(tmp_path / "csv", multiclass=True)
    cfg = config(
        datasets=[{"kind": "csv", "root": str(root), "csv": str(root / "labels.csv"), "image_column": "file",
                   "split_column": "split", "label_column": "diagnosis", "name": "three"}],
        retrieval={"enabled": False}, out_dir=str(tmp_path / "out"),
    )
    result = evaluate(cfg, bundle=eval_bundle)
    m = result["metrics"]
    assert 0 <= m["three/linear_probe/acc"] <= 1 and 0 <= m["three/zero_shot/auc_macro"] <= 1
    assert (tmp_path / "out" / "three" / "confusion_linear_probe.png").is_file()
    assert result["datasets"]["three"]["summary"]["read"]["skipped"] == {"image file missing": 1}


def _micro_checkpoint(bundle, path):
    return save_checkpoint(path, model=bundle.model, model_name=bundle.name, model_config=bundle.model_config, step=1)


def test_checkpoint_path_matches_or_is_rejected(tmp_path, eval_bundle, tiny_corpus):
    ckpt = _micro_checkpoint(eval_bundle, tmp_path / "run" / "last.pt")
    datasets = [{"kind": "corpus", "root": str(tiny_corpus), "max_samples": 12}]
    quick = {"linear_probe": {"enabled": False}, "retrieval": {"enabled": False}, "plots": False,
             "out_dir": str(tmp_path / "out")}
    result = evaluate(config(datasets=datasets, model={"name": "mgll-micro"}, **quick), checkpoint=str(tmp_path / "run"))
    assert result["model"] == "mgll-micro" and not math.isnan(result["metrics"]["corpus/zero_shot/auc_macro"])

    with pytest.raises(CheckpointError, match="holds a 'mgll-micro' model but .* expects model.name='mgll-tiny'"):
        evaluate(config(datasets=datasets, model={"name": "mgll-tiny"}, **quick), checkpoint=str(ckpt))

    other = copy.deepcopy(eval_bundle.model)  # same name and config, weights of another shape
    other.text_projection = torch.nn.Parameter(torch.zeros(other.text_projection.shape[0], 7))
    bad = save_checkpoint(tmp_path / "bad.pt", model=other, model_name=eval_bundle.name,
                          model_config=eval_bundle.model_config, step=1)
    with pytest.raises(CheckpointError, match="does not fit model"):
        evaluate(config(datasets=datasets, **quick), checkpoint=str(bad))

    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate(config(datasets=datasets, **quick), checkpoint=str(tmp_path / "missing.pt"))


def test_cli_evaluate_and_its_errors(tmp_path, eval_bundle, tiny_corpus):
    from mgll.cli import app

    ckpt = _micro_checkpoint(eval_bundle, tmp_path / "last.pt")
    cfg_path = tmp_path / "eval.yaml"
    cfg_path.write_text(
        f"datasets: [{{kind: corpus, root: {tiny_corpus}, max_samples: 16}}]\n"
        f"linear_probe: {{enabled: false}}\nplots: false\nmetrics: {{bootstrap: 20}}\nout_dir: {tmp_path / 'out'}\n"
    )
    runner = CliRunner()
    ok = runner.invoke(app, ["evaluate", "--config", str(cfg_path), "--checkpoint", str(ckpt),
                             "--set", "retrieval.ks=[1,2]"])
    assert ok.exit_code == 0, ok.output
    assert "corpus/retrieval/diagnosis/i2t_r2" in ok.output and "corpus/zero_shot/auc_macro" in ok.output

    typo = runner.invoke(app, ["evaluate", "--config", str(cfg_path), "--checkpoint", str(ckpt),
                               "--set", "linear_probe.c_gird=[1]"])
    assert typo.exit_code == 2 and "linear_probe.c_gird" in typo.output

    no_model = runner.invoke(app, ["evaluate", "--config", str(cfg_path)])
    assert no_model.exit_code == 2 and "nothing to evaluate" in no_model.output


def test_unreadable_image_is_counted_not_fatal(tmp_path, eval_bundle):
    root = write_generic_csv(tmp_path / "csv", multiclass=False)
    (root / "img" / "30.png").write_bytes(b"not a png")  # a test row
    cfg = config(
        datasets=[{"kind": "csv", "root": str(root), "csv": str(root / "labels.csv"), "image_column": "file",
                   "split_column": "split", "label_columns": ["class_a", "class_b"]}],
        linear_probe={"enabled": False}, retrieval={"enabled": False}, plots=False, out_dir=str(tmp_path / "o"),
    )
    result = evaluate(cfg, bundle=eval_bundle)
    assert result["datasets"]["csv"]["summary"]["read"]["skipped"]["image unreadable"] == 1


def test_shipped_configs_validate():
    from pathlib import Path

    from mgll.config import load_config
    from mgll.eval_config import AblationConfig

    repo = Path(__file__).resolve().parent.parent
    cfg = load_config(EvaluateConfig, repo / "configs" / "evaluate_demo.yaml")
    assert cfg.datasets[0].kind == "corpus" and cfg.zero_shot.enabled and cfg.linear_probe.enabled
    ablation = load_config(AblationConfig, repo / "configs" / "ablation_demo.yaml")
    assert len(ablation.variants) == 7


def test_dataset_spec_errors_are_specific():
    from mgll.config import ConfigError

    with pytest.raises(ConfigError, match="datasets"):
        config(datasets=[])
    with pytest.raises(ConfigError, match="templates.*lack"):
        config(datasets=[{"kind": "corpus", "root": ".", "templates": ["no slot"]}])
    with pytest.raises(ConfigError, match="names must be unique"):
        config(datasets=[{"kind": "corpus", "root": "a"}, {"kind": "corpus", "root": "b"}])
