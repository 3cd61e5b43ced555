"""Benchmark: are the demo corpus findings learnable from pixels? Linear probe AUROC vs. a shuffled-label baseline.

    OMP_NUM_THREADS=1 .venv/bin/python bench/synthetic_learnability.py [--corpus DIR | --n 1000] [--px 32]

Decodes every frontal sample DICOM (modality LUT, MONOCHROME1 inverted, min-max), downsamples it to PX x PX,
splits by patient (80/20), and fits one logistic regression per CheXpert label (sklearn). Reports the held-out
AUROC per label, the mean AUROC of the same probe trained on 5 shuffled copies of the labels (the chance
baseline, measured in the same run), and their ratio. A label the pixels do not encode would score ~0.5 in both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def _load(corpus: Path, px: int):
    import pandas as pd
    import pydicom
    from PIL import Image
    from pydicom.pixels import apply_modality_lut

    gt = pd.read_parquet(corpus / "ground_truth.parquet")
    rows = gt[(gt.kind == "dicom") & (gt.expected == "sample") & gt.view.isin(["PA", "AP"])].reset_index(drop=True)
    features = np.empty((len(rows), px * px), np.float32)
    for i, row in enumerate(rows.itertuples()):
        ds = pydicom.dcmread(corpus / row.relpath)
        arr = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        arr = arr[0] if arr.ndim == 3 else arr
        arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            arr = 1.0 - arr
        features[i] = np.asarray(Image.fromarray(arr, mode="F").resize((px, px), Image.BILINEAR)).ravel()
    return rows, features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="an existing demo corpus (else one is generated)")
    parser.add_argument("--n", type=int, default=1000, help="studies to generate when --corpus is not given")
    parser.add_argument("--px", type=int, default=32)
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.preprocessing import StandardScaler

    from dataset_builders.synthetic import generate_demo_corpus
    from dataset_builders.synthetic_findings import CHEXPERT_LABELS

    with tempfile.TemporaryDirectory(prefix="mgll-bench-learn-") as tmp:
        corpus = args.corpus or Path(tmp) / "corpus"
        if args.corpus is None:
            generate_demo_corpus(corpus, n_studies=args.n, n_fundus=0, image_size=128)
        rows, x = _load(corpus, args.px)
    train, test = next(GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=0).split(x, groups=rows.patient_id))
    scaler = StandardScaler().fit(x[train])
    x_train, x_test = scaler.transform(x[train]), scaler.transform(x[test])
    rng = np.random.default_rng(0)
    result = {"images": len(rows), "train": len(train), "test": len(test), "px": args.px, "labels": {}}
    for label in CHEXPERT_LABELS:
        y = np.array([label in json.loads(f) for f in rows.findings], dtype=int)
        if y[train].sum() < 5 or y[test].sum() < 2:
            continue
        probe = LogisticRegression(C=0.01, max_iter=2000).fit(x_train, y[train])
        auc = roc_auc_score(y[test], probe.predict_proba(x_test)[:, 1])
        auc_base = float(np.mean([
            roc_auc_score(y[test], LogisticRegression(C=0.01, max_iter=2000)
                          .fit(x_train, rng.permutation(y[train])).predict_proba(x_test)[:, 1])
            for _ in range(5)
        ]))
        result["labels"][label] = {"positives": int(y.sum()), "auroc": round(auc, 3),
                                   "auroc_shuffled_baseline": round(auc_base, 3),
                                   "ratio": round(auc / max(auc_base, 1e-6), 2)}
    aucs = [v["auroc"] for v in result["labels"].values()]
    bases = [v["auroc_shuffled_baseline"] for v in result["labels"].values()]
    result["mean_auroc"], result["mean_auroc_shuffled"] = round(float(np.mean(aucs)), 3), round(float(np.mean(bases)), 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
