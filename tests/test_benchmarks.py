"""Readers of evaluation data, each on a tiny fixture written in its published layout."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mgll.benchmarks import CHESTXRAY14_LABELS, CHEXPERT_LABELS, BenchmarkError, read_benchmark
from mgll.config import ConfigError, build_config
from mgll.eval_config import DatasetSpec
from tests.fixtures.evaluation import (
    CORPUS_LABELS,
    NIH_REAL,
    write_chestxray14,
    write_chexpert,
    write_generic_csv,
    write_rfmid,
)


def spec(**kwargs) -> DatasetSpec:
    return build_config(DatasetSpec, kwargs)


def test_chestxray14_official_lists_labels_and_planted_problems(tmp_path, optional_external):
    root = write_chestxray14(tmp_path / "nih", optional_external)
    bench = read_benchmark(spec(kind="chestxray14", root=str(root), val_fraction=0.3))
    assert bench.labels == CHESTXRAY14_LABELS and bench.task == "multilabel"
    assert bench.report.skipped["image file missing"] == 1
    assert bench.report.skipped["unknown or empty finding label"] == 1
    train, val, test = bench.split("train"), bench.split("val"), bench.split("test")
    assert len(train) + len(val) == 16 and len(val) > 0
    real = [p for p in test.images if p.endswith(NIH_REAL)]
    assert len(test) == 8 + len(real)
    if optional_external is not None:
        assert len(real) == 2  # the published nested images_001/images/ folder is found
    # "Cardiomegaly|Effusion" rows are positive for both and nothing else
    card, eff = CHESTXRAY14_LABELS.index("Cardiomegaly"), CHESTXRAY14_LABELS.index("Effusion")
    both = test.targets[(test.targets[:, card] == 1) & (test.targets[:, eff] == 1)]
    assert len(both) > 0 and both.sum(axis=1).max() == 2
    # patients never straddle train and val (split is by patient)
    patient = lambda p: p.rsplit("/", 1)[-1].split("_")[0]  # noqa: E731
    assert not {patient(p) for p in train.images} & {patient(p) for p in val.images}


def test_chestxray14_without_split_lists_is_a_specific_error(tmp_path, optional_external):
    root = write_chestxray14(tmp_path / "nih", optional_external)
    (root / "test_list.txt").unlink()
    with pytest.raises(BenchmarkError, match="test_list.txt is missing"):
        read_benchmark(spec(kind="chestxray14", root=str(root)))


@pytest.mark.parametrize("policy,expected", [("ones", 1.0), ("zeros", 0.0), ("ignore", None)])
def test_chexpert_u_policy(tmp_path, policy, expected):
    root = write_chexpert(tmp_path / "CheXpert-v1.0-small")
    bench = read_benchmark(spec(kind="chexpert", root=str(root), u_policy=policy, val_fraction=0.25))
    assert bench.labels == CHEXPERT_LABELS
    assert bench.report.skipped == {"image file missing": 2, "label value not one of 1 / 0 / -1 / blank": 2}
    test = bench.split("test")
    assert len(test) == 10  # valid.csv is the test split when no test.csv exists
    edema = test.targets[1::4, CHEXPERT_LABELS.index("Edema")]  # rows planted with -1
    if expected is None:
        assert np.isnan(edema).all()
    else:
        assert (edema == expected).all()
    assert len(bench.split("train")) + len(bench.split("val")) == 20


def test_chexpert_label_subset_and_unknown_label(tmp_path):
    root = write_chexpert(tmp_path / "CheXpert-v1.0-small")
    bench = read_benchmark(spec(kind="chexpert", root=str(root), labels=["Cardiomegaly", "Pleural Effusion"]))
    assert bench.labels == ["Cardiomegaly", "Pleural Effusion"] and bench.split("test").targets.shape == (10, 2)
    with pytest.raises(BenchmarkError, match="not in its vocabulary"):
        read_benchmark(spec(kind="chexpert", root=str(root), labels=["Cardiomegally"]))


def test_rfmid_three_sets_with_real_fundus(tmp_path, optional_external):
    root = write_rfmid(tmp_path / "rfmid", optional_external)
    bench = read_benchmark(spec(kind="rfmid", root=str(root)))
    assert bench.labels == ["Disease_Risk", "DR", "ARMD"]
    assert {k: len(v) for k, v in bench.splits.items()} == {"train": 16, "val": 8, "test": 8}
    assert bench.report.skipped == {"image file missing": 3}
    dr = bench.split("train").targets[:, 1]
    assert dr.tolist() == [float(i % 2 == 0) for i in range(1, 17)]


@pytest.mark.parametrize("multiclass", [True, False])
def test_generic_csv(tmp_path, multiclass):
    root = write_generic_csv(tmp_path / "csv", multiclass)
    options = {"label_column": "diagnosis"} if multiclass else {"label_columns": ["class_a", "class_b"]}
    bench = read_benchmark(spec(kind="csv", root=str(root), csv=str(root / "labels.csv"), image_column="file",
                                split_column="split", **options))
    assert bench.task == ("multiclass" if multiclass else "multilabel")
    assert {k: len(v) for k, v in bench.splits.items()} == {"train": 18, "val": 9, "test": 9}
    assert bench.report.skipped == {"image file missing": 1}
    if multiclass:
        assert bench.labels == ["class_a", "class_b", "class_c"]
        assert bench.split("train").targets.tolist() == [i % 3 for i in range(18)]


def test_generic_csv_needs_label_definition():
    with pytest.raises(ConfigError, match="exactly one of 'label_columns' or 'label_column'"):
        spec(kind="csv", root=".", csv="x.csv", split_column="split")


def test_corpus_split_from_shards(tiny_corpus):
    bench = read_benchmark(spec(kind="corpus", root=str(tiny_corpus), u_policy="ignore"))
    assert bench.labels == CORPUS_LABELS and bench.granularities == ["modality", "diagnosis", "explanation"]
    assert {k: len(v) for k, v in bench.splits.items()} == {"train": 48, "val": 16, "test": 24}
    test = bench.split("test")
    assert set(test.texts) == {"modality", "diagnosis", "explanation"} and len(test.texts["diagnosis"]) == 24
    assert isinstance(test.images[0], bytes)
    assert np.isnan(bench.split("train").targets).any()  # -1 states under the ignore policy
    assert not any(math.isnan(v) for v in test.targets[:, 0])


def test_empty_test_split_is_a_specific_error(tmp_path):
    root = write_generic_csv(tmp_path / "csv", multiclass=True)
    text = (root / "labels.csv").read_text().replace(",test,", ",val,")
    (root / "labels.csv").write_text(text)
    with pytest.raises(BenchmarkError, match="empty test split.*image file missing"):
        read_benchmark(spec(kind="csv", root=str(root), csv=str(root / "labels.csv"), image_column="file",
                            split_column="split", label_column="diagnosis"))


def test_missing_root_is_a_specific_error(tmp_path):
    with pytest.raises(BenchmarkError, match="does not exist"):
        read_benchmark(spec(kind="rfmid", root=str(tmp_path / "nowhere")))


def test_corpus_max_samples_spreads_over_every_shard(tiny_corpus):
    full = read_benchmark(spec(kind="corpus", root=str(tiny_corpus))).split("train")
    part = read_benchmark(spec(kind="corpus", root=str(tiny_corpus), max_samples=10)).split("train")
    assert len(part) == 10
    positions = [full.images.index(image) for image in part.images]
    assert positions == sorted(positions) and positions[-1] >= 40  # not just the first 10 of 48
