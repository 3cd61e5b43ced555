"""``PretrainConfig``: everything a pretraining run needs, validated before any work starts.

Loaded with ``mgll.config.load_config(PretrainConfig, path, overrides)`` from ``configs/pretrain_*.yaml``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mgll.config import StrictModel

from dataset_builders.schema import GRANULARITIES


class ModelSection(StrictModel):
    name: str = Field("mgll-tiny", description="open_clip architecture or a config in mgll/model_configs")
    pretrained: str | None = Field(None, description="None, an open_clip tag, or a weights/checkpoint file")
    image_size: int | None = Field(None, ge=16, description="override the config's image size")
    context_length: int | None = Field(None, ge=8, description="override the text context length")
    grad_checkpointing: bool = False
    compile: bool = Field(False, description="wrap the model in torch.compile")


class AugmentSection(StrictModel):
    """Paper defaults: RandomResizedCrop scale 0.9-1.0, horizontal flip, colour jitter."""

    enabled: bool = True
    scale: tuple[float, float] = (0.9, 1.0)
    flip: bool = True
    color_jitter: float = Field(0.2, ge=0.0, le=1.0, description="brightness/contrast/saturation strength")

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1] <= 1.0:
            raise ValueError("scale must satisfy 0 < low <= high <= 1")
        return v


class DataSection(StrictModel):
    dataset: str = Field(..., description="build-dataset output (directory or fsspec URL) holding dataset.json")
    split: str = "train"
    val_split: str | None = Field("val", description="split for validation loss / best checkpoint; None = off")
    granularities: list[str] = Field(
        default_factory=lambda: list(GRANULARITIES), description="1-3 granularities, coarse -> fine"
    )
    missing_text: Literal["error", "mask", "drop"] = Field(
        "error", description="a sample without text for a chosen granularity: error, mask it out, or drop it"
    )
    uncertain_label: Literal["positive", "negative"] = Field("negative", description="how label state -1 counts")
    shard_shuffle: bool = True
    shuffle_buffer: int = Field(1000, ge=0)
    shuffle_initial: int = Field(100, ge=0)
    resampled: bool = Field(False, description="sample shards with replacement (infinite stream; multi-node)")
    workers: int = Field(1, ge=0, description="DataLoader worker processes (0 = load in the training process)")
    augment: AugmentSection = Field(default_factory=AugmentSection)

    @field_validator("granularities")
    @classmethod
    def _granularities(cls, v: list[str]) -> list[str]:
        if not 1 <= len(v) <= 3:
            raise ValueError("choose between 1 and 3 granularities")
        if len(set(v)) != len(v):
            raise ValueError("granularities must not repeat")
        return v


class LossSection(StrictModel):
    kind: Literal["mgll", "clip", "sclip", "pointwise", "sclip+pointwise"] = "mgll"
    alpha: tuple[float, float, float] = (0.5, 1.0, 1.0)
    options: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for MGLLLoss")
    target_options: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for cooccurrence_targets (e.g. mode)"
    )


class TrainSection(StrictModel):
    steps: int = Field(200, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1, description="per device, per micro-step")
    accum_steps: int = Field(1, ge=1, description="micro-steps per optimizer step")
    lr: float = Field(5e-4, gt=0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.1, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    grad_clip_norm: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    checkpoint_every: int = Field(50, ge=1)
    val_every: int = Field(0, ge=0, description="validation loss every N steps (0 = only at the end)")
    val_batches: int = Field(4, ge=1)
    log_every: int = Field(1, ge=1)
    threads: int | None = Field(None, ge=1, description="torch intra-op threads on CPU")


class DistributedSection(StrictModel):
    nproc_per_node: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1)
    node_rank: int | None = None
    rdzv_endpoint: str | None = Field(None, description="host:port of the rendezvous (multi-node)")
    rdzv_backend: str = "c10d"
    backend: Literal["auto", "nccl", "gloo"] = "auto"


class OutputSection(StrictModel):
    dir: str | None = Field(None, description="run directory (default: <MGLL_HOME>/runs/<run_name>)")
    run_name: str | None = None
    resume: Literal["auto", "never"] = Field("auto", description="auto: continue from <dir>/last.pt when present")
    keep_every: bool = Field(False, description="also keep step-numbered checkpoints")


class TrackingSection(StrictModel):
    parent_run_id: str | None = None
    log_model: bool = Field(True, description="log the final model with mlflow.pytorch (with a signature)")
    log_checkpoints: bool = Field(True, description="upload last.pt / best.pt (runs:/<id> URIs need them)")


class EvaluationSection(StrictModel):
    config: str | None = Field(
        None, description="EvaluateConfig YAML the pretrain-mgll flow evaluates the new checkpoint with (None = skip)"
    )


class PretrainConfig(StrictModel):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    loss: LossSection = Field(default_factory=LossSection)
    train: TrainSection = Field(default_factory=TrainSection)
    distributed: DistributedSection = Field(default_factory=DistributedSection)
    output: OutputSection = Field(default_factory=OutputSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)

    @model_validator(mode="after")
    def _consistent(self) -> "PretrainConfig":
        if self.distributed.nnodes > 1 and not self.distributed.rdzv_endpoint:
            raise ValueError("distributed.nnodes > 1 needs distributed.rdzv_endpoint (host:port)")
        return self

    @property
    def world_launch(self) -> bool:
        """True when training must run under torchrun (several processes or nodes)."""
        return self.distributed.nproc_per_node > 1 or self.distributed.nnodes > 1
