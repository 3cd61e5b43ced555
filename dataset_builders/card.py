"""``dataset.json``: the dataset card (see docs/interfaces.md). PHI-free: counts, hashes, the redacted config."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from dataset_builders.schema import GRANULARITIES, SCHEMA_VERSION, SPLITS


def content_hash(manifest: list[dict]) -> str:
    """Order-independent hash of what a reader sees: keys, splits, pixels, texts, labels."""
    digest = hashlib.sha256()
    fields = ("key", "split", "pixel_sha256", "labels_json", *(f"text_{g}" for g in GRANULARITIES))
    for row in sorted(manifest, key=lambda r: r["key"]):
        digest.update(json.dumps([row.get(f) for f in fields]).encode())
    return digest.hexdigest()


def build_card(cfg, manifest: list[dict], summary, shards: list[str], label_derived: dict[str, list[str]],
               ontology_order: list[str], config_hash: str, text_stage: str) -> dict[str, Any]:
    from dataset_builders.build import code_version

    per_label: Counter = Counter()
    for row in manifest:
        for label, state in json.loads(row["labels_json"] or "{}").items():
            if state == 1:
                per_label[label] += 1
    seen = {label for row in manifest for label in json.loads(row["labels_json"] or "{}")}
    vocabulary = [label for label in ontology_order if label in seen] + sorted(seen - set(ontology_order))
    derived = sorted({g for gs in label_derived.values() for g in gs}, key=GRANULARITIES.index)
    return {
        "schema_version": SCHEMA_VERSION,
        "granularities": list(GRANULARITIES),
        "label_vocabulary": vocabulary,
        "label_derived_granularities": derived,
        "label_derived_granularities_by_source": label_derived,
        "counts": {
            "total": summary.samples,
            "inputs": summary.inputs,
            "extra_frames": summary.extra_frames,
            "per_split": {s: summary.per_split.get(s, 0) for s in SPLITS},
            "per_label": dict(sorted(per_label.items())),
            "per_source": summary.per_source,
            "rejects": summary.rejects,
            "rejects_by_reason": summary.rejects_by_reason,
            "duplicates": summary.duplicates,
        },
        "shards": {s: [p for p in shards if p.startswith(f"shards/{s}/")] for s in SPLITS},
        "build_config": cfg.redacted(),
        "build_config_hash": config_hash,
        "text_stage": text_stage,
        "code_version": code_version(),
        "content_hash": summary.content_hash,
        "created_by": "mgll build-dataset",
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
