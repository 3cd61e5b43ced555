"""Card plots (matplotlib Agg): label frequency, label co-occurrence, text lengths, a grid of examples."""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
import textwrap
from collections import Counter

import numpy as np

from dataset_builders.schema import GRANULARITIES
from dataset_builders.shards import atomic_write_bytes


def _figure_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def write_plots(fs, base: str, manifest: list[dict], n_examples: int = 12) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    labels_per_row = [
        [k for k, v in json.loads(row["labels_json"] or "{}").items() if v == 1] for row in manifest
    ]
    counts = Counter(label for labels in labels_per_row for label in labels)
    names = [name for name, _ in counts.most_common()]

    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.3 * len(names) + 1)))
    if names:
        ax.barh(names[::-1], [counts[n] for n in names[::-1]], color="#4477aa")
    else:
        ax.text(0.5, 0.5, "no positive labels", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("positive samples")
    ax.set_title("Label frequency")
    written.append(_save(fs, base, "label_frequency.png", fig))

    matrix = np.zeros((len(names), len(names)))
    index = {n: i for i, n in enumerate(names)}
    for labels in labels_per_row:
        for a in labels:
            for b in labels:
                matrix[index[a], index[b]] += 1
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(names) + 2),) * 2)
    if names:
        image = ax.imshow(matrix, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("Label co-occurrence")
    written.append(_save(fs, base, "label_cooccurrence.png", fig))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for granularity in GRANULARITIES:
        lengths = [len((row.get(f"text_{granularity}") or "").split()) for row in manifest]
        if lengths:
            ax.hist(lengths, bins=30, alpha=0.5, label=granularity)
    ax.set_xlabel("words")
    ax.set_ylabel("samples")
    ax.legend()
    ax.set_title("Text length per granularity")
    written.append(_save(fs, base, "text_length.png", fig))

    written.append(_save(fs, base, "examples_grid.png", _examples_figure(fs, base, manifest, n_examples)))
    return written


def _examples_figure(fs, base: str, manifest: list[dict], n: int):
    import matplotlib.pyplot as plt
    from PIL import Image

    step = max(1, len(manifest) // max(1, n))
    chosen = manifest[::step][:n]
    by_shard: dict[str, list[dict]] = {}
    for row in chosen:
        by_shard.setdefault(row["shard"], []).append(row)
    images: dict[str, Image.Image] = {}
    for shard, rows in by_shard.items():
        wanted = {row["key"] for row in rows}
        path = posixpath.join(base, shard)
        if not fs.exists(path):
            continue
        with fs.open(path, "rb") as handle, tarfile.open(fileobj=io.BytesIO(handle.read()), mode="r:") as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                if key in wanted and ext in ("png", "jpg"):
                    images[key] = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
    cols = 4
    rows_n = max(1, (len(chosen) + cols - 1) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(cols * 3.2, rows_n * 4.0))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, row in zip(np.atleast_1d(axes).ravel(), chosen):
        if row["key"] in images:
            ax.imshow(images[row["key"]])
        caption = " | ".join(t for t in (row.get(f"text_{g}") or "" for g in GRANULARITIES) if t)
        ax.set_title("\n".join(textwrap.wrap(caption, 38)[:5]), fontsize=6)
    fig.suptitle("Examples (texts coarse -> fine)")
    return fig


def _save(fs, base: str, name: str, fig) -> str:
    path = posixpath.join(base, "plots", name)
    atomic_write_bytes(fs, path, _figure_bytes(fig))
    return path
