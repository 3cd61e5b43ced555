"""Rule-tuning helper for the labeler on the OpenI TRAIN split only (the 770 test ids are never read).

Prints per-label metrics and, with --errors LABEL, the train-split sentences behind false positives/negatives.
Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_text_tune.py [--errors Atelectasis] [--uncertain-as 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataset_builders.text.labeler import Labeler  # noqa: E402
from mgll.settings import external_dir  # noqa: E402
from tests.fixtures.text import findings_impression_text, load_iu_reports, load_openi_gold, score_labels  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--errors", default=None)
    parser.add_argument("--uncertain-as", type=int, default=0)
    parser.add_argument("--limit", type=int, default=15)
    args = parser.parse_args()
    external = external_dir()
    labels, gold, test_ids = load_openi_gold(external)
    train_gold = {i: g for i, g in gold.items() if i not in test_ids}
    reports = load_iu_reports(external)
    train_ids = sorted(i for i in train_gold if i in reports)
    labeler = Labeler("nih")
    texts = [findings_impression_text(reports[i]) for i in train_ids]
    results = dict(zip(train_ids, labeler.pipe(texts)))
    predictions = {i: {k: v.state for k, v in r.items()} for i, r in results.items()}
    score = score_labels(predictions, {i: train_gold[i] for i in train_ids}, labels, args.uncertain_as)
    for label, row in score["per_label"].items():
        print(f"{label:20s} P={row['precision']:.3f} R={row['recall']:.3f} F1={row['f1']:.3f} n={row['positives']}")
    print(f"macro-F1 (train, uncertain as {args.uncertain_as}): {score['macro_f1']:.4f} on {len(train_ids)} reports")
    if args.errors:
        shown = 0
        for i, text in zip(train_ids, texts):
            want = train_gold[i][args.errors]
            state = predictions[i].get(args.errors, 0)
            got = args.uncertain_as if state == -1 else int(state == 1)
            if want != got and shown < args.limit:
                shown += 1
                ev = [(e.mention, e.trigger, e.state) for e in results[i].get(args.errors, type("", (), {"evidence": []})).evidence]
                print(f"--- {'FN' if want else 'FP'} {i} {ev}\n{text}")


if __name__ == "__main__":
    main()
