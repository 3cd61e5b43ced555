"""``label_table``: an image folder + a CSV of labels, harmonised to an ontology (MGLL-Fundus style).

Layouts: one 0/1 column per label (RFMiD), one delimited label string per row (ODIR, ``label_string_column``),
grade columns (IDRiD "Retinopathy grade", ``grade_columns``).  CSV columns map to ontology labels through
``label_columns`` or, when that is not given, through the ontology's names and synonyms (case-insensitive).
Texts: modality = "normal|abnormal fundus photograph", diagnosis = disease categories with severity,
explanation = the ontology's expert descriptions of those findings (all three are derived from the labels).
Every CSV row is one input; images with no row are inputs too and are rejected with a reason.
"""

from __future__ import annotations

import io
import posixpath
import re
from typing import Iterator

from dataset_builders import pixels
from dataset_builders.schema import NEGATIVE, POSITIVE, SampleRecord
from dataset_builders.sources.base import ProcessedSample, RawItem, Reject, Source

NORMAL_NAMES = {"normal", "n", "no finding", "no_finding", "healthy"}

# RFMiD / ODIR column abbreviations -> ontology label names (used when the ontology's synonyms do not cover them).
DATASET_ABBREVIATIONS = {
    "DR": "Diabetic Retinopathy", "ARMD": "Age-related Macular Degeneration", "MH": "Media Haze", "DN": "Drusen",
    "MYA": "Pathological Myopia", "BRVO": "Retinal Vein Occlusion", "CRVO": "Retinal Vein Occlusion",
    "TSLN": "Tessellation", "ERM": "Epiretinal Membrane", "LS": "Laser Scars", "MS": "Macular Scar",
    "CSR": "Central Serous Retinopathy", "ODC": "Optic Disc Cupping", "CRS": "Chorioretinal Atrophy",
    "ODP": "Optic Disc Pallor", "ODE": "Optic Disc Edema", "HR": "Hypertensive Retinopathy", "RP": "Retinitis Pigmentosa",
    "MHL": "Macular Hole", "RD": "Retinal Detachment", "G": "Glaucoma", "C": "Cataract", "A": "Age-related Macular Degeneration",
    "H": "Hypertensive Retinopathy", "M": "Pathological Myopia", "D": "Diabetic Retinopathy", "N": "Normal",
}


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", str(text).lower()).strip()


class LabelTableSource(Source):
    kind = "label_table"

    def __init__(self, cfg, path_prefix: str = ""):
        super().__init__(cfg)
        self.path_prefix = path_prefix

    def _rel(self, rel: str) -> str:
        return posixpath.join(self.path_prefix, rel) if self.path_prefix else rel

    def label_derived_granularities(self) -> list[str]:
        return ["modality", "diagnosis", "explanation"]

    def read_table(self):
        import pandas as pd

        from mgll.config import ConfigError

        rel = self._rel(self.cfg.labels_csv)
        if not self.files.exists(rel):
            raise ConfigError(f"source {self.name!r}: labels CSV {rel!r} not found under {self.cfg.root!r}")
        table = pd.read_csv(io.BytesIO(self.files.read_bytes(rel)), dtype=str, keep_default_na=False)
        if self.cfg.id_column not in table.columns:
            raise ConfigError(
                f"source {self.name!r}: id column {self.cfg.id_column!r} not in {rel!r} (columns: {list(table.columns)})"
            )
        return table

    def iter_items(self) -> Iterator[RawItem]:
        table = self.read_table()
        images_dir = self._rel(self.cfg.images_dir)
        exts = {e.lower() for e in self.cfg.image_extensions}
        by_stem: dict[str, str] = {}
        for rel in self.files.walk_files(images_dir):
            stem, ext = posixpath.splitext(rel.rsplit("/", 1)[-1])
            if ext.lower() in exts:
                by_stem.setdefault(stem, rel)
        used: set[str] = set()
        items = []
        for _, row in table.iterrows():
            image_id = str(row[self.cfg.id_column]).strip()
            name, ext = posixpath.splitext(image_id)
            rel = by_stem.get(image_id) or (by_stem.get(name) if ext.lower() in exts else None)
            path = rel or posixpath.join(images_dir, image_id)
            used.add(path)
            items.append(RawItem(self.name, path, "label_row", tuple((str(k), str(v)) for k, v in row.items())))
        for rel in sorted(set(by_stem.values()) - used):
            items.append(RawItem(self.name, rel, "orphan_image"))
        yield from sorted(items, key=lambda i: (i.path, i.extra))

    # ---- label harmonisation ---------------------------------------------------------------------------------
    def column_map(self, columns: list[str], ontology) -> dict[str, str]:
        if self.cfg.label_columns:
            return dict(self.cfg.label_columns)
        skip = {self.cfg.id_column, self.cfg.patient_column, self.cfg.label_string_column,
                *self.cfg.grade_columns.values(), *self.cfg.ignore_columns}
        lookup = _ontology_lookup(ontology)
        mapping = {}
        for column in columns:
            if column in skip:
                continue
            label = lookup.get(_norm(column))
            if label:
                mapping[column] = label
        return mapping

    def labels_for(self, row: dict[str, str], ontology) -> tuple[dict[str, int], dict[str, str]]:
        labels: dict[str, int] = {}
        grades: dict[str, str] = {}
        lookup = _ontology_lookup(ontology)
        for column, label in self.column_map(list(row), ontology).items():
            value = str(row.get(column, "")).strip()
            if value == "":
                continue
            try:
                number = float(value)
            except ValueError:
                continue
            labels[label] = POSITIVE if number > 0 else (NEGATIVE if number == 0 else -1)
        if self.cfg.label_string_column and row.get(self.cfg.label_string_column):
            for name in str(row[self.cfg.label_string_column]).split(self.cfg.label_delimiter):
                label = lookup.get(_norm(name))
                if label:
                    labels[label] = POSITIVE
        for label, column in self.cfg.grade_columns.items():
            value = str(row.get(column, "")).strip()
            if value:
                grades[label] = value
                try:
                    labels.setdefault(label, POSITIVE if float(value) > 0 else NEGATIVE)
                except ValueError:
                    labels.setdefault(label, POSITIVE)
        return labels, grades

    def process(self, item: RawItem, ctx) -> list[ProcessedSample]:
        if item.kind == "orphan_image":
            raise Reject("join", f"image has no row in {self._rel(self.cfg.labels_csv)}")
        row = dict(item.extra)
        if not self.files.exists(item.path):
            raise Reject("join", f"image for table row not found: expected {item.path}")
        try:
            data = self.files.read_bytes(item.path)
        except OSError as exc:
            raise Reject("read", f"file could not be read: {type(exc).__name__}") from None
        try:
            arr = pixels.load_image_file(data)
            if min(arr.shape[:2]) < ctx.cfg.min_side or arr.shape[0] * arr.shape[1] > ctx.cfg.max_pixels:
                raise pixels.PixelError(f"absurd dimensions: {arr.shape[1]}x{arr.shape[0]}", stage="validate")
        except pixels.PixelError as exc:
            raise Reject(exc.stage, str(exc)) from None
        ontology = ctx.ontology(self.cfg.ontology)
        labels, grades = self.labels_for(row, ontology)
        texts = label_texts(labels, grades, ontology, self.cfg.modality_text)
        patient_raw = row.get(self.cfg.patient_column) if self.cfg.patient_column else None
        patient_hash = ctx.deid.hash_id("patient", f"{self.name}:{patient_raw or item.path}")
        image = pixels.encode(arr, ctx.cfg.image_size, ctx.cfg.image_format, ctx.cfg.jpeg_quality, ctx.cfg.png_compress_level)
        record = SampleRecord(
            key=ctx.sample_key(item, 0),
            split=ctx.split_for(patient_hash),
            source=item.source,
            source_path=item.path,
            licence=self.cfg.licence,
            texts=texts,
            labels=labels,
            meta={
                "source": item.source,
                "licence": self.cfg.licence,
                "modality": "OP",
                "view": "",
                "body_part": "eye",
                "original_size": list(image.original_size),
                "pixel_spacing": None,
                "grades": grades,
                "label_derived": True,
            },
            patient_hash=patient_hash,
            pixel_sha256=image.pixel_sha256,
            image_format=ctx.cfg.image_format,
            width=image.width,
            height=image.height,
            image_bytes=len(image.data),
        )
        return [ProcessedSample(record, image.data)]


def _ontology_lookup(ontology) -> dict[str, str]:
    lookup: dict[str, str] = {}
    if ontology is None:
        return lookup
    for abbreviation, label in DATASET_ABBREVIATIONS.items():
        if label in ontology.labels:
            lookup[_norm(abbreviation)] = label
    for label in ontology.labels:
        lookup[_norm(label)] = label
        for synonym in _synonyms(ontology, label):
            lookup.setdefault(_norm(synonym.replace("*", "")), label)
    return lookup


def _synonyms(ontology, label: str) -> list[str]:
    for attr in ("synonyms", "label_synonyms"):
        value = getattr(ontology, attr, None)
        if isinstance(value, dict):
            return list(value.get(label, []))
        if callable(value):
            try:
                return list(value(label))
            except Exception:  # an ontology API variant we do not know: names alone still map
                return []
    entry = getattr(ontology, "entries", None) or getattr(ontology, "by_name", None)
    if isinstance(entry, dict) and label in entry:
        return list(getattr(entry[label], "synonyms", []) or [])
    return []


def _human(label: str) -> str:
    return label.replace("_", " ").strip()


def label_texts(labels: dict[str, int], grades: dict[str, str], ontology, modality_text: str) -> dict[str, str]:
    positives = [label for label, state in labels.items() if state == POSITIVE and _norm(label) not in NORMAL_NAMES]
    if not positives:
        normal = next((lab for lab in (ontology.labels if ontology is not None else []) if _norm(lab) in NORMAL_NAMES), "normal")
        explanation = _describe(ontology, normal, None) or "No retinal abnormality is seen."
        return {"modality": f"normal {modality_text}", "diagnosis": "normal", "explanation": explanation}
    order = list(ontology.labels) if ontology is not None else sorted(positives)
    positives.sort(key=lambda lab: order.index(lab) if lab in order else len(order))
    diagnosis = ", ".join(_severity_text(ontology, lab, grades.get(lab)) for lab in positives)
    explanation = " ".join(filter(None, (_describe(ontology, lab, None) for lab in positives)))
    return {"modality": f"abnormal {modality_text}", "diagnosis": diagnosis, "explanation": explanation or diagnosis}


def _severity_text(ontology, label: str, grade) -> str:
    """"Moderate non-proliferative diabetic retinopathy" (first sentence of the grade text) or the label name."""
    graded = _describe(ontology, label, grade) if grade not in (None, "") else ""
    plain = _describe(ontology, label, None)
    if graded and graded != plain:
        return graded.split(". ", 1)[0].rstrip(".")
    return _human(label).lower()


def _describe(ontology, label: str, grade) -> str:
    if ontology is None:
        return ""
    try:
        return str(ontology.describe(label, grade) if grade is not None else ontology.describe(label)).strip()
    except (KeyError, ValueError, TypeError):
        try:
            return str(ontology.describe(label)).strip()
        except Exception:  # label unknown to this ontology: no description rather than a crash
            return ""
    except Exception:
        return ""

