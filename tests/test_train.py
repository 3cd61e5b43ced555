"""The pretraining loop on CPU: learning, exact resume after SIGKILL, NaN stop, DDP under torchrun, MLflow."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mgll.checkpoint import load_checkpoint
from mgll.config import ConfigError, load_config
from mgll.train import NonFiniteLossError, train
from mgll.train_config import PretrainConfig
from tests.fixtures.train import write_tiny_dataset

REPO = Path(__file__).resolve().parent.parent


def tiny_config(dataset: Path, out: Path, **sections) -> PretrainConfig:
    data = {
        "model": {"name": "mgll-micro"},
        "data": {"dataset": str(dataset), "workers": 0, "shuffle_buffer": 32},
        "train": {"steps": 4, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 2, "val_batches": 1,
                  "threads": 1},  # one thread: steady timings on a shared 2-core machine
        "output": {"dir": str(out)},
        "tracking": {"log_model": False},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return load_config(PretrainConfig, data=data)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_few_steps_decrease_the_loss(tmp_path):
    # An easy batch: 16 samples, seen every step (re-augmented). Diagnosis + explanation texts: the fixture's
    # modality text is identical for every sample, which gives that granularity no image-text contrast to learn.
    dataset = write_tiny_dataset(tmp_path / "one-batch", n_train=16, n_val=16)
    cfg = tiny_config(dataset, tmp_path / "run", data={"granularities": ["diagnosis", "explanation"]},
                      train={"steps": 16, "batch_size": 16, "lr": 2e-3, "warmup_steps": 2, "checkpoint_every": 8})
    result = train(cfg)
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == list(range(1, 17))
    mean_last = {term: sum(r[term] for r in rows[-3:]) / 3 for term in ("loss", "sclip")}
    assert mean_last["loss"] < 0.5 * rows[0]["loss"], (rows[0]["loss"], mean_last)
    # image-text alignment, not only the point-wise bias: soft CLIP falls clearly below chance (ln 16 = 2.77)
    assert mean_last["sclip"] < math.log(16) - 0.2, mean_last
    for row in rows:
        assert {"sclip", "pointwise", "skl", "lr", "logit_scale", "samples_per_s", "data_wait_fraction"} <= set(row)
        assert 0.0 <= row["data_wait_fraction"] <= 1.0 and row["samples_per_s"] > 0
    assert rows[0]["lr"] < rows[1]["lr"] and rows[-1]["lr"] < rows[6]["lr"]  # warmup, then cosine decay
    state = load_checkpoint(result.checkpoint)
    assert state["step"] == 16 and state["data_position"] == {"epoch": 15, "batches": 1}  # one batch per epoch
    assert set(state["extra"]["loss"]) == {"pointwise_log_scale", "pointwise_bias"}
    assert result.best_checkpoint and "val_loss" in result.metrics
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 1000


def test_clip_baseline_and_fewer_granularities(tiny_dataset, tmp_path):
    result = train(tiny_config(tiny_dataset, tmp_path / "clip", loss={"kind": "clip"}, data={"granularities": ["diagnosis"]},
                               output={"keep_every": True}))
    assert sorted(p.name for p in (tmp_path / "clip").glob("step-*.pt")) == ["step-0000002.pt", "step-0000004.pt"]
    rows = read_metrics(tmp_path / "clip")
    assert len(rows) == 4 and all(r["pointwise"] == 0 and r["skl"] == 0 and r["sclip"] > 0 for r in rows)
    assert result.steps == 4


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path):
    cfg = tiny_config(
        tiny_dataset, tmp_path / "nan",
        train={"steps": 8, "lr": 1e30, "warmup_steps": 0, "grad_clip_norm": None, "checkpoint_every": 1},
        data={"val_split": None},
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step (\d+) .*term '(sclip|pointwise|skl|logit_scale)'") as err:
        train(cfg)
    failed_step = int(err.value.args[0].split("step ")[1].split()[0])
    assert f"last good checkpoint: {tmp_path / 'nan' / 'last.pt'}" in str(err.value)
    state = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert state["step"] == failed_step - 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def _write_config(cfg: PretrainConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def _trainer(config: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mgll.train", "--config", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_resume_after_sigkill_reproduces_the_losses(tiny_dataset, tmp_path):
    common = dict(train={"steps": 16, "batch_size": 8, "checkpoint_every": 3, "threads": 1}, data={"val_split": None})
    reference = _write_config(tiny_config(tiny_dataset, tmp_path / "ref", **common), tmp_path / "ref.yaml")
    killed = _write_config(tiny_config(tiny_dataset, tmp_path / "killed", **common), tmp_path / "killed.yaml")
    proc = _trainer(killed)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 5:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL, "the trainer finished before it could be killed"
    lines_at_kill = len(metrics.read_text().splitlines())
    ckpt_step = load_checkpoint(tmp_path / "killed" / "last.pt")["step"]
    assert 3 <= ckpt_step <= lines_at_kill < 16
    resumed = _trainer(killed)
    train(load_config(PretrainConfig, reference))  # the uninterrupted run, in this process, meanwhile
    out, err = resumed.communicate(timeout=300)
    assert "MGLL_RESULT" in out, err
    ref_rows, rows = read_metrics(tmp_path / "ref"), read_metrics(tmp_path / "killed")
    assert [r["step"] for r in rows] == list(range(1, 17))  # nothing lost, nothing duplicated
    for a, b in zip(ref_rows, rows):
        for term in ("loss", "sclip", "pointwise", "skl", "lr"):
            assert abs(a[term] - b[term]) <= 1e-5, (a["step"], term, a[term], b[term])


def test_ddp_two_processes_under_torchrun(tiny_dataset, tmp_path):
    from flows.pretrain import TrainingFailed, run_torchrun

    cfg = tiny_config(tiny_dataset, tmp_path / "ddp", train={"steps": 2, "threads": 1}, distributed={"nproc_per_node": 2})
    lines: list[str] = []
    result = run_torchrun(cfg, log_line=lines.append)
    assert result["steps"] == 2 and Path(result["checkpoint"]).is_file()
    assert result["metrics"]["val_loss"] > 0  # validation on rank 0 alone while rank 1 waits
    rows = read_metrics(tmp_path / "ddp")
    assert len(rows) == 2 and all(r["samples_per_s"] > 0 for r in rows)
    assert any("--nproc-per-node 2" in line for line in lines)
    bad = cfg.model_copy(update={"data": cfg.data.model_copy(update={"granularities": ["impression"]})})
    with pytest.raises(TrainingFailed, match=r"exit code 1\): granularities \['impression'\] are not in the dataset card"):
        run_torchrun(bad, log_line=lines.append)


def test_config_errors_are_specific(tiny_dataset):
    with pytest.raises(ConfigError, match=r"field 'train.batchsize'"):
        load_config(PretrainConfig, data={"data": {"dataset": str(tiny_dataset)}, "train": {"batchsize": 3}})
    with pytest.raises(ConfigError, match=r"field 'data.granularities'.*between 1 and 3"):
        load_config(PretrainConfig, data={"data": {"dataset": "x", "granularities": []}})
    with pytest.raises(ConfigError, match=r"rdzv_endpoint"):
        load_config(PretrainConfig, data={"data": {"dataset": "x"}, "distributed": {"nnodes": 2}})
    for path in ("configs/pretrain_demo.yaml", "configs/pretrain_default.yaml"):
        assert load_config(PretrainConfig, REPO / path).loss.kind == "mgll"


def test_cli_reports_errors_without_traceback(tmp_path):
    from typer.testing import CliRunner

    from mgll.cli import app

    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"data": {"dataset": str(tmp_path / "nowhere")}, "model": {"name": "mgll-micro"}}))
    result = CliRunner().invoke(app, ["pretrain", "--config", str(config), "--set", "train.steps=1"])
    assert result.exit_code == 2
    assert "no dataset card" in result.output and "Traceback" not in result.output


def test_gpu_benchmark_says_why_it_cannot_run_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the benchmark would run for real")
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_benchmark

    assert gpu_benchmark.main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
