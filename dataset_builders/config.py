"""Typed configuration of one ``build-dataset`` run (YAML + ``--set key=value`` overrides).

Salt policy (de-identification): ``salt`` in the config wins, then the ``MGLL_DEID_SALT`` environment variable;
without either, the first build of an output draws a random salt and keeps it in ``OUT/_state/deid_salt`` so that
reruns and incremental builds hash identifiers (and so assign splits) identically.  ``OUT/_state`` is private
build state: publish ``shards/``, ``manifest.parquet``, ``dataset.json`` and ``plots/``, never ``_state/``.
The salt itself is never logged, written to the card, or sent to MLflow.

``out`` may be a local path or any fsspec URL (``s3://bucket/prefix`` works with ``s3fs`` installed and the usual
AWS credentials in the environment; only local paths are exercised by the tests).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from mgll.config import ConfigError, StrictModel, load_config

SourceKind = Literal["dicom_xray", "report_xray", "label_table", "synthetic"]


class _SourceBase(StrictModel):
    root: str = Field(description="directory (or fsspec URL) the source's paths are relative to")
    name: str = Field("", description="source name in the manifest; defaults to the kind")
    licence: str = Field("unspecified", description="licence string copied into every sample's metadata")

    @field_validator("root")
    @classmethod
    def _root_not_empty(cls, value: str) -> str:
        if not str(value).strip():
            raise ValueError("root must be a directory path or URL")
        return str(value)


class DicomXraySource(_SourceBase):
    """A tree of DICOM files (PACS export, MIDRC-like), optionally joined to a report table."""

    kind: Literal["dicom_xray"] = "dicom_xray"
    patterns: list[str] = Field(default_factory=lambda: ["**/*.dcm", "**/*.DCM", "**/*.dicom"])
    include_extensionless: bool = Field(False, description="also read files without an extension (some PACS exports)")
    reports: str | None = Field(None, description="CSV with a join column and a `text` column (relative to root or absolute)")
    report_join: Literal["study_instance_uid", "accession_number"] = "study_instance_uid"
    report_text_column: str = "text"


class ReportXraySource(_SourceBase):
    """Images (DICOM/PNG/JPEG) plus free-text reports: per-study .txt (MIMIC-CXR layout) or a CSV."""

    kind: Literal["report_xray"] = "report_xray"
    patterns: list[str] = Field(default_factory=lambda: ["**/*.dcm", "**/*.png", "**/*.jpg", "**/*.jpeg"])
    reports_csv: str | None = Field(None, description="CSV with `image_column` (relative path) and `text_column`")
    image_column: str = "path"
    text_column: str = "text"
    patient_column: str | None = None
    modality_text: str = "chest radiograph"


class LabelTableSource(_SourceBase):
    """Fundus-style image folder + a CSV of labels (RFMiD: one column per label; ODIR: one delimited string)."""

    kind: Literal["label_table"] = "label_table"
    labels_csv: str = "labels.csv"
    images_dir: str = "images"
    id_column: str = "ID"
    image_extensions: list[str] = Field(default_factory=lambda: [".png", ".jpg", ".jpeg", ".tif", ".tiff"])
    label_columns: dict[str, str] | None = Field(
        None, description="CSV column -> ontology label; None: every column except id/patient/grade is a label"
    )
    label_string_column: str | None = Field(None, description="one delimited string of labels per row (ODIR layout)")
    label_delimiter: str = ","
    grade_columns: dict[str, str] = Field(default_factory=dict, description="ontology label -> CSV column with its grade")
    patient_column: str | None = None
    ignore_columns: list[str] = Field(default_factory=lambda: ["Disease_Risk"])
    ontology: str = "fundus"
    modality_text: str = "fundus photograph"


class SyntheticSource(_SourceBase):
    """The demo corpus: generated into ``root`` when ``root/ground_truth.parquet`` is missing."""

    kind: Literal["synthetic"] = "synthetic"
    n_studies: int = Field(2000, ge=1)
    n_fundus: int = Field(200, ge=0)
    seed: int = 0
    image_size: int = Field(256, ge=16)


SourceConfig = Annotated[
    Union[DicomXraySource, ReportXraySource, LabelTableSource, SyntheticSource], Field(discriminator="kind")
]


class RunnerConfig(StrictModel):
    kind: Literal["local", "threads", "processes", "dask"] = "local"
    workers: int = Field(1, ge=1, le=512)
    address: str | None = Field(None, description="existing Dask scheduler (tcp://host:8786); None starts a LocalCluster")


class BuildConfig(StrictModel):
    sources: list[SourceConfig] = Field(min_length=1)
    out: str
    image_size: int = Field(512, ge=16, le=8192, description="shorter side after resizing")
    image_format: Literal["png", "jpg"] = "png"
    jpeg_quality: int = Field(95, ge=1, le=100)
    png_compress_level: int = Field(3, ge=0, le=9)
    multiframe: Literal["first", "all"] = "first"
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    salt: str | None = Field(None, description="de-identification salt; else MGLL_DEID_SALT; else generated per output")
    shard_max_samples: int = Field(1000, ge=1)
    shard_max_bytes: int = Field(1 << 30, ge=1 << 16)
    chunk_size: int = Field(256, ge=1)
    max_pixels: int = Field(100_000_000, ge=1, description="reject images with more pixels per frame than this")
    min_side: int = Field(8, ge=1, description="reject images whose shorter side is below this")
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    ontology: str = Field("chexpert", description="ontology for report labels (dataset_builders.text)")
    plots: bool = True

    @field_validator("splits")
    @classmethod
    def _valid_splits(cls, value: dict[str, float]) -> dict[str, float]:
        from dataset_builders.schema import SPLITS

        unknown = sorted(set(value) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; allowed: {list(SPLITS)}")
        if any(v < 0 for v in value.values()):
            raise ValueError("split ratios must be >= 0")
        total = sum(value.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split ratios must sum to 1 (they sum to {total:g})")
        return {s: float(value[s]) for s in SPLITS if s in value}

    @model_validator(mode="after")
    def _unique_source_names(self) -> "BuildConfig":
        seen: set[str] = set()
        for src in self.sources:
            if not src.name:
                src.name = src.kind
            if src.name in seen:
                raise ValueError(f"two sources are named {src.name!r}; give each a distinct `name`")
            seen.add(src.name)
        return self

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-able data with the salt removed (for the card, logs and MLflow)."""
        data = self.model_dump(mode="json")
        data["salt"] = "<redacted>" if data.get("salt") else None
        return data


def load_build_config(path: str | Path | None = None, overrides: list[str] | None = None, data: dict | None = None) -> BuildConfig:
    """YAML file and/or dict + dotted overrides -> ``BuildConfig`` (``ConfigError`` explains any problem)."""
    return load_config(BuildConfig, path, overrides, data=data)


def config_from_shortcut(source: str, out: str, overrides: list[str] | None = None) -> BuildConfig:
    """``--source dicom_xray:/path --out /out`` -> ``BuildConfig`` with defaults for everything else."""
    if ":" not in source:
        raise ConfigError(f"--source {source!r} must look like KIND:PATH, e.g. dicom_xray:/data/dicoms")
    kind, root = source.split(":", 1)
    if kind not in SourceKind.__args__:  # type: ignore[attr-defined]
        raise ConfigError(f"--source kind {kind!r} is not one of {list(SourceKind.__args__)}")  # type: ignore[attr-defined]
    from mgll.config import build_config

    return build_config(BuildConfig, {"sources": [{"kind": kind, "root": root}], "out": out}, overrides, origin="--source/--out")


def env_salt() -> str | None:
    return os.environ.get("MGLL_DEID_SALT") or None
