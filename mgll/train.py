"""Pretraining loop: open_clip model + MGLL loss (or a baseline) over build-dataset shards.

``train(cfg)`` runs on CPU, one GPU, or one rank of a torchrun job (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in the
environment -> ``torch.distributed`` from env vars, gloo on CPU, NCCL on CUDA, DDP). It is resumable exactly:
``<run dir>/last.pt`` holds model, loss parameters, optimizer, scheduler, scaler, RNG states and the data position
``{epoch, batches}`` (see ``mgll.data`` for why skipping consumed batches reproduces the stream), so a run killed
at any moment continues with the same per-step losses. ``<run dir>/metrics.jsonl`` holds one line per step (rank 0)
and is cut back to the checkpoint's step on resume, so no step is logged twice.

Targets per granularity (``mgll.loss`` builds them over the global batch): a granularity listed in the card's
``label_derived_granularities`` uses label co-occurrence; a free-text one uses text identity.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from mgll.checkpoint import load_checkpoint, save_checkpoint, set_rng_state, unwrap_model
from mgll.config import flatten_for_logging
from mgll.data import check_granularities, make_loader, make_pipeline, read_card
from mgll.train_config import PretrainConfig

log = logging.getLogger("mgll.train")
LOSS_TERMS = ("loss", "sclip", "pointwise", "skl")


class TrainingError(RuntimeError):
    """Training cannot continue; the message says why and where (step, term, checkpoint)."""


class NonFiniteLossError(TrainingError):
    pass


@dataclass
class TrainResult:
    checkpoint: str
    run_id: str | None
    metrics: dict[str, float]
    best_checkpoint: str | None = None
    run_dir: str = ""
    steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(cfg: PretrainConfig) -> DistInfo:
    """Join the torchrun job described by the environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = cfg.distributed.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() and cfg.train.device != "cpu" else "gloo"
    initialized_here = False
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        initialized_here = True
    return DistInfo(rank, world, local_rank, initialized_here)


def resolve_device(cfg: PretrainConfig, info: DistInfo) -> torch.device:
    wanted = cfg.train.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    if wanted == "cpu" or (wanted == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", info.local_rank)


def resolve_precision(cfg: PretrainConfig, device: torch.device) -> str:
    precision = cfg.train.precision
    if device.type == "cpu":
        if precision in ("fp16", "bf16"):
            log.warning("precision %s requested on CPU: training in fp32 (AMP is for CUDA)", precision)
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def default_run_dir(cfg: PretrainConfig) -> Path:
    from mgll.settings import state_dir

    if cfg.output.dir:
        return Path(cfg.output.dir)
    name = cfg.output.run_name or (
        f"{cfg.model.name}-{cfg.loss.kind}-g{len(cfg.data.granularities)}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    return state_dir() / "runs" / name


def param_groups(model: torch.nn.Module, loss_fn: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay only matrices/kernels; gains, biases, norms, logit scales and the loss's scale/bias
    are never decayed (open_clip's rule plus the loss module's parameters)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name or "norm" in name
        (no_decay if exclude else decay).append(p)
    no_decay += [p for p in loss_fn.parameters() if p.requires_grad]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_loss(cfg: PretrainConfig, info: DistInfo, clip_only: bool = False) -> torch.nn.Module:
    from mgll.loss import MGLLLoss

    options = dict(cfg.loss.options)
    if clip_only:  # the trainer encodes only the CLIP granularity, so it is the loss's granularity 0
        options["clip_granularity"] = 0
    if "mode" in cfg.loss.target_options:
        options.setdefault("cooccurrence_mode", cfg.loss.target_options["mode"])
    try:
        return MGLLLoss(
            alpha=cfg.loss.alpha, kind=cfg.loss.kind, rank=info.rank, world_size=info.world_size, **options
        )
    except TypeError as exc:
        raise TrainingError(f"loss.options has an argument MGLLLoss does not take: {exc}") from None


class _EpochStream:
    """Endless batches across epochs with a resumable position ``{epoch, batches}``."""

    def __init__(self, make: Callable[[int, int], Iterator[dict]], epoch: int, batches: int, info: DistInfo):
        self.make, self.epoch, self.batches, self.info = make, epoch, batches, info
        self.iterator = make(epoch, batches)

    def _all_have(self, has: bool) -> bool:
        if self.info.world_size == 1:
            return has
        flag = torch.tensor([1 if has else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)  # DDP: every rank must step on the same schedule
        return bool(flag.item())

    def next(self) -> dict:
        for _ in range(2):
            batch = next(self.iterator, None)
            if self._all_have(batch is not None):
                self.batches += 1
                return batch
            self.epoch, self.batches = self.epoch + 1, 0
            self.iterator = self.make(self.epoch, 0)
        raise TrainingError(
            "the training split yields no full batch: lower train.batch_size or add data "
            "(every rank needs at least one batch per epoch)"
        )

    @property
    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches}


def _batch_inputs(batch: dict, device: torch.device, loss_granularities: list[int]) -> tuple:
    images = batch["images"].to(device, non_blocking=True)
    tokens = [batch["tokens"][g].to(device, non_blocking=True) for g in loss_granularities]
    return images, tokens


def _forward_loss(model, loss_fn, batch, device, card, granularities, loss_granularities, autocast) -> dict:
    from mgll.loss import text_ids

    images, tokens = _batch_inputs(batch, device, loss_granularities)
    derived = set(card.label_derived_granularities)
    n = images.shape[0]
    with autocast():
        # All granularities' texts go through the text tower as one (G*N) batch: one forward call, which is
        # what DDP expects per backward, and larger matmuls than G separate passes.
        out = model(images, torch.cat(tokens) if len(tokens) > 1 else tokens[0])
        image_features = out["image_features"]
        text_features = list(out["text_features"].split(n))
        logit_scale = out["logit_scale"]
    labels = [batch["labels"].to(device) if granularities[g] in derived else None for g in loss_granularities]
    ids = [text_ids(batch["texts"][g], device=device) for g in loss_granularities]
    masks = [batch["text_mask"][:, g].to(device) for g in loss_granularities]
    result = loss_fn(image_features, text_features, logit_scale, labels=labels, text_ids=ids, masks=masks)
    result["logit_scale"] = logit_scale.detach().float()
    return result


def _non_finite_term(result: dict) -> str | None:
    for term in ("sclip", "pointwise", "skl", "logit_scale", "loss"):  # name the first culprit, not the sum
        value = result.get(term)
        if value is not None and not torch.isfinite(value).all():
            return term
    return None


def _plot_losses(history: list[dict], path: Path) -> Path | None:
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in history]
    for term in LOSS_TERMS:
        values = [h.get(term) for h in history]
        if any(v for v in values):
            ax.plot(steps, values, label=term)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("pretraining loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _read_history(path: Path, up_to_step: int | None) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if up_to_step is None or r["step"] <= up_to_step]


def _log_model(model: torch.nn.Module, bundle_image_size: int, context_length: int) -> None:
    """Image and text encoders with signatures (pickle format: no torch.export batch-size lock, STACK.md)."""
    import mlflow
    from mlflow.models import infer_signature

    from mgll.model import ImageEncoder, TextEncoder

    core = unwrap_model(model).cpu().eval()
    images = torch.zeros(2, 3, bundle_image_size, bundle_image_size)
    tokens = torch.zeros(2, context_length, dtype=torch.long)
    reqs = [f"torch=={torch.__version__.split('+')[0]}", "open_clip_torch"]
    code = [str(Path(__file__).resolve().parent)]
    for name, wrapper, example in (("image_encoder", ImageEncoder(core), images), ("text_encoder", TextEncoder(core), tokens)):
        with torch.no_grad():
            output = wrapper(example).numpy()
        mlflow.pytorch.log_model(
            wrapper, name=name, signature=infer_signature(example.numpy(), output),
            serialization_format="pickle", pip_requirements=reqs, code_paths=code,
        )


def train(cfg: PretrainConfig, *, progress: bool = False) -> TrainResult:
    """Train per ``cfg``; returns the last checkpoint, the MLflow run id (rank 0, tracking on) and final metrics."""
    from mgll import tracking
    from mgll.model import create_model

    info = init_distributed(cfg)
    threads = torch.get_num_threads()
    try:
        return _train(cfg, info, progress, tracking, create_model)
    finally:
        torch.set_num_threads(threads)  # train.threads must not outlive the run in a caller's process
        if info.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: PretrainConfig, info: DistInfo, progress: bool, tracking, create_model) -> TrainResult:
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(cfg, info)
    precision = resolve_precision(cfg, device)
    card = read_card(cfg.data.dataset)
    granularities = check_granularities(card, cfg.data.granularities)
    # The CLIP baseline uses one granularity: encode only that one (the loss would ignore the others).
    clip_index = int(cfg.loss.options.get("clip_granularity", -1)) % len(granularities)
    loss_granularities = [clip_index] if cfg.loss.kind == "clip" else list(range(len(granularities)))
    loss_cfg_kind = cfg.loss.kind

    random.seed(tc.seed)
    np.random.seed(tc.seed)
    torch.manual_seed(tc.seed)
    bundle = create_model(
        cfg.model.name, pretrained=cfg.model.pretrained, device="cpu", image_size=cfg.model.image_size,
        context_length=cfg.model.context_length, grad_checkpointing=cfg.model.grad_checkpointing,
    )
    model = bundle.model.to(device)
    loss_fn = build_loss(cfg, info, clip_only=loss_cfg_kind == "clip")
    loss_fn = loss_fn.to(device)
    optimizer = torch.optim.AdamW(
        param_groups(model, loss_fn, tc.weight_decay), lr=tc.lr, betas=tuple(tc.betas), eps=tc.eps
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(tc.steps, tc.warmup_steps, tc.min_lr_ratio))
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast():
        return torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    run_dir = default_run_dir(cfg)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    metrics_path = run_dir / "metrics.jsonl"
    step, position, best_value, run_id_to_continue = 0, {"epoch": 0, "batches": 0}, math.inf, None
    if cfg.output.resume == "auto" and last_path.is_file():
        state = load_checkpoint(last_path, map_location="cpu")
        if state["model_name"] != cfg.model.name:
            raise TrainingError(
                f"{last_path} was trained as {state['model_name']!r} but model.name is {cfg.model.name!r}: "
                "use another output.dir or output.resume=never"
            )
        unwrap_model(model).load_state_dict(state["model"])
        loss_fn.load_state_dict(state["extra"].get("loss", {}))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, position = int(state["step"]), dict(state["data_position"])
        best_value = float(state["extra"].get("best_value", math.inf))
        if state["extra"].get("tracking_uri") == os.environ.get("MLFLOW_TRACKING_URI"):
            run_id_to_continue = state["extra"].get("tracking_run_id") or None
        if info.world_size == 1:
            set_rng_state(state["rng"])
        log.info("resuming %s at step %d (data position %s)", last_path, step, position)
    if step >= tc.steps:
        log.info("%s already reached %d steps", last_path, step)

    ddp_model = model
    if info.world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )
    if cfg.model.compile:
        ddp_model = torch.compile(ddp_model)

    def make_batches(epoch: int, skip: int) -> Iterator[dict]:
        pipeline = make_pipeline(
            card, cfg.data, split=cfg.data.split, tokenizer=bundle.tokenizer, image_size=bundle.image_size,
            mean=bundle.image_mean, std=bundle.image_std, batch_size=tc.batch_size, seed=tc.seed, epoch=epoch,
            skip_batches=skip, train=True,
        )
        return make_loader(pipeline, cfg.data.workers, skip)

    has_val = bool(cfg.data.val_split and card.shards.get(cfg.data.val_split))

    # Validation runs on rank 0 alone over the whole val split, with a loss that gathers nothing; the other ranks
    # simply wait for it at their next collective.
    val_loss_fn = build_loss(cfg, DistInfo(), clip_only=loss_cfg_kind == "clip").to(device)

    def validation_loss() -> float | None:
        if not has_val or not info.is_main:
            return None
        ddp_model.eval()
        val_loss_fn.load_state_dict(loss_fn.state_dict())
        pipeline = make_pipeline(
            card, cfg.data, split=cfg.data.val_split, tokenizer=bundle.tokenizer, image_size=bundle.image_size,
            mean=bundle.image_mean, std=bundle.image_std, batch_size=tc.batch_size, seed=tc.seed, train=False,
            across_ranks=False,
        )
        total, count = 0.0, 0
        with torch.no_grad():
            for i, batch in enumerate(pipeline):
                if i >= tc.val_batches:
                    break
                out = _forward_loss(model, val_loss_fn, batch, device, card, granularities, loss_granularities, autocast)
                total, count = total + float(out["loss"]), count + 1
        ddp_model.train()
        return total / count if count else None

    def save(path: Path, at_step: int, data_position: dict, extra_metrics: dict) -> Path:
        return save_checkpoint(
            path, model=model, model_name=bundle.name, model_config=bundle.model_config, step=at_step,
            optimizer=optimizer, scheduler=scheduler, scaler=scaler, config=cfg.model_dump(mode="json"),
            data_position=data_position, tokenizer_name=bundle.name, metrics=extra_metrics,
            model_kwargs={"image_size": bundle.image_size, "context_length": bundle.context_length},
            extra={
                "loss": loss_fn.state_dict(), "best_value": best_value,
                "tracking_run_id": run_id or "", "tracking_uri": os.environ.get("MLFLOW_TRACKING_URI", ""),
            },
        )

    history = _read_history(metrics_path, step) if info.is_main else []
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("".join(json.dumps(h) + "\n" for h in history))  # drop steps after the checkpoint
        (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
    run_id = None
    run_ctx = (
        tracking.tracking_run(
            "pretrain", run_name=run_dir.name, params=flatten_for_logging(cfg),
            tags={"mgll.model": cfg.model.name, "mgll.loss": cfg.loss.kind},
            parent_run_id=cfg.tracking.parent_run_id, run_id=run_id_to_continue,
        )
        if info.is_main
        else nullcontext(None)
    )
    stream = _EpochStream(make_batches, position["epoch"], position["batches"], info)
    global_batch = tc.batch_size * tc.accum_steps * info.world_size
    bar = None
    last_metrics: dict[str, float] = {}
    with run_ctx as run:
        run_id = run.info.run_id if run is not None else None
        if info.is_main and run is not None and step == 0:
            tracking.log_artifact(run_dir / "config.json", "config")
            tracking.log_json(card.raw, "dataset.json", "dataset")
        if progress and info.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=tc.steps, initial=step, desc=f"pretrain {cfg.loss.kind}", unit="step")
        ddp_model.train()
        interval_losses: list[float] = []
        while step < tc.steps:
            t_start = time.perf_counter()
            data_time = 0.0
            sums = {term: 0.0 for term in LOSS_TERMS}
            for micro in range(tc.accum_steps):
                t_data = time.perf_counter()
                batch = stream.next()
                data_time += time.perf_counter() - t_data
                sync = micro == tc.accum_steps - 1 or info.world_size == 1
                no_sync = ddp_model.no_sync if (not sync and hasattr(ddp_model, "no_sync")) else nullcontext
                with no_sync():
                    out = _forward_loss(ddp_model, loss_fn, batch, device, card, granularities, loss_granularities, autocast)
                    bad = _non_finite_term(out)
                    if bad is not None:
                        kept = f"last good checkpoint: {last_path}" if last_path.is_file() else "no checkpoint written yet"
                        raise NonFiniteLossError(
                            f"non-finite loss at step {step + 1} (micro-batch {micro + 1}): term {bad!r} = "
                            f"{float(out[bad].detach())}; stopping ({kept}). Lower train.lr or check the data."
                        )
                    scaler.scale(out["loss"] / tc.accum_steps).backward()
                for term in LOSS_TERMS:
                    sums[term] += float(out[term].detach()) / tc.accum_steps
            if info.world_size > 1:
                for p in loss_fn.parameters():  # the loss's scale/bias live outside DDP
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= info.world_size
            scaler.unscale_(optimizer)
            grad_norm = None
            if tc.grad_clip_norm:
                params = [p for g in optimizer.param_groups for p in g["params"]]
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tc.grad_clip_norm))
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            with torch.no_grad():
                unwrap_model(model).logit_scale.clamp_(0, math.log(100))
            step += 1
            step_time = time.perf_counter() - t_start
            interval_losses.append(sums["loss"])
            row = {
                "step": step, **sums, "lr": lr, "logit_scale": float(out["logit_scale"]),
                "samples_per_s": global_batch / step_time, "data_wait_fraction": data_time / step_time,
                "epoch": stream.epoch,
            }
            if grad_norm is not None:
                row["grad_norm"] = grad_norm
            last_metrics = row
            if info.is_main:
                history.append(row)
                with metrics_path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                if step % tc.log_every == 0 or step == tc.steps:
                    tracking.log_metrics({k: v for k, v in row.items() if k != "step"}, step=step)
                if bar is None and (step % max(1, tc.steps // 20) == 0 or step == tc.steps):
                    log.info("step %d/%d loss %.4f (sclip %.4f, pointwise %.4f, skl %.4f) lr %.2e %.1f samples/s",
                             step, tc.steps, sums["loss"], sums["sclip"], sums["pointwise"], sums["skl"], lr,
                             row["samples_per_s"])
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{sums['loss']:.4f}", lr=f"{lr:.2e}")
            val = None
            if tc.val_every and step % tc.val_every == 0 and step < tc.steps:
                val = validation_loss()
                if val is not None and info.is_main:
                    tracking.log_metrics({"val_loss": val}, step=step)
                    log.info("step %d validation loss %.4f", step, val)
            if step % tc.checkpoint_every == 0 or step == tc.steps:
                if step == tc.steps and has_val:
                    val = validation_loss()
                    if val is not None and info.is_main:
                        tracking.log_metrics({"val_loss": val}, step=step)
                        log.info("step %d validation loss %.4f", step, val)
                score = val if val is not None else float(np.mean(interval_losses))
                interval_losses = []
                if info.is_main:
                    improved = score < best_value
                    if improved:
                        best_value = score
                    row_metrics = {"loss": sums["loss"], "score": score}
                    save(last_path, step, stream.position, row_metrics)
                    if cfg.output.keep_every:
                        save(run_dir / f"step-{step:07d}.pt", step, stream.position, row_metrics)
                    if improved:
                        save(best_path, step, stream.position, row_metrics)
                if info.world_size > 1:
                    dist.barrier()
        if bar is not None:
            bar.close()
        final = {k: float(v) for k, v in last_metrics.items() if isinstance(v, (int, float))}
        if info.is_main:
            if not last_path.is_file():  # resumed a finished run: nothing new was trained
                raise TrainingError(f"no checkpoint in {run_dir} after training")
            if has_val:
                final.setdefault("val_loss", best_value)
            final["best_score"] = best_value
            plot = _plot_losses(history, run_dir / "loss_curve.png")
            if run is not None:
                if cfg.tracking.log_checkpoints:
                    tracking.log_artifact(last_path, "checkpoints")
                    if best_path.is_file():
                        tracking.log_artifact(best_path, "checkpoints")
                tracking.log_artifact(metrics_path, "metrics")
                if plot:
                    tracking.log_artifact(plot, "plots")
                if cfg.tracking.log_model:
                    _log_model(model, bundle.image_size, bundle.context_length)
                    model.to(device)
    return TrainResult(
        checkpoint=str(last_path), run_id=run_id, metrics=final,
        best_checkpoint=str(best_path) if best_path.is_file() else None, run_dir=str(run_dir), steps=step,
        history=history,
    )


RESULT_PREFIX = "MGLL_RESULT "


def main(argv: list[str] | None = None) -> int:
    """``python -m mgll.train --config FILE [--set k=v ...]``: the entry point torchrun launches on every rank.

    Rank 0 prints one ``MGLL_RESULT {json}`` line (checkpoint, run id, metrics) for the launching flow; a failure
    prints ``error: <message>`` on stderr and exits 2.
    """
    import argparse
    import sys

    from mgll.checkpoint import CheckpointError
    from mgll.config import ConfigError, load_config
    from mgll.data import DataError
    from mgll.model import ModelError

    parser = argparse.ArgumentParser(prog="python -m mgll.train", description=main.__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("mgll").setLevel(logging.INFO)
    try:
        cfg = load_config(PretrainConfig, args.config, args.overrides)
        result = train(cfg, progress=args.progress)
    except (ConfigError, DataError, ModelError, CheckpointError, TrainingError) as exc:
        rank = os.environ.get("RANK", "0")
        print(f"error: {exc}" + (f" [rank {rank}]" if os.environ.get("WORLD_SIZE", "1") != "1" else ""),
              file=sys.stderr, flush=True)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {k: getattr(result, k) for k in ("checkpoint", "run_id", "metrics", "best_checkpoint", "run_dir", "steps")}
        print(RESULT_PREFIX + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
