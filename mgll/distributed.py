"""All-gather helpers for the MGLL loss (the pattern of ``open_clip.loss.gather_features``).

Gradient convention (the same as open_clip's ``gather_with_grad=True``): ``torch.distributed.nn.all_gather`` sums
the gradients of every rank's copy of a gathered tensor back onto its owner (a reduce-scatter). When every rank
computes the same global loss L, the gradient a rank sees for its local inputs is therefore ``world_size * dL/dx``;
DDP then averages parameter gradients over ranks, which divides that factor away again, so parameters receive
exactly ``dL/dtheta``. With ``local_loss`` each rank computes a share L_r whose mean over ranks is L, which gives the
same ``world_size * dL/dx`` per rank. All ranks must pass tensors of the same shape (equal local batch sizes), as in
open_clip.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist


def distributed_is_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def _require_process_group(world_size: int) -> None:
    if world_size > 1 and not distributed_is_active():
        raise RuntimeError(
            f"world_size={world_size} but torch.distributed is not initialised: call "
            "torch.distributed.init_process_group (torchrun does it for the trainer) before computing the loss"
        )


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0; gradients flow back to every owner."""
    import torch.distributed.nn.functional as dist_fn

    with warnings.catch_warnings():
        # torch 2.14 marks it deprecated in favour of _functional_collectives, a private API whose autograd
        # support on gloo is not documented; this is the call open_clip uses.
        warnings.simplefilter("ignore", FutureWarning)
        parts = dist_fn.all_gather(tensor.contiguous())
    return torch.cat(parts, dim=0)


def gather_no_grad(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """Concatenate ``tensor`` (labels, text ids, masks: no gradient) from every rank along dim 0."""
    if world_size == 1:
        return tensor
    _require_process_group(world_size)
    original_dtype = tensor.dtype
    # gloo cannot all_gather bool tensors
    payload = tensor.to(torch.uint8) if original_dtype == torch.bool else tensor
    parts = [torch.empty_like(payload) for _ in range(world_size)]
    dist.all_gather(parts, payload.contiguous())
    return torch.cat(parts, dim=0).to(original_dtype)


def gather_features(
    features: torch.Tensor,
    *,
    rank: int,
    world_size: int,
    with_grad: bool = True,
    local_loss: bool = False,
) -> torch.Tensor:
    """Global (world_size * N, D) features, ordered by rank.

    ``with_grad=False`` reproduces open_clip's cheaper mode: the gather carries no gradient and, unless
    ``local_loss`` is set, the local slice is replaced by the local tensor so that this rank's own features
    still receive gradients (only from this rank's copy of the loss).
    """
    if world_size == 1:
        return features
    _require_process_group(world_size)
    if with_grad:
        return gather_with_grad(features)
    parts = [torch.empty_like(features) for _ in range(world_size)]
    dist.all_gather(parts, features.detach().contiguous())
    if not local_loss:
        parts[rank] = features
    return torch.cat(parts, dim=0)
