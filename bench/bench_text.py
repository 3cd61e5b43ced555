"""Throughput of the text stage on all IU X-ray reports (one process, one core).

Baseline measured in the same run: spaCy's blank English tokenizer alone over the same texts. Reports the labeler
(full pipeline: tokenizer + sentence starts + sections + mentions + ConText + aggregation) and the composer as reports/s and as ratios.
Run: OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python bench/bench_text.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import spacy  # noqa: E402

from dataset_builders.text.compose import compose_texts  # noqa: E402
from dataset_builders.text.labeler import Labeler  # noqa: E402
from mgll.settings import external_dir  # noqa: E402
from tests.fixtures.text import findings_impression_text, load_iu_reports  # noqa: E402


def best_rate(function, texts, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def main() -> None:
    reports = load_iu_reports(external_dir())
    texts = [findings_impression_text(parts) for _, parts in sorted(reports.items())]
    tokenizer = spacy.blank("en").tokenizer
    labeler = Labeler("chexpert")
    labeler_nih = Labeler("nih")
    list(labeler.pipe(texts[:50]))  # warm-up (regex compilation, caches)
    baseline = best_rate(lambda t: list(tokenizer.pipe(t, batch_size=256)), texts)
    chexpert = best_rate(lambda t: list(labeler.pipe(t, batch_size=256)), texts)
    nih = best_rate(lambda t: list(labeler_nih.pipe(t, batch_size=256)), texts)
    compose = best_rate(lambda t: [compose_texts(x) for x in t], texts)
    print(f"reports: {len(texts)} (IU X-ray, findings + impression), best of 3, one process")
    print(f"baseline spaCy tokenizer only : {baseline:8.0f} reports/s  (1.00x)")
    print(f"Labeler('chexpert').pipe      : {chexpert:8.0f} reports/s  ({chexpert / baseline:.2f}x of tokenizer)")
    print(f"Labeler('nih').pipe           : {nih:8.0f} reports/s  ({nih / baseline:.2f}x of tokenizer)")
    print(f"compose_texts                 : {compose:8.0f} reports/s  ({compose / baseline:.2f}x of tokenizer)")
    print(f"CheXpert labeler reference ~5 reports/s -> labeler speed-up ~{chexpert / 5:.0f}x")


if __name__ == "__main__":
    main()
