"""Trainer benchmarks on CPU, every figure a ratio against a baseline measured in the same run.

(b) training step time, MGLL (G=3) / CLIP (G=1), same model, batch and data. The MGLL step encodes three texts per
    image (one (3N) text-tower batch instead of N) and builds three N x N targets, so the ratio is roughly
    (image tower + 3 x text tower) / (image tower + 1 x text tower) plus the loss's own share.
(c) loader samples/s (the training pipeline alone: read, decode, augment, tokenise G=3, collate) / training
    samples/s (the full MGLL training loop). Goal >= 2: the loader must never be what training waits for.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_train.py [--dataset .mgll/demo/dataset] [--steps 8 --rounds 2]

Without ``--dataset`` it writes a synthetic dataset (tests/fixtures/train.py layout, 256 px PNGs) to a temp dir.
Prints a JSON report and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def train_run(dataset: str, out: Path, kind: str, granularities: list[str], args) -> list[dict]:
    from mgll.config import load_config
    from mgll.train import train
    from mgll.train_config import PretrainConfig

    cfg = load_config(PretrainConfig, data={
        "model": {"name": args.model},
        "data": {"dataset": dataset, "workers": args.workers, "granularities": granularities, "missing_text": "mask",
                 "shuffle_buffer": 200, "val_split": None},
        "loss": {"kind": kind},
        "train": {"steps": args.steps, "batch_size": args.batch_size, "warmup_steps": 1, "checkpoint_every": 10_000,
                  "threads": args.threads, "seed": 0},
        "output": {"dir": str(out / kind), "resume": "never"},
        "tracking": {"log_model": False},
    })
    result = train(cfg)
    return result.history[args.skip:]  # the first steps pay for worker start-up and allocator warm-up


def summarise(kind: str, granularities: int, rows: list[dict], batch_size: int) -> dict:
    step_s = [batch_size / r["samples_per_s"] for r in rows]
    compute_s = [s * (1 - r["data_wait_fraction"]) for s, r in zip(step_s, rows)]
    return {
        "kind": kind, "granularities": granularities, "steps_measured": len(rows),
        "step_s_median": statistics.median(step_s), "compute_s_median": statistics.median(compute_s),
        "samples_per_s_median": statistics.median(r["samples_per_s"] for r in rows),
        "data_wait_fraction_median": statistics.median(r["data_wait_fraction"] for r in rows),
    }


def loader_run(dataset: str, args) -> dict:
    from mgll.data import make_loader, make_pipeline, read_card
    from mgll.model import create_model
    from mgll.train_config import DataSection

    bundle = create_model(args.model)
    card = read_card(dataset)
    cfg = DataSection(dataset=dataset, workers=args.workers, missing_text="mask", shuffle_buffer=200)
    samples, epoch, warm, start = 0, 0, 0, None
    target = args.loader_batches
    while samples < target * args.batch_size:
        pipeline = make_pipeline(card, cfg, split="train", tokenizer=bundle.tokenizer, image_size=bundle.image_size,
                                 mean=bundle.image_mean, std=bundle.image_std, batch_size=args.batch_size, epoch=epoch)
        for batch in make_loader(pipeline, cfg.workers):
            if warm < 2:  # exclude worker start-up, as for the training steps
                warm += 1
                start = time.perf_counter()
                continue
            samples += len(batch["keys"])
            if samples >= target * args.batch_size:
                break
        epoch += 1
    elapsed = time.perf_counter() - start
    return {"workers": args.workers, "samples": samples, "seconds": elapsed, "samples_per_s": samples / elapsed}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None, help="build-dataset output; default: a synthetic one")
    parser.add_argument("--model", default="mgll-tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="training steps per variant and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating CLIP/MGLL rounds")
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of the medians")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for training (default: torch's)")
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument("--out", default=str(REPO / ".mgll" / "bench" / "bench_train.json"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mgll-bench-train-") as tmp:
        dataset = args.dataset
        if dataset is None:
            from tests.fixtures.train import write_tiny_dataset

            dataset = str(write_tiny_dataset(Path(tmp) / "dataset", n_train=512, n_val=0, shard_size=128, image_size=256))
        # Alternate the variants (CLIP, MGLL, CLIP, MGLL, ...) so a change in machine load hits both alike.
        clip_rows, mgll_rows = [], []
        for _ in range(args.rounds):
            clip_rows += train_run(dataset, Path(tmp), "clip", ["diagnosis"], args)
            mgll_rows += train_run(dataset, Path(tmp), "mgll", ["modality", "diagnosis", "explanation"], args)
        clip = summarise("clip", 1, clip_rows, args.batch_size)
        mgll = summarise("mgll", 3, mgll_rows, args.batch_size)
        loader = loader_run(dataset, args)

    import torch

    report = {
        "setup": {"model": args.model, "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
                  "workers": args.workers,
                  "torch_threads": args.threads or torch.get_num_threads(), "dataset": args.dataset or "synthetic 256px"},
        "b_step_time_mgll_over_clip": mgll["step_s_median"] / clip["step_s_median"],
        "b_compute_time_mgll_over_clip": mgll["compute_s_median"] / clip["compute_s_median"],
        "c_loader_over_training_samples_per_s": loader["samples_per_s"] / mgll["samples_per_s_median"],
        "clip": clip, "mgll": mgll, "loader": loader,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
