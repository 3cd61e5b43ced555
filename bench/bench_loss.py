"""Benchmark (a): cost of the MGLL loss on CPU, measured against open_clip's ClipLoss in the same run.

1. Loss alone, forward + backward, N=256, D=512: MGLL (G=3, co-occurrence targets) ÷ open_clip ClipLoss.
2. The loss's share of one training step of a tiny model (``mgll-tiny`` via ``mgll.model.create_model``; G=3:
   one image pass + three text passes + loss + backward + AdamW step), batch 32.

Prints what it measured (medians over repeats, milliseconds) and the ratios; nothing is assumed.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_loss.py [--threads 1] [--repeats 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F


def interleaved_median_ms(runs: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(values) for name, values in times.items()}


def random_label_sets(n: int, n_labels: int, generator: torch.Generator) -> torch.Tensor:
    """Multi-hot labels with 0-3 positives per sample (a CheXpert-like density)."""
    labels = torch.zeros(n, n_labels, dtype=torch.bool)
    counts = torch.randint(0, 4, (n,), generator=generator)
    for i, count in enumerate(counts.tolist()):
        labels[i, torch.randperm(n_labels, generator=generator)[:count]] = True
    return labels


def bench_loss_alone(n: int, dim: int, granularities: int, repeats: int, warmup: int) -> dict:
    import open_clip

    from mgll.loss import MGLLLoss, cooccurrence_targets

    generator = torch.Generator().manual_seed(0)
    image = torch.randn(n, dim, generator=generator, requires_grad=True)
    texts = [torch.randn(n, dim, generator=generator, requires_grad=True) for _ in range(granularities)]
    labels = random_label_sets(n, 14, generator)
    modality = ["chest x-ray" if i % 4 else "fundus photograph" for i in range(n)]
    targets = [
        cooccurrence_targets(texts=modality),
        cooccurrence_targets(labels),
        cooccurrence_targets(labels, mode="jaccard"),
    ]
    targets = (targets * granularities)[:granularities]
    scale = torch.tensor(1 / 0.07, requires_grad=True)

    clip_loss = open_clip.loss.ClipLoss()
    image_unit = F.normalize(image.detach(), dim=-1).requires_grad_(True)
    text_unit = F.normalize(texts[0].detach(), dim=-1).requires_grad_(True)

    def open_clip_step():
        clip_loss(image_unit, text_unit, scale).backward()

    def mgll_step(loss_fn, use_targets=True):
        def run():
            loss_fn(image, texts, scale, targets=targets if use_targets else None)["loss"].backward()
        return run

    def mgll_with_target_building(loss_fn):
        # what the trainer does: targets built inside the loss from multi-hot labels / text ids
        from mgll.loss import text_ids

        ids = text_ids(modality)
        label_list = ([None] + [labels] * (granularities - 1))[:granularities]
        id_list = ([ids] + [None] * (granularities - 1))[:granularities]

        def run():
            loss_fn(image, texts, scale, labels=label_list, text_ids=id_list)["loss"].backward()
        return run

    # Interleaved (one call of each per round) so that load from other processes hits every variant alike.
    results = interleaved_median_ms(
        {
            "open_clip_cliploss_ms": open_clip_step,
            "mgll_kind_clip_ms": mgll_step(MGLLLoss(kind="clip"), use_targets=False),
            f"mgll_G{granularities}_ms": mgll_step(MGLLLoss()),
            f"mgll_G{granularities}_joint_softmax_ms": mgll_step(MGLLLoss(joint_softmax=True)),
            f"mgll_G{granularities}_targets_from_labels_ms": mgll_with_target_building(MGLLLoss()),
        },
        repeats,
        warmup,
    )
    base = results["open_clip_cliploss_ms"]
    results["ratio_mgll_over_cliploss"] = results[f"mgll_G{granularities}_ms"] / base
    results["ratio_mgll_targets_from_labels_over_cliploss"] = (
        results[f"mgll_G{granularities}_targets_from_labels_ms"] / base
    )
    results["ratio_mgll_kind_clip_over_cliploss"] = results["mgll_kind_clip_ms"] / base
    return results


def build_tiny_model():
    try:
        from mgll.model import create_model
    except ImportError:  # the trainer's model module is not there: an equivalent inline open_clip config
        import tempfile
        from pathlib import Path

        import open_clip

        config = {"embed_dim": 128, "vision_cfg": {"image_size": 128, "layers": 4, "width": 192, "head_width": 64,
                                                   "patch_size": 16},
                  "text_cfg": {"context_length": 64, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3}}
        folder = Path(tempfile.mkdtemp(prefix="bench-loss-"))
        (folder / "bench-tiny.json").write_text(json.dumps(config))
        open_clip.add_model_config(folder)
        model = open_clip.create_model("bench-tiny", pretrained=None, output_dict=True)
        return model, "bench-tiny (inline config)", 128, 64
    bundle = create_model("mgll-tiny")
    return bundle.model, "mgll-tiny", bundle.image_size, bundle.context_length


def bench_training_step_share(batch: int, granularities: int, repeats: int, warmup: int) -> dict:
    from mgll.loss import MGLLLoss, cooccurrence_targets

    torch.manual_seed(0)
    model, model_name, image_size, context_length = build_tiny_model()
    model.train()
    loss_fn = MGLLLoss()
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, image_size, image_size, generator=generator)
    tokens = [torch.randint(1, 49000, (batch, context_length), generator=generator) for _ in range(granularities)]
    for t in tokens:
        t[:, -1] = 49407  # end-of-text token: open_clip pools at the argmax id
    labels = random_label_sets(batch, 14, generator)
    targets = [cooccurrence_targets(texts=["chest x-ray"] * batch)] + [cooccurrence_targets(labels)] * 2
    targets = targets[:granularities]

    def step():
        optimizer.zero_grad(set_to_none=True)
        out = model(images, tokens[0])
        text_features = [out["text_features"]] + [model(text=t)["text_features"] for t in tokens[1:]]
        loss = loss_fn(out["image_features"], text_features, out["logit_scale"], targets=targets)["loss"]
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        out = model(images, tokens[0])
        features = [out["image_features"]] + [model(text=t)["text_features"] for t in tokens]
    image_features = features[0].clone().requires_grad_(True)
    text_features = [f.clone().requires_grad_(True) for f in features[1:]]
    scale = out["logit_scale"].detach().clone().requires_grad_(True)

    def loss_only():
        loss_fn(image_features, text_features, scale, targets=targets)["loss"].backward()

    medians = interleaved_median_ms({"step": step, "loss": loss_only}, repeats, warmup)
    step_ms, loss_ms = medians["step"], medians["loss"]
    return {
        "model": model_name,
        "batch": batch,
        "image_size": image_size,
        "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "train_step_ms": step_ms,
        "loss_fwd_bwd_ms": loss_ms,
        "loss_share_of_step": loss_ms / step_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--granularities", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--step-batch", type=int, default=32)
    parser.add_argument("--step-repeats", type=int, default=7)
    parser.add_argument("--skip-step", action="store_true", help="only the loss-alone comparison")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu"}
    results["loss_alone"] = bench_loss_alone(args.n, args.dim, args.granularities, args.repeats, args.warmup)
    results["loss_alone"].update(n=args.n, dim=args.dim, granularities=args.granularities, repeats=args.repeats)
    la = results["loss_alone"]
    print(f"loss fwd+bwd on CPU, N={args.n}, D={args.dim}, {args.threads} thread(s), median of {args.repeats}:")
    print(f"  open_clip ClipLoss          {la['open_clip_cliploss_ms']:8.2f} ms  (baseline)")
    print(f"  MGLLLoss kind=clip          {la['mgll_kind_clip_ms']:8.2f} ms  "
          f"x{la['ratio_mgll_kind_clip_over_cliploss']:.2f}")
    g = args.granularities
    print(f"  MGLLLoss G={g} (targets)     {la[f'mgll_G{g}_ms']:8.2f} ms  x{la['ratio_mgll_over_cliploss']:.2f}")
    print(f"  MGLLLoss G={g} joint softmax {la[f'mgll_G{g}_joint_softmax_ms']:8.2f} ms")
    print(f"  MGLLLoss G={g} labels->Y     {la[f'mgll_G{g}_targets_from_labels_ms']:8.2f} ms  "
          f"x{la['ratio_mgll_targets_from_labels_over_cliploss']:.2f}")
    if not args.skip_step:
        results["train_step"] = bench_training_step_share(args.step_batch, g, args.step_repeats, 1)
        ts = results["train_step"]
        print(f"training step, {ts['model']} ({ts['parameters_millions']} M params, {ts['image_size']} px), "
              f"batch {ts['batch']}, G={g}, median of {args.step_repeats}:")
        print(f"  step {ts['train_step_ms']:.1f} ms, loss fwd+bwd {ts['loss_fwd_bwd_ms']:.2f} ms, "
              f"loss share {100 * ts['loss_share_of_step']:.2f} % (goal <= 5 %)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
