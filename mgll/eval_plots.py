"""Evaluation artifacts: per-label tables (CSV + markdown), ROC / PR curves, confusion matrix, a PCA projection of
image embeddings, and a retrieval examples grid. Every function writes files and returns their paths."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def write_table(rows: list[dict], stem: Path) -> tuple[Path, Path]:
    """``stem``.csv and ``stem``.md from a list of dicts (NaN shown as empty / 'undefined')."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    df.to_csv(csv_path, index=False)
    md_path.write_text(to_markdown(df) + "\n")
    return csv_path, md_path


def to_markdown(df: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "undefined" if math.isnan(v) else f"{v:.4f}"
        return str(v).replace("|", "/")

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def roc_pr_curves(y: np.ndarray, scores: np.ndarray, labels: list[str], out_dir: Path, stem: str, title: str):
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    paths = []
    for kind, display in (("roc", RocCurveDisplay), ("pr", PrecisionRecallDisplay)):
        fig, ax = plt.subplots(figsize=(6, 5))
        drawn = 0
        for j, lab in enumerate(labels):
            mask = ~np.isnan(y[:, j])
            yj = y[mask, j].astype(int)
            if yj.size == 0 or yj.min() == yj.max():
                continue
            display.from_predictions(yj, scores[mask, j], name=lab, ax=ax)
            drawn += 1
        if drawn == 0:
            ax.text(0.5, 0.5, "no label has both classes in the test split", ha="center")
        ax.set_title(f"{title} {kind.upper()}")
        if drawn > 8:
            ax.legend(fontsize=5)
        path = out_dir / f"{kind}_{stem}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def confusion_matrix_plot(matrix: np.ndarray, labels: list[str], path: Path, title: str) -> Path:
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(max(4, len(labels) * 0.6), max(4, len(labels) * 0.6)))
    ConfusionMatrixDisplay(matrix, display_labels=labels).plot(ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title(title)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def embedding_projection(features: np.ndarray, targets: np.ndarray, labels: list[str], task: str, path: Path,
                         title: str) -> Path:
    """2-D PCA of image embeddings, each point coloured by its class (multi-class) or first positive label."""
    from sklearn.decomposition import PCA

    n_components = min(2, features.shape[0], features.shape[1])
    coords = PCA(n_components=n_components).fit_transform(features) if n_components else np.zeros((len(features), 2))
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    if task == "multiclass":
        names = [labels[int(t)] for t in targets]
    else:
        names = [next((labels[j] for j in range(len(labels)) if row[j] == 1), "no positive label") for row in targets]
    fig, ax = plt.subplots(figsize=(6, 5))
    groups = sorted(set(names))
    colours = plt.get_cmap("tab20" if len(groups) > 10 else "tab10")
    for k, name in enumerate(groups):
        sel = [i for i, n in enumerate(names) if n == name]
        marker = "o" if k < 20 else "x"  # tab20 has 20 colours; later groups differ by marker
        ax.scatter(coords[sel, 0], coords[sel, 1], s=10, label=name, color=colours(k % 20), marker=marker)
    ax.legend(fontsize=6, markerscale=1.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{title}: PCA of image embeddings")
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def retrieval_grid(images: list, similarity: np.ndarray, texts: list[str], own: list[int], n_queries: int,
                   top_k: int, path: Path, granularity: str) -> Path:
    """Query images (rows) with their top-k retrieved texts; the correct text is marked with a check."""
    from mgll.evaluate import open_image

    n = min(n_queries, len(images))
    fig, axes = plt.subplots(n, 2, figsize=(9, 2.2 * n), gridspec_kw={"width_ratios": [1, 3]}, squeeze=False)
    for row in range(n):
        axes[row, 0].imshow(open_image(images[row]))
        axes[row, 0].axis("off")
        order = np.argsort(-similarity[row])[:top_k]
        lines = []
        for rank, k in enumerate(order, 1):
            mark = "[x]" if k == own[row] else "[ ]"
            lines.append(f"{rank}. {mark} " + textwrap.shorten(texts[k], 90))
        axes[row, 1].text(0, 0.5, "\n".join(lines), va="center", fontsize=7, family="monospace")
        axes[row, 1].axis("off")
    fig.suptitle(f"image -> text retrieval, {granularity} granularity ([x] = the image's own text)")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path
