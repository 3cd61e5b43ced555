"""Patient-level splits and exact-duplicate detection.

Split: a patient's salted hash is hashed once more to a number u in [0, 1) and compared with the cumulative split
ratios (train, val, test order).  It depends on nothing but the patient, so no patient spans two splits and adding
data never moves an existing patient (changing the ratios or the salt does).

Dedup: exact duplicates are equal ``pixel_sha256`` (normalised 8-bit pixels).  The first occurrence in global input
order (chunk index, then position in the chunk) is kept, whichever worker finished first; later ones are listed in
duplicates.parquet and removed from their shards at finalize (see ``build.finalize``).
"""

from __future__ import annotations

import hashlib
from typing import Iterable

from dataset_builders.schema import SPLITS


def split_for_patient(patient_hash: str, ratios: dict[str, float]) -> str:
    digest = hashlib.sha256(f"split:{patient_hash}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    last = None
    for split in SPLITS:
        ratio = ratios.get(split, 0.0)
        if ratio <= 0:
            continue
        last = split
        cumulative += ratio
        if u < cumulative:
            return split
    return last or "train"


def find_duplicates(rows: Iterable[dict]) -> tuple[set[int], list[dict]]:
    """rows in global order (each with key, source, source_path, pixel_sha256) -> (indices to drop, duplicate rows)."""
    first_key: dict[str, str] = {}
    drop: set[int] = set()
    duplicates: list[dict] = []
    for index, row in enumerate(rows):
        digest = row["pixel_sha256"]
        if digest in first_key:
            drop.add(index)
            duplicates.append(
                {"source": row["source"], "source_path": row["source_path"], "duplicate_of": first_key[digest],
                 "pixel_sha256": digest}
            )
        else:
            first_key[digest] = row["key"]
    return drop, duplicates
