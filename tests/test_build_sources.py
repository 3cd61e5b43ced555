"""Source layouts beyond the DICOM tree: report_xray (MIMIC-CXR / CSV) and label_table (RFMiD / ODIR / IDRiD)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pydicom
from PIL import Image

from dataset_builders.build import build
from dataset_builders.config import load_build_config
from dataset_builders.sources.label_table import LabelTableSource, label_texts
from dataset_builders.text.ontology import load_ontology
from tests.fixtures.build import bundled

REPORT = ("FINDINGS: Small left pleural effusion. No pneumothorax. Discussed with Dr. Hollowmere on 02/03/2020.\n"
          "IMPRESSION: Small left pleural effusion.")


def _png(path, seed, size=(80, 64), colour=False):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if colour else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)


def test_report_xray_mimic_layout(tmp_path):
    root = tmp_path / "mimic"
    study = root / "p10" / "p10000032" / "s50414267"
    study.mkdir(parents=True)
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.PatientName = "Hollowmere^Agatha"
    ds.save_as(study / "img1.dcm")
    _png(study / "img2.png", 1)
    (root / "p10" / "p10000032" / "s50414267.txt").write_text(REPORT)
    _png(root / "p10" / "p10000099" / "s59999999" / "orphan.png", 2)  # no report anywhere: rejected
    cfg = load_build_config(data={"sources": [{"kind": "report_xray", "root": str(root)}], "out": str(tmp_path / "out"),
                                  "image_size": 32, "salt": "x"})
    summary = build(cfg, progress=False)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    rejects = pd.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert summary.inputs == 3 and len(manifest) == 2 and len(rejects) == 1
    assert rejects.stage.tolist() == ["join"] and rejects.source_path.str.endswith("orphan.png").all()
    assert manifest.text_diagnosis.str.contains("pleural effusion", case=False).all()
    labels = [json.loads(x) for x in manifest.labels_json]
    assert all(lab.get("Pleural Effusion") == 1 and lab.get("Pneumothorax") == 0 for lab in labels)
    blob = manifest.to_json() + (tmp_path / "out" / "dataset.json").read_text()
    assert "Hollowmere" not in blob and "02/03/2020" not in blob


def test_label_table_odir_layout_and_orphans(tmp_path):
    root = tmp_path / "odir"
    for i in range(4):
        _png(root / "images" / f"{i}_left.jpg", i, colour=True)
    _png(root / "images" / "9_left.jpg", 9, colour=True)  # an image without a row
    pd.DataFrame({
        "image": ["0_left.jpg", "1_left.jpg", "2_left.jpg", "3_left.jpg", "7_left.jpg"],
        "patient": ["a", "a", "b", "c", "d"],
        "keywords": ["normal fundus", "moderate non proliferative retinopathy,glaucoma", "cataract", "drusen,AMD",
                     "cataract"],
    }).to_csv(root / "labels.csv", index=False)
    cfg = load_build_config(data={
        "sources": [{"kind": "label_table", "root": str(root), "id_column": "image", "patient_column": "patient",
                     "label_string_column": "keywords", "label_columns": {}, "labels_csv": "labels.csv"}],
        "out": str(tmp_path / "out"), "image_size": 32, "salt": "x"})
    summary = build(cfg, progress=False)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("source_path")
    rejects = pd.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert summary.inputs == 6 and len(manifest) == 4 and len(rejects) == 2
    assert set(rejects.reason.str.split(":").str[0]) == {"image for table row not found", "image has no row in labels.csv"}
    assert json.loads(manifest.loc["images/2_left.jpg", "labels_json"]) == {"Cataract": 1}
    assert json.loads(manifest.loc["images/3_left.jpg", "labels_json"]) == {"Age-related Macular Degeneration": 1, "Drusen": 1}
    assert manifest.loc["images/0_left.jpg", "text_modality"] == "normal fundus photograph"
    assert manifest.loc["images/2_left.jpg", "text_modality"] == "abnormal fundus photograph"
    # patient "a" has two images: same patient hash, same split
    assert manifest.loc["images/0_left.jpg", "split"] == manifest.loc["images/1_left.jpg", "split"]


def test_label_table_grades_give_severity_and_ontology_explanations():
    onto = load_ontology("fundus")
    texts = label_texts({"Diabetic Retinopathy": 1, "Glaucoma": 0}, {"Diabetic Retinopathy": "2"}, onto, "fundus photograph")
    assert texts["modality"] == "abnormal fundus photograph"
    assert texts["diagnosis"] == onto.describe("Diabetic Retinopathy", 2).split(". ")[0]
    assert texts["explanation"] == onto.describe("Diabetic Retinopathy")
    from dataset_builders.config import LabelTableSource as Cfg

    source = LabelTableSource(Cfg(root="/tmp", grade_columns={"Diabetic Retinopathy": "DR_grade"}))
    labels, grades = source.labels_for({"ID": "1", "DR": "0", "MYA": "1", "TSLN": "1", "Disease_Risk": "1", "DR_grade": "3"}, onto)
    assert labels == {"Diabetic Retinopathy": 0, "Pathological Myopia": 1, "Tessellation": 1} and grades == {"Diabetic Retinopathy": "3"}
