"""Training checkpoints: atomic writes, ``weights_only=True`` loads, and models rebuilt for inference.

A checkpoint is one ``torch.save`` file holding only tensors and primitive containers (so ``torch.load(...,
weights_only=True)`` accepts it): ``format``, ``version``, ``model`` (state dict), ``model_name``, ``model_config``
(the open_clip config, so a process that never registered the config can rebuild it), ``model_kwargs``
(``image_size``, ``context_length``), ``tokenizer_name``, ``step``, ``optimizer``, ``scheduler``, ``scaler``,
``rng`` (python / numpy / torch / cuda), ``data_position``, ``config`` (the run's config as plain data),
``metrics``, ``extra``.  Writes go to ``<path>.tmp-<pid>`` then ``os.replace`` so a killed process never leaves a torn file.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

FORMAT = "mgll-checkpoint"
VERSION = 1
_REMOTE_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "s3://", "gs://", "http://", "https://")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, torn, not ours, or not loadable with ``weights_only=True``."""


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    nps = state["numpy"]
    np.random.set_state(
        ("MT19937", nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    model_name: str,
    model_config: Mapping[str, Any],
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    config: Mapping[str, Any] | None = None,
    data_position: Mapping[str, Any] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    tokenizer_name: str | None = None,
    metrics: Mapping[str, float] | None = None,
    extra: Mapping[str, Any] | None = None,
    include_rng: bool = True,
) -> Path:
    """Write everything needed to resume (or to rebuild the model) atomically; returns the final path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "version": VERSION,
        "model": unwrap_model(model).state_dict(),
        "model_name": model_name,
        "model_config": dict(model_config),
        "model_kwargs": dict(model_kwargs or {}),
        "tokenizer_name": tokenizer_name or model_name,
        "step": int(step),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_state() if include_rng else None,
        "data_position": dict(data_position or {}),
        "config": dict(config or {}),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "extra": dict(extra or {}),  # e.g. the loss module's learnable scale/bias, best-so-far value, MLflow run id
    }
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; raise :class:`CheckpointError` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError / RuntimeError for torn or foreign files
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded with weights_only=True "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an mgll checkpoint (no format={FORMAT!r} marker)")
    return state


def resolve_checkpoint(path_or_uri: str | Path) -> Path:
    """A local ``.pt`` file from a file, a run directory, or an MLflow URI (``runs:/<id>`` -> its last checkpoint)."""
    text = str(path_or_uri)
    if text.startswith(_REMOTE_SCHEMES):
        import mlflow

        if text.startswith("runs:/") and text.rstrip("/").count("/") == 1:
            text = text.rstrip("/") + "/checkpoints/last.pt"
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=text)
        except Exception as exc:
            raise CheckpointError(f"cannot download checkpoint {text!r} from MLflow: {exc}") from None
        path = Path(local)
    else:
        path = Path(text)
    if path.is_dir():
        for candidate in ("last.pt", "checkpoints/last.pt", "best.pt", "checkpoints/best.pt"):
            if (path / candidate).is_file():
                return path / candidate
        raise CheckpointError(f"directory {str(path)!r} holds no last.pt or best.pt checkpoint")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {text!r} does not exist")
    return path


def load_for_inference(path_or_run_uri: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the trained model from a checkpoint file, run directory or ``runs:/`` URI -> ``ModelBundle`` (eval mode)."""
    from mgll.model import create_model, register_model_config

    path = resolve_checkpoint(path_or_run_uri)
    state = load_checkpoint(path)
    name = state["model_name"]
    register_model_config(name, state["model_config"])
    kwargs = state.get("model_kwargs") or {}
    bundle = create_model(
        name,
        pretrained=None,
        device="cpu",
        image_size=kwargs.get("image_size"),
        context_length=kwargs.get("context_length"),
    )
    try:
        bundle.model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit model {name!r}: {exc}") from None
    bundle.model.to(device).eval()
    return bundle
