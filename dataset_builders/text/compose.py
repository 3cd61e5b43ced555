"""Report -> multi-granular texts: ``diagnosis`` (coarse, the impression) and ``explanation`` (fine, the findings).

Offsets are preserved end to end: markup is blanked out with spaces (same length) rather than deleted, so every
span in ``ComposedTexts.spans`` indexes the (decoded) report the caller passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from dataset_builders.text.sections import Section, load_header_map, split_sections

# CLIP's text encoder sees 77 BPE tokens (75 without start/end); report prose averages ~1.3 tokens per word.
DEFAULT_MAX_WORDS = 55
CUES_FILE = Path(__file__).resolve().parent / "sentence_cues.yaml"

# Sections whose content never becomes a training text (PHI-prone or not about the image).
_EXCLUDED_SECTIONS = frozenset({"signature", "notification", "final_report", "addendum", "comment", "wet_read"})

_DEID_TOKEN = re.compile(r"-?\bX{2,}\b|_{2,}|\[\*\*.*?\*\*\]|\*{3,}")
_BOILERPLATE = re.compile(
    r"dictated by|transcribed by|electronically signed|signed by|i have (?:personally )?reviewed|"
    r"attending radiologist|report approved|end of (?:impression|report)|"
    r"(?:discussed|communicated|called|reported|notified|relayed|conveyed) (?:with|to|by)\b|"
    r"\bpaged\b|\btelephone\b|\bby phone\b|\bread back\b|\bwet read\b",
    re.IGNORECASE,
)
_HTML_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]{0,200}>|&(?:[a-zA-Z]{2,8}|#\d{1,5});", re.DOTALL)
_RTF = re.compile(r"\{\\rtf1|\\[a-z]{1,32}-?\d{0,6} ?|\\['][0-9a-f]{2}|[{}]")
_ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "no", "fig", "st", "cf", "etc"})
_SENTENCE_BOUNDARY = re.compile(
    r"(?<=[.!?])[\"')\]]*\s+|\s*\n[ \t]*\n\s*|\s*\n(?=[ \t]*(?:\(?\d{1,2}[.)]|[-*\u2022])\s)"
)
_LIST_MARKER_ONLY = re.compile(r"^\(?\d{1,2}[.)]$")
_WORD = re.compile(r"\S+")


@dataclass
class ComposedTexts:
    diagnosis: str = ""
    explanation: str = ""
    modality: str = ""
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def texts(self) -> dict[str, str]:
        return {"modality": self.modality, "diagnosis": self.diagnosis, "explanation": self.explanation}


def decode_report(report: str | bytes | None, warnings: list[str]) -> str:
    """Bytes -> str (UTF-8, else cp1252 with replacement); ``None`` -> ""."""
    if report is None:
        return ""
    if isinstance(report, (bytes, bytearray)):
        try:
            return bytes(report).decode("utf-8")
        except UnicodeDecodeError:
            warnings.append("non_utf8_bytes")
            return bytes(report).decode("cp1252", errors="replace")
    if not isinstance(report, str):
        raise TypeError(f"report must be str or bytes, not {type(report).__name__}")
    if "\ufffd" in report:
        warnings.append("replacement_characters")
    return report


def blank_markup(text: str, warnings: list[str]) -> str:
    """Replace HTML tags/entities and RTF control words by spaces of equal length (offsets stay valid)."""
    if "<" in text or "&" in text:
        cleaned = _HTML_TAG.sub(lambda m: " " * len(m.group(0)), text)
        if cleaned != text:
            warnings.append("markup_removed")
            text = cleaned
    if "\\" in text or "{\\rtf" in text:
        cleaned = _RTF.sub(lambda m: " " * len(m.group(0)), text)
        if cleaned != text:
            warnings.append("rtf_removed")
            text = cleaned
    # Control characters other than newlines/tabs confuse downstream tokenisers.
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", " ", text)


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans (offsets into ``text``) of ``text[start:end]``, list markers kept with their item."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    position = start
    for boundary in _SENTENCE_BOUNDARY.finditer(text, start, end):
        spans.append((position, boundary.start()))
        position = boundary.end()
    spans.append((position, end))
    merged: list[tuple[int, int]] = []
    pending: int | None = None
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s >= e:
            continue
        if pending is not None:
            s, pending = pending, None
        piece = text[s:e]
        last_word = piece.rsplit(None, 1)[-1].rstrip(".").lower() if piece.split() else ""
        if _LIST_MARKER_ONLY.match(piece) or (piece.endswith(".") and last_word in _ABBREVIATIONS and e < end):
            pending = s
            continue
        merged.append((s, e))
    if pending is not None:
        merged.append((pending, end))
    return merged


def clean_sentence(sentence: str) -> str:
    """De-identification tokens removed, whitespace collapsed."""
    sentence = _DEID_TOKEN.sub(" ", sentence)
    sentence = re.sub(r"\s+", " ", sentence).strip()
    return re.sub(r"\s+([.,;:])", r"\1", sentence)


def is_boilerplate(sentence: str) -> bool:
    return bool(_BOILERPLATE.search(sentence))


@lru_cache(maxsize=2)
def _load_cues(path: str | None = None) -> list[tuple[re.Pattern, float]]:
    data = yaml.safe_load(Path(path or CUES_FILE).read_text())
    return [(re.compile(pattern), float(weight)) for group in data.values() for pattern, weight in group.items()]


def conclusiveness(sentence: str) -> float:
    """> 0 for sentences that conclude (impression-like), < 0 for descriptive (findings-like) ones."""
    lowered = sentence.lower().strip()
    return sum(weight for pattern, weight in _load_cues() if pattern.search(lowered))


def split_conclusion(text: str, sentences: list[tuple[int, int]]) -> int:
    """Index k such that sentences[k:] are the conclusion (findings come first in reports without headers).

    Chooses k maximising agreement with per-sentence conclusiveness; a paragraph break before k adds weight.
    """
    if not sentences:
        return 0
    scores = [conclusiveness(text[s:e]) for s, e in sentences]
    if len(sentences) == 1:
        return 0 if scores[0] >= 0 else 1
    best_k, best_value = len(sentences), float("-inf")
    suffix = 0.0
    prefix_values = [0.0]
    for score in scores:
        prefix_values.append(prefix_values[-1] - score)
    for k in range(len(sentences), -1, -1):
        if k < len(sentences):
            suffix += scores[k]
        value = prefix_values[k] + suffix
        if 0 < k < len(sentences) and "\n" in text[sentences[k - 1][1] : sentences[k][0]]:
            gap = text[sentences[k - 1][1] : sentences[k][0]]
            value += 3.0 if gap.count("\n") >= 2 else 1.0
        if k == 0:
            value -= 1.0  # a conclusion-only report is less likely than findings + conclusion
        if value > best_value:
            best_k, best_value = k, value
    return best_k


def _assemble(text: str, sentences: list[tuple[int, int]], max_words: int | None, warnings: list[str], slot: str):
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    words = 0
    for s, e in sentences:
        raw = text[s:e]
        if is_boilerplate(raw):
            warnings.append(f"boilerplate_removed:{slot}")
            continue
        cleaned = clean_sentence(raw)
        if not re.search(r"[A-Za-z0-9]", cleaned) or _LIST_MARKER_ONLY.match(cleaned):
            continue
        count = len(_WORD.findall(cleaned))
        if max_words is not None and words + count > max_words:
            if not pieces:  # one over-long sentence: cut it at a word boundary
                cut = list(_WORD.finditer(raw))
                kept_end = s + cut[min(len(cut), max_words) - 1].end()
                cleaned_cut = clean_sentence(text[s:kept_end])
                kept_words = _WORD.findall(cleaned_cut)[:max_words]
                pieces.append(" ".join(kept_words))
                spans.append((s, kept_end))
            warnings.append(f"truncated:{slot}")
            break
        pieces.append(cleaned)
        spans.append((s, e))
        words += count
    return " ".join(pieces), spans


def compose_texts(
    report: str | bytes | None,
    modality_text: str = "",
    max_words: int | None = DEFAULT_MAX_WORDS,
) -> ComposedTexts:
    """Diagnosis/explanation texts of one report (see module doc); never raises on hostile text."""
    result = ComposedTexts()
    warnings = result.warnings
    text = blank_markup(decode_report(report, warnings), warnings)
    result.modality = clean_sentence(modality_text or "")
    if not text.strip():
        warnings.append("empty_report")
        return result
    header_map = load_header_map()
    sections = split_sections(text, header_map)
    diagnosis_sentences: list[tuple[int, int]] = []
    explanation_sentences: list[tuple[int, int]] = []
    by_name: dict[str, list[Section]] = {}
    for section in sections:
        by_name.setdefault(section.name, []).append(section)
    diagnosis_sections = [s for n in header_map.diagnosis_sections for s in by_name.get(n, [])]
    explanation_sections = [s for n in header_map.explanation_sections for s in by_name.get(n, [])]
    if diagnosis_sections or explanation_sections:
        for section in sorted(set(diagnosis_sections) - set(explanation_sections), key=lambda s: s.start):
            diagnosis_sentences += split_sentences(text, section.start, section.end)
        for section in sorted(set(explanation_sections) - set(diagnosis_sections), key=lambda s: s.start):
            explanation_sentences += split_sentences(text, section.start, section.end)
        mixed = sorted(set(diagnosis_sections) & set(explanation_sections), key=lambda s: s.start)
        for section in mixed:  # "FINDINGS AND IMPRESSION": sort its sentences by judgement
            sentences = split_sentences(text, section.start, section.end)
            k = split_conclusion(text, sentences)
            explanation_sentences += sentences[:k]
            diagnosis_sentences += sentences[k:]
        if not diagnosis_sections:
            # Findings without an impression: its conclusive closing sentences become the diagnosis.
            k = split_conclusion(text, explanation_sentences)
            if k == len(explanation_sentences) and explanation_sentences:
                k = len(explanation_sentences) - 1
            explanation_sentences, diagnosis_sentences = explanation_sentences[:k], explanation_sentences[k:]
            warnings.append("no_impression_section")
    else:
        body = [s for s in sections if s.name in ("body", "preamble") and s.name not in _EXCLUDED_SECTIONS]
        sentences = [span for section in body for span in split_sentences(text, section.start, section.end)]
        if not sentences:
            warnings.append("header_only" if sections else "empty_report")
            return result
        warnings.append("no_sections")
        k = split_conclusion(text, sentences)
        explanation_sentences, diagnosis_sentences = sentences[:k], sentences[k:]
    result.diagnosis, result.spans["diagnosis"] = _assemble(text, diagnosis_sentences, max_words, warnings, "diagnosis")
    result.explanation, result.spans["explanation"] = _assemble(
        text, explanation_sentences, max_words, warnings, "explanation"
    )
    if not result.diagnosis and not result.explanation:
        warnings.append("header_only" if sections else "empty_report")
    return result
