"""Prefect flow ``build-dataset``: plan -> chunk tasks on the configured task runner -> finalize, one MLflow run.

The flow only wires: every stage is a plain function in ``dataset_builders.build``.  Chunk tasks retry (a chunk is
idempotent: a retry after a partial write starts the chunk over, a committed chunk is skipped).  The task runner
comes from ``runner`` in the build config: ``local``/``threads`` -> ``ThreadPoolTaskRunner``, ``processes`` ->
``ProcessPoolTaskRunner``, ``dask`` -> ``prefect_dask.DaskTaskRunner`` on a LocalCluster or ``runner.address``.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE

from dataset_builders.build import BuildSummary, Chunk, ChunkResult, finalize, log_build_to_mlflow, plan_chunks, run_chunk
from dataset_builders.config import BuildConfig, load_build_config


@task(name="plan-chunks", cache_policy=NO_CACHE)
def plan_task(cfg: BuildConfig) -> list[Chunk]:
    chunks = plan_chunks(cfg)
    get_run_logger().info("%d inputs in %d chunks", sum(len(c.items) for c in chunks), len(chunks))
    return chunks


@task(name="build-chunk", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, task_run_name="chunk-{chunk.index:05d}")
def chunk_task(cfg: BuildConfig, chunk: Chunk) -> ChunkResult:
    result = run_chunk(cfg, chunk)
    get_run_logger().info(
        "chunk %05d %s: %d inputs -> %d samples, %d rejects %s (%.1f s)",
        chunk.index, "skipped (already committed)" if result.skipped else "built",
        result.inputs, result.samples, result.rejects, result.rejects_by_reason or "", result.seconds,
    )
    return result


@task(name="finalize", cache_policy=NO_CACHE)
def finalize_task(cfg: BuildConfig, results: list[ChunkResult], seconds: float) -> BuildSummary:
    summary = finalize(cfg, results, seconds=seconds)
    get_run_logger().info(
        "%d inputs -> %d samples, %d rejects, %d duplicates; splits %s; %.1f samples/s",
        summary.inputs, summary.samples, summary.rejects, summary.duplicates, summary.per_split, summary.samples_per_s,
    )
    return summary


def task_runner_for(cfg: BuildConfig):
    runner = cfg.runner
    if runner.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if runner.address:
            return DaskTaskRunner(address=runner.address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": runner.workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None},
        )
    if runner.kind == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=runner.workers)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=runner.workers if runner.kind == "threads" else 1)


@flow(name="build-dataset-chunks")
def chunks_flow(cfg: BuildConfig, chunks: list[Chunk]) -> list[ChunkResult]:
    futures = chunk_task.map(unmapped(cfg), chunks)
    return [f.result() for f in futures]


@flow(name="build-dataset")
def build_dataset_flow(config_path: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Build a dataset from a YAML config (+ ``key=value`` overrides); returns the build summary as a dict."""
    from mgll.config import flatten_for_logging
    from mgll.tracking import tracking_run

    cfg = load_build_config(config_path, overrides or [])
    started = time.perf_counter()
    params = flatten_for_logging(cfg.redacted())
    with tracking_run("build", run_name=f"build-{cfg.out.rstrip('/').rsplit('/', 1)[-1]}", params=params) as run:
        chunks = plan_task(cfg)
        results = chunks_flow.with_options(task_runner=task_runner_for(cfg))(cfg, chunks) if chunks else []
        summary = finalize_task(cfg, results, time.perf_counter() - started)
        log_build_to_mlflow(cfg, summary)
        out = summary.to_dict()
        out["mlflow_run_id"] = run.info.run_id if run is not None else None
    return out
