"""Metric helpers: undefined-with-reason instead of crashes, thresholds from val, bootstrap CIs, retrieval ranks."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from mgll.metrics import (
    best_f1_thresholds,
    bootstrap_ci,
    macro_auc,
    multiclass_metrics,
    multilabel_metrics,
    retrieval_metrics,
)


def test_label_with_one_class_is_undefined_with_reason_and_left_out_of_macro():
    rng = np.random.default_rng(0)
    y = np.stack([rng.integers(0, 2, 50), np.zeros(50)], axis=1).astype(float)
    s = rng.random((50, 2))
    summary, results = multilabel_metrics(y, s, ["a", "b"])
    assert results[0].defined and not results[1].defined
    assert "only negative samples" in results[1].reason and math.isnan(results[1].auc)
    assert summary["auc_macro"] == results[0].auc == roc_auc_score(y[:, 0], s[:, 0])
    assert summary["labels_undefined"] == 1


def test_ignored_entries_are_excluded():
    y = np.array([[1.0], [0.0], [np.nan], [1.0], [0.0]])
    s = np.array([[0.9], [0.1], [0.0], [0.8], [0.2]])
    _, results = multilabel_metrics(y, s, ["a"])
    assert results[0].n == 4 and results[0].auc == 1.0


def test_val_thresholds_maximise_f1_on_val():
    y = np.array([[0], [0], [1], [1], [1]], dtype=float)
    s = np.array([[0.1], [0.5], [0.4], [0.6], [0.9]])
    cut = best_f1_thresholds(y, s)[0]
    _, results = multilabel_metrics(y, s, ["a"], np.array([cut]))
    for other in (0.1, 0.45, 0.55, 0.95):
        _, alt = multilabel_metrics(y, s, ["a"], np.array([other]))
        assert results[0].f1 >= alt[0].f1


def test_multiclass_auc_one_vs_rest_and_absent_class():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)  # class 2 never occurs
    probs = rng.dirichlet([1, 1, 1], 40)
    summary, info = multiclass_metrics(y, probs, ["x", "y", "z"])
    assert "z" in info["undefined"] and set(info["auc_per_class"]) == {"x", "y"}
    expected = np.mean([roc_auc_score(y == c, probs[:, c]) for c in (0, 1)])
    assert math.isclose(summary["auc_macro"], expected)
    assert np.asarray(info["confusion"]).sum() == 40


def test_bootstrap_ci_brackets_estimate_and_narrows_with_data():
    rng = np.random.default_rng(2)

    def sample(n):
        y = rng.integers(0, 2, (n, 2)).astype(float)
        return y, y * 0.6 + rng.random((n, 2))

    y_small, s_small = sample(40)
    y_big, s_big = sample(800)
    lo_s, hi_s, used = bootstrap_ci(macro_auc, y_small, s_small, 300)
    lo_b, hi_b, _ = bootstrap_ci(macro_auc, y_big, s_big, 300)
    assert used == 300 and lo_s <= macro_auc(y_small, s_small) <= hi_s
    assert (hi_b - lo_b) < (hi_s - lo_s)


def test_bootstrap_of_undefined_statistic_is_nan():
    y = np.zeros((30, 1))
    assert all(math.isnan(v) for v in bootstrap_ci(macro_auc, y, np.random.rand(30, 1), 50)[:2])


def test_retrieval_ranks_with_shared_texts():
    # 3 images, 2 candidate texts; images 0 and 2 share text 0
    sim = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    i2t = retrieval_metrics(sim, [{0}, {1}, {0}], [1])
    assert i2t["r1"] == 1 / 3 and i2t["median_rank"] == 2
    t2i = retrieval_metrics(sim.T, [{0, 2}, {1}], [1, 2])
    assert t2i["r1"] == 0.5 and t2i["r2"] == 1.0  # text 1 ranks image 1 second (only 0.7 > 0.2)
