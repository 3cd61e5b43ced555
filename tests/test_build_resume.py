"""Resumability (a real build process killed with SIGKILL, then rerun) and a Dask LocalCluster build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from dataset_builders.build import build
from dataset_builders.config import load_build_config


def _data(corpus: Path, out: Path, **extra) -> dict:
    return {"sources": [{"kind": "synthetic", "root": str(corpus)}], "out": str(out), "image_size": 32,
            "chunk_size": 6, "shard_max_samples": 4, "salt": "resume-salt", "plots": False, **extra}


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "manifest.parquet")


def test_kill_9_mid_build_then_rerun_gives_the_same_manifest(small_demo_corpus, tmp_path):
    reference_out = tmp_path / "reference"
    reference = build(load_build_config(data=_data(small_demo_corpus, reference_out)), progress=False)

    out = tmp_path / "killed"
    script = (
        "import sys, time\n"
        "from dataset_builders import build as b\n"
        "from dataset_builders.config import load_build_config\n"
        "orig = b.run_chunk\n"
        "def slow(cfg, chunk):\n"
        "    r = orig(cfg, chunk); time.sleep(0.4); return r\n"
        "b.run_chunk = slow\n"
        f"b.build(load_build_config(data={_data(small_demo_corpus, out)!r}), progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    markers = out / "_state" / "chunks"
    deadline = time.time() + 120
    while time.time() < deadline and (not markers.exists() or len(list(markers.glob("*.json"))) < 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    committed = len(list(markers.glob("*.json")))
    assert 3 <= committed < reference.chunks_run, "the kill must land mid-build"
    assert not (out / "manifest.parquet").exists()

    resumed = build(load_build_config(data=_data(small_demo_corpus, out)), progress=False)
    assert resumed.chunks_skipped == committed and resumed.chunks_run == reference.chunks_run - committed
    a, b = _manifest(reference_out), _manifest(out)
    assert a.key.is_unique and b.key.is_unique
    pd.testing.assert_frame_equal(a, b)
    assert (resumed.inputs, resumed.samples, resumed.rejects, resumed.duplicates) == (
        reference.inputs, reference.samples, reference.rejects, reference.duplicates)
    assert resumed.inputs == resumed.samples + resumed.rejects + resumed.duplicates
    # no temporary or orphaned shard files survive, and shards hold exactly the manifest's samples
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert sorted(p.relative_to(out).as_posix() for p in (out / "shards").rglob("*.tar")) == sorted(set(b.shard))


def test_dask_local_cluster_build_matches_local_build(small_demo_corpus, tmp_path):
    local = build(load_build_config(data=_data(small_demo_corpus, tmp_path / "local", chunk_size=40)), progress=False)
    dask = build(
        load_build_config(data=_data(small_demo_corpus, tmp_path / "dask", chunk_size=40,
                                     runner={"kind": "dask", "workers": 2})),
        progress=False,
    )
    assert dask.chunks_run == local.chunks_run >= 3
    a, b = _manifest(tmp_path / "local"), _manifest(tmp_path / "dask")
    pd.testing.assert_frame_equal(a, b)
    assert (dask.samples, dask.rejects, dask.duplicates) == (local.samples, local.rejects, local.duplicates)
