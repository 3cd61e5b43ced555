"""Classification and retrieval metrics on top of scikit-learn, with "undefined because ..." instead of crashes.

Multi-label targets are (N, L) float arrays with NaN marking entries to ignore (CheXpert uncertain labels under
the ``ignore`` U-policy). A label whose test entries hold one class only has no AUC / AP: it is reported with
``defined=False`` and the reason, and left out of the macro averages (which say how many labels they cover).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
)


@dataclass
class LabelResult:
    label: str
    n: int
    n_pos: int
    defined: bool
    reason: str = ""
    auc: float = math.nan
    ap: float = math.nan
    acc: float = math.nan
    f1: float = math.nan
    threshold: float = math.nan


def _valid(y: np.ndarray) -> np.ndarray:
    return ~np.isnan(y)


def undefined_reason(y: np.ndarray) -> str:
    y = y[_valid(y)]
    if y.size == 0:
        return "no labelled samples in this split"
    if y.min() == y.max():
        return f"only {'positive' if y[0] == 1 else 'negative'} samples in this split (AUC/AP need both classes)"
    return ""


def best_f1_thresholds(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per label, the score threshold that maximises F1 on (validation) data; NaN where undefined."""
    thresholds = np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        mask = _valid(y[:, j])
        if undefined_reason(y[:, j]):
            continue
        precision, recall, cuts = precision_recall_curve(y[mask, j], scores[mask, j])
        f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
        thresholds[j] = cuts[int(np.argmax(f1[:-1]))]
    return thresholds


def multilabel_metrics(
    y: np.ndarray, scores: np.ndarray, labels: list[str], thresholds: np.ndarray | None = None
) -> tuple[dict[str, float], list[LabelResult]]:
    """Per-label AUC / AP / ACC / F1 (F1 and ACC at ``thresholds``, e.g. chosen on val) and their macro means."""
    if y.shape != scores.shape:
        raise ValueError(f"targets {y.shape} and scores {scores.shape} differ in shape")
    if thresholds is None:
        thresholds = np.full(y.shape[1], np.nan)
    results = []
    for j, label in enumerate(labels):
        mask = _valid(y[:, j])
        yt, st = y[mask, j].astype(int), scores[mask, j]
        reason = undefined_reason(y[:, j])
        res = LabelResult(label, int(mask.sum()), int(yt.sum()), not reason, reason)
        if not reason:
            res.auc = float(roc_auc_score(yt, st))
            res.ap = float(average_precision_score(yt, st))
        if yt.size:
            cut = thresholds[j] if not np.isnan(thresholds[j]) else float(np.median(st))
            pred = (st >= cut).astype(int)
            res.threshold = float(cut)
            res.acc = float(accuracy_score(yt, pred))
            res.f1 = float(f1_score(yt, pred, zero_division=0))
        results.append(res)
    defined = [r for r in results if r.defined]
    summary = {
        "auc_macro": float(np.mean([r.auc for r in defined])) if defined else math.nan,
        "map": float(np.mean([r.ap for r in defined])) if defined else math.nan,
        "acc_macro": float(np.mean([r.acc for r in defined])) if defined else math.nan,
        "f1_macro": float(np.mean([r.f1 for r in defined])) if defined else math.nan,
        "labels_defined": float(len(defined)),
        "labels_undefined": float(len(results) - len(defined)),
    }
    return summary, results


def _macro(metric, y: np.ndarray, scores: np.ndarray) -> float:
    """Mean of ``metric`` over the labels where it is defined (NaN when it is defined for none)."""
    values = [
        metric(y[_valid(y[:, j]), j].astype(int), scores[_valid(y[:, j]), j])
        for j in range(y.shape[1])
        if not undefined_reason(y[:, j])
    ]
    return float(np.mean(values)) if values else math.nan


def macro_auc(y: np.ndarray, scores: np.ndarray) -> float:
    return _macro(roc_auc_score, y, scores)


def macro_ap(y: np.ndarray, scores: np.ndarray) -> float:
    return _macro(average_precision_score, y, scores)


def multiclass_metrics(y: np.ndarray, probs: np.ndarray, labels: list[str]) -> tuple[dict[str, float], dict]:
    """Accuracy, macro F1 and one-vs-rest AUC (over the classes present in ``y``) plus the confusion matrix."""
    pred = probs.argmax(axis=1)
    present = sorted(set(int(v) for v in y))
    info: dict = {"confusion": confusion_matrix(y, pred, labels=list(range(len(labels)))).tolist()}
    absent = [labels[i] for i in range(len(labels)) if i not in present]
    if absent:
        info["undefined"] = {lab: "class absent from this split (no one-vs-rest AUC)" for lab in absent}
    summary = {"acc": float(accuracy_score(y, pred)),
               "f1_macro": float(f1_score(y, pred, labels=present, average="macro", zero_division=0))}
    per_class = {}
    for c in present:
        yc = (y == c).astype(int)
        if yc.min() != yc.max():
            per_class[labels[c]] = float(roc_auc_score(yc, probs[:, c]))
    summary["auc_macro"] = float(np.mean(list(per_class.values()))) if per_class else math.nan
    info["auc_per_class"] = per_class
    return summary, info


def multiclass_auc(y: np.ndarray, probs: np.ndarray) -> float:
    values = []
    for c in sorted(set(int(v) for v in y)):
        yc = (y == c).astype(int)
        if yc.min() != yc.max():
            values.append(roc_auc_score(yc, probs[:, c]))
    return float(np.mean(values)) if values else math.nan


def bootstrap_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    y: np.ndarray,
    scores: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, int]:
    """Percentile bootstrap over samples (paired y/scores). Resamples where the statistic is undefined (NaN, e.g.
    one class only) are dropped; returns (low, high, resamples used)."""
    if n_resamples <= 0 or len(y) < 2:
        return math.nan, math.nan, 0
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, len(y), len(y))
        v = statistic(y[idx], scores[idx])
        if not math.isnan(v):
            values.append(v)
    if len(values) < max(10, n_resamples // 10):
        return math.nan, math.nan, len(values)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high), len(values)


def retrieval_ranks(similarity: np.ndarray, relevant: list[set[int]]) -> np.ndarray:
    """Rank of each query = 1 + number of candidates scored above its best relevant candidate."""
    ranks = []
    for i, hits in enumerate(relevant):
        row = similarity[i]
        best = max(row[list(hits)])
        ranks.append(1 + int((row > best).sum()))
    return np.asarray(ranks)


def retrieval_metrics(similarity: np.ndarray, relevant: list[set[int]], ks: list[int]) -> dict[str, float]:
    """``similarity`` (queries x candidates); ``relevant[i]`` the candidate indices that count as a hit for query i:
    R@k for each k, median rank, and the numbers of queries and candidates."""
    ranks_arr = retrieval_ranks(similarity, relevant)
    out = {f"r{k}": float((ranks_arr <= k).mean()) for k in ks}
    out["median_rank"] = float(np.median(ranks_arr))
    out["n_queries"] = float(len(ranks_arr))
    out["n_candidates"] = float(similarity.shape[1])
    return out
