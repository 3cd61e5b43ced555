"""The synthetic demo corpus: determinism, decodability, rejects, planted PHI, findings in pixels, fundus table."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from dataset_builders.synthetic import DemoCorpusError, generate_demo_corpus
from dataset_builders.synthetic_findings import CHEXPERT_LABELS, Finding, sample_findings
from dataset_builders.synthetic_images import HEART_BORDER_BOX, render_chest, render_fundus


def _ground_truth(root: Path):
    return pq.read_table(root / "ground_truth.parquet").to_pandas()


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, demo_corpus_small, demo_corpus_small_summary):
    # same arguments as the demo_corpus_small fixture (tests/fixtures/synthetic.py)
    again = generate_demo_corpus(tmp_path / "again", n_studies=60, seed=7, n_fundus=20, image_size=128)
    digest_fixture, digest_again = _tree_digest(demo_corpus_small), _tree_digest(tmp_path / "again")
    assert digest_again == digest_fixture
    assert len(digest_again) == again["n_files"] + 6  # + reports, ground truth, phi.json, README, labels.csv, marker
    assert {k: v for k, v in again.items() if k not in ("out_dir", "seconds")} == {
        k: v for k, v in demo_corpus_small_summary.items() if k not in ("out_dir", "seconds")
    }
    assert len(set(_ground_truth(tmp_path / "again")["transfer_syntax"]) - {""}) == 6  # every syntax was compared
    other = generate_demo_corpus(tmp_path / "other", n_studies=60, seed=8, n_fundus=0, image_size=32)
    assert _ground_truth(tmp_path / "other")["findings"].tolist() != _ground_truth(tmp_path / "again")["findings"].tolist()
    assert other["n_studies"] == 60


def test_ground_truth_accounts_for_every_input_file(demo_corpus_small, demo_corpus_small_summary):
    gt = _ground_truth(demo_corpus_small)
    on_disk = {
        str(p.relative_to(demo_corpus_small))
        for pattern in ("dicom/**/*.dcm", "fundus/images/*.png")
        for p in demo_corpus_small.glob(pattern)
    }
    assert set(gt["relpath"]) == on_disk
    assert gt["relpath"].is_unique
    counts = Counter(gt["expected"])
    assert counts == Counter(demo_corpus_small_summary["expected"])
    assert counts["reject"] >= 6 and counts["duplicate"] >= 2
    assert set(gt.loc[gt.expected == "reject", "reason"]) == {
        "truncated", "non_image", "not_dicom", "absurd_dimensions", "undecodable", "corrupt_image"
    }
    # several studies per patient, so patient-level splits matter
    studies_per_patient = gt[gt.kind == "dicom"].groupby("patient_id")["study_instance_uid"].nunique()
    assert (studies_per_patient > 1).sum() >= 5


def test_every_sample_decodes_with_the_recorded_encoding(demo_corpus_small):
    gt = _ground_truth(demo_corpus_small)
    dicoms = gt[(gt.kind == "dicom") & (gt.expected != "reject")]
    seen = Counter()
    for row in dicoms.itertuples():
        ds = pydicom.dcmread(demo_corpus_small / row.relpath)
        pixels = ds.pixel_array
        expected_shape = (row.rows, row.columns) if row.n_frames == 1 else (row.n_frames, row.rows, row.columns)
        assert pixels.shape == expected_shape, row.relpath
        assert ds.file_meta.TransferSyntaxUID == row.transfer_syntax
        assert ds.PhotometricInterpretation == row.photometric
        assert ds.BitsStored == row.bits_stored and ds.PixelRepresentation == row.pixel_representation
        assert ("WindowCenter" in ds) == row.has_window and ("RescaleSlope" in ds) == row.has_rescale
        assert ("VOILUTSequence" in ds) == row.has_voi_lut
        if row.has_voi_lut:  # the LUT covers the modality range and is monotonic
            shown = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
            assert shown.min() >= 0 and shown.max() <= 4095 and shown.max() - shown.min() > 1000
            seen["voi_lut"] += 1
        assert ds.BodyPartExamined == "CHEST" and ds.Modality in ("CR", "DX") and ds.ViewPosition == row.view
        assert ds.SOPClassUID.name in ("Computed Radiography Image Storage",
                                       "Digital X-Ray Image Storage - For Presentation")
        assert int(pixels.max()) > int(pixels.min())
        seen[ds.file_meta.TransferSyntaxUID.name] += 1
        seen[ds.PhotometricInterpretation] += 1
        seen[f"bits{ds.BitsStored}"] += 1
        seen["signed"] += ds.PixelRepresentation
        seen["multiframe"] += row.n_frames > 1
        seen["burned"] += ds.BurnedInAnnotation == "YES"
    for variant in ("Explicit VR Little Endian", "Implicit VR Little Endian", "RLE Lossless",
                    "JPEG 2000 Image Compression (Lossless Only)", "JPEG-LS Lossless Image Compression",
                    "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
                    "MONOCHROME1", "MONOCHROME2",
                    "bits8", "bits12", "bits16", "multiframe", "voi_lut", "signed"):
        assert seen[variant] > 0, f"no {variant} file in the small corpus: {dict(seen)}"


def test_duplicates_have_the_same_pixels_as_their_original(demo_corpus_small):
    gt = _ground_truth(demo_corpus_small)
    dups = gt[gt.expected == "duplicate"]
    assert len(dups) >= 2
    for row in dups.itertuples():
        if row.kind == "dicom":
            copy, original = (pydicom.dcmread(demo_corpus_small / p) for p in (row.relpath, row.duplicate_of))
            assert np.array_equal(copy.pixel_array, original.pixel_array)
            assert copy.PatientID != original.PatientID and copy.SOPInstanceUID != original.SOPInstanceUID
        else:
            a, b = (np.asarray(Image.open(demo_corpus_small / p)) for p in (row.relpath, row.duplicate_of))
            assert np.array_equal(a, b)


def test_rejects_fail_the_way_their_reason_says(demo_corpus_small):
    gt = _ground_truth(demo_corpus_small)
    for row in gt[gt.expected == "reject"].itertuples():
        path = demo_corpus_small / row.relpath
        if row.reason == "corrupt_image":
            with pytest.raises(OSError):
                Image.open(path).load()
            continue
        if row.reason == "not_dicom":
            with pytest.raises(InvalidDicomError):
                pydicom.dcmread(path)
            continue
        ds = pydicom.dcmread(path)
        if row.reason == "non_image":
            assert "PixelData" not in ds and ds.Modality in ("SR", "PR")
        elif row.reason == "absurd_dimensions":
            assert ds.Rows * ds.Columns > 10**9
        elif row.reason == "truncated":
            with pytest.raises(ValueError, match="less than expected"):
                ds.pixel_array
        elif row.reason == "undecodable":
            with pytest.raises(NotImplementedError):
                ds.pixel_array
        else:
            pytest.fail(f"unexpected reason {row.reason}")


def test_planted_phi_is_really_in_the_raw_inputs(demo_corpus_small):
    phi = json.loads((demo_corpus_small / "phi.json").read_text())
    strings = phi["strings"]
    assert len(strings) > 100
    headers = b"".join(p.read_bytes() for p in (demo_corpus_small / "dicom").rglob("*.dcm"))
    reports = (demo_corpus_small / "reports.csv").read_text(encoding="utf-8")
    missing = [s for s in strings if s.encode("latin-1") not in headers and s not in reports]
    assert not missing
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber", "InstitutionName",
                    "ReferringPhysicianName", "OperatorsName"):
        assert phi["by_field"][keyword], keyword
    report_phi = phi["by_field"]["report"]
    assert any(s in reports for s in report_phi) and all(s in reports for s in report_phi)
    assert "Dictated by Dr." in reports or "DICTATED BY DR." in reports
    # headers hold the values phi.json lists for them
    gt = _ground_truth(demo_corpus_small)
    row = gt[(gt.kind == "dicom") & (gt.expected == "sample")].iloc[0]
    ds = pydicom.dcmread(demo_corpus_small / row.relpath)
    assert str(ds.PatientName) in phi["by_field"]["PatientName"] and ds.PatientID == row.patient_id
    assert ds.AccessionNumber in phi["by_field"]["AccessionNumber"]


def test_reports_describe_the_ground_truth(demo_corpus_small):
    gt = _ground_truth(demo_corpus_small)
    with (demo_corpus_small / "reports.csv").open(newline="", encoding="utf-8") as fh:
        reports = {r["study_instance_uid"]: r for r in csv.DictReader(fh)}
    studies = gt[(gt.kind == "dicom") & (gt.expected == "sample")].drop_duplicates("study_instance_uid")
    assert set(studies.loc[studies.has_report, "study_instance_uid"]) <= set(reports)
    keyword = {"Atelectasis": "atelecta", "Cardiomegaly": ("cardiomegaly", "heart is"),
               "Consolidation": "consolidation",
               "Edema": "edema", "Enlarged Cardiomediastinum": "widened", "Fracture": "fracture",
               "Lung Lesion": "nodule", "Lung Opacity": "opacity", "Pleural Effusion": "effusion",
               "Pleural Other": "thickening", "Pneumonia": "pneumonia", "Pneumothorax": "pneumothorax",
               "Support Devices": ("tube", "catheter", "pacemaker")}
    styles = Counter()
    for row in studies[studies.has_report].itertuples():
        text = reports[row.study_instance_uid]["text"]
        low = text.lower()
        assert "impression" in low
        assert reports[row.study_instance_uid]["accession_number"] == row.accession_number
        for label in json.loads(row.findings) + json.loads(row.uncertain):
            if label != "No Finding":
                words = keyword[label] if isinstance(keyword[label], tuple) else (keyword[label],)
                assert any(w in low for w in words), (label, text)
        for label in json.loads(row.uncertain):
            assert any(h in low for h in ("possible", "cannot exclude", "questionable", "may represent",
                                          "borderline", "not excluded")), text
        if json.loads(row.negated):
            assert "no " in low
        styles["FINDINGS:" in text] += 1
        styles["Findings:" in text] += 1
        styles["\n1. " in text] += 1
        styles[text == text.upper()] += 1
    assert styles[True] > 0 and len(studies) > 40


def test_findings_co_occur_realistically():
    rng = np.random.default_rng(0)
    draws = [sample_findings(rng, portable=bool(i % 4 == 0)) for i in range(4000)]
    pos = [set(d.positive) for d in draws]

    def p(label, given=None):
        pool = [s for s in pos if given is None or given in s]
        return sum(label in s for s in pool) / max(len(pool), 1)

    assert p("Pleural Effusion", "Cardiomegaly") > 2 * p("Pleural Effusion")
    assert p("Consolidation", "Pneumonia") > 3 * p("Consolidation")
    assert p("Atelectasis", "Support Devices") > 2 * p("Atelectasis")
    for label in CHEXPERT_LABELS:
        assert 0.01 < p(label) < 0.6, (label, p(label))
    assert all(("No Finding" in s) == (not (s - {"No Finding", "Support Devices"}) and not d.uncertain)
               for s, d in zip(pos, draws))
    chronic = [Finding("Cardiomegaly", 2), Finding("Lung Lesion", 1, lobe="lingula", size_mm=12)]
    for _ in range(50):  # a patient's chronic findings are in every study, positive or hedged
        d = sample_findings(rng, portable=False, chronic=chronic)
        assert {"Cardiomegaly", "Lung Lesion"} <= set(d.positive) | set(d.uncertain)
        assert "No Finding" not in d.positive
    assert chronic[0].severity == 2  # the patient's template is not modified by hedging


def _render(findings, seed=0, size=128, view="PA"):
    return render_chest(np.random.default_rng(seed), findings, size, size, view, 3.0)


def _box(img, x0, x1, y0, y1):
    h, w = img.shape
    return img[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)]


def test_findings_change_the_pixels_where_they_should():
    normal = _render([])
    cardio = _render([Finding("Cardiomegaly", 3)])
    assert _box(cardio, *HEART_BORDER_BOX).mean() > _box(normal, *HEART_BORDER_BOX).mean() + 0.1
    effusion = _render([Finding("Pleural Effusion", 3, side="right")])
    right_base = (0.18, 0.4, 0.62, 0.78)
    assert _box(effusion, *right_base).mean() > _box(normal, *right_base).mean() + 0.1
    assert abs(_box(effusion, 0.6, 0.82, 0.62, 0.78).mean() - _box(normal, 0.6, 0.82, 0.62, 0.78).mean()) < 0.03
    ptx = _render([Finding("Pneumothorax", 3, side="left")])
    apex = (0.72, 0.78, 0.25, 0.45)  # lateral left apex: lung texture (ribs) gone
    assert _box(ptx, *apex).std() < 0.7 * _box(normal, *apex).std()
    small, large = (_render([Finding("Lung Lesion", 1, lobe="right upper lobe", size_mm=s)]) for s in (8, 30))
    nodule_box = (0.25, 0.37, 0.26, 0.38)
    assert _box(large, *nodule_box).mean() > _box(small, *nodule_box).mean() > _box(normal, *nodule_box).mean()
    mild, severe = (_render([Finding("Consolidation", s, lobe="left lower lobe")]) for s in (1, 3))
    assert _box(severe, 0.6, 0.82, 0.55, 0.8).mean() > _box(mild, 0.6, 0.82, 0.55, 0.8).mean()
    device = _render([Finding("Support Devices", 1, device="endotracheal tube")])
    assert _box(device, 0.48, 0.52, 0.0, 0.25).max() > 0.85 > _box(normal, 0.48, 0.52, 0.0, 0.25).max()
    faint = _render([Finding("Cardiomegaly", 3, rendered=False)])
    assert np.allclose(faint, normal)


def _display(ds) -> np.ndarray:
    """Decoded frame as display intensity in [0, 1] (modality LUT, MONOCHROME1 inverted, min-max)."""
    arr = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    arr = arr[0] if arr.ndim == 3 else arr
    arr = (arr - arr.min()) / (arr.max() - arr.min())
    return 1.0 - arr if ds.PhotometricInterpretation == "MONOCHROME1" else arr


def test_cardiomegaly_is_visible_in_the_decoded_corpus(demo_corpus_small):
    gt = _ground_truth(demo_corpus_small)
    frontal = gt[(gt.kind == "dicom") & (gt.expected == "sample") & gt.view.isin(["PA", "AP"])
                 & (gt["rows"] == gt["columns"])]
    means = {True: [], False: []}
    for row in frontal.itertuples():
        img = _display(pydicom.dcmread(demo_corpus_small / row.relpath))
        has = "Cardiomegaly" in json.loads(row.findings)
        if has or "No Finding" in json.loads(row.findings):
            means[has].append(_box(img, *HEART_BORDER_BOX).mean())
    assert len(means[True]) >= 3 and len(means[False]) >= 10
    assert np.mean(means[True]) > np.mean(means[False]) + 0.08


def test_fundus_table_matches_images_and_lesions_show(demo_corpus_small):
    gt = _ground_truth(demo_corpus_small).set_index("relpath")
    with (demo_corpus_small / "fundus" / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:3] == ["ID", "Disease_Risk", "DR"] and "DR_grade" in rows[0]
    labels = [c for c in rows[0] if c not in ("ID", "Disease_Risk", "DR_grade")]
    assert {"DR", "ARMD", "MH", "ODC"} <= set(labels)
    for r in rows:
        relpath = f"fundus/images/{r['ID']}.png"
        truth = gt.loc[relpath]
        positive = sorted(c for c in labels if r[c] == "1")
        assert json.loads(truth.findings) == positive
        assert int(r["Disease_Risk"]) == int(bool(positive))
        assert (int(r["DR_grade"]) > 0) == (r["DR"] == "1") and int(r["DR_grade"]) == truth.dr_grade
        if truth.expected != "reject":
            with Image.open(demo_corpus_small / relpath) as im:
                assert im.mode == "RGB" and im.size == (truth.columns, truth.rows)

    def render(labels, grade=0, seed=1):
        return render_fundus(np.random.default_rng(seed), labels, 128, grade, 1.0).astype(np.float64)

    healthy = render({})
    dark_red = lambda img: ((img[..., 0] < 160) & (img[..., 0] > 60) & (img[..., 1] < 40)).sum()  # noqa: E731
    assert dark_red(render({"DR": 1}, 4)) > dark_red(render({"DR": 1}, 1)) > dark_red(healthy)
    hazy = render({"MH": 1})
    assert np.abs(np.diff(hazy, axis=1)).mean() < 0.8 * np.abs(np.diff(healthy, axis=1)).mean()
    bright = lambda img: (img.min(axis=-1) > 200).sum()  # noqa: E731  (the pale cup)
    assert bright(render({"ODC": 1})) > 2 * bright(healthy)


def test_refuses_a_folder_that_is_not_a_demo_corpus_and_rejects_bad_arguments(tmp_path):
    precious = tmp_path / "pacs_export"
    (precious / "dicom").mkdir(parents=True)
    (precious / "dicom" / "real.dcm").write_bytes(b"keep me")
    with pytest.raises(DemoCorpusError, match="not a previous demo corpus"):
        generate_demo_corpus(precious, n_studies=2, n_fundus=0, image_size=32)
    assert (precious / "dicom" / "real.dcm").read_bytes() == b"keep me"
    with pytest.raises(DemoCorpusError, match="n_studies >= 1"):
        generate_demo_corpus(tmp_path / "x", n_studies=0)


def test_cli_writes_and_regenerates_a_corpus(tmp_path):
    from typer.testing import CliRunner

    from mgll.cli import app

    out = tmp_path / "demo"
    runner = CliRunner()
    args = ["demo-data", "--out", str(out), "--n", "6", "--n-fundus", "0", "--image-size", "32", "--seed", "5"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "6 studies" in first.output and (out / "ground_truth.parquet").exists()
    before = _tree_digest(out)
    again = runner.invoke(app, args + ["--json"])  # a previous demo corpus is replaced, byte-identically
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["n_studies"] == 6 and _tree_digest(out) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    refused = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "other"), "--n", "2"])
    assert refused.exit_code == 1 and "not a previous demo corpus" in refused.output
