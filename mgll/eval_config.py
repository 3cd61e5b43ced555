"""Typed configs of the ``evaluate-mgll`` flow (``EvaluateConfig``) and the ``ablate-mgll`` flow (``AblationConfig``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mgll.config import StrictModel

DatasetKind = Literal["corpus", "chestxray14", "chexpert", "rfmid", "csv"]

DEFAULT_TEMPLATES = ["{}", "an x-ray showing {}", "a medical image with findings of {}"]


class DatasetSpec(StrictModel):
    """One benchmark to evaluate on, read from ``root`` in its published layout (see ``mgll.benchmarks``)."""

    kind: DatasetKind
    root: str
    name: str | None = None  # metric prefix; defaults to ``kind``
    labels: list[str] | None = None  # evaluate only these labels (default: all of the dataset's labels)
    u_policy: Literal["ones", "zeros", "ignore"] = "zeros"  # uncertain (-1) labels: CheXpert and the corpus
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # carved from train (by patient) when no val split exists
    max_samples: int | None = Field(None, ge=1)  # per split, for quick runs
    ontology: str | None = None  # label prompts for zero-shot; default chosen per kind
    templates: list[str] = Field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    # csv kind: either one file with a split column, or one file per split
    csv: str | None = None
    csvs: dict[Literal["train", "val", "test"], str] | None = None
    image_column: str = "image"
    image_root: str | None = None  # image paths in the CSV are relative to this (default: the CSV's folder)
    label_columns: list[str] | None = None  # one 0/1 column per label (multi-label)
    label_column: str | None = None  # one column holding the class (multi-class) or classes joined by label_separator
    label_separator: str | None = None
    split_column: str | None = None
    task: Literal["auto", "multilabel", "multiclass"] = "auto"

    @property
    def display_name(self) -> str:
        return self.name or self.kind

    @field_validator("templates")
    @classmethod
    def _templates_have_slot(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one prompt template is needed")
        bad = [t for t in value if "{}" not in t]
        if bad:
            raise ValueError(f"every template needs a '{{}}' slot for the label text; these lack it: {bad}")
        return value

    @model_validator(mode="after")
    def _csv_options(self) -> "DatasetSpec":
        if self.kind == "csv":
            if not (self.csv or self.csvs):
                raise ValueError("a 'csv' dataset needs 'csv' (one file) or 'csvs' (one file per split)")
            if bool(self.label_columns) == bool(self.label_column):
                raise ValueError("a 'csv' dataset needs exactly one of 'label_columns' or 'label_column'")
            if self.csv and not self.csvs and not self.split_column:
                raise ValueError("a single 'csv' file needs a 'split_column' naming train/val/test per row")
        return self


class ModelSpec(StrictModel):
    name: str | None = None  # expected architecture; a checkpoint of another architecture is an error
    pretrained: str | None = None  # used only when no checkpoint is given (e.g. an untrained baseline)


class ZeroShotConfig(StrictModel):
    enabled: bool = True
    # similarity: score = cos(image, positive prompt ensemble); contrast: softmax over (positive, "no <label>") prompts
    mode: Literal["similarity", "contrast"] = "similarity"
    negative_template: str = "no {}"


class LinearProbeConfig(StrictModel):
    enabled: bool = True
    c_grid: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0])
    max_iter: int = Field(1000, ge=10)


class FineTuneConfig(StrictModel):
    enabled: bool = False
    epochs: int = Field(3, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)


class RetrievalConfig(StrictModel):
    enabled: bool = True
    granularities: list[str] | None = None  # default: every granularity of the corpus card
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10])
    max_samples: int | None = Field(1000, ge=2)
    examples: int = Field(6, ge=0)  # query images drawn in the retrieval examples grid
    top_k_shown: int = Field(3, ge=1)


class MetricsConfig(StrictModel):
    bootstrap: int = Field(1000, ge=0)  # resamples for 95% CIs of headline numbers; 0 disables
    confidence: float = Field(0.95, gt=0, lt=1)


class EvaluateConfig(StrictModel):
    checkpoint: str | None = None  # path, runs:/<id>/<path> or models:/<name>/<version>; CLI --checkpoint wins
    model: ModelSpec = Field(default_factory=ModelSpec)
    datasets: list[DatasetSpec]
    zero_shot: ZeroShotConfig = Field(default_factory=ZeroShotConfig)
    linear_probe: LinearProbeConfig = Field(default_factory=LinearProbeConfig)
    fine_tune: FineTuneConfig = Field(default_factory=FineTuneConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    batch_size: int = Field(64, ge=1)
    device: str = "cpu"
    seed: int = 0
    out_dir: str | None = None  # local folder for tables and plots (default: <state dir>/eval/<run name>)
    run_name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    plots: bool = True

    @field_validator("datasets")
    @classmethod
    def _datasets_non_empty(cls, value: list[DatasetSpec]) -> list[DatasetSpec]:
        if not value:
            raise ValueError("list at least one dataset to evaluate on")
        names = [d.display_name for d in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"dataset names must be unique (give each a 'name'); repeated: {dupes}")
        return value


class AblationVariant(StrictModel):
    name: str
    table: Literal["loss", "granularity", "both"] = "loss"
    overrides: dict[str, Any] = Field(default_factory=dict)  # dotted PretrainConfig keys -> values


class AblationConfig(StrictModel):
    pretrain_config: str  # base PretrainConfig YAML shared by every variant (same data, seed and budget)
    pretrain_overrides: dict[str, Any] = Field(default_factory=dict)
    evaluate_config: str  # EvaluateConfig YAML applied to every variant's checkpoint
    evaluate_overrides: dict[str, Any] = Field(default_factory=dict)
    variants: list[AblationVariant]
    headline: list[str] = Field(
        default_factory=lambda: ["linear_probe/auc_macro", "zero_shot/auc_macro", "retrieval/i2t_r5_mean"]
    )
    out_dir: str | None = None
    run_name: str | None = "ablation"

    @field_validator("variants")
    @classmethod
    def _variants_unique(cls, value: list[AblationVariant]) -> list[AblationVariant]:
        if not value:
            raise ValueError("list at least one variant")
        names = [v.name for v in value]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique: {names}")
        return value
