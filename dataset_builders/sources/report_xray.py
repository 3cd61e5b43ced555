"""``report_xray``: images (DICOM, PNG, JPEG) plus free-text reports.

Report lookup per image, first hit wins: a row of ``reports_csv`` whose ``image_column`` equals the image's
relative path; else a ``.txt`` beside the study folder (MIMIC-CXR layout: ``p10/p10000032/s50414267/*.dcm`` with
``p10/p10000032/s50414267.txt``); else a ``.txt`` with the image's own stem.  Texts and labels come from the
clinical-text stage on the scrubbed report; an image without a report is rejected (stage ``join``).
"""

from __future__ import annotations

import io
import posixpath
from functools import lru_cache
from typing import Iterator

from dataset_builders import deid, pixels
from dataset_builders.schema import SampleRecord
from dataset_builders.sources.base import ProcessedSample, RawItem, Reject, Source
from dataset_builders.sources.dicom_xray import dicom_samples, read_dicom


class ReportXraySource(Source):
    kind = "report_xray"

    def iter_items(self) -> Iterator[RawItem]:
        seen: set[str] = set()
        for pattern in self.cfg.patterns:
            seen.update(self.files.glob(pattern))
        for rel in sorted(seen):
            yield RawItem(self.name, rel, "dicom" if rel.lower().endswith((".dcm", ".dicom")) else "image")

    def _csv_reports(self) -> dict[str, tuple[str, str]]:
        return _load_csv(self.cfg.root, self.cfg.reports_csv, self.cfg.image_column, self.cfg.text_column, self.cfg.patient_column or "")

    def find_report(self, rel: str) -> tuple[str | None, str]:
        if self.cfg.reports_csv:
            hit = self._csv_reports().get(rel)
            if hit:
                return hit
        folder = posixpath.dirname(rel)
        for candidate in (folder + ".txt", posixpath.splitext(rel)[0] + ".txt"):
            if candidate and self.files.exists(candidate):
                return self.files.read_bytes(candidate).decode("utf-8", errors="replace"), ""
        return None, ""

    def process(self, item: RawItem, ctx) -> list[ProcessedSample]:
        report, patient = self.find_report(item.path)
        if report is None:
            raise Reject("join", "no report found for image (CSV row, study .txt or sibling .txt)")
        data = self.files.read_bytes(item.path)
        if item.kind == "dicom":
            return dicom_samples(read_dicom(data), item, ctx, self.cfg.licence, report)
        try:
            arr = pixels.load_image_file(data)
        except pixels.PixelError as exc:
            raise Reject(exc.stage, str(exc)) from None
        if min(arr.shape[:2]) < ctx.cfg.min_side:
            raise Reject("validate", f"absurd dimensions: {arr.shape[1]}x{arr.shape[0]}")
        texts, labels, evidence, spans = ctx.report_texts(deid.scrub_text(report), self.cfg.modality_text)
        patient_hash = ctx.deid.hash_id("patient", patient or posixpath.dirname(item.path) or item.path)
        image = pixels.encode(arr, ctx.cfg.image_size, ctx.cfg.image_format, ctx.cfg.jpeg_quality, ctx.cfg.png_compress_level)
        record = SampleRecord(
            key=ctx.sample_key(item, 0), split=ctx.split_for(patient_hash), source=item.source, source_path=item.path,
            licence=self.cfg.licence, texts=texts, labels=labels, evidence=evidence, text_spans=spans,
            meta={"source": item.source, "licence": self.cfg.licence, "modality": "", "view": "", "body_part": "chest",
                  "original_size": list(image.original_size), "pixel_spacing": None, "has_report": True},
            patient_hash=patient_hash, study_hash=ctx.deid.hash_id("study", posixpath.dirname(item.path)),
            pixel_sha256=image.pixel_sha256, image_format=ctx.cfg.image_format, width=image.width,
            height=image.height, image_bytes=len(image.data),
        )
        return [ProcessedSample(record, image.data)]


@lru_cache(maxsize=4)
def _load_csv(root: str, csv: str, image_column: str, text_column: str, patient_column: str) -> dict[str, tuple[str, str]]:
    import fsspec
    import pandas as pd

    path = csv if ("://" in csv or csv.startswith("/")) else posixpath.join(root, csv)
    with fsspec.open(path, "rb") as handle:
        table = pd.read_csv(io.BytesIO(handle.read()), dtype=str, keep_default_na=False)
    patients = table[patient_column] if patient_column and patient_column in table else [""] * len(table)
    return {p: (t, pid) for p, t, pid in zip(table[image_column], table[text_column], patients)}
