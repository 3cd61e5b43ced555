"""Split a radiology report into sections, keeping character offsets into the original text.

Headers come from ``section_headers.yaml`` (data). A header is recognised
  * at the start of a line (after any indentation or list numbering) followed by ``:``/``-``, by the end of the
    line, or -- for the common headers in ``bare_headers`` -- by text when the header is written in capitals;
  * inline, after the end of a sentence, when followed by a colon ("... normal. IMPRESSION: ...").
Text before the first header is the ``preamble`` section; a report without any header is one ``body`` section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import yaml

HEADER_FILE = Path(__file__).resolve().parent / "section_headers.yaml"

# Words that, right after a capitalised header word without a colon, show it is prose ("HISTORY OF CHF").
_PROSE_FOLLOWERS = frozenset(
    "of is are was were and or to for".split()
)


@dataclass(frozen=True)
class Section:
    name: str  # canonical name ("findings", "impression", ..., "preamble", "body")
    header: str  # header as written in the report ("" for preamble/body)
    start: int  # body start offset in the report
    end: int  # body end offset (exclusive)
    text: str  # report[start:end]


@dataclass(frozen=True)
class HeaderMap:
    pattern: re.Pattern
    canonical: dict[str, str]  # normalised phrase -> canonical name
    bare: frozenset[str]
    diagnosis_sections: tuple[str, ...]
    explanation_sections: tuple[str, ...]
    # Lower-cased first word -> the alternation of the headers that start with it (same order as ``pattern``):
    # trying the whole alternation at every character costs ~10x more than trying it only where it can match.
    by_first_word: dict[str, re.Pattern] = field(default_factory=dict)


def _normalise_header(text: str) -> str:
    return re.sub(r"[\s\-/]+", " ", text.lower()).strip()


@lru_cache(maxsize=4)
def load_header_map(path: str | None = None) -> HeaderMap:
    data = yaml.safe_load(Path(path or HEADER_FILE).read_text())
    canonical: dict[str, str] = {}
    for name, phrases in data["headers"].items():
        for phrase in phrases:
            canonical.setdefault(_normalise_header(phrase), name)
    alternatives = sorted(canonical, key=len, reverse=True)
    by_first_word: dict[str, list[str]] = {}
    for phrase in alternatives:
        leading = _WORD_RUN.match(phrase)
        if leading is None:
            raise ValueError(f"{path or HEADER_FILE}: header {phrase!r} does not start with a word")
        by_first_word.setdefault(leading.group(0), []).append(phrase)
    return HeaderMap(
        pattern=_header_pattern(alternatives),
        canonical=canonical,
        bare=frozenset(data.get("bare_headers", [])),
        diagnosis_sections=tuple(data.get("diagnosis_sections", ["impression"])),
        explanation_sections=tuple(data.get("explanation_sections", ["findings"])),
        by_first_word={word: _header_pattern(phrases) for word, phrases in by_first_word.items()},
    )


def _header_pattern(phrases: list[str]) -> re.Pattern:
    body = "|".join(r"[\s\-/]+".join(re.escape(w) for w in phrase.split(" ")) for phrase in phrases)
    return re.compile(rf"(?<![\w\-/])(?:{body})(?![\w\-/])", re.IGNORECASE)


_WORD_RUN = re.compile(r"\w+")
_LINE_PREFIX = re.compile(r"^[ \t>*#\-\u2022]*(?:\(?\d{1,2}[.)]\s*|[ivx]{1,4}[.)]\s+)?$", re.IGNORECASE)
_SENTENCE_END_BEFORE = re.compile(r"[.!?;)\]]\s*$")
_COLON_AFTER = re.compile(r"[ \t]*(?::|\s-\s|\s?\u2013|\s?\u2014|-(?=\s))[ \t]*")
_EOL_AFTER = re.compile(r"[ \t]*(?:\r?\n|$)")


def _header_end(text: str, match: re.Match, header_map: HeaderMap, all_caps: bool) -> int | None:
    """End offset of the header (incl. its punctuation) if ``match`` is a header in this position, else None."""
    start, end = match.span()
    line_start = text.rfind("\n", 0, start) + 1
    before = text[line_start:start]
    at_line_start = bool(_LINE_PREFIX.match(before))
    after_sentence = at_line_start or bool(_SENTENCE_END_BEFORE.search(before))
    written = match.group(0)
    name = header_map.canonical.get(_normalise_header(written))
    common = name in header_map.bare
    colon = _COLON_AFTER.match(text, end)
    if colon and colon.end() > end:
        return colon.end() if (after_sentence or common) else None
    if not after_sentence:
        return None
    if _EOL_AFTER.match(text, end):
        return end
    # Header followed by text on the same line, no colon: accept common headers written in capitals.
    if not common or not written.isupper():
        return None
    following = re.match(r"[ \t]+(\(?\d{1,2}[.)]|[A-Za-z]+)", text[end : end + 40])
    if not following:
        return None
    next_word = following.group(1)
    if next_word[-1] in ".)":
        return end  # "IMPRESSION 1. ..."
    if next_word.lower() in _PROSE_FOLLOWERS:
        return None
    if not all_caps and next_word.isupper() and len(next_word) > 1:
        return None  # running capitals in a mixed-case report ("FINDINGS SECTION"): not a header
    return end


def _header_matches(text: str, header_map: HeaderMap) -> Iterator[re.Match]:
    """What ``header_map.pattern.finditer(text)`` yields, trying only the headers that start with each word."""
    last_end = 0
    by_first_word = header_map.by_first_word
    lower = text.lower()
    same_offsets = len(lower) == len(text)  # a few characters lower-case to two
    for word in _WORD_RUN.finditer(lower if same_offsets else text):
        position = word.start()
        if position < last_end:
            continue
        pattern = by_first_word.get(word.group(0) if same_offsets else word.group(0).lower())
        if pattern is None:
            continue
        match = pattern.match(text, position)
        if match:
            last_end = match.end()
            yield match


def find_headers(text: str, header_map: HeaderMap | None = None) -> list[tuple[int, int, str, str]]:
    """(header start, body start, canonical name, header as written) for every header in ``text``."""
    header_map = header_map or load_header_map()
    head = text[:2000]
    all_caps = head.isupper() and all(c.isupper() for c in head if c.isalpha())
    found = []
    for match in _header_matches(text, header_map):
        body_start = _header_end(text, match, header_map, all_caps)
        if body_start is None:
            continue
        name = header_map.canonical[_normalise_header(match.group(0))]
        found.append((match.start(), body_start, name, match.group(0)))
    return found


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def split_sections(text: str, header_map: HeaderMap | None = None) -> list[Section]:
    """Sections of ``text`` in reading order; empty list for an empty/whitespace report. Offsets index ``text``."""
    if not text or not text.strip():
        return []
    header_map = header_map or load_header_map()
    headers = find_headers(text, header_map)
    sections: list[Section] = []
    first = headers[0][0] if headers else len(text)
    start, end = _strip_span(text, 0, first)
    # Leading list numbering before a header ("1. FINDINGS:") belongs to no section.
    if end > start and not _LINE_PREFIX.match(text[start:end]):
        sections.append(Section("preamble" if headers else "body", "", start, end, text[start:end]))
    for index, (_header_start, body_start, name, written) in enumerate(headers):
        next_start = headers[index + 1][0] if index + 1 < len(headers) else len(text)
        start, end = _strip_span(text, body_start, next_start)
        # Drop list numbering that belongs to the next header ("... 2. IMPRESSION:").
        tail = re.search(r"(?:^|\s)\(?\d{1,2}[.)]\s*$", text[start:end])
        if tail and index + 1 < len(headers):
            start, end = _strip_span(text, start, start + tail.start())
        sections.append(Section(name, written.strip(), start, end, text[start:end]))
    return sections
