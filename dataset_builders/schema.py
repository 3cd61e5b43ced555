"""The one record schema of the corpus, shared by the builder (writer) and ``mgll.data`` (reader).

A sample is one image with texts at up to three granularities, ordered coarse -> fine, and optional labels.
In a shard it is three tar members: ``{key}.png|jpg`` (pixels), ``{key}.json`` (``SampleRecord.shard_json()``)
and ``{key}.txt`` (the coarsest non-empty text, so stock open_clip training can read the shards).
In ``manifest.parquet`` it is one row (``SampleRecord.manifest_row()``, columns ``MANIFEST_SCHEMA``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 1

# Canonical granularity slots, coarse -> fine. Each source documents what it puts in each slot:
#   dicom_xray:  Modality+BodyPart text | StudyDescription | SeriesDescription + view
#   report_xray: modality text          | IMPRESSION-derived diagnosis | FINDINGS-derived explanation
#   label_table: normal/abnormal        | disease category + severity  | ontology clinical explanation
GRANULARITIES: tuple[str, ...] = ("modality", "diagnosis", "explanation")

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
LABEL_STATES = (POSITIVE, NEGATIVE, UNCERTAIN)

SPLITS = ("train", "val", "test")


@dataclass
class Evidence:
    """Why a label got its state: the sentence, the mention's character offsets in the report, the trigger."""

    sentence: str
    start: int
    end: int
    mention: str
    trigger: str | None = None  # negation / uncertainty trigger phrase, None for a plain positive mention
    state: int = POSITIVE


@dataclass
class SampleRecord:
    key: str  # shard-safe, unique, no PHI: derived from salted hashes
    split: str  # one of SPLITS
    source: str  # source name from the build config, e.g. "dicom_xray"
    source_path: str  # path relative to the source root (never absolute, never PHI-bearing beyond the file name)
    licence: str
    texts: dict[str, str]  # granularity -> text ("" when missing); keys are GRANULARITIES
    labels: dict[str, int] = field(default_factory=dict)  # label -> 1 / 0 / -1; an absent label is not a key
    evidence: dict[str, list[Evidence]] = field(default_factory=dict)
    text_spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # granularity -> report char spans
    meta: dict[str, Any] = field(default_factory=dict)  # modality, view, body_part, original_size, pixel_spacing...
    patient_hash: str = ""
    study_hash: str = ""
    series_hash: str = ""
    pixel_sha256: str = ""
    image_format: str = "png"  # "png" | "jpg"
    width: int = 0
    height: int = 0
    image_bytes: int = 0
    frame_index: int = 0

    def caption(self) -> str:
        """Coarsest non-empty text (what ``{key}.txt`` holds)."""
        for g in GRANULARITIES:
            if self.texts.get(g):
                return self.texts[g]
        return ""

    def shard_json(self) -> dict[str, Any]:
        # shallow: json.dumps reads the fields as they are, only the Evidence dataclasses need converting
        # (asdict deep-copied every field of every sample)
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["evidence"] = {name: [asdict(e) for e in items] for name, items in self.evidence.items()}
        data["schema_version"] = SCHEMA_VERSION
        data["texts"] = {g: self.texts.get(g, "") for g in GRANULARITIES}  # ordered coarse -> fine
        data["granularities"] = list(GRANULARITIES)
        return data

    def manifest_row(self, shard: str) -> dict[str, Any]:
        return {
            "key": self.key,
            "shard": shard,
            "split": self.split,
            "source": self.source,
            "source_path": self.source_path,
            "licence": self.licence,
            **{f"text_{g}": self.texts.get(g, "") for g in GRANULARITIES},
            "labels_json": json.dumps(self.labels, sort_keys=True),
            "modality": str(self.meta.get("modality", "")),
            "view": str(self.meta.get("view", "")),
            "patient_hash": self.patient_hash,
            "study_hash": self.study_hash,
            "series_hash": self.series_hash,
            "pixel_sha256": self.pixel_sha256,
            "width": self.width,
            "height": self.height,
            "image_bytes": self.image_bytes,
            "frame_index": self.frame_index,
        }

    @classmethod
    def from_shard_json(cls, data: dict[str, Any]) -> "SampleRecord":
        data = dict(data)
        data.pop("schema_version", None)
        data.pop("granularities", None)
        data["evidence"] = {k: [Evidence(**e) for e in v] for k, v in data.get("evidence", {}).items()}
        data["text_spans"] = {k: [tuple(s) for s in v] for k, v in data.get("text_spans", {}).items()}
        return cls(**data)


MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),
        ("source_path", pa.string()),
        ("licence", pa.string()),
        *[(f"text_{g}", pa.string()) for g in GRANULARITIES],
        ("labels_json", pa.string()),
        ("modality", pa.string()),
        ("view", pa.string()),
        ("patient_hash", pa.string()),
        ("study_hash", pa.string()),
        ("series_hash", pa.string()),
        ("pixel_sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("image_bytes", pa.int64()),
        ("frame_index", pa.int32()),
    ]
)


@dataclass
class RejectRecord:
    """An input that produced no sample, with a specific reason. ``rejects.parquet`` holds one row each."""

    source: str
    source_path: str
    stage: str  # "read" | "pixels" | "text" | "validate" ...
    reason: str


REJECT_SCHEMA = pa.schema(
    [("source", pa.string()), ("source_path", pa.string()), ("stage", pa.string()), ("reason", pa.string())]
)


@dataclass
class DuplicateRecord:
    """An input whose pixels equal an already-kept sample's (kept once; this row explains the missing sample)."""

    source: str
    source_path: str
    duplicate_of: str  # key of the kept sample
    pixel_sha256: str
