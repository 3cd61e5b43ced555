"""Text stage measured against public gold: CheXpert labeler's labelled reports, OpenI (NegBio) labels, and a
section-split oracle built from IU X-ray reports at test time (nothing derived from them is stored)."""

from __future__ import annotations

import csv
import random
from collections import Counter

import pytest

from dataset_builders.text.compose import compose_texts
from dataset_builders.text.labeler import Labeler
from tests.fixtures.text import CHEXPERT_LABELED, findings_impression_text, score_labels, tokens_for_f1

# Measured levels on the held-out OpenI test split / the oracle, minus a small margin (see the final report).
OPENI_TEST_MACRO_F1_MIN = 0.90  # measured 0.9167 (uncertain scored as negative; goal 0.90)
OPENI_TEST_MACRO_F1_UNCERTAIN_POSITIVE_MIN = 0.80  # measured 0.8171 (uncertain scored as positive)
SECTION_F1_WITH_HEADERS_MIN = 0.995  # measured 0.9975 diagnosis, 0.9988 explanation
SECTION_F1_WITHOUT_HEADERS_MIN = 0.86  # measured 0.878 diagnosis, 0.951 explanation


def test_chexpert_labeled_reports_cell_for_cell(external_dir):
    path = external_dir / CHEXPERT_LABELED
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header, labeler = rows[0], Labeler("chexpert")
    assert header[1:] == labeler.labels
    for row in rows[1:]:
        expected = {name: int(float(value)) for name, value in zip(header[1:], row[1:]) if value}
        got = {name: result.state for name, result in labeler.label(row[0]).items()}
        assert got == expected, row[0]


def test_openi_test_split_macro_f1(iu_reports, openi_gold):
    labels, gold, test_ids = openi_gold
    ids = sorted(i for i in test_ids if i in gold and i in iu_reports)
    assert len(ids) >= 760
    labeler = Labeler("nih")
    results = labeler.pipe([findings_impression_text(iu_reports[i]) for i in ids])
    predictions = {i: {name: r.state for name, r in result.items()} for i, result in zip(ids, results)}
    as_negative = score_labels(predictions, {i: gold[i] for i in ids}, labels, uncertain_as=0)
    as_positive = score_labels(predictions, {i: gold[i] for i in ids}, labels, uncertain_as=1)
    lines = [f"{'label':20s} {'n':>4s}  P/R/F1 (uncertain=0)   P/R/F1 (uncertain=1)"]
    for label in labels:
        a, b = as_negative["per_label"][label], as_positive["per_label"][label]
        lines.append(
            f"{label:20s} {a['positives']:4d}  {a['precision']:.3f} {a['recall']:.3f} {a['f1']:.3f}   "
            f"{b['precision']:.3f} {b['recall']:.3f} {b['f1']:.3f}"
        )
    lines.append(f"macro-F1 over {len(as_negative['scored_labels'])} labels with >=5 positives: "
                 f"{as_negative['macro_f1']:.4f} (uncertain=0), {as_positive['macro_f1']:.4f} (uncertain=1)")
    print("\n".join(lines))
    assert as_negative["macro_f1"] >= OPENI_TEST_MACRO_F1_MIN, "\n".join(lines)
    assert as_positive["macro_f1"] >= OPENI_TEST_MACRO_F1_UNCERTAIN_POSITIVE_MIN, "\n".join(lines)


_FINDINGS_HEADERS = ["FINDINGS:", "Findings:", "findings:", "FINDINGS", "Findings -", "FINDINGS :", "Report:", "DESCRIPTION:"]
_IMPRESSION_HEADERS = ["IMPRESSION:", "Impression:", "impression:", "IMPRESSION", "CONCLUSION:", "Conclusion:",
                       "OPINION:", "Summary:", "DIAGNOSIS:", "Impressions:", "IMPRESSION -"]


def _numbered(text: str) -> str:
    sentences = [s.strip() for s in text.replace("\n", " ").split(". ") if s.strip()]
    return "\n".join(f"{n}. {s.rstrip('.')}." for n, s in enumerate(sentences, start=1))


def _layout(findings: str, impression: str, rng: random.Random) -> tuple[str, bool, str, str]:
    """One report text in a random layout; returns (text, has_headers, findings, impression) as laid out."""
    if rng.random() < 0.25:
        joiner = rng.choice(["\n\n", " "])
        return findings + joiner + impression, False, findings, impression
    fh, ih = rng.choice(_FINDINGS_HEADERS), rng.choice(_IMPRESSION_HEADERS)
    if rng.random() < 0.3:
        impression = _numbered(impression)
    if rng.random() < 0.2:
        findings, impression = findings.upper(), impression.upper()
        fh, ih = fh.upper(), ih.upper()
    own_line = rng.random() < 0.5 or not fh.rstrip().endswith((":", "-"))
    sep = "\n" if own_line else " "
    indent = "  " if rng.random() < 0.2 else ""
    blocks = [f"{indent}{fh}{sep}{indent}{findings}", f"{indent}{ih}{sep}{indent}{impression}"]
    if rng.random() < 0.3:
        blocks.reverse()
    return rng.choice(["\n", "\n\n", " "]).join(blocks), True, findings, impression


def _f1(predicted: str, expected: str) -> float:
    p, e = Counter(tokens_for_f1(predicted)), Counter(tokens_for_f1(expected))
    overlap = sum((p & e).values())
    if not p and not e:
        return 1.0
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(p.values()), overlap / sum(e.values())
    return 2 * precision * recall / (precision + recall)


def test_section_split_oracle(iu_reports):
    rng = random.Random(0)
    scores = {True: {"diagnosis": [], "explanation": []}, False: {"diagnosis": [], "explanation": []}}
    pairs = [(p["FINDINGS"], p["IMPRESSION"]) for _, p in sorted(iu_reports.items())
             if p.get("FINDINGS") and p.get("IMPRESSION")]
    assert len(pairs) >= 3400
    for findings, impression in pairs:
        text, has_headers, findings, impression = _layout(findings, impression, rng)
        composed = compose_texts(text, max_words=None)
        scores[has_headers]["diagnosis"].append(_f1(composed.diagnosis, impression))
        scores[has_headers]["explanation"].append(_f1(composed.explanation, findings))
        for granularity in ("diagnosis", "explanation"):
            for start, end in composed.spans[granularity]:
                assert 0 <= start < end <= len(text)
    mean = {h: {g: sum(v) / len(v) for g, v in d.items()} for h, d in scores.items()}
    print(f"section oracle token F1: with headers {mean[True]}, without headers {mean[False]}")
    assert min(mean[True].values()) >= SECTION_F1_WITH_HEADERS_MIN, mean
    assert min(mean[False].values()) >= SECTION_F1_WITHOUT_HEADERS_MIN, mean
