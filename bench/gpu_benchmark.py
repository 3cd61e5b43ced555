"""One-GPU training benchmark: MGLL (G=3) vs CLIP on ViT-B-16, bf16 autocast, batch 256 (paper scale).

Measures full training steps (forward, loss, backward, AdamW step) on synthetic inputs already on the GPU, so it
isolates the model + loss cost: samples/s (median step), peak allocated memory, and the MGLL / CLIP ratios of both,
measured in the same run. Runs unchanged on any CUDA machine; without CUDA it exits with code 2 and says so.

    python bench/gpu_benchmark.py [--model ViT-B-16] [--batch-size 256] [--steps 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def variant(kind: str, granularities: int, args, torch) -> dict:
    from mgll.loss import MGLLLoss, text_ids
    from mgll.model import create_model
    from mgll.train import param_groups

    torch.manual_seed(0)
    device = torch.device("cuda")
    bundle = create_model(args.model, device=device, grad_checkpointing=args.grad_checkpointing)
    model = bundle.model.train()
    loss_fn = MGLLLoss(kind=kind).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, loss_fn, 0.1), lr=1e-4, fused=True)
    n, ctx, vocab = args.batch_size, bundle.context_length, bundle.model_config["text_cfg"].get("vocab_size", 49408)
    images = torch.randn(n, 3, bundle.image_size, bundle.image_size, device=device)
    tokens = []
    for _ in range(granularities):  # realistic lengths: 8-60 BPE tokens, then padding
        t = torch.zeros(n, ctx, dtype=torch.long, device=device)
        lengths = torch.randint(8, min(60, ctx - 1), (n,))
        for i, length in enumerate(lengths.tolist()):
            t[i, 0] = vocab - 2
            t[i, 1:length] = torch.randint(1, vocab - 3, (length - 1,))
            t[i, length] = vocab - 1
        tokens.append(t)
    labels = (torch.rand(n, 14, device=device) < 0.15).float()
    ids = [text_ids([f"text {i % 64} g{g}" for i in range(n)], device=device) for g in range(granularities)]
    masks = [torch.ones(n, dtype=torch.bool, device=device) for _ in range(granularities)]
    label_list = [labels if g == 1 else None for g in range(granularities)]

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(images, torch.cat(tokens))
            text_features = list(out["text_features"].split(n))
        result = loss_fn(out["image_features"], text_features, out["logit_scale"], labels=label_list, text_ids=ids,
                         masks=masks)
        result["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated()
    del model, optimizer, loss_fn, images, tokens
    torch.cuda.empty_cache()
    median = statistics.median(times)
    return {"kind": kind, "granularities": granularities, "step_s_median": median, "samples_per_s": n / median,
            "peak_memory_gib": peak / 2**30}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--out", default=str(REPO / ".mgll" / "bench" / "gpu_benchmark.json"))
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_benchmark.py needs a CUDA GPU and torch.cuda.is_available() is False on this machine: "
              "nothing was measured. Run it on a machine with an NVIDIA GPU.", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    clip = variant("clip", 1, args, torch)
    mgll = variant("mgll", 3, args, torch)
    report = {
        "setup": {"model": args.model, "batch_size": args.batch_size, "precision": "bf16 autocast",
                  "steps": args.steps, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                  "grad_checkpointing": args.grad_checkpointing},
        "clip": clip, "mgll": mgll,
        "mgll_over_clip_step_time": mgll["step_s_median"] / clip["step_s_median"],
        "mgll_over_clip_peak_memory": mgll["peak_memory_gib"] / clip["peak_memory_gib"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
