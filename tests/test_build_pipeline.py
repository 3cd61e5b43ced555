"""The build end to end on real files: accounting, quarantine reasons, de-identification, splits, card, CLI."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from dataset_builders import deid
from dataset_builders.build import build, plan_chunks, run_chunk
from dataset_builders.config import load_build_config
from dataset_builders.schema import SampleRecord
from dataset_builders.splits import split_for_patient
from mgll.config import ConfigError
from tests.fixtures.build import PLANTED_PHI


def _cfg(root: Path, out: Path, **extra):
    return load_build_config(data={"sources": [{"kind": "dicom_xray", "root": str(root)}], "out": str(out),
                                   "image_size": 48, "chunk_size": 7, "salt": "s3cr3t-salt", **extra})


def test_every_input_is_accounted_for_with_specific_reasons(dicom_tree, tmp_path):
    (dicom_tree / "pt0" / "garbage.dcm").write_bytes(b"this is not dicom at all" * 10)
    src = (dicom_tree / "pt0" / "CT_small.dcm").read_bytes()
    (dicom_tree / "pt1" / "cut.dcm").write_bytes(src[: len(src) // 2])
    summary = build(_cfg(dicom_tree, tmp_path / "out"), progress=False)
    inputs = len(list(dicom_tree.rglob("*.dcm")))
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    rejects = pd.read_parquet(tmp_path / "out" / "rejects.parquet")
    duplicates = pd.read_parquet(tmp_path / "out" / "duplicates.parquet")
    assert summary.inputs == inputs == len(manifest) + len(rejects) + len(duplicates)
    assert manifest.key.is_unique
    reasons = dict(zip(rejects.source_path.str.rsplit("/", n=1).str[-1], rejects.reason))
    assert reasons["test-SR.dcm"].startswith("non-image object: structured report")
    assert reasons["rtplan.dcm"].startswith("non-image object: radiotherapy")
    assert reasons["waveform_ecg.dcm"].startswith("non-image object: waveform")
    assert "less than expected" in reasons["MR_truncated.dcm"]
    assert reasons["garbage.dcm"].startswith("not a DICOM file")
    assert "cut.dcm" in reasons
    assert set(rejects.stage) <= {"read", "validate", "decode", "pixels", "join"}
    # lossless copies of one image in other transfer syntaxes are exact duplicates of the first one
    assert len(duplicates) >= 3 and set(duplicates.duplicate_of) <= set(manifest.key)
    # shards hold exactly the manifest's keys, each once
    keys = []
    for shard in sorted((tmp_path / "out" / "shards").rglob("*.tar")):
        with tarfile.open(shard) as tar:
            names = tar.getnames()
        keys += sorted({n.split(".", 1)[0] for n in names})
        for key in {n.split(".", 1)[0] for n in names}:
            assert {f"{key}.png", f"{key}.json", f"{key}.txt"} <= set(names)
    assert Counter(keys) == Counter(manifest.key)
    card = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert card["counts"]["total"] == len(manifest) and card["build_config"]["salt"] == "<redacted>"
    assert sum(len(v) for v in card["shards"].values()) == len(list((tmp_path / "out" / "shards").rglob("*.tar")))
    assert {p.name for p in (tmp_path / "out" / "plots").iterdir()} == {
        "label_frequency.png", "label_cooccurrence.png", "text_length.png", "examples_grid.png"}


def test_shard_json_round_trips_and_texts(dicom_tree, tmp_path):
    summary = build(_cfg(dicom_tree, tmp_path / "out", multiframe="all"), progress=False)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    # every frame is its own sample: SC_rgb_rle_2frame has 2 frames, examples_ybr_color 30
    assert summary.extra_frames == 1 + 29
    assert summary.inputs + summary.extra_frames == summary.samples + summary.rejects + summary.duplicates
    cine = manifest[manifest.source_path.str.endswith("examples_ybr_color.dcm")]
    duplicates = pd.read_parquet(tmp_path / "out" / "duplicates.parquet")
    repeated = duplicates.source_path.str.endswith("examples_ybr_color.dcm").sum()  # identical consecutive frames
    assert len(cine) + repeated == 30 and len(cine) > 20 and cine.key.is_unique
    assert cine.frame_index.max() == 29 and cine.pixel_sha256.is_unique
    shard = tmp_path / "out" / manifest.shard.iloc[0]
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        record = SampleRecord.from_shard_json(json.loads(tar.extractfile(member).read()))
    row = manifest.set_index("key").loc[record.key]
    assert record.texts["modality"] == row.text_modality and record.split == row.split
    assert record.meta["burned_in_annotation"] in ("YES", "NO", "UNKNOWN")
    ct = manifest[manifest.source_path.str.endswith("CT_small.dcm")].iloc[0]
    assert ct.text_modality == "CT image" and ct.text_diagnosis == f"CHEST PA {deid.REDACTED_TOKEN}"
    assert min(ct.width, ct.height) == 48


def test_no_planted_phi_anywhere_in_output_or_logs(small_demo_corpus, tmp_path, caplog):
    phi = json.loads((small_demo_corpus / "phi.json").read_text())
    strings = sorted({s for values in phi["by_field"].values() for s in values if len(s) >= 4})
    assert len(strings) > 50
    out = tmp_path / "ds"
    cfg = load_build_config(data={"sources": [{"kind": "synthetic", "root": str(small_demo_corpus)}],
                                  "out": str(out), "image_size": 32, "chunk_size": 40})
    with caplog.at_level(logging.DEBUG):
        summary = build(cfg, progress=False)
    gt = pd.read_parquet(small_demo_corpus / "ground_truth.parquet")
    assert summary.inputs == len(gt) == summary.samples + summary.rejects + summary.duplicates
    assert summary.samples == (gt.expected == "sample").sum()
    texts = [caplog.text, json.dumps(summary.to_dict())]
    for path in out.rglob("*"):
        if path.suffix == ".tar":
            with tarfile.open(path) as tar:
                texts += [tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith((".json", ".txt"))]
        elif path.suffix == ".parquet":
            texts.append(pd.read_parquet(path).to_json())
        elif path.suffix == ".json":
            texts.append(path.read_text())
    blob = "\n".join(texts).lower()
    leaked = [s for s in strings if s.lower() in blob]
    assert not leaked, f"PHI reached the output: {leaked[:10]}"


def test_scrub_text_removes_names_dates_phones_and_ids():
    ds_phi = deid.header_phi(_ds_with(PLANTED_PHI))
    report = ("FINDINGS: Compared with 03/14/2018 and July 4, 2019. Mr. Marmaduke Quixotica, MRN99887766, "
              "acc ACCX551234. Call Dr. Okonkwo at (555) 123-4567. Seen at Saint Pelagius Hospital on 2019-07-04. "
              "XXXX small effusion.\nIMPRESSION: No pneumothorax.")
    clean = deid.scrub_text(report, ds_phi)
    for bad in ("03/14/2018", "July 4", "Marmaduke", "Quixotica", "99887766", "551234", "Okonkwo", "123-4567",
                "Pelagius", "2019-07-04", "XXXX"):
        assert bad.lower() not in clean.lower(), bad
    assert "No pneumothorax." in clean and "small effusion" in clean and deid.REDACTED_TOKEN in clean


def _ds_with(values: dict):
    from pydicom.dataset import Dataset

    ds = Dataset()
    for k, v in values.items():
        setattr(ds, k, v)
    return ds


def test_salted_hashes_and_split_stability():
    a, b = deid.Deidentifier("one"), deid.Deidentifier("two")
    assert a.hash_id("patient", "P1") == a.hash_id("patient", "P1") != b.hash_id("patient", "P1")
    assert "one" not in repr(a)
    ratios = {"train": 0.8, "val": 0.1, "test": 0.1}
    patients = [a.hash_id("patient", f"P{i}") for i in range(4000)]
    splits = [split_for_patient(p, ratios) for p in patients]
    share = Counter(splits)
    assert abs(share["train"] / 4000 - 0.8) < 0.03 and abs(share["test"] / 4000 - 0.1) < 0.02
    # adding patients never moves an existing one: assignment depends on the patient alone
    more = patients + [a.hash_id("patient", f"Q{i}") for i in range(1000)]
    assert [split_for_patient(p, ratios) for p in more][:4000] == splits


def test_demo_dataset_patients_never_span_splits(small_demo_dataset):
    manifest = pd.read_parquet(small_demo_dataset / "manifest.parquet")
    assert manifest.groupby("patient_hash").split.nunique().max() == 1
    card = json.loads((small_demo_dataset / "dataset.json").read_text())
    assert "Diabetic Retinopathy" in card["label_vocabulary"] and "Pleural Effusion" in card["label_vocabulary"]
    assert card["label_derived_granularities"] == ["modality", "diagnosis", "explanation"]
    fundus = manifest[manifest.source_path.str.startswith("fundus/")]
    dr = fundus[fundus.labels_json.str.contains('"Diabetic Retinopathy": 1')]
    assert len(dr) and dr.text_diagnosis.str.contains("diabetic retinopathy", case=False).all()
    xray = manifest[manifest.source_path.str.startswith("dicom/")]
    assert (xray.text_explanation != "").mean() > 0.8 and (xray.labels_json != "{}").mean() > 0.8


def test_rerun_on_unchanged_input_does_nothing(dicom_tree, tmp_path):
    cfg = _cfg(dicom_tree, tmp_path / "out")
    first = build(cfg, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()}
    second = build(cfg, progress=False)
    assert second.chunks_run == 0 and second.chunks_skipped == first.chunks_run and not second.finalized
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()} == stamps


def test_generated_salt_is_persisted_privately(dicom_tree, tmp_path, monkeypatch):
    monkeypatch.delenv("MGLL_DEID_SALT", raising=False)
    cfg = load_build_config(data={"sources": [{"kind": "dicom_xray", "root": str(dicom_tree)}],
                                  "out": str(tmp_path / "out"), "image_size": 32, "chunk_size": 50})
    chunks = plan_chunks(cfg)
    salt_file = tmp_path / "out" / "_state" / "deid_salt"
    assert salt_file.exists() and len(salt_file.read_text()) == 64
    result = run_chunk(cfg, chunks[0])
    assert result.samples > 0 and not result.skipped
    assert salt_file.read_text() not in (tmp_path / "out" / "_state" / "chunks" / "00000.json").read_text()


def test_bad_config_is_a_specific_error(tmp_path):
    with pytest.raises(ConfigError, match="split ratios must sum to 1"):
        load_build_config(data={"sources": [{"kind": "dicom_xray", "root": "x"}], "out": "y",
                                "splits": {"train": 0.5, "val": 0.1}})
    with pytest.raises(ConfigError, match="image_formt"):
        load_build_config(data={"sources": [{"kind": "dicom_xray", "root": "x"}], "out": "y", "image_formt": "png"})
    with pytest.raises(ConfigError, match="does not exist"):
        plan_chunks(load_build_config(data={"sources": [{"kind": "dicom_xray", "root": str(tmp_path / "nope")}],
                                            "out": str(tmp_path / "o"), "salt": "x"}))


def test_cli_shortcut_and_config_errors(dicom_tree, tmp_path):
    out = tmp_path / "cli-out"
    run = subprocess.run(
        [sys.executable, "-m", "mgll.cli", "build-dataset", "--source", f"dicom_xray:{dicom_tree}", "--out", str(out),
         "--set", "image_size=32", "--set", "salt=abc", "--no-progress"],
        capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rejects" in run.stdout and (out / "manifest.parquet").exists()
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert not manifest.source_path.str.startswith("/").any()
    bad = subprocess.run(
        [sys.executable, "-m", "mgll.cli", "build-dataset", "--source", f"dicom_xray:{dicom_tree}", "--out", str(out),
         "--set", "image_size=2"], capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and "image_size" in bad.stderr and "Traceback" not in bad.stderr


def test_adding_data_keeps_existing_samples_and_splits(dicom_tree, tmp_path):
    import shutil

    cfg = _cfg(dicom_tree, tmp_path / "out")
    build(cfg, progress=False)
    before = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("key")
    extra = tmp_path / "extra.dcm"
    shutil.copy(dicom_tree / "pt0" / "CT_small.dcm", extra)
    import pydicom

    ds = pydicom.dcmread(extra)
    ds.PatientID = "NEWPATIENT1"
    ds.PixelData = bytes(reversed(ds.PixelData))  # different pixels: a new sample, not a duplicate
    ds.save_as(dicom_tree / "aa_new.dcm")  # sorts first: every chunk boundary moves
    after_summary = build(cfg, progress=False)
    after = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("key")
    assert after_summary.chunks_run >= 1 and len(after) == len(before) + 1
    assert (after.loc[before.index, "split"] == before.split).all()
    shards = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out" / "shards").rglob("*.tar"))
    assert shards == sorted(set(after.shard)), "stale shards of the old chunk plan must be gone"


def test_empty_source_builds_an_empty_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    summary = build(_cfg(tmp_path / "empty", tmp_path / "out"), progress=False)
    assert summary.inputs == summary.samples == 0
    assert len(pd.read_parquet(tmp_path / "out" / "manifest.parquet")) == 0
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["counts"]["total"] == 0


def test_shards_read_back_with_webdataset(small_demo_dataset):
    import webdataset as wds

    manifest = pd.read_parquet(small_demo_dataset / "manifest.parquet")
    card = json.loads((small_demo_dataset / "dataset.json").read_text())
    urls = [str(small_demo_dataset / p) for p in card["shards"]["train"]]
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil").to_tuple("__key__", "png", "json", "txt")
    seen = 0
    train = manifest[manifest.split == "train"].set_index("key")
    for key, image, meta, caption in dataset:
        row = train.loc[key]
        assert image.size == (row.width, row.height) and min(image.size) == 128
        assert meta["texts"]["modality"] == row.text_modality == caption
        seen += 1
    assert seen == len(train)


def test_bad_report_table_is_a_config_error_not_a_reject_per_file(dicom_tree, tmp_path):
    (dicom_tree / "reports.csv").write_text("uid,report\n1,hello\n")
    cfg = load_build_config(data={"sources": [{"kind": "dicom_xray", "root": str(dicom_tree), "reports": "reports.csv"}],
                                  "out": str(tmp_path / "out"), "salt": "x"})
    with pytest.raises(ConfigError, match="needs columns 'study_instance_uid' and 'text'"):
        build(cfg, progress=False)
    missing = load_build_config(data={"sources": [{"kind": "dicom_xray", "root": str(dicom_tree), "reports": "nope.csv"}],
                                      "out": str(tmp_path / "out2"), "salt": "x"})
    with pytest.raises(ConfigError, match="report table 'nope.csv' unreadable"):
        build(missing, progress=False)
