"""Any open_clip architecture as one bundle: model, offline tokenizer and image transforms.

The repo's tiny configs (``mgll/model_configs/*.json``: ``mgll-micro`` ~3.5 M parameters at 64 px for tests,
``mgll-tiny`` ~9 M at 128 px for the CPU demo, ``mgll-tiny-rn`` a small ResNet) are registered with open_clip on
import, so every open_clip entry point (``create_model``, ``get_tokenizer``) knows them. Paper-sized models are the
stock names (``ViT-B-16``, ``ViT-L-14``, ``RN50``); HF text towers (e.g. BiomedBERT) go through open_clip's
``hf_model_name`` text config and need the HF model in the local cache (``HF_HUB_OFFLINE=1`` forbids downloads).

``pretrained`` is ``None`` (random init), an open_clip tag (``"openai"``; needs the weights in the local cache), a
file path (an open_clip/OpenAI state dict, or a checkpoint written by :mod:`mgll.checkpoint`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)


class ModelError(ValueError):
    """A model name, weight file or tag that cannot produce a model; the message says which and why."""


@dataclass
class ModelBundle:
    model: torch.nn.Module
    tokenizer: Callable[..., torch.Tensor]
    preprocess_train: Callable
    preprocess_val: Callable
    name: str
    model_config: dict[str, Any] = field(default_factory=dict)
    context_length: int = 77
    image_size: int = 224
    image_mean: tuple[float, ...] = ()
    image_std: tuple[float, ...] = ()


def available_models() -> list[str]:
    return open_clip.list_models()


def model_config(name: str) -> dict[str, Any]:
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ModelError(
            f"unknown model {name!r}: not an open_clip architecture nor a config in {MODEL_CONFIG_DIR} "
            f"(e.g. mgll-tiny, mgll-micro, ViT-B-16, ViT-L-14, RN50)"
        )
    return json.loads(json.dumps(cfg))


def register_model_config(name: str, cfg: dict[str, Any]) -> None:
    """Make ``name`` known to open_clip (used when a checkpoint carries a config this process has never seen)."""
    if open_clip.get_model_config(name) == cfg:
        return
    tmp = Path(tempfile.mkdtemp(prefix="mgll-model-config-"))
    (tmp / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp)


def _is_mgll_checkpoint(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] != b"PK":  # torch zip format; anything else is left to open_clip
        return False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(obj, dict) and obj.get("format") == "mgll-checkpoint"


def create_model(
    name: str,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    *,
    image_size: int | None = None,
    context_length: int | None = None,
    precision: str = "fp32",
    aug_scale: tuple[float, float] = (0.9, 1.0),
    grad_checkpointing: bool = False,
    **model_kwargs: Any,
) -> ModelBundle:
    """Build ``name`` with ``pretrained`` weights; returns model (``output_dict=True``), tokenizer and transforms."""
    cfg = model_config(name)
    mgll_weights = None
    if pretrained and os.path.isfile(pretrained) and _is_mgll_checkpoint(pretrained):
        mgll_weights, pretrained = pretrained, None
    elif pretrained and not os.path.isfile(pretrained) and (os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors"))):
        raise ModelError(f"pretrained weights file {pretrained!r} does not exist")
    # open_clip's train transform only crops; flip / colour jitter are configured in mgll.data.train_transform.
    aug_cfg = {"scale": tuple(aug_scale)}
    try:
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            name,
            pretrained=pretrained,
            precision=precision,
            device=device,
            force_image_size=image_size,
            force_context_length=context_length,
            aug_cfg=aug_cfg,
            output_dict=True,
            **model_kwargs,
        )
    except RuntimeError as exc:
        if pretrained:
            raise ModelError(f"cannot load pretrained={pretrained!r} for model {name!r}: {exc}") from None
        raise
    if mgll_weights:
        from mgll.checkpoint import load_checkpoint

        state = load_checkpoint(mgll_weights)["model"]
        model.load_state_dict(state)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    ctx = context_length or cfg["text_cfg"].get("context_length", 77)
    tokenizer = open_clip.get_tokenizer(name, context_length=ctx)
    pp = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
    size = pp.get("size", image_size or cfg["vision_cfg"].get("image_size", 224))
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ModelBundle(
        model=model,
        tokenizer=tokenizer,
        preprocess_train=preprocess_train,
        preprocess_val=preprocess_val,
        name=name,
        model_config=cfg,
        context_length=int(ctx),
        image_size=int(size),
        image_mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        image_std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)),
    )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class ImageEncoder(torch.nn.Module):
    """Images (N,3,H,W) -> L2-normalised embeddings: the one-tensor interface MLflow's pytorch pyfunc serves."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images, normalize=True)


class TextEncoder(torch.nn.Module):
    """Token ids (N,L) from the bundle's tokenizer -> L2-normalised embeddings."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens.long(), normalize=True)
