"""The build, as plain functions: ``plan_chunks`` -> ``run_chunk`` (any runner) -> ``finalize``; ``build`` does all.

Commit protocol of a chunk (resumable, idempotent): its shards are renamed into ``shards/<split>/`` one by one,
then its manifest part and rejects part into ``_state/parts/``, then - last - its marker ``_state/chunks/<n>.json``
holding the hash of the chunk's inputs.  A chunk with a matching marker is skipped; a chunk without one is redone
from scratch after deleting whatever shards of it a killed run left behind.  Finalize reads the parts in chunk
order, so the manifest never depends on which worker finished first.

Accounting: inputs + extra_frames = samples + rejects + duplicates (extra_frames > 0 only with ``multiframe: all``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Callable

import fsspec

from dataset_builders import deid
from dataset_builders.config import BuildConfig
from dataset_builders.schema import MANIFEST_SCHEMA, REJECT_SCHEMA, SPLITS, Evidence
from dataset_builders.shards import (
    ChunkShardWriter,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    read_parquet_rows,
    rewrite_shard_without,
)
from dataset_builders.sources import RawItem, Reject, Source, make_source
from dataset_builders.splits import find_duplicates, split_for_patient
from mgll.config import ConfigError

logger = logging.getLogger("dataset_builders.build")

DUPLICATE_SCHEMA_FIELDS = ("source", "source_path", "duplicate_of", "pixel_sha256")
STATE_DIR = "_state"
SALT_FILE = f"{STATE_DIR}/deid_salt"


# ---------------------------------------------------------------------------------------------------------------
# Data passed between stages
@dataclass
class Chunk:
    index: int
    items: list[RawItem]

    @property
    def items_hash(self) -> str:
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(item.identity().encode())
            digest.update(b"\x00")
        return digest.hexdigest()


@dataclass
class ChunkResult:
    index: int
    inputs: int
    samples: int
    rejects: int
    extra_frames: int
    shards: dict[str, list[str]]
    rejects_by_reason: dict[str, int]
    seconds: float
    skipped: bool = False


@dataclass
class BuildSummary:
    out: str
    inputs: int
    samples: int
    rejects: int
    duplicates: int
    extra_frames: int
    per_split: dict[str, int]
    per_source: dict[str, int]
    rejects_by_reason: dict[str, int]
    samples_per_s: float
    seconds: float
    card_path: str
    chunks_run: int = 0
    chunks_skipped: int = 0
    content_hash: str = ""
    finalized: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Output location and per-process context
def out_fs(cfg: BuildConfig):
    fs, base = fsspec.core.url_to_fs(cfg.out)
    return fs, base.rstrip("/")


def _out(cfg: BuildConfig, rel: str) -> str:
    return posixpath.join(out_fs(cfg)[1], rel)


def resolve_build_salt(cfg: BuildConfig) -> tuple[str, str]:
    """Salt by the policy in ``dataset_builders.config`` (config, env, else generated and kept in ``_state``)."""
    fs, base = out_fs(cfg)
    path = posixpath.join(base, SALT_FILE)

    def read() -> str | None:
        if fs.exists(path):
            with fs.open(path, "rb") as handle:
                return handle.read().decode().strip() or None
        return None

    def write(salt: str) -> None:
        atomic_write_bytes(fs, path, salt.encode())
        try:
            fs.chmod(path, 0o600)
        except (AttributeError, NotImplementedError, OSError):
            pass

    return deid.resolve_salt(cfg.salt, read, write)


def describe_reason(reason: str) -> str:
    """A reject reason's stable category ("no PixelData element", "corrupt or truncated DICOM header", ...)."""
    return reason.split(":", 1)[0].split(" (", 1)[0].strip()


class BuildContext:
    """What ``Source.process`` needs: config, de-identifier, keys, splits, text stage and ontologies (per process)."""

    def __init__(self, cfg: BuildConfig, salt: str):
        self.cfg = cfg
        self.deid = deid.Deidentifier(salt)
        # pydicom's log records quote header values (possible PHI) and decoder tracebacks: keep them out of logs;
        # what matters reaches rejects.parquet as a reason.
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
        self._labeler = None
        self._ontologies: dict[str, Any] = {}
        self._report_cache: dict[str, tuple] = {}  # several images of one study share one report

    @property
    def text_stage(self) -> str:
        # resolved lazily: importing the text stage loads spaCy, which builds without reports never need
        return "dataset_builders.text" if text_stage_available() else "fallback"

    def sample_key(self, item: RawItem, frame_index: int) -> str:
        return self.deid.hash_id("key", f"{item.source}\x1f{item.path}\x1f{frame_index}", length=24)

    def split_for(self, patient_hash: str) -> str:
        return split_for_patient(patient_hash, self.cfg.splits)

    def ontology(self, name: str):
        if name not in self._ontologies:
            try:
                from dataset_builders.text.ontology import load_ontology
            except ImportError:
                self._ontologies[name] = None
            else:
                self._ontologies[name] = load_ontology(name)
        return self._ontologies[name]

    def report_texts(self, report: str, modality_text: str):
        """Scrubbed report -> (texts, labels, evidence, spans) via the clinical-text stage (or the fallback)."""
        cache_key = hashlib.sha256(f"{modality_text}\x1f{report}".encode()).hexdigest()
        if cache_key not in self._report_cache:
            if len(self._report_cache) > 4096:
                self._report_cache.clear()
            self._report_cache[cache_key] = self._report_texts(report, modality_text)
        return self._report_cache[cache_key]

    def _report_texts(self, report: str, modality_text: str):
        if self.text_stage == "fallback":
            return fallback_report_texts(report, modality_text)
        from dataset_builders.text.compose import compose_texts

        composed = compose_texts(report, modality_text=modality_text)
        texts = {
            "modality": getattr(composed, "modality", "") or modality_text,
            "diagnosis": composed.diagnosis or "",
            "explanation": composed.explanation or "",
        }
        if self._labeler is None:
            from dataset_builders.text.labeler import Labeler

            self._labeler = Labeler(self.cfg.ontology)
        results = self._labeler.label(report)
        labels = {name: int(r.state) for name, r in results.items()}
        evidence = {name: [e if isinstance(e, Evidence) else Evidence(**e) for e in r.evidence] for name, r in results.items()}
        spans = {k: [tuple(s) for s in v] for k, v in (getattr(composed, "spans", {}) or {}).items()}
        return texts, labels, evidence, spans


@lru_cache(maxsize=1)
def text_stage_available() -> bool:
    try:
        import dataset_builders.text.compose  # noqa: F401
        import dataset_builders.text.labeler  # noqa: F401
    except ImportError:
        return False
    return True


def fallback_report_texts(report: str, modality_text: str):
    """Used only while ``dataset_builders.text`` is not importable: FINDINGS / IMPRESSION split, no labels."""
    import re

    sections: dict[str, str] = {}
    matches = list(re.finditer(r"(?im)^\s*(FINDINGS|IMPRESSION|CONCLUSION)\s*:", report))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(report)
        sections[match.group(1).upper()] = report[match.end():end].strip()
    diagnosis = sections.get("IMPRESSION") or sections.get("CONCLUSION") or ""
    explanation = sections.get("FINDINGS") or (report.strip() if not diagnosis else "")
    return {"modality": modality_text, "diagnosis": " ".join(diagnosis.split()), "explanation": " ".join(explanation.split())}, {}, {}, {}


_CONTEXTS: dict[str, BuildContext] = {}
_SOURCES: dict[str, dict[str, Source]] = {}


def _cfg_id(cfg: BuildConfig) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()


def get_context(cfg: BuildConfig) -> BuildContext:
    # one context per thread: the text stage's spaCy pipeline is not meant to be shared between threads
    key = f"{_cfg_id(cfg)}:{threading.get_ident()}"
    if key not in _CONTEXTS:
        salt, _origin = resolve_build_salt(cfg)
        _CONTEXTS[key] = BuildContext(cfg, salt)
    return _CONTEXTS[key]


def get_sources(cfg: BuildConfig) -> dict[str, Source]:
    key = _cfg_id(cfg)
    if key not in _SOURCES:
        _SOURCES[key] = {s.name: make_source(s) for s in cfg.sources}
    return _SOURCES[key]


# ---------------------------------------------------------------------------------------------------------------
# Stages
def plan_chunks(cfg: BuildConfig) -> list[Chunk]:
    """List every source's items (stable order) and cut them into chunks of ``chunk_size``.

    Also fixes the salt for this output (a generated one is persisted here, before any worker needs it) and
    generates the demo corpus for a ``synthetic`` source that has none yet.
    """
    resolve_build_salt(cfg)
    sources = get_sources(cfg)
    items: list[RawItem] = []
    for source in sources.values():
        source.check()
        items.extend(source.iter_items())
    size = cfg.chunk_size
    return [Chunk(i, items[start : start + size]) for i, start in enumerate(range(0, len(items), size))]


def _marker_path(base: str, index: int) -> str:
    return posixpath.join(base, STATE_DIR, "chunks", f"{index:05d}.json")


def _part_path(base: str, index: int, kind: str) -> str:
    return posixpath.join(base, STATE_DIR, "parts", f"{index:05d}.{kind}.parquet")


def _remove_partial_chunk(fs, base: str, index: int) -> None:
    for split in SPLITS:
        for path in fs.glob(posixpath.join(base, "shards", split, f"*{split}-{index:05d}-*")):
            fs.rm(path)
    for kind in ("manifest", "rejects"):
        path = _part_path(base, index, kind)
        if fs.exists(path):
            fs.rm(path)


def run_chunk(cfg: BuildConfig, chunk: Chunk) -> ChunkResult:
    """Process one chunk and commit it atomically; a chunk already committed with the same inputs is skipped."""
    fs, base = out_fs(cfg)
    marker = _marker_path(base, chunk.index)
    if fs.exists(marker):
        with fs.open(marker, "rb") as handle:
            done = json.loads(handle.read())
        if done.get("items_hash") == chunk.items_hash:
            result = ChunkResult(**done["result"])
            result.skipped = True
            return result
        fs.rm(marker)
    _remove_partial_chunk(fs, base, chunk.index)

    started = time.perf_counter()
    ctx = get_context(cfg)
    sources = get_sources(cfg)
    writer = ChunkShardWriter(fs, base, chunk.index, cfg.shard_max_samples, cfg.shard_max_bytes)
    manifest_rows: list[dict] = []
    reject_rows: list[dict] = []
    extra_frames = 0
    try:
        for item in chunk.items:
            try:
                samples = sources[item.source].process(item, ctx)
            except Reject as rej:
                reject_rows.append({"source": item.source, "source_path": item.path, "stage": rej.stage, "reason": rej.reason})
                continue
            except ConfigError:
                raise  # a misconfiguration affects every input: stop with its message instead of rejecting all
            except Exception as exc:  # never crash the build on one input: quarantine it with what we know
                reject_rows.append(
                    {"source": item.source, "source_path": item.path, "stage": "internal",
                     "reason": f"unexpected {type(exc).__name__} while processing"}
                )
                logger.warning("chunk %d: unexpected %s on one input (quarantined)", chunk.index, type(exc).__name__)
                continue
            extra_frames += max(0, len(samples) - 1)
            for sample in samples:
                shard = writer.write(sample)
                manifest_rows.append(sample.record.manifest_row(shard))
        shards = writer.close()
    except BaseException:
        writer.abort()
        raise
    atomic_write_parquet(fs, _part_path(base, chunk.index, "manifest"), manifest_rows, MANIFEST_SCHEMA)
    atomic_write_parquet(fs, _part_path(base, chunk.index, "rejects"), reject_rows, REJECT_SCHEMA)
    result = ChunkResult(
        index=chunk.index,
        inputs=len(chunk.items),
        samples=len(manifest_rows),
        rejects=len(reject_rows),
        extra_frames=extra_frames,
        shards=shards,
        rejects_by_reason=dict(Counter(describe_reason(r["reason"]) for r in reject_rows)),
        seconds=round(time.perf_counter() - started, 3),
    )
    atomic_write_json(fs, marker, {"items_hash": chunk.items_hash, "result": asdict(result)})
    logger.info(
        "chunk %d: %d inputs -> %d samples, %d rejects %s in %.1f s",
        chunk.index, result.inputs, result.samples, result.rejects, result.rejects_by_reason or "", result.seconds,
    )
    return result


def finalize(cfg: BuildConfig, results: list[ChunkResult], seconds: float | None = None) -> BuildSummary:
    """Merge parts in chunk order, drop exact duplicates from shards, write manifest/rejects/duplicates/plots/card."""
    from dataset_builders import card as card_mod

    fs, base = out_fs(cfg)
    results = sorted(results, key=lambda r: r.index)
    rows: list[dict] = []
    rejects: list[dict] = []
    for result in results:
        rows.extend(read_parquet_rows(fs, _part_path(base, result.index, "manifest")))
        rejects.extend(read_parquet_rows(fs, _part_path(base, result.index, "rejects")))

    drop, duplicates = find_duplicates(rows)
    by_shard: dict[str, set[str]] = {}
    for index in drop:
        by_shard.setdefault(rows[index]["shard"], set()).add(rows[index]["key"])
    for shard, keys in sorted(by_shard.items()):
        path = posixpath.join(base, shard)
        if fs.exists(path):
            rewrite_shard_without(fs, path, keys)
    manifest = [row for i, row in enumerate(rows) if i not in drop]

    live_shards = sorted({row["shard"] for row in manifest})
    _remove_orphan_shards(fs, base, {s for r in results for v in r.shards.values() for s in v})

    content_hash = card_mod.content_hash(manifest)
    inputs = sum(r.inputs for r in results)
    extra_frames = sum(r.extra_frames for r in results)
    elapsed = seconds if seconds is not None else sum(r.seconds for r in results)
    rejects_by_reason = dict(sorted(Counter(describe_reason(r["reason"]) for r in rejects).items()))
    summary = BuildSummary(
        out=cfg.out,
        inputs=inputs,
        samples=len(manifest),
        rejects=len(rejects),
        duplicates=len(duplicates),
        extra_frames=extra_frames,
        per_split=dict(Counter(row["split"] for row in manifest)),
        per_source=dict(Counter(row["source"] for row in manifest)),
        rejects_by_reason=rejects_by_reason,
        samples_per_s=round(sum(r.samples for r in results if not r.skipped) / elapsed, 2) if elapsed > 0 else 0.0,
        seconds=round(elapsed, 2),
        card_path=posixpath.join(cfg.out.rstrip("/"), "dataset.json"),
        chunks_run=sum(not r.skipped for r in results),
        chunks_skipped=sum(r.skipped for r in results),
        content_hash=content_hash,
    )
    card_path = posixpath.join(base, "dataset.json")
    config_hash = hashlib.sha256(json.dumps(cfg.redacted(), sort_keys=True).encode()).hexdigest()
    if fs.exists(card_path) and all(fs.exists(posixpath.join(base, n)) for n in ("manifest.parquet", "rejects.parquet", "duplicates.parquet")):
        with fs.open(card_path, "rb") as handle:
            old = json.loads(handle.read())
        if old.get("content_hash") == content_hash and old.get("build_config_hash") == config_hash:
            summary.finalized = False  # unchanged input: nothing to write
            return summary

    atomic_write_parquet(fs, posixpath.join(base, "manifest.parquet"), manifest, MANIFEST_SCHEMA)
    atomic_write_parquet(fs, posixpath.join(base, "rejects.parquet"), rejects, REJECT_SCHEMA)
    import pyarrow as pa

    dup_schema = pa.schema([(name, pa.string()) for name in DUPLICATE_SCHEMA_FIELDS])
    atomic_write_parquet(fs, posixpath.join(base, "duplicates.parquet"), duplicates, dup_schema)
    if cfg.plots:
        from dataset_builders import plots

        plots.write_plots(fs, base, manifest)
    sources = get_sources(cfg)
    card = card_mod.build_card(
        cfg, manifest, summary, live_shards,
        label_derived={name: s.label_derived_granularities() for name, s in sources.items()},
        ontology_order=_ontology_order(cfg, sources),
        config_hash=config_hash,
        text_stage=get_context(cfg).text_stage if _uses_reports(cfg) else "unused",
    )
    atomic_write_json(fs, card_path, card)
    return summary


def _uses_reports(cfg: BuildConfig) -> bool:
    return any(s.kind in ("report_xray", "synthetic") or getattr(s, "reports", None) for s in cfg.sources)


def _ontology_order(cfg: BuildConfig, sources: dict[str, Source]) -> list[str]:
    ctx = get_context(cfg)
    names = []
    if _uses_reports(cfg):
        names.append(cfg.ontology)
    for s in sources.values():
        onto = getattr(s.cfg, "ontology", None) or ("fundus" if s.kind == "synthetic" else None)
        if onto and onto not in names:
            names.append(onto)
    order: list[str] = []
    for name in names:
        onto = ctx.ontology(name)
        if onto is not None:
            order.extend(label for label in onto.labels if label not in order)
    return order


def _remove_orphan_shards(fs, base: str, keep: set[str]) -> None:
    """Shards left by chunks that no longer exist in the plan (the input changed) are not part of this build."""
    for path in fs.glob(posixpath.join(base, "shards", "*", "*.tar")):
        rel = path[len(base) + 1 :] if path.startswith(base + "/") else path
        if rel not in keep:
            fs.rm(path)


# ---------------------------------------------------------------------------------------------------------------
# Runners
def run_chunks(
    cfg: BuildConfig, chunks: list[Chunk], on_result: Callable[[ChunkResult], None] | None = None
) -> list[ChunkResult]:
    """Run ``run_chunk`` over all chunks on the configured runner (local / threads / processes / dask)."""
    runner = cfg.runner
    results: list[ChunkResult] = []

    def collect(result: ChunkResult) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    if runner.kind == "local" or len(chunks) <= 1:
        for chunk in chunks:
            collect(run_chunk(cfg, chunk))
    elif runner.kind in ("threads", "processes"):
        pool_cls = ThreadPoolExecutor if runner.kind == "threads" else ProcessPoolExecutor
        with pool_cls(max_workers=runner.workers) as pool:
            pending = {pool.submit(run_chunk, cfg, chunk) for chunk in chunks}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    collect(future.result())
    elif runner.kind == "dask":
        from dask.distributed import Client, LocalCluster, as_completed

        cluster = None
        if runner.address:
            client = Client(runner.address)
        else:
            cluster = LocalCluster(n_workers=runner.workers, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        try:
            futures = client.map(run_chunk, [cfg] * len(chunks), chunks, pure=False)
            for future in as_completed(futures):
                collect(future.result())
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    return sorted(results, key=lambda r: r.index)


def build(cfg: BuildConfig, progress: bool = True) -> BuildSummary:
    """The whole build without Prefect: plan, run every chunk on the configured runner, finalize."""
    started = time.perf_counter()
    chunks = plan_chunks(cfg)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(chunks), unit="chunk", desc="build-dataset", dynamic_ncols=True)

    counts = Counter()

    def on_result(result: ChunkResult) -> None:
        counts.update(samples=result.samples, rejects=result.rejects)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(samples=counts["samples"], rejects=counts["rejects"], refresh=False)

    try:
        results = run_chunks(cfg, chunks, on_result)
    finally:
        if bar is not None:
            bar.close()
    return finalize(cfg, results, seconds=time.perf_counter() - started)


def code_version() -> str:
    try:
        from mgll.settings import REPO_ROOT

        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("mgll")
    except PackageNotFoundError:
        pkg = "0"
    return f"{pkg}+{sha}" if sha else pkg


def log_build_to_mlflow(cfg: BuildConfig, summary: BuildSummary) -> None:
    """Metrics and artifacts of one build into the active MLflow run (no-op without one)."""
    import tempfile
    from pathlib import Path

    from mgll import tracking

    metrics = {
        "inputs": summary.inputs, "samples": summary.samples, "rejects": summary.rejects,
        "duplicates": summary.duplicates, "samples_per_s": summary.samples_per_s, "seconds": summary.seconds,
        **{f"split_{k}": v for k, v in summary.per_split.items()},
        **{f"rejects_{k.replace(' ', '_')}": v for k, v in summary.rejects_by_reason.items()},
    }
    tracking.log_metrics(metrics)
    fs, base = out_fs(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("dataset.json", "manifest.parquet", "rejects.parquet", "duplicates.parquet"):
            path = posixpath.join(base, name)
            if fs.exists(path):
                fs.get(path, str(Path(tmp) / name))
                tracking.log_artifact(Path(tmp) / name)
        plots_dir = posixpath.join(base, "plots")
        if fs.exists(plots_dir):
            local = Path(tmp) / "plots"
            local.mkdir()
            for path in fs.glob(posixpath.join(plots_dir, "*.png")):
                fs.get(path, str(local / posixpath.basename(path)))
            tracking.log_artifact(local, "plots")

