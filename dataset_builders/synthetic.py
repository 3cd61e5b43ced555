"""Synthetic demo corpus: CR/DX DICOM studies with reports, a fundus label table, and the ground truth behind them.

``generate_demo_corpus(out_dir)`` writes (see ``README_TEXT`` below, copied into ``DIR/README.txt``)::

    DIR/dicom/<patient>/<study>/<series>/<instance>.dcm   (folder names are opaque, never PHI)
    DIR/reports.csv            study_instance_uid, accession_number, text
    DIR/fundus/images/*.png + DIR/fundus/labels.csv
    DIR/ground_truth.parquet   one row per input file
    DIR/phi.json               every planted PHI string
    DIR/README.txt

The same seed gives the same bytes. Findings are drawn with realistic co-occurrence and are visible in the pixels
(``synthetic_images``); reports describe them with negations and hedges (``synthetic_findings``).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from dataset_builders.synthetic_dicom import (
    BROKEN_KINDS,
    SOP_CLASS_BY_MODALITY,
    TRANSFER_SYNTAX_SHARES,
    PixelEncoding,
    build_xray_dataset,
    save_dataset,
    to_stored,
    uid_for,
    write_broken,
)
from dataset_builders.synthetic_findings import (
    CHEXPERT_LABELS,
    ReportPHI,
    compose_report,
    sample_chronic_findings,
    sample_findings,
)
from dataset_builders.synthetic_images import FUNDUS_LABELS, burn_in_annotation, render_chest, render_fundus

FIRST_NAMES = (
    "Zebulon Philomena Ignatius Euphemia Barnabas Clementine Thaddeus Wilhelmina Ezekiel Hortensia Leopold Gwendolyn "
    "Cornelius Araminta Bartholomew Ottoline Percival Drusilla Mortimer Perpetua Lysander Griselda Ambrose Octavia "
    "Fitzgerald Seraphina Horatio Millicent Evander Winifred Lucius Ermintrude Algernon Eudora Benedikt Theodosia "
    "Casimir Roswitha Peregrine Ludmila"
).split()
SURNAMES = (
    "Quackenbush Wetherbottom Pemberton-Fogg Fiddlesworth Snodgrass Bumblethorpe Crumplehorn Hollowbrook Thistlewaite "
    "Pickersgill Muddiford Gravesend-Pike Featherstonehaugh Honeycutt-Vane Oglethorpe Ravenscroft Winterbottom "
    "Blunderbore Copperkettle Dunsworthy Elderberry Farthingale Gooseberry Higginbotham Inkpen Jollyfeather Kettleburn "
    "Lickorish Marrowfat Nettlebed Openshaw Puddlefoot Quibbleton Rumbelow Scattergood Tumbleweed Underhay Vexley "
    "Wobbleton Yarborough"
).split()
INSTITUTIONS = (
    ("St. Quimby Lighthouse Infirmary", "17 Marzipan Lane, Gloomsbury"),
    ("Gloomsbury Royal Radiology Hospital", "4 Quagmire Row, Gloomsbury"),
    ("Marzipan Valley Medical Centre", "221 Tuppence Street, Marzipan Valley"),
    ("Pocklington-under-Lyme General", "9 Wobbly Bridge Road, Pocklington-under-Lyme"),
)
MANUFACTURERS = (("AGFA", "CR 85-X"), ("Carestream Health", "DRX-Evolution"), ("FUJIFILM Corporation", "FCR Velocity"),
                 ("GE Healthcare", "Definium 6000"), ("Philips Medical Systems", "DigitalDiagnost"))
STUDY_DESCRIPTIONS = {
    "PA+LATERAL": ("XR CHEST PA AND LATERAL", "CHEST 2 VIEWS", "Chest PA and Lateral"),
    "PA": ("XR CHEST PA", "CHEST 1 VIEW PA", "CR CHEST PA"),
    "AP": ("XR CHEST 1 VIEW PORTABLE", "CHEST AP PORTABLE", "Portable chest AP"),
}
SERIES_DESCRIPTIONS = {"PA": ("PA", "CHEST PA", "Chest PA"), "AP": ("AP PORTABLE", "AP", "CHEST AP SUPINE"),
                       "LATERAL": ("LATERAL", "LAT", "Chest Lateral")}
FUNDUS_COLUMNS = ("ID", "Disease_Risk", *FUNDUS_LABELS, "DR_grade")
FUNDUS_PREVALENCE = {"DR": 0.28, "ARMD": 0.09, "MH": 0.1, "DN": 0.07, "MYA": 0.08, "BRVO": 0.05, "TSLN": 0.07,
                     "ODC": 0.1}

# GDCM fails on several multi-frame layouts and JPEG 2000 is the slowest encoder: multi-frame files use these.
MULTIFRAME_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless)

GROUND_TRUTH_SCHEMA = pa.schema(
    [
        ("relpath", pa.string()),  # relative to DIR
        ("kind", pa.string()),  # dicom | fundus
        ("expected", pa.string()),  # sample | reject | duplicate
        ("reason", pa.string()),  # reject category (truncated, non_image, not_dicom, absurd_dimensions,
                                  # undecodable, corrupt_image); "" otherwise
        ("findings", pa.string()),  # json list of positive labels (CheXpert names, or fundus columns)
        ("uncertain", pa.string()),  # json list of labels hedged in the report
        ("negated", pa.string()),  # json list of labels explicitly negated in the report
        ("finding_details", pa.string()),  # json label -> {severity, side, lobe, size_mm, device, rendered}
        ("patient_id", pa.string()),
        ("study_instance_uid", pa.string()),
        ("sop_instance_uid", pa.string()),
        ("accession_number", pa.string()),
        ("has_report", pa.bool_()),
        ("n_frames", pa.int32()),
        ("view", pa.string()),
        ("modality", pa.string()),
        ("transfer_syntax", pa.string()),
        ("photometric", pa.string()),
        ("bits_stored", pa.int32()),
        ("pixel_representation", pa.int32()),
        ("has_window", pa.bool_()),
        ("has_rescale", pa.bool_()),
        ("has_voi_lut", pa.bool_()),  # VOILUTSequence instead of WindowCenter/Width
        ("burned_in_annotation", pa.bool_()),
        ("rows", pa.int32()),
        ("columns", pa.int32()),
        ("duplicate_of", pa.string()),  # relpath of the original for expected == duplicate
        ("dr_grade", pa.int32()),  # fundus DR grade 0-4; -1 for X-ray
    ]
)


@dataclass
class _PHIRegistry:
    by_field: dict[str, set[str]] = field(default_factory=dict)

    def add(self, field_name: str, value: str) -> str:
        if value:
            self.by_field.setdefault(field_name, set()).add(value)
        return value

    def as_json(self) -> dict[str, Any]:
        by_field = {k: sorted(v) for k, v in sorted(self.by_field.items())}
        return {
            "strings": sorted({s for v in by_field.values() for s in v}),
            "by_field": by_field,
            "note": "Every fake PHI string planted in DICOM headers (by attribute keyword) and reports (report_*). "
            "None of them may appear in any build output.",
        }


def _fmt_us_date(dicom_date: str) -> str:
    return f"{dicom_date[4:6]}/{dicom_date[6:8]}/{dicom_date[:4]}"


def _random_date(rng: np.random.Generator, first_year: int, last_year: int) -> str:
    year = int(rng.integers(first_year, last_year + 1))
    return f"{year:04d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"


def _choose_encoding(rng: np.random.Generator) -> PixelEncoding:
    syntaxes = list(TRANSFER_SYNTAX_SHARES)
    probs = np.array(list(TRANSFER_SYNTAX_SHARES.values()))
    ts = syntaxes[int(rng.choice(len(syntaxes), p=probs / probs.sum()))]
    bits = int(rng.choice([8, 12, 16], p=[0.15, 0.6, 0.25]))
    signed = bits > 8 and rng.random() < 0.05
    rescale = None
    if rng.random() < 0.2:
        rescale = (float(rng.choice([0.5, 1.0, 2.0])), float(rng.choice([-1024.0, -100.0, 0.0, 50.0])))
    return PixelEncoding(
        transfer_syntax=ts,
        photometric="MONOCHROME1" if rng.random() < 0.3 else "MONOCHROME2",
        bits_stored=bits,
        signed=signed,
        rescale=rescale,
        window=rng.random() < 0.85,
        voi_lut=bits == 12 and not signed and rescale is None and rng.random() < 0.1,
    )


def _gt_row(**kwargs: Any) -> dict[str, Any]:
    row = {name: None for name in GROUND_TRUTH_SCHEMA.names}
    row.update(kind="dicom", expected="sample", reason="", findings="[]", uncertain="[]", negated="[]",
               finding_details="{}", patient_id="", study_instance_uid="", sop_instance_uid="", accession_number="",
               has_report=False, n_frames=1, view="", modality="", transfer_syntax="", photometric="", bits_stored=0,
               pixel_representation=0, has_window=False, has_rescale=False, has_voi_lut=False,
               burned_in_annotation=False, rows=0, columns=0, duplicate_of="", dr_grade=-1)
    row.update(kwargs)
    return row


class DemoCorpusError(ValueError):
    """Bad arguments, or an output folder that holds something other than a demo corpus."""


MARKER_FILE = ".mgll-demo-corpus"  # written first: a folder with it may be regenerated (even after a crash)


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DemoCorpusError(f"demo corpus output {out} exists and is not a folder")
    readme = out / "README.txt"
    ours = (out / MARKER_FILE).exists() or (
        readme.is_file() and readme.read_text(encoding="utf-8", errors="replace").startswith(README_TEXT[:40])
    )
    foreign = [p.name for p in (out.iterdir() if out.is_dir() else []) if p.name != MARKER_FILE]
    if foreign and not ours:
        raise DemoCorpusError(
            f"refusing to write the demo corpus into {out}: it already holds {sorted(foreign)[:5]} and is not a "
            f"previous demo corpus (no {MARKER_FILE}); choose an empty or new folder"
        )
    (out / "ground_truth.parquet").unlink(missing_ok=True)  # first: an interrupted rerun must not look complete
    for part in ("dicom", "fundus"):
        if (out / part).exists():
            shutil.rmtree(out / part)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER_FILE).write_text("generated by dataset_builders.synthetic.generate_demo_corpus\n", encoding="utf-8")


def generate_demo_corpus(out_dir: str | Path, n_studies: int = 2000, seed: int = 0, n_fundus: int = 200,
                         image_size: int = 256) -> dict[str, Any]:
    """Write the synthetic demo corpus into ``out_dir`` (replacing a previous corpus there) and return a summary.

    ``n_studies`` chest X-ray studies (plus a few duplicate studies and broken files), ``n_fundus`` fundus
    images; images are about ``image_size`` pixels on a side. The same ``seed`` gives byte-identical files.
    Refuses (``DemoCorpusError``) a non-empty folder that is not a previous demo corpus.

    Returns ``out_dir``, ``seed``, ``n_patients``, ``n_studies``, ``n_files`` (= ground-truth rows),
    ``n_dicom_files``, ``n_fundus_files``, ``expected`` ({sample, reject, duplicate} counts), ``expected_frames``
    (samples with every frame counted), ``rejects_by_reason``, ``transfer_syntaxes`` (UID -> files),
    ``label_counts`` (CheXpert positives over sample DICOM files), ``n_reports``, ``n_phi_strings``, ``seconds``.
    """
    if n_studies < 1 or n_fundus < 0 or image_size < 16:
        raise DemoCorpusError(
            f"generate_demo_corpus needs n_studies >= 1, n_fundus >= 0 and image_size >= 16; got n_studies="
            f"{n_studies}, n_fundus={n_fundus}, image_size={image_size}"
        )
    started = time.perf_counter()
    out = Path(out_dir)
    _prepare_out_dir(out)
    root_seq = np.random.SeedSequence(seed)
    plan_rng, broken_rng, fundus_rng, dup_rng = (np.random.default_rng(s) for s in root_seq.spawn(4))
    study_seqs = np.random.SeedSequence([seed, 1]).spawn(n_studies)

    phi = _PHIRegistry()
    gt_rows: list[dict[str, Any]] = []
    report_rows: list[tuple[str, str, str]] = []
    sample_relpaths: list[tuple[str, dict]] = []  # candidates for duplicates: (relpath, ground-truth row)

    # ---------------------------------------------------------------- patients and studies
    studies_per_patient: list[int] = []
    while sum(studies_per_patient) < n_studies:
        studies_per_patient.append(int(min(1 + plan_rng.poisson(1.0), 5)))
    studies_per_patient[-1] -= sum(studies_per_patient) - n_studies
    n_patients = len(studies_per_patient)
    n_names = len(FIRST_NAMES) * len(SURNAMES) * 26
    name_codes = plan_rng.choice(n_names, size=n_patients + 8, replace=n_patients + 8 > n_names)
    id_space = 900_000 if max(n_patients, n_studies) + 8 <= 900_000 else 900_000_000  # unique ids, >= 6 digits
    id_numbers = plan_rng.choice(id_space, size=n_patients + 8, replace=False) + id_space // 9
    accession_numbers = plan_rng.choice(id_space, size=n_studies + 8, replace=False) + id_space // 9
    n_multiframe = min(n_studies, max(2, n_studies // 100))
    multiframe_studies = set(plan_rng.choice(n_studies, size=n_multiframe, replace=False).tolist())

    def person(code: int) -> tuple[str, str]:
        first = FIRST_NAMES[code % len(FIRST_NAMES)]
        last = SURNAMES[(code // len(FIRST_NAMES)) % len(SURNAMES)]
        middle = chr(ord("A") + code // (len(FIRST_NAMES) * len(SURNAMES)))
        return f"{last}^{first}^{middle}", f"{first} {middle}. {last}"

    def new_patient(p: int, rng: np.random.Generator) -> dict[str, Any]:
        dicom_name, plain_name = person(int(name_codes[p]))
        return {
            "folder": f"P{p:05d}",
            "id": f"PID-ZQ{id_numbers[p]}",
            "dicom_name": dicom_name,
            "plain_name": plain_name,
            "birth_date": _random_date(rng, 1930, 2000),
            "sex": "F" if rng.random() < 0.5 else "M",
            "address": f"{int(rng.integers(2, 400))} {SURNAMES[int(rng.integers(len(SURNAMES)))]} Crescent, Gloomsbury",
        }

    def study_header(patient: dict, study_uid: str, accession: str, study_date: str, rng: np.random.Generator,
                     modality: str, study_desc: str) -> dict[str, Any]:
        institution, address = INSTITUTIONS[int(rng.integers(len(INSTITUTIONS)))]
        referring, _ = person(int(rng.integers(len(FIRST_NAMES) * len(SURNAMES) * 26)))
        operator, _ = person(int(rng.integers(len(FIRST_NAMES) * len(SURNAMES) * 26)))
        manufacturer, model = MANUFACTURERS[int(rng.integers(len(MANUFACTURERS)))]
        age = int(study_date[:4]) - int(patient["birth_date"][:4])
        header = {
            "SpecificCharacterSet": "ISO_IR 100",
            "ImageType": ["ORIGINAL", "PRIMARY"],
            "SOPClassUID": SOP_CLASS_BY_MODALITY[modality],
            "StudyDate": study_date,
            "SeriesDate": study_date,
            "ContentDate": study_date,
            "StudyTime": f"{int(rng.integers(7, 20)):02d}{int(rng.integers(60)):02d}{int(rng.integers(60)):02d}",
            "AccessionNumber": accession,
            "Modality": modality,
            "Manufacturer": manufacturer,
            "InstitutionName": institution,
            "InstitutionAddress": address,
            "ReferringPhysicianName": referring,
            "StudyDescription": study_desc,
            "OperatorsName": operator,
            "ManufacturerModelName": model,
            "PatientName": patient["dicom_name"],
            "PatientID": patient["id"],
            "PatientBirthDate": patient["birth_date"],
            "PatientSex": patient["sex"],
            "PatientAge": f"{max(age, 18):03d}Y",
            "PatientAddress": patient["address"],
            "BodyPartExamined": "CHEST",
            "KVP": str(int(rng.integers(90, 125))),
            "StudyInstanceUID": study_uid,
            "StudyID": f"SID-{accession[4:]}",
        }
        for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientAddress", "StudyDate", "AccessionNumber",
                    "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "OperatorsName", "StudyID"):
            phi.add(key, str(header[key]))
        if modality == "DX":
            header["PresentationIntentType"] = "FOR PRESENTATION"
        return header

    def write_image(relpath: str, header: dict, img: np.ndarray, enc: PixelEncoding, spacing: float) -> None:
        stored, window = to_stored(img, enc)
        pair = [_ds(spacing), _ds(spacing)]
        header = dict(header, PixelSpacing=pair, ImagerPixelSpacing=pair)
        ds = build_xray_dataset(header, stored, enc, window)
        save_dataset(ds, out / relpath, enc.transfer_syntax, stored)

    study_index = 0
    ts_counts: Counter[str] = Counter()
    all_studies: list[dict[str, Any]] = []
    for p, n_patient_studies in enumerate(studies_per_patient):
        prng = np.random.default_rng(np.random.SeedSequence([seed, 2, p]))
        patient = new_patient(p, prng)
        chronic = sample_chronic_findings(prng)
        for s in range(n_patient_studies):
            rng = np.random.default_rng(study_seqs[study_index])
            layout = ("PA+LATERAL", "PA", "AP")[int(rng.choice(3, p=[0.4, 0.35, 0.25]))]
            views = ["PA", "LATERAL"] if layout == "PA+LATERAL" else [layout]
            findings = sample_findings(rng, portable=layout == "AP", chronic=chronic)
            modality = "DX" if rng.random() < 0.6 else "CR"
            study_uid = uid_for(seed, "study", study_index)
            accession = f"ACC-{accession_numbers[study_index]}"
            study_date = _random_date(rng, 2015, 2024)
            study_desc = STUDY_DESCRIPTIONS[layout][int(rng.integers(3))]
            header = study_header(patient, study_uid, accession, study_date, rng, modality, study_desc)
            study_folder = f"dicom/{patient['folder']}/S{s + 1:02d}"
            study = {"uid": study_uid, "accession": accession, "findings": findings, "patient": patient,
                     "date": study_date, "layout": layout, "rng": rng, "folder": study_folder, "header": header,
                     "has_report": rng.random() < 0.98}
            all_studies.append(study)
            for v, view in enumerate(views):
                enc = _choose_encoding(rng)
                n_frames = int(rng.integers(2, 4)) if (study_index in multiframe_studies and v == 0) else 1
                if n_frames > 1 and enc.transfer_syntax not in MULTIFRAME_SYNTAXES:
                    enc.transfer_syntax = ExplicitVRLittleEndian
                aspect = (1.0, 1.0, 1.2, 0.82)[int(rng.integers(4))]
                rows = image_size if aspect >= 1 else int(image_size * aspect)
                cols = int(image_size * aspect) if aspect >= 1 else image_size
                if min(rows, cols) < 64 and enc.transfer_syntax == JPEG2000Lossless:
                    enc.transfer_syntax = ExplicitVRLittleEndian  # OpenJPEG's default 6 resolution levels need 64 px
                spacing = float(rng.uniform(350.0, 430.0)) / cols
                frames = [render_chest(rng, findings.drawn(), rows, cols, view, spacing) for _ in range(n_frames)]
                img = np.stack(frames) if n_frames > 1 else frames[0]
                burned = rng.random() < 0.03
                if burned:
                    img = burn_in_annotation(img)
                series_uid = uid_for(seed, "series", study_index, v)
                sop_uid = uid_for(seed, "instance", study_index, v)
                relpath = f"{study_folder}/SE{v + 1:02d}/IM0001.dcm"
                file_header = dict(
                    header,
                    SeriesInstanceUID=series_uid,
                    SOPInstanceUID=sop_uid,
                    SeriesNumber=v + 1,
                    InstanceNumber=1,
                    SeriesDescription=SERIES_DESCRIPTIONS[view][int(rng.integers(3))],
                    ViewPosition=view,
                    BurnedInAnnotation="YES" if burned else "NO",
                    LossyImageCompression="00",
                )
                write_image(relpath, file_header, img, enc, spacing)
                ts_counts[enc.transfer_syntax] += 1
                row = _gt_row(
                    relpath=relpath, findings=json.dumps(sorted(findings.positive)),
                    uncertain=json.dumps(sorted(findings.uncertain)),
                    finding_details=json.dumps(findings.details_json(), sort_keys=True),
                    patient_id=patient["id"], study_instance_uid=study_uid, sop_instance_uid=sop_uid,
                    accession_number=accession, has_report=study["has_report"], n_frames=n_frames, view=view,
                    modality=modality, transfer_syntax=enc.transfer_syntax, photometric=enc.photometric,
                    bits_stored=enc.bits_stored, pixel_representation=int(enc.signed),
                    has_window=enc.window and not enc.voi_lut,
                    has_voi_lut=enc.voi_lut,
                    has_rescale=enc.rescale is not None, burned_in_annotation=burned, rows=rows, columns=cols,
                )
                gt_rows.append(row)
                if n_frames == 1 and enc.transfer_syntax == ExplicitVRLittleEndian and not burned:
                    sample_relpaths.append((relpath, row))
            study_index += 1

    # ---------------------------------------------------------------- reports (negations recorded per study)
    negated_by_study: dict[str, list[str]] = {}
    for study in all_studies:
        if not study["has_report"]:
            continue
        rng = study["rng"]
        report_phi = None
        if rng.random() < 0.35:
            pat = study["patient"]
            first_phys, _ = person(int(rng.integers(len(FIRST_NAMES) * len(SURNAMES) * 26)))
            last, first, middle = first_phys.split("^")
            report_phi = ReportPHI(
                patient_name=pat["plain_name"], mrn=pat["id"], birth_date=_fmt_us_date(pat["birth_date"]),
                study_date=_fmt_us_date(study["date"]), accession=study["accession"], physician=f"{first} {last}",
                phone=f"({int(rng.integers(200, 990))}) 555-{int(rng.integers(1000, 10000))}",
            )
        text, planted, negated = compose_report(study["findings"], rng, report_phi, study["header"]["StudyDescription"])
        for value in planted:
            phi.add("report", value)
        negated_by_study[study["uid"]] = negated
        report_rows.append((study["uid"], study["accession"], text))
    for row in gt_rows:
        row["negated"] = json.dumps(sorted(negated_by_study.get(row["study_instance_uid"], [])))

    # ---------------------------------------------------------------- exact duplicates in another patient
    n_dup = min(max(2, n_studies // 500), len(sample_relpaths))
    dup_choice = dup_rng.choice(len(sample_relpaths), size=n_dup, replace=False) if n_dup else []
    dup_patient = new_patient(n_patients, dup_rng)
    # sorts after every original patient folder, so a builder walking the tree meets the original first
    dup_patient["folder"] = "P99999" if n_patients < 99999 else "PX99999"

    for d, idx in enumerate(sorted(int(i) for i in dup_choice)):
        src_relpath, src_row = sample_relpaths[idx]
        ds = pydicom.dcmread(out / src_relpath)
        study_uid = uid_for(seed, "dup-study", d)
        accession = f"ACC-{accession_numbers[n_studies + d]}"
        header = study_header(dup_patient, study_uid, accession, _random_date(dup_rng, 2015, 2024), dup_rng,
                              str(ds.Modality), str(ds.StudyDescription))
        for keyword, value in header.items():
            setattr(ds, keyword, value)
        ds.SeriesInstanceUID = uid_for(seed, "dup-series", d)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid_for(seed, "dup-instance", d)
        relpath = f"dicom/{dup_patient['folder']}/S{d + 1:02d}/SE01/IM0001.dcm"
        (out / relpath).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out / relpath, enforce_file_format=True)
        ts_counts[str(ds.file_meta.TransferSyntaxUID)] += 1
        gt_rows.append(dict(src_row, relpath=relpath, expected="duplicate", duplicate_of=src_relpath,
                            patient_id=dup_patient["id"], study_instance_uid=study_uid,
                            sop_instance_uid=str(ds.SOPInstanceUID), accession_number=accession, has_report=False,
                            negated="[]"))

    # ---------------------------------------------------------------- deliberately broken files
    n_each = max(1, round(n_studies * 0.002))
    b = 0
    for kind, reason in BROKEN_KINDS.items():
        for _ in range(n_each):
            study = all_studies[int(broken_rng.integers(len(all_studies)))]
            relpath = f"{study['folder']}/SE{90 + b:02d}/IM0001.dcm"
            sop_uid = uid_for(seed, "broken", b)
            header = dict(study["header"], SeriesInstanceUID=uid_for(seed, "broken-series", b), SOPInstanceUID=sop_uid,
                          SeriesNumber=90 + b, InstanceNumber=1, SeriesDescription="CHEST PA", ViewPosition="PA")
            write_broken(kind, out / relpath, header, broken_rng, max(32, image_size // 4))
            gt_rows.append(_gt_row(
                relpath=relpath, expected="reject", reason=reason,
                patient_id="" if kind == "not_dicom" else study["patient"]["id"],
                study_instance_uid="" if kind == "not_dicom" else study["uid"],
                sop_instance_uid="" if kind == "not_dicom" else sop_uid,
                accession_number=study["accession"], has_report=study["has_report"], modality=kind,
            ))
            b += 1

    # ---------------------------------------------------------------- fundus label table
    fundus_rows = _write_fundus(out / "fundus", n_fundus, fundus_rng, image_size, gt_rows)

    # ---------------------------------------------------------------- tables, PHI list, README
    gt_rows.sort(key=lambda r: r["relpath"])
    # ground_truth.parquet is the "corpus complete" marker the synthetic source looks for: written last, atomically.
    pq.write_table(pa.Table.from_pylist(gt_rows, schema=GROUND_TRUTH_SCHEMA), out / "ground_truth.parquet.tmp")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["study_instance_uid", "accession_number", "text"])
    writer.writerows(report_rows)
    (out / "reports.csv").write_text(buf.getvalue(), encoding="utf-8")
    (out / "phi.json").write_text(json.dumps(phi.as_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (out / "README.txt").write_text(README_TEXT, encoding="utf-8")
    (out / "ground_truth.parquet.tmp").replace(out / "ground_truth.parquet")

    expected = Counter(r["expected"] for r in gt_rows)
    label_counts = Counter(l for r in gt_rows if r["kind"] == "dicom" and r["expected"] == "sample"
                           for l in json.loads(r["findings"]))
    return {
        "out_dir": str(out),
        "seed": seed,
        "n_patients": n_patients,
        "n_studies": n_studies,
        "n_files": len(gt_rows),
        "n_dicom_files": sum(r["kind"] == "dicom" for r in gt_rows),
        "n_fundus_files": fundus_rows,
        "expected": dict(sorted(expected.items())),
        "expected_frames": sum(r["n_frames"] for r in gt_rows if r["expected"] == "sample"),
        "rejects_by_reason": dict(sorted(Counter(r["reason"] for r in gt_rows if r["expected"] == "reject").items())),
        "transfer_syntaxes": dict(sorted(ts_counts.items())),
        "label_counts": dict(sorted(label_counts.items())),
        "n_reports": len(report_rows),
        "n_phi_strings": len(phi.as_json()["strings"]),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _ds(value: float) -> str:
    return f"{value:.4f}"


def _write_fundus(root: Path, n: int, rng: np.random.Generator, size: int, gt_rows: list[dict]) -> int:
    """RFMiD-like label table + images; also one exact duplicate and one corrupt PNG when n >= 10."""
    if n == 0:
        return 0
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    table: list[dict[str, int]] = []
    for i in range(1, n + 1):
        labels = {name: int(rng.random() < p) for name, p in FUNDUS_PREVALENCE.items()}
        if labels["MYA"] and rng.random() < 0.5:
            labels["TSLN"] = 1
        if labels["ARMD"]:
            labels["DN"] = 0  # drusen of AMD are not listed separately
        grade = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.35, 0.18, 0.12])) if labels["DR"] else 0
        severity = float(rng.uniform(0.3, 1.0))
        pixels = render_fundus(rng, labels, size, grade, severity)
        Image.fromarray(pixels, "RGB").save(images / f"{i}.png", optimize=False)
        table.append({"ID": i, "Disease_Risk": int(any(labels.values())), **labels, "DR_grade": grade})
        gt_rows.append(_gt_row(relpath=f"fundus/images/{i}.png", kind="fundus",
                               findings=json.dumps(sorted(k for k, v in labels.items() if v)),
                               finding_details=json.dumps({"severity": round(severity, 3)}), rows=size, columns=size,
                               n_frames=1, dr_grade=grade, modality="fundus"))
    if n >= 10:
        dup_src = int(rng.integers(1, n + 1))
        dup_id, bad_id = n + 1, n + 2
        shutil.copyfile(images / f"{dup_src}.png", images / f"{dup_id}.png")
        table.append(dict(table[dup_src - 1], ID=dup_id))
        src_row = next(r for r in gt_rows if r["relpath"] == f"fundus/images/{dup_src}.png")
        gt_rows.append(dict(src_row, relpath=f"fundus/images/{dup_id}.png", expected="duplicate",
                            duplicate_of=f"fundus/images/{dup_src}.png"))
        data = (images / f"{dup_src}.png").read_bytes()
        (images / f"{bad_id}.png").write_bytes(data[: len(data) // 3])  # truncated PNG stream
        table.append(dict(table[dup_src - 1], ID=bad_id))
        gt_rows.append(_gt_row(relpath=f"fundus/images/{bad_id}.png", kind="fundus", expected="reject",
                               reason="corrupt_image", findings=src_row["findings"], dr_grade=src_row["dr_grade"],
                               modality="fundus"))
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(FUNDUS_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    return len(table)


_LABEL_LIST = "\n    ".join(textwrap.wrap(", ".join(CHEXPERT_LABELS), 108))
README_TEXT = f"""MGLL synthetic demo corpus (generated by dataset_builders.synthetic.generate_demo_corpus)
====================================================================================

Everything here is synthetic: no real patient, no real image. It exists to exercise build-dataset end to end
and to prove de-identification. Deterministic: the same seed gives byte-identical files.

dicom/P<nnnnn>/S<nn>/SE<nn>/IM0001.dcm
    Chest X-ray studies (CR Image Storage or DX Image Storage - For Presentation), 1-5 studies per patient, PA,
    PA + LATERAL or portable AP. Folder names are opaque and contain no PHI.
    Pixel encodings: MONOCHROME1 and MONOCHROME2; BitsStored 8/12/16; a few signed (PixelRepresentation 1);
    WindowCenter/Width on ~80%, a VOILUTSequence (S-shaped 12-bit LUT) on ~5% of files, neither on the rest
    (they need a percentile window); RescaleSlope/Intercept on ~20%;
    PixelSpacing and ImagerPixelSpacing; BurnedInAnnotation YES on ~3% (a marker block, no text).
    Transfer syntaxes (share of files): Explicit VR Little Endian (~45%), Implicit VR Little Endian (~18%),
    RLE Lossless (~11%, pydicom), JPEG 2000 Lossless (~10%, pylibjpeg-openjpeg), JPEG Lossless SV1 / Process 14
    (~10%) and JPEG-LS Lossless (~6%) (both encoded with python-gdcm's codecs). Not included: lossy syntaxes
    (JPEG baseline, lossy JPEG 2000): X-ray archives rarely use them and the corpus stays lossless.
    A few multi-frame files (NumberOfFrames 2-3, same findings in every frame; ~1% of studies, at least 2;
    written only as Explicit/Implicit VR Little Endian or RLE Lossless, since GDCM cannot write every multi-frame
    JPEG layout). Images smaller than 64 px are never JPEG 2000 (OpenJPEG needs 64 px for its default levels).
    Fake PHI planted in headers: PatientName, PatientID, PatientBirthDate, PatientAddress, StudyDate/SeriesDate/
    ContentDate, AccessionNumber, StudyID, InstitutionName, InstitutionAddress, ReferringPhysicianName,
    OperatorsName. Every planted string is listed in phi.json.
    Deliberately unusable files (ground truth expected=reject, reason):
      truncated          PixelData shorter than Rows x Columns, or the file cut off inside PixelData
      non_image          a Basic Text SR and a Grayscale Softcopy Presentation State (no PixelData)
      not_dicom          random bytes named .dcm
      absurd_dimensions  Rows = Columns = 65535 with a few bytes of pixel data
      undecodable        MPEG-2 transfer syntax (no decoder installed) with random encapsulated bytes
    Exact duplicates: a few images copied (same pixel data and pixel encoding) into patient P99999 with new
    UIDs and PHI (PX99999 when there are 99,999+ patients: the folder always sorts after the originals);
    ground truth expected=duplicate, duplicate_of = the original's relpath.
    Ground-truth findings describe the pixels; ~2% of studies have no report, so a report-based labeler sees
    nothing for them (has_report=False).

reports.csv   study_instance_uid, accession_number, text
    One report per study (~2% of studies have none; duplicate studies have none). Sections FINDINGS / IMPRESSION
    in varied styles: own-line or inline headers, "Findings:" title case, numbered impressions, all-uppercase
    reports, impression-only reports; EXAMINATION / INDICATION / COMPARISON lines, de-id tokens "___" and "XXXX".
    Sentences name location, size and severity of each finding, negations ("No pneumothorax."), hedges
    ("Cannot exclude pneumonia.", "Possible small left pleural effusion.") and normal statements. About a third of
    reports carry planted PHI: patient name, MRN, dates of birth / exam (MM/DD/YYYY), accession number,
    "Dictated by Dr. <name>", a phone number - each recorded verbatim in phi.json (upper-cased reports record
    the upper-cased string).

Findings (CheXpert-14):
    {_LABEL_LIST}
    Drawn from latent states (heart failure -> cardiomegaly, edema, effusion; infection -> pneumonia,
    consolidation, opacity; ICU -> support devices, atelectasis, effusion; trauma -> fracture, pneumothorax) so
    labels co-occur realistically; a few patients carry cardiomegaly, a pacemaker or a nodule into every study
    (so one patient's images resemble each other and splits must be by patient). No Finding = no pathology
    positive or uncertain (support devices allowed).
    Pixels show them: cardiomegaly widens the heart shadow, effusion fills a costophrenic angle with a meniscus,
    pneumothorax removes lung texture at an apex behind a pleural line, consolidation/pneumonia/opacity are
    bright blobs in the named lobe, edema a perihilar haze, atelectasis a basal band, nodules a round density of
    the stated size, devices bright lines, fracture a rib discontinuity, pleural thickening a lateral rim;
    severity scales size/brightness. Uncertain findings are drawn faintly or not at all (finding_details.rendered).

fundus/images/<ID>.png + fundus/labels.csv   (RFMiD layout)
    Columns: ID, Disease_Risk (any disease), then 0/1 per label - DR (diabetic retinopathy), ARMD (age-related
    macular degeneration), MH (media haze, e.g. cataract), DN (drusen), MYA (myopia), BRVO (branch retinal vein
    occlusion), TSLN (tessellation), ODC (optic disc cupping) - and DR_grade (0-4, 0 when DR = 0).
    Pixels: microaneurysms / exudates / blot haemorrhages / disc neovascularisation by DR grade, drusen and
    pigment at the macula (ARMD), few small drusen (DN), haze and blur (MH), peripapillary crescent and
    tessellation (MYA, TSLN), flame haemorrhages along one arcade (BRVO), large cup (ODC).
    When n_fundus >= 10 one image is an exact copy under a new ID (expected=duplicate) and one is a truncated
    PNG (expected=reject, reason corrupt_image); both have rows in labels.csv.

ground_truth.parquet   one row per input file (DICOM and fundus image)
    relpath (relative to this folder), kind (dicom|fundus), expected (sample|reject|duplicate), reason,
    findings / uncertain / negated (JSON lists of label names), finding_details (JSON), patient_id,
    study_instance_uid, sop_instance_uid, accession_number, has_report, n_frames, view, modality,
    transfer_syntax, photometric, bits_stored, pixel_representation, has_window, has_rescale, has_voi_lut,
    burned_in_annotation, rows, columns, duplicate_of, dr_grade.
    Inputs = samples + rejects + duplicates; with multiframe=all, samples count n_frames each.

phi.json   {{"strings": [...every planted PHI string...], "by_field": {{attribute or report: [...]}}}}
"""
