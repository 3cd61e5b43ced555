"""Rule-based report labeler: ontology mentions + ConText-style negation/uncertainty + CheXpert aggregation.

A spaCy 3.8 pipeline (``spacy.blank("en")`` + ``sentencizer`` + the ``mgll_context`` component defined here):
  * mentions: one regular expression per label built from the ontology's synonyms (``exclude`` phrases veto),
  * triggers: the phrases of ``context_rules.yaml`` found in one pass, longest match first, so pseudo-triggers
    ("no change") hide the negations they contain and "cannot exclude" is uncertainty, not negation,
  * scope: a pre-trigger reaches right and a post-trigger left, within the sentence/section, up to a window of
    words, and never across a termination term ("but", "however", "there is", ";" ...); the nearest wins.
Aggregation per label (CheXpert): any positive -> 1, else any uncertain -> -1, else 0; the ``no_finding`` label is 1
only when no other label (except ``no_finding_ignores``) and no ``other_findings`` phrase is positive or uncertain.
Sections such as INDICATION or HISTORY are ignored (they state the question, not the answer).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import spacy
import yaml
from spacy.language import Language
from spacy.tokens import Doc

from dataset_builders.schema import NEGATIVE, POSITIVE, UNCERTAIN, Evidence
from dataset_builders.text.compose import blank_markup, decode_report
from dataset_builders.text.ontology import Ontology, load_ontology
from dataset_builders.text.sections import load_header_map, split_sections

RULES_FILE = Path(__file__).resolve().parent / "context_rules.yaml"
SKIPPED_SECTIONS = ("history", "indication", "comparison", "technique", "examination", "signature", "notification")
_MAX_CHARS = 20_000  # longer reports are labelled on their first 20,000 characters (with a warning)

_NEG, _UNC = "negation", "uncertainty"
_WORDISH = re.compile(r"[A-Za-z]{3}")
_CANDIDATE = re.compile(r"[a-z][a-z/\-]*|[;:?]|\n")


def phrase_regex(phrase: str) -> str:
    """Lower-case phrase -> regex source: words joined by any spaces/hyphens, ``*`` = any word ending."""
    words = phrase.strip().split()
    parts = []
    for word in words:
        if word.endswith("*") and len(word) > 1:
            parts.append(re.escape(word[:-1]) + r"[\w\-]*")
        else:
            parts.append(re.escape(word))
    body = r"[\s\-]+".join(parts)
    if re.match(r"\w", phrase):
        body = r"(?<![\w])" + body
    if re.search(r"[\w*]$", phrase):
        body = body + r"(?![\w])"
    return body


@dataclass(frozen=True)
class TriggerRule:
    phrase: str
    kind: str  # negation | uncertainty | pseudo | termination
    pre: bool
    post: bool
    window: int  # pre-window in words (post uses the rules' post window or this when shorter)


@dataclass
class ContextRules:
    pattern: re.Pattern
    rules: dict[str, TriggerRule]  # regex group name -> rule
    pre_window: int
    post_window: int
    first_words: frozenset = frozenset()  # words (or punctuation) that can start a trigger
    first_prefixes: tuple = ()  # word stems of wildcard first words ("suspect*")


@lru_cache(maxsize=4)
def load_context_rules(path: str | None = None) -> ContextRules:
    data = yaml.safe_load(Path(path or RULES_FILE).read_text())
    scope = data.get("scope", {})
    pre_window = int(scope.get("pre_window_words", 14))
    post_window = int(scope.get("post_window_words", 8))
    short_window = int(scope.get("short_window_words", 3))
    short = {str(p).lower() for p in data.get("short_scope", [])}
    table: dict[str, dict] = {}
    for key, kind, direction in [
        ("pseudo", "pseudo", None),
        ("termination", "termination", None),
        ("negation_pre", _NEG, "pre"),
        ("negation_post", _NEG, "post"),
        ("uncertainty_pre", _UNC, "pre"),
        ("uncertainty_post", _UNC, "post"),
    ]:
        for phrase in data.get(key, []) or []:
            if not isinstance(phrase, str):  # YAML reads a bare `no` as False: the file must quote it
                raise ValueError(f"{path or RULES_FILE}: {key} entry {phrase!r} is not a string; quote it")
            phrase = phrase.lower().strip()
            entry = table.setdefault(phrase, {"kind": kind, "pre": False, "post": False})
            if entry["kind"] != kind:
                continue  # the first category listed (pseudo, termination, negation, uncertainty) keeps the phrase
            entry["pre"] |= direction == "pre"
            entry["post"] |= direction == "post"
    rules: dict[str, TriggerRule] = {}
    alternatives = []
    for index, phrase in enumerate(sorted(table, key=lambda p: (-len(p), p))):
        entry = table[phrase]
        name = f"t{index}"
        window = short_window if phrase in short else pre_window
        rules[name] = TriggerRule(phrase, entry["kind"], entry["pre"], entry["post"], window)
        alternatives.append(f"(?P<{name}>{phrase_regex(phrase)})")
    # Paragraph breaks and new list items end every scope, like a sentence end.
    alternatives.append(r"(?P<tbreak>\n[ \t]*\n|\n(?=[ \t]*\(?\d{1,2}[.)]\s))")
    rules["tbreak"] = TriggerRule("<break>", "termination", False, False, 0)
    firsts = {re.split(r"[\s\-]+", phrase)[0] for phrase in table}
    first_words = frozenset({w for w in firsts if not w.endswith("*")} | {"\n"})
    first_prefixes = tuple(sorted({w[:-1] for w in firsts if w.endswith("*")}))
    # A first word like "r/o" or "non-enlarged" is found by the candidate scanner as one token; keep its head too.
    first_words = first_words | {re.split(r"[/\-]", w)[0] for w in first_words}
    return ContextRules(re.compile("|".join(alternatives)), rules, pre_window, post_window, first_words, first_prefixes)


@dataclass
class LabelResult:
    state: int
    evidence: list[Evidence] = field(default_factory=list)


@dataclass(frozen=True)
class _LabelMatcher:
    label: str
    pattern: re.Pattern | None
    exclude: re.Pattern | None


def _alternation(phrases: Iterable[str]) -> re.Pattern | None:
    phrases = sorted(set(phrases), key=len, reverse=True)
    if not phrases:
        return None
    return re.compile("|".join(phrase_regex(p) for p in phrases))


class ContextComponent:
    """spaCy component: finds mentions, decides their state, stores them in ``doc.user_data['mgll_mentions']``.

    Each mention is ``(label, start_char, end_char, state, trigger, sentence_start, sentence_end)``.
    """

    def __init__(self, ontology: Ontology, rules: ContextRules, skip_sections: tuple[str, ...]):
        self.ontology = ontology
        self.rules = rules
        self.skip_sections = frozenset(skip_sections)
        self.header_map = load_header_map()
        self.matchers = [
            _LabelMatcher(d.name, _alternation(d.synonyms), _alternation(d.exclude)) for d in ontology.label_defs
        ]
        self.matchers = [m for m in self.matchers if m.pattern is not None]
        other = _alternation(ontology.other_findings)
        if other is not None:
            self.matchers.append(_LabelMatcher("__other__", other, None))
        self.implications = [(frozenset(i.phrases), i.label, i.state) for i in ontology.implications]

    def __call__(self, doc: Doc) -> Doc:
        text = doc.text
        lower = text.lower()
        if len(lower) != len(text):  # a few characters lower-case to two; keep offsets aligned
            lower = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
        boundaries = [0]
        for sentence in doc.sents:
            boundaries.append(sentence.start_char)
        skipped: list[tuple[int, int]] = []
        has_body = False
        for section in split_sections(text, self.header_map):
            boundaries.append(section.start)
            if section.name in self.skip_sections:
                skipped.append((section.start, section.end))
            elif not has_body and _WORDISH.search(section.text):
                has_body = True
        doc.user_data["mgll_has_body"] = has_body
        boundaries = sorted(set(boundaries))
        mentions = []
        for matcher in self.matchers:
            excluded = [m.span() for m in matcher.exclude.finditer(lower)] if matcher.exclude else []
            for match in matcher.pattern.finditer(lower):
                start, end = match.span()
                if any(s < end and start < e for s, e in excluded):
                    continue
                if any(s <= start < e for s, e in skipped):
                    continue
                mentions.append((matcher.label, start, end))
        found = []
        if mentions:
            triggers = self._triggers(lower)
            for label, start, end in mentions:
                index = bisect.bisect_right(boundaries, start) - 1
                sentence_start = boundaries[index]
                sentence_end = boundaries[index + 1] if index + 1 < len(boundaries) else len(text)
                state, trigger = self._state(lower, triggers, start, end, sentence_start, sentence_end)
                found.append((label, start, end, state, trigger, sentence_start, sentence_end))
        doc.user_data["mgll_mentions"] = found
        return doc

    def _triggers(self, lower: str) -> list[tuple[int, int, TriggerRule]]:
        # The trigger alternation is tried only where a word could start a trigger: scanning every character
        # with ~300 alternatives costs ~100x more.
        rules, pattern, starts = self.rules.rules, self.rules.pattern, self.rules.first_words
        found, last_end = [], 0
        for word in _CANDIDATE.finditer(lower):
            position = word.start()
            if position < last_end:
                continue
            token = word.group(0)
            if token not in starts and not token.startswith(self.rules.first_prefixes):
                continue
            match = pattern.match(lower, position)
            if match:
                found.append((match.start(), match.end(), rules[match.lastgroup]))
                last_end = match.end()
        return found

    def _state(self, lower, triggers, start, end, sentence_start, sentence_end) -> tuple[int, str | None]:
        """Negation wins over uncertainty (CheXpert order); among same-kind triggers the nearest is reported."""
        found = []
        for t_start, t_end, rule in reversed(triggers):  # pre-triggers, leftwards up to a termination
            if t_end > start or t_start < sentence_start:
                continue
            if rule.kind == "termination":
                break
            if rule.kind == "pseudo" or not rule.pre:
                continue
            if len(lower[t_end:start].split()) <= rule.window:
                found.append((start - t_end, rule))
        for t_start, t_end, rule in triggers:  # post-triggers, rightwards up to a termination
            if t_start < end or t_end > sentence_end:
                continue
            if rule.kind == "termination":
                break
            if rule.kind == "pseudo" or not rule.post:
                continue
            if len(lower[end:t_start].split()) <= min(self.rules.post_window, rule.window + 3):
                found.append((t_start - end, rule))
        if not found:
            return POSITIVE, None
        negations = [f for f in found if f[1].kind == _NEG]
        chosen = min(negations or found, key=lambda f: f[0])[1]
        return (NEGATIVE if chosen.kind == _NEG else UNCERTAIN), chosen.phrase


@Language.factory("mgll_context", default_config={"ontology": "chexpert", "skip_sections": list(SKIPPED_SECTIONS)})
def make_context_component(nlp: Language, name: str, ontology: str, skip_sections: list[str]) -> ContextComponent:
    return ContextComponent(load_ontology(ontology), load_context_rules(), tuple(skip_sections))


class Labeler:
    """``Labeler("chexpert").label(text) -> {label: LabelResult}`` (absent labels are not keys)."""

    def __init__(self, ontology: str | Path = "chexpert", skip_sections: Iterable[str] = SKIPPED_SECTIONS):
        self.ontology = load_ontology(ontology)
        self.nlp = spacy.blank("en")
        self.nlp.add_pipe("sentencizer")
        self.nlp.add_pipe(
            "mgll_context", config={"ontology": str(ontology), "skip_sections": list(skip_sections)}
        )
        self.nlp.max_length = max(self.nlp.max_length, _MAX_CHARS + 1)
        self.warnings: dict[str, int] = {}

    @property
    def labels(self) -> list[str]:
        return self.ontology.labels

    def _prepare(self, text) -> str:
        warnings: list[str] = []
        try:
            prepared = blank_markup(decode_report(text, warnings), warnings)
        except TypeError:
            warnings.append("not_text")
            prepared = ""
        if len(prepared) > _MAX_CHARS:
            warnings.append("truncated_for_labelling")
            prepared = prepared[:_MAX_CHARS]
        if not prepared.strip():
            warnings.append("empty_report")
        for warning in warnings:
            self.warnings[warning] = self.warnings.get(warning, 0) + 1
        return prepared

    def label(self, text: str | bytes | None) -> dict[str, LabelResult]:
        return next(iter(self.pipe([text])))

    def pipe(self, texts: Iterable[str | bytes | None], batch_size: int = 256) -> Iterator[dict[str, LabelResult]]:
        prepared = (self._prepare(t) for t in texts)
        for doc in self.nlp.pipe(prepared, batch_size=batch_size):
            yield self._aggregate(doc)

    def _aggregate(self, doc: Doc) -> dict[str, LabelResult]:
        text = doc.text
        results: dict[str, LabelResult] = {}
        other_finding = False
        for label, start, end, state, trigger, s_start, s_end in doc.user_data.get("mgll_mentions", []):
            mention = text[start:end]
            evidence = Evidence(
                sentence=text[s_start:s_end].strip(), start=start, end=end, mention=mention, trigger=trigger, state=state
            )
            if label == "__other__":
                other_finding |= state in (POSITIVE, UNCERTAIN)
                continue
            self._add(results, label, state, evidence)
            if state in (POSITIVE, UNCERTAIN):
                lowered = re.sub(r"[\s\-]+", " ", mention.lower())
                for phrases, implied_label, implied_state in self._implications:
                    if lowered in phrases and implied_label != label:
                        self._add(results, implied_label, implied_state, evidence)
        no_finding = self.ontology.no_finding
        if no_finding and doc.user_data.get("mgll_has_body"):
            ignored = {no_finding, *self.ontology.no_finding_ignores}
            finding = other_finding or any(
                r.state in (POSITIVE, UNCERTAIN) for name, r in results.items() if name not in ignored
            )
            if not finding:
                results[no_finding] = LabelResult(POSITIVE, [])
            else:
                results.pop(no_finding, None)
        return {name: results[name] for name in self.labels if name in results}

    @property
    def _implications(self):
        return self.nlp.get_pipe("mgll_context").implications

    @staticmethod
    def _add(results: dict[str, LabelResult], label: str, state: int, evidence: Evidence) -> None:
        current = results.get(label)
        if current is None:
            results[label] = LabelResult(state, [evidence])
            return
        current.evidence.append(evidence)
        if state == POSITIVE or (state == UNCERTAIN and current.state == NEGATIVE):
            current.state = state
