"""Readers for evaluation data in their published layouts.

Every reader returns a ``Benchmark``: label names, the task (multi-label or multi-class), and train/val/test
splits of image references (a path, or PNG/JPEG bytes for corpus shards) with targets. Rows that cannot be used
(a missing image file, an unknown label, an unparsable value) are counted per reason in ``Benchmark.report``
instead of stopping the read; only counts and row numbers are kept there, never file names (NIH and CheXpert
file names embed patient numbers).

Layouts:
- ChestX-ray14: ``Data_Entry_2017.csv`` (``Image Index``, pipe-separated ``Finding Labels``, ``Patient ID``),
  ``train_val_list.txt`` / ``test_list.txt``, PNGs anywhere below the root (``images/``, ``images_001/images/``...).
- CheXpert: ``train.csv`` / ``valid.csv`` (+ ``test.csv`` when present), ``Path`` column relative to the root's
  parent (``CheXpert-v1.0-small/train/...``) or to the root, label columns with 1 / 0 / -1 / blank.
- RFMiD: ``*Training_Labels.csv`` / ``*Validation_Labels.csv`` / ``*Testing_Labels.csv`` with ``ID`` and one 0/1
  column per label, images ``<ID>.png`` (or .jpg/.tif) next to / below each CSV.
- Generic CSV: an image column plus one 0/1 column per label, or one label column (multi-class, or multi-label
  with ``label_separator``); one file with a split column or one file per split.
- Corpus: the output of ``build-dataset`` (``dataset.json`` card + WebDataset shards).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from dataset_builders.schema import GRANULARITIES, NEGATIVE, POSITIVE, UNCERTAIN
from mgll.eval_config import DatasetSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

CHESTXRAY14_LABELS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]
CHEXPERT_LABELS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]
DEFAULT_ONTOLOGY = {"chestxray14": "nih", "chexpert": "chexpert", "rfmid": "fundus"}


class BenchmarkError(ValueError):
    """A dataset that cannot be evaluated at all (missing files, no usable rows, an empty test split)."""


@dataclass
class ReadReport:
    rows: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # reason -> "file row N"

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(where)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "kept": self.kept, "skipped": dict(self.skipped),
                "examples": {k: list(v) for k, v in self.examples.items()}}


@dataclass
class SplitData:
    images: list  # str path or bytes (encoded image)
    targets: np.ndarray  # multilabel: (N, L) float in {0, 1, nan=ignored}; multiclass: (N,) int
    texts: dict[str, list[str]] = field(default_factory=dict)  # granularity -> one text per image (corpus only)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, n: int | None) -> "SplitData":
        if n is None or n >= len(self):
            return self
        return SplitData(self.images[:n], self.targets[:n], {g: t[:n] for g, t in self.texts.items()})


@dataclass
class Benchmark:
    name: str
    kind: str
    task: str  # "multilabel" | "multiclass"
    labels: list[str]
    splits: dict[str, SplitData]
    report: ReadReport
    ontology: str | None = None
    granularities: list[str] = field(default_factory=list)

    def split(self, name: str) -> SplitData:
        return self.splits.get(name) or SplitData([], np.zeros((0, len(self.labels))))

    def summary(self) -> dict:
        return {"name": self.name, "kind": self.kind, "task": self.task, "labels": list(self.labels),
                "sizes": {k: len(v) for k, v in self.splits.items()}, "read": self.report.as_dict()}


# --------------------------------------------------------------------------------------------------- helpers
def _index_images(root: Path) -> dict[str, Path]:
    """File name -> path for every image below ``root`` (published archives scatter images in sub-folders)."""
    index: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES):
                index.setdefault(name, Path(dirpath) / name)
    return index


def _in_val(group: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic patient-level assignment of a train row to the carved-out val split."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise BenchmarkError(f"expected file {path} is missing")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BenchmarkError(f"{path} is not a readable CSV: {exc}") from None


def _require_columns(df: pd.DataFrame, columns: Iterable[str], where: Path | str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BenchmarkError(f"{where} lacks column(s) {missing}; it has {list(df.columns)}")


def _binary_target(rec: dict, columns: list[str]) -> list[float] | None:
    """The 0/1 values of ``columns`` in one CSV record, or None when any of them is not 0 or 1."""
    try:
        target = [float(rec[c]) for c in columns]
    except ValueError:
        return None
    return target if all(v in (0.0, 1.0) for v in target) else None


def _select_labels(all_labels: list[str], spec: DatasetSpec) -> tuple[list[str], list[int]]:
    if not spec.labels:
        return list(all_labels), list(range(len(all_labels)))
    unknown = [lab for lab in spec.labels if lab not in all_labels]
    if unknown:
        raise BenchmarkError(f"dataset {spec.display_name}: labels {unknown} are not in its vocabulary {all_labels}")
    return list(spec.labels), [all_labels.index(lab) for lab in spec.labels]


def _state_value(state: float, u_policy: str) -> float:
    if state == UNCERTAIN:
        return {"ones": 1.0, "zeros": 0.0, "ignore": math.nan}[u_policy]
    return 1.0 if state == POSITIVE else 0.0


def _finish(name, kind, task, labels, rows_by_split, report, spec, ontology=None, granularities=None) -> Benchmark:
    """``rows_by_split``: split -> list of (image, target, texts)."""
    label_names, keep = (labels, None) if task == "multiclass" else _select_labels(labels, spec)
    splits = {}
    for split_name, rows in rows_by_split.items():
        if spec.max_samples and len(rows) > spec.max_samples:  # evenly spaced, so every part of the split is seen
            rows = [rows[int(i)] for i in np.linspace(0, len(rows) - 1, spec.max_samples).round()]
        if task == "multiclass":
            targets = np.asarray([r[1] for r in rows], dtype=np.int64)
        else:
            targets = np.asarray([r[1] for r in rows], dtype=np.float64).reshape(len(rows), len(labels))[:, keep]
        texts = {g: [r[2].get(g, "") for r in rows] for g in (granularities or [])}
        splits[split_name] = SplitData([r[0] for r in rows], targets, texts)
    report.kept = sum(len(s) for s in splits.values())
    bench = Benchmark(name, kind, task, label_names, splits, report,
                      spec.ontology or ontology or DEFAULT_ONTOLOGY.get(kind), list(granularities or []))
    if len(bench.split("test")) == 0:
        raise BenchmarkError(
            f"dataset {name} ({kind} at {spec.root}) has an empty test split after reading "
            f"{report.rows} rows; skipped: {dict(report.skipped) or 'none'}"
        )
    return bench


def _carve_val(rows_train: list, groups: list[str], fraction: float) -> tuple[list, list]:
    train, val = [], []
    for row, group in zip(rows_train, groups):
        (val if fraction > 0 and _in_val(group, fraction) else train).append(row)
    return train, val


# --------------------------------------------------------------------------------------------------- readers
def read_chestxray14(spec: DatasetSpec) -> Benchmark:
    root = Path(spec.root)
    entries = root / "Data_Entry_2017.csv"
    df = _read_csv(entries)
    _require_columns(df, ["Image Index", "Finding Labels"], entries)
    split_of: dict[str, str] = {}
    for split, fname in (("train", "train_val_list.txt"), ("test", "test_list.txt")):
        listing = root / fname
        if not listing.is_file():
            raise BenchmarkError(f"ChestX-ray14 at {root}: {fname} is missing (the official split lists are required)")
        for line in listing.read_text().split():
            split_of[line.strip()] = split
    images = _index_images(root)
    report = ReadReport()
    rows: dict[str, list] = {"train": [], "test": []}
    groups: list[str] = []
    for i, rec in enumerate(df.to_dict("records")):
        report.rows += 1
        where = f"{entries.name} row {i + 2}"
        name = rec["Image Index"].strip()
        findings = [f.strip() for f in rec["Finding Labels"].split("|") if f.strip()]
        unknown = [f for f in findings if f not in CHESTXRAY14_LABELS and f != "No Finding"]
        if not findings or unknown:
            report.skip("unknown or empty finding label", where)
            continue
        split = split_of.get(name)
        if split is None:
            report.skip("image in neither train_val_list.txt nor test_list.txt", where)
            continue
        if name not in images:
            report.skip("image file missing", where)
            continue
        target = [1.0 if lab in findings else 0.0 for lab in CHESTXRAY14_LABELS]
        rows[split].append((str(images[name]), target, {}))
        if split == "train":
            groups.append(rec.get("Patient ID") or name.split("_")[0])
    train, val = _carve_val(rows["train"], groups, spec.val_fraction)
    return _finish(spec.display_name, "chestxray14", "multilabel", CHESTXRAY14_LABELS,
                   {"train": train, "val": val, "test": rows["test"]}, report, spec)


def _chexpert_image(root: Path, rel: str) -> Path | None:
    rel_path = Path(rel)
    for candidate in (root.parent / rel_path, root / rel_path, root / Path(*rel_path.parts[1:]) if len(rel_path.parts) > 1 else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def read_chexpert(spec: DatasetSpec) -> Benchmark:
    root = Path(spec.root)
    files = {"train": root / "train.csv", "test": root / "valid.csv"}
    if (root / "test.csv").is_file():  # the released test labels: valid.csv then selects models
        files = {"train": root / "train.csv", "val": root / "valid.csv", "test": root / "test.csv"}
    report = ReadReport()
    rows: dict[str, list] = {k: [] for k in files}
    groups: list[str] = []
    for split, path in files.items():
        df = _read_csv(path)
        _require_columns(df, ["Path"], path)
        labels_here = [lab for lab in CHEXPERT_LABELS if lab in df.columns]
        if not labels_here:
            raise BenchmarkError(f"{path} has none of the CheXpert label columns {CHEXPERT_LABELS}")
        for i, rec in enumerate(df.to_dict("records")):
            report.rows += 1
            where = f"{path.name} row {i + 2}"
            target = []
            try:
                for lab in CHEXPERT_LABELS:
                    raw = str(rec.get(lab, "")).strip()
                    state = float(raw) if raw else 0.0  # blank = not mentioned = negative
                    if state not in (POSITIVE, NEGATIVE, UNCERTAIN):
                        raise ValueError(raw)
                    target.append(_state_value(state, spec.u_policy))
            except ValueError:
                report.skip("label value not one of 1 / 0 / -1 / blank", where)
                continue
            image = _chexpert_image(root, rec["Path"].strip())
            if image is None:
                report.skip("image file missing", where)
                continue
            rows[split].append((str(image), target, {}))
            if split == "train":
                parts = Path(rec["Path"]).parts
                groups.append(next((p for p in parts if p.startswith("patient")), rec["Path"]))
    if "val" not in rows:
        rows["train"], rows["val"] = _carve_val(rows["train"], groups, spec.val_fraction)
    return _finish(spec.display_name, "chexpert", "multilabel", CHEXPERT_LABELS, rows, report, spec)


def read_rfmid(spec: DatasetSpec) -> Benchmark:
    root = Path(spec.root)
    patterns = {"train": "*Training_Labels.csv", "val": "*Validation_Labels.csv", "test": "*Testing_Labels.csv"}
    found = {split: sorted(root.rglob(pat)) for split, pat in patterns.items()}
    if not found["test"]:
        raise BenchmarkError(f"RFMiD at {root}: no *Testing_Labels.csv found (expected the published layout)")
    report = ReadReport()
    labels: list[str] | None = None
    rows: dict[str, list] = {"train": [], "val": [], "test": []}
    for split, paths in found.items():
        for path in paths[:1]:
            df = _read_csv(path)
            _require_columns(df, ["ID"], path)
            cols = [c for c in df.columns if c != "ID"]
            if labels is None:
                labels = cols
            elif cols != labels:
                raise BenchmarkError(f"{path} has label columns {cols}, unlike the other RFMiD CSVs ({labels})")
            images = _index_images(path.parent)
            for i, rec in enumerate(df.to_dict("records")):
                report.rows += 1
                where = f"{path.name} row {i + 2}"
                target = _binary_target(rec, labels)
                if target is None:
                    report.skip("label value not 0 / 1", where)
                    continue
                ident = str(rec["ID"]).strip()
                image = next((images[ident + s] for s in IMAGE_SUFFIXES if ident + s in images), None)
                if image is None:
                    report.skip("image file missing", where)
                    continue
                rows[split].append((str(image), target, {}))
    if not rows["val"] and rows["train"]:
        rows["train"], rows["val"] = _carve_val(rows["train"], [str(i) for i in range(len(rows["train"]))],
                                                spec.val_fraction)
    return _finish(spec.display_name, "rfmid", "multilabel", labels or [], rows, report, spec)


def read_csv_benchmark(spec: DatasetSpec) -> Benchmark:
    report = ReadReport()
    frames: list[tuple[str | None, Path, pd.DataFrame]] = []
    if spec.csvs:
        frames = [(split, Path(p), _read_csv(Path(p))) for split, p in spec.csvs.items()]
    else:
        path = Path(spec.csv)
        df = _read_csv(path)
        _require_columns(df, [spec.split_column], path)
        frames = [(None, path, df)]
    needed = [spec.image_column] + (spec.label_columns or [spec.label_column])
    for _split, path, df in frames:
        _require_columns(df, needed, path)

    multiclass = bool(spec.label_column) and not spec.label_separator
    if spec.task == "multiclass" and not multiclass:
        raise BenchmarkError(f"dataset {spec.display_name}: task multiclass needs one 'label_column' without a separator")
    if spec.label_columns:
        labels = list(spec.label_columns)
    else:
        values = set()
        for _s, _p, df in frames:
            for v in df[spec.label_column]:
                parts = v.split(spec.label_separator) if spec.label_separator else [v]
                values.update(p.strip() for p in parts if p.strip())
        labels = spec.labels or sorted(values)
    rows: dict[str, list] = {"train": [], "val": [], "test": []}
    for split, path, df in frames:
        image_root = Path(spec.image_root) if spec.image_root else path.parent
        for i, rec in enumerate(df.to_dict("records")):
            report.rows += 1
            where = f"{path.name} row {i + 2}"
            row_split = split or str(rec[spec.split_column]).strip().lower()
            if row_split == "valid":
                row_split = "val"
            if row_split not in rows:
                report.skip("split value not train / val / test", where)
                continue
            if spec.label_columns:
                target = _binary_target(rec, labels)
                if target is None:
                    report.skip("label value not 0 / 1", where)
                    continue
            else:
                raw = str(rec[spec.label_column]).strip()
                parts = [p.strip() for p in raw.split(spec.label_separator)] if spec.label_separator else [raw]
                if not raw or any(p not in labels for p in parts if p):
                    report.skip("empty or unknown label", where)
                    continue
                target = labels.index(raw) if multiclass else [1.0 if lab in parts else 0.0 for lab in labels]
            rel = str(rec[spec.image_column]).strip()
            image = Path(rel) if Path(rel).is_absolute() else image_root / rel
            if not rel or not image.is_file():
                report.skip("image file missing", where)
                continue
            rows[row_split].append((str(image), target, {}))
    task = "multiclass" if multiclass else "multilabel"
    return _finish(spec.display_name, "csv", task, labels, rows, report, spec)


def read_corpus(spec: DatasetSpec) -> Benchmark:
    """The build-dataset output: labels from the card's vocabulary, texts per granularity, images as bytes."""
    import webdataset as wds

    root = spec.root.rstrip("/")
    card_path = Path(root) / "dataset.json"
    if not card_path.is_file():
        raise BenchmarkError(f"{root} is not a build-dataset output: dataset.json is missing")
    card = json.loads(card_path.read_text())
    vocabulary = list(card.get("label_vocabulary") or [])
    granularities = list(card.get("granularities") or GRANULARITIES)
    report = ReadReport()
    rows: dict[str, list] = {}
    for split in ("train", "val", "test"):
        shards = [os.path.join(root, s) for s in (card.get("shards") or {}).get(split, [])]
        rows[split] = []
        if not shards:
            continue
        expected = int(((card.get("counts") or {}).get("per_split") or {}).get(split) or 0)
        stride = max(1, -(-expected // spec.max_samples)) if spec.max_samples else 1  # spread over every shard
        dataset = wds.WebDataset(shards, shardshuffle=False, empty_check=False)
        for position, sample in enumerate(dataset):
            if spec.max_samples and len(rows[split]) >= spec.max_samples:
                break
            if position % stride:
                continue
            report.rows += 1
            where = f"{split} sample {report.rows}"
            image = sample.get("png") or sample.get("jpg")
            if image is None or "json" not in sample:
                report.skip("shard sample without image or json member", where)
                continue
            try:
                record = json.loads(sample["json"])
            except ValueError:
                report.skip("unreadable json member", where)
                continue
            states = record.get("labels") or {}
            target = [_state_value(states[lab], spec.u_policy) if lab in states else 0.0 for lab in vocabulary]
            texts = record.get("texts") or {}
            rows[split].append((image, target, texts))
    ontology = spec.ontology or (card.get("build_config") or {}).get("ontology") or "chexpert"
    if isinstance(ontology, dict):
        ontology = ontology.get("name")
    return _finish(spec.display_name, "corpus", "multilabel", vocabulary, rows, report, spec,
                   ontology=ontology if isinstance(ontology, str) else None, granularities=granularities)


READERS = {
    "corpus": read_corpus,
    "chestxray14": read_chestxray14,
    "chexpert": read_chexpert,
    "rfmid": read_rfmid,
    "csv": read_csv_benchmark,
}


def read_benchmark(spec: DatasetSpec) -> Benchmark:
    if not Path(spec.root).exists():
        raise BenchmarkError(f"dataset {spec.display_name}: root {spec.root} does not exist")
    return READERS[spec.kind](spec)
