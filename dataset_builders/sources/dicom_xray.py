"""``dicom_xray``: a tree of DICOM files (PACS export, MIDRC-like), optionally joined to a report table.

Texts per granularity: modality = Modality + BodyPartExamined ("CR chest radiograph"); without a report,
diagnosis = StudyDescription and explanation = SeriesDescription + view; with a joined report, both come from the
clinical-text stage (``dataset_builders.text``) applied to the scrubbed report, which also yields labels + evidence.
"""

from __future__ import annotations

import io
import warnings
from functools import lru_cache
from typing import Iterator

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dataset_builders import deid, pixels
from dataset_builders.schema import SampleRecord
from dataset_builders.sources.base import ProcessedSample, RawItem, Reject, Source

NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.": "structured report",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.481.": "radiotherapy object",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.5.1.4.1.1.66": "raw data / registration / segmentation",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.67": "real world value mapping",
}
NON_IMAGE_MODALITIES = {
    "SR": "structured report", "PR": "presentation state", "KO": "key object selection",
    "RTPLAN": "radiotherapy plan", "RTSTRUCT": "radiotherapy structure set", "RTDOSE": "radiotherapy dose",
    "RTRECORD": "radiotherapy record", "SEG": "segmentation", "REG": "registration", "ECG": "waveform",
    "HD": "waveform", "AU": "audio", "DOC": "document", "PLAN": "plan",
}
MODALITY_NOUNS = {"CR": "radiograph", "DX": "radiograph", "RF": "fluoroscopy", "MG": "mammogram", "XA": "angiogram",
                  "OP": "photograph"}
VIEW_WORDS = {"PA": "PA view", "AP": "AP view", "LL": "left lateral view", "RL": "right lateral view",
              "LATERAL": "lateral view", "LAT": "lateral view", "LAO": "LAO view", "RAO": "RAO view"}


def read_dicom(data: bytes) -> Dataset:
    """Bytes -> Dataset; files without the 128-byte preamble are accepted when they look like DICOM."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return pydicom.dcmread(io.BytesIO(data))
            except InvalidDicomError:
                ds = pydicom.dcmread(io.BytesIO(data), force=True)
                if not any(k in ds for k in ("SOPClassUID", "PixelData", "Rows", "Modality")):
                    raise Reject("read", "not a DICOM file: no DICM prefix and no recognisable DICOM elements") from None
                return ds
    except Reject:
        raise
    except Exception as exc:  # pydicom raises many types for truncated / corrupt headers
        detail = deid.scrub_text(pixels._first_line(exc))  # parser messages may quote header values
        raise Reject("read", f"corrupt or truncated DICOM header: {type(exc).__name__}: {detail}") from None


def non_image_reason(ds: Dataset) -> str | None:
    sop = str(ds.get("SOPClassUID", ""))
    for prefix, what in NON_IMAGE_SOP_CLASSES.items():
        if sop.startswith(prefix):
            return f"non-image object: {what} (SOP Class {sop})"
    modality = str(ds.get("Modality", "")).upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"non-image object: {NON_IMAGE_MODALITIES[modality]} (Modality {modality})"
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return "no PixelData element"
    if "PixelData" not in ds:
        return "float pixel data (parametric map) is not a photograph-like image"
    return None


def modality_text(ds: Dataset) -> str:
    modality = str(ds.get("Modality", "") or "").upper().strip()
    body = str(ds.get("BodyPartExamined", "") or "").strip().lower().replace("_", " ")
    noun = MODALITY_NOUNS.get(modality, "image")
    return " ".join(p for p in (modality, body, noun) if p)


def view_of(ds: Dataset) -> str:
    return str(ds.get("ViewPosition", "") or "").strip().upper()


def dicom_samples(
    ds: Dataset,
    item: RawItem,
    ctx,
    licence: str,
    texts_from_report: str | None = None,
) -> list[ProcessedSample]:
    """Validate, decode, normalise, encode every selected frame of ``ds`` and describe it (no PHI)."""
    with warnings.catch_warnings():
        # pydicom's warnings quote header values (possible PHI): they must not reach logs
        warnings.simplefilter("ignore")
        return _dicom_samples(ds, item, ctx, licence, texts_from_report)


def _dicom_samples(ds: Dataset, item: RawItem, ctx, licence: str, texts_from_report: str | None) -> list[ProcessedSample]:
    reason = non_image_reason(ds)
    if reason:
        raise Reject("validate", reason)
    cfg = ctx.cfg
    try:
        _rows, _cols, n_frames = pixels.check_dimensions(ds, cfg.max_pixels, cfg.min_side)
    except pixels.PixelError as exc:
        raise Reject(exc.stage, str(exc)) from None
    phi = deid.header_phi(ds)
    frame_indices = [0] if cfg.multiframe == "first" else list(range(n_frames))
    try:
        frames = pixels.decode_frames(ds, frame_indices)
        display = [pixels.to_display(f, ds) for f in frames]
    except pixels.PixelError as exc:
        raise Reject(exc.stage, deid.scrub_text(str(exc), phi)) from None

    patient_raw = ds.get("PatientID") or ds.get("StudyInstanceUID") or item.path
    patient_hash = ctx.deid.hash_id("patient", str(patient_raw))
    study_hash = ctx.deid.hash_id("study", str(ds.get("StudyInstanceUID", "")))
    series_hash = ctx.deid.hash_id("series", str(ds.get("SeriesInstanceUID", "")))
    mod_text = modality_text(ds)
    view = view_of(ds)
    labels: dict = {}
    evidence: dict = {}
    spans: dict = {}
    study_desc = deid.scrub_header_text(ds.get("StudyDescription", ""), phi)
    series_desc = deid.scrub_header_text(ds.get("SeriesDescription", ""), phi)
    view_text = VIEW_WORDS.get(view, f"{view} view" if view else "")
    explanation = ", ".join(p for p in (series_desc, view_text) if p and p.lower() != view_text.lower()) or view_text
    texts = {"modality": mod_text, "diagnosis": study_desc, "explanation": explanation}
    if texts_from_report is not None:
        # report texts win; a slot the report leaves empty (no FINDINGS, say) keeps the header text
        report = deid.scrub_text(texts_from_report, phi)
        report_texts, labels, evidence, spans = ctx.report_texts(report, mod_text)
        texts = {g: report_texts.get(g) or texts[g] for g in texts}
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    burned_in = str(ds.get("BurnedInAnnotation", "") or "").upper() or "UNKNOWN"
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    meta = {
        "source": item.source,
        "licence": licence,
        "modality": str(ds.get("Modality", "") or ""),
        "view": view,
        "body_part": str(ds.get("BodyPartExamined", "") or "").lower(),
        "pixel_spacing": [float(v) for v in spacing] if spacing else None,
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")),
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "transfer_syntax": getattr(tsyntax, "name", str(tsyntax or "")),
        "burned_in_annotation": burned_in,
        "number_of_frames": n_frames,
        "has_report": texts_from_report is not None,
    }
    out = []
    for frame_index, arr in zip(frame_indices, display):
        image = pixels.encode(arr, cfg.image_size, cfg.image_format, cfg.jpeg_quality, cfg.png_compress_level)
        record = SampleRecord(
            key=ctx.sample_key(item, frame_index),
            split=ctx.split_for(patient_hash),
            source=item.source,
            source_path=item.path,
            licence=licence,
            texts=texts,
            labels=labels,
            evidence=evidence,
            text_spans=spans,
            meta={**meta, "original_size": list(image.original_size)},
            patient_hash=patient_hash,
            study_hash=study_hash,
            series_hash=series_hash,
            pixel_sha256=image.pixel_sha256,
            image_format=cfg.image_format,
            width=image.width,
            height=image.height,
            image_bytes=len(image.data),
            frame_index=frame_index,
        )
        out.append(ProcessedSample(record, image.data))
    return out


@lru_cache(maxsize=8)
def load_report_table(path: str, join: str, text_column: str) -> dict[str, str]:
    """Report CSV -> {join value: text}. Several rows for one study are joined with a blank line."""
    import fsspec
    import pandas as pd

    from mgll.config import ConfigError

    column = {"study_instance_uid": "study_instance_uid", "accession_number": "accession_number"}[join]
    with fsspec.open(path, "rb") as handle:
        table = pd.read_csv(handle, dtype=str, keep_default_na=False)
    lower = {c.lower(): c for c in table.columns}
    aliases = {"study_instance_uid": ["study_instance_uid", "studyinstanceuid", "study_uid"],
               "accession_number": ["accession_number", "accessionnumber", "accession"]}[column]
    join_col = next((lower[a] for a in aliases if a in lower), None)
    text_col = lower.get(text_column.lower())
    if join_col is None or text_col is None:
        raise ConfigError(f"report table {path!r} needs columns {column!r} and {text_column!r}; it has {list(table.columns)}")
    reports: dict[str, str] = {}
    for key, text in zip(table[join_col], table[text_col]):
        key = key.strip()
        reports[key] = (reports[key] + "\n\n" + text) if key in reports else text
    return reports


class DicomXraySource(Source):
    kind = "dicom_xray"

    def __init__(self, cfg, path_prefix: str = ""):
        super().__init__(cfg)
        self.path_prefix = path_prefix

    def iter_items(self) -> Iterator[RawItem]:
        seen: set[str] = set()
        for pattern in self.cfg.patterns:
            for rel in self.files.glob(self.path_prefix + pattern):
                seen.add(rel)
        if self.cfg.include_extensionless:
            for rel in self.files.walk_files(self.path_prefix.rstrip("/")):
                if "." not in rel.rsplit("/", 1)[-1]:
                    seen.add(rel)
        for rel in sorted(seen):
            yield RawItem(self.name, rel, "dicom")

    def check(self) -> None:
        super().check()
        path = self.report_path()
        if path:
            from mgll.config import ConfigError

            try:
                load_report_table(path, self.cfg.report_join, self.cfg.report_text_column)
            except (OSError, ValueError) as exc:
                if isinstance(exc, ConfigError):
                    raise
                raise ConfigError(f"source {self.name!r}: report table {self.cfg.reports!r} unreadable: {exc}") from None

    def report_path(self) -> str | None:
        if not self.cfg.reports:
            return None
        path = self.cfg.reports
        if "://" in path or path.startswith("/"):
            return path
        return self.files.fs.unstrip_protocol(self.files.full(path)) if "://" in self.cfg.root else self.files.full(path)

    def process(self, item: RawItem, ctx) -> list[ProcessedSample]:
        try:
            data = self.files.read_bytes(item.path)
        except OSError as exc:
            raise Reject("read", f"file could not be read: {type(exc).__name__}") from None
        ds = read_dicom(data)
        report = None
        path = self.report_path()
        if path:
            reports = load_report_table(path, self.cfg.report_join, self.cfg.report_text_column)
            join_value = ds.get("StudyInstanceUID" if self.cfg.report_join == "study_instance_uid" else "AccessionNumber")
            report = reports.get(str(join_value or "").strip())
        return dicom_samples(ds, item, ctx, self.cfg.licence, report)
