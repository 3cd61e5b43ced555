"""A real 2-process gloo run of MGLLLoss equals one process on the concatenated global batch.

Gradient convention checked here (see mgll/distributed.py): the all-gather's backward sums every rank's gradient
onto the owner, so a rank's input gradient is ``world_size`` x the single-process gradient of its slice, and DDP's
averaging of parameter gradients divides it away again. Scalars owned by every rank (logit scale, point-wise
scale/bias) get, averaged over ranks as DDP does, exactly the single-process gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mgll.loss import MGLLLoss, text_ids

WORLD_SIZE = 2
LOCAL_N, D, G = 5, 8, 3
TERMS = ("loss", "sclip", "pointwise", "skl")
SETTINGS = [
    {"local_loss": False},
    {"local_loss": True},
    {"local_loss": True, "joint_softmax": True, "stop_grad_mean": True},
]


def _global_batch():
    generator = torch.Generator().manual_seed(7)
    n = LOCAL_N * WORLD_SIZE
    image = torch.randn(n, D, generator=generator)
    texts = [torch.randn(n, D, generator=generator) for _ in range(G)]
    # samples 0..4 live on rank 0, 5..9 on rank 1; co-occurrences cross ranks (e.g. 0 and 6, 3 and 9)
    labels = torch.tensor(
        [[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1], [0, 1, 1]]
    )
    modality = text_ids(["chest x-ray"] * 3 + ["fundus"] * 4 + ["chest x-ray"] * 3)
    masks = [torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool),
             torch.tensor([1, 0, 1, 1, 1, 1, 1, 0, 0, 1], dtype=torch.bool)]
    return image, texts, labels, modality, masks


def _run(loss_fn, image, texts, labels, modality, masks):
    image = image.clone().requires_grad_(True)
    texts = [t.clone().requires_grad_(True) for t in texts]
    scale = torch.tensor(12.0, requires_grad=True)
    out = loss_fn(image, texts, scale, labels=[None, labels, labels], text_ids=[modality, None, None], masks=masks)
    out["loss"].backward()
    result = {name: out[name].detach() for name in TERMS}
    result["grad_image"] = image.grad
    result["grad_texts"] = torch.stack([t.grad for t in texts])
    result["grad_scale"] = scale.grad
    result["grad_pointwise"] = torch.stack([loss_fn.pointwise_log_scale.grad, loss_fn.pointwise_bias.grad])
    return result


def _worker(rank: int, init_file: str, result_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        image, texts, labels, modality, masks = _global_batch()
        local = slice(rank * LOCAL_N, (rank + 1) * LOCAL_N)
        results = []
        for settings in SETTINGS:
            loss_fn = MGLLLoss(rank=rank, world_size=WORLD_SIZE, **settings)
            results.append(_run(loss_fn, image[local], [t[local] for t in texts], labels[local], modality[local],
                                [m[local] for m in masks]))
        torch.save(results, f"{result_dir}/rank{rank}.pt")
        dist.barrier()  # neither rank tears gloo down while the other may still be talking to it
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    image, texts, labels, modality, masks = _global_batch()

    for index, settings in enumerate(SETTINGS):
        single_settings = {k: v for k, v in settings.items() if k != "local_loss"}
        single = _run(MGLLLoss(**single_settings), image, texts, labels, modality, masks)
        ranks = [results[index] for results in per_rank]
        for name in TERMS:
            # each rank's local-loss value is its share; their mean is the global loss
            value = torch.stack([r[name] for r in ranks]).mean()
            assert torch.allclose(value, single[name], atol=1e-5), (settings, name)
            if not settings["local_loss"]:
                assert all(torch.allclose(r[name], single[name], atol=1e-5) for r in ranks), (settings, name)
        for rank, result in enumerate(ranks):
            local = slice(rank * LOCAL_N, (rank + 1) * LOCAL_N)
            assert torch.allclose(result["grad_image"] / WORLD_SIZE, single["grad_image"][local], atol=1e-5), settings
            assert torch.allclose(result["grad_texts"] / WORLD_SIZE, single["grad_texts"][:, local], atol=1e-5)
        for name in ("grad_scale", "grad_pointwise"):
            averaged = torch.stack([r[name] for r in ranks]).mean(0)
            assert torch.allclose(averaged, single[name], atol=1e-5), (settings, name)
        assert single["skl"] > 0 and single["grad_image"].abs().sum() > 0
