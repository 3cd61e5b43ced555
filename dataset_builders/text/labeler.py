"""Rule-based report labeler: ontology mentions + ConText-style negation/uncertainty + CheXpert aggregation.

A spaCy 3.8 pipeline (``spacy.blank("en")`` + the ``mgll_context`` component defined here):
  * sentences: spaCy's sentencizer rule, applied to the token arrays (no per-token Python objects),
  * mentions: the ontology's synonyms per label (``exclude`` phrases veto) and the triggers of
    ``context_rules.yaml``, all found in one pass over the words of the report by a ``PhraseScanner``: a
    first-word index picks, per word, the few phrases that can start there, so no alternation is tried at a
    word that cannot start it. Within a phrase set the first phrase listed wins (longest first), so
    pseudo-triggers ("no change") hide the negations they contain and "cannot exclude" is uncertainty,
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
from typing import Iterable, Iterator, Sequence

import spacy
import yaml
from spacy.attrs import IDX, IS_PUNCT, ORTH
from spacy.language import Language
from spacy.pipeline import Sentencizer
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
_LEADING_WORD = re.compile(r"\w+")
# Paragraph breaks and new list items end every scope, like a sentence end.
_BREAK_SOURCE = r"\n[ \t]*\n|\n(?=[ \t]*\(?\d{1,2}[.)]\s)"
_MEMO_LIMIT = 200_000
TEXT_KEY = "mgll_text"  # doc.user_data key holding the doc's text
_TRIGGER_START = r"(?<![\w\-/])"  # a trigger never starts inside a hyphenated or slashed word
GAP = "..."
# Up to three words of one clause, none of which negates or normalises what the phrase says.
_GAP_SOURCE = r"(?:[\s\-]+(?!(?:no|not|nor|non|without|never|normal|upper|top|within)\b)[\w/]+){0,3}"


def phrase_regex(phrase: str, word_start: str = r"(?<![\w])") -> str:
    """Lower-case phrase -> regex source: words joined by any spaces/hyphens, ``*`` = any word ending,
    ``...`` = up to three words that do not negate ("heart ... enlarged": "heart size is mildly enlarged").

    ``word_start`` guards a phrase that starts with a word (triggers use a stricter guard: "age-indeterminate
    fracture" is not uncertain)."""
    words = phrase.strip().split()
    if words[0] == GAP or words[-1] == GAP:
        raise ValueError(f"phrase {phrase!r}: {GAP!r} (a gap of up to three words) may only stand between words")
    body = ""
    for word in words:
        if word == GAP:
            body += _GAP_SOURCE
            continue
        if body:
            body += r"[\s\-]+"
        if word.endswith("*") and len(word) > 1:
            body += re.escape(word[:-1]) + r"[\w\-]*"
        else:
            body += re.escape(word)
    if re.match(r"\w", phrase):
        body = word_start + body
    if re.search(r"[\w*]$", phrase):
        body = body + r"(?![\w])"
    return body


def _start_key(phrase: str) -> tuple[str, bool]:
    """What text a phrase can start at: (its leading word, True when that word ends in the ``*`` wildcard),
    or (its first character, False) for a phrase that starts with punctuation or a newline."""
    leading = _LEADING_WORD.match(phrase)
    if not leading:
        return phrase[0], False
    word = leading.group(0)
    return word, phrase.split()[0] == word + "*"


class PhraseScanner:
    """Finds, for several ordered phrase sets at once, what ``re.finditer("|".join(set))`` finds in each set:
    leftmost, non-overlapping matches, the earlier-listed phrase winning at a position.

    Every phrase regex starts at a word start (or at its own leading punctuation), so the alternation of a set
    only has to be tried where the word there equals a phrase's leading word (or begins with a wildcard stem);
    the sub-alternation of the phrases that can start at a given word is compiled once and memoised per word.
    """

    def __init__(self, phrase_sets: Sequence[Sequence[tuple[str, str]]]):
        """``phrase_sets``: per set, ordered ``(phrase, regex source)`` pairs; the phrase gives the start key."""
        self.sets = [list(s) for s in phrase_sets]
        self._exact: dict[str, list[tuple[int, int]]] = {}
        self._stems: list[tuple[str, int, int]] = []
        punctuation = set()
        for set_index, phrases in enumerate(self.sets):
            for phrase_index, (phrase, _source) in enumerate(phrases):
                key, wildcard = _start_key(phrase)
                if wildcard:
                    self._stems.append((key, set_index, phrase_index))
                else:
                    self._exact.setdefault(key, []).append((set_index, phrase_index))
                    if not _LEADING_WORD.match(key):
                        punctuation.add(key)
        self._stem_prefixes = tuple({stem for stem, _, _ in self._stems})
        self._candidates = re.compile(r"\w+" + "".join(f"|{re.escape(p)}" for p in sorted(punctuation)))
        self._memo: dict[str, list[tuple[int, re.Pattern, list[int]]]] = {}
        self._compiled: dict[tuple[int, tuple[int, ...]], re.Pattern] = {}

    def _plan(self, word: str) -> list[tuple[int, re.Pattern, list[int]]]:
        """Per phrase set that has phrases able to start at ``word``: (set, their sub-alternation, phrase indexes)."""
        chosen: dict[int, set[int]] = {}
        for set_index, phrase_index in self._exact.get(word, ()):
            chosen.setdefault(set_index, set()).add(phrase_index)
        if self._stem_prefixes and word.startswith(self._stem_prefixes):
            for stem, set_index, phrase_index in self._stems:
                if word.startswith(stem):
                    chosen.setdefault(set_index, set()).add(phrase_index)
        plan = []
        for set_index in sorted(chosen):
            indexes = tuple(sorted(chosen[set_index]))
            pattern = self._compiled.get((set_index, indexes))
            if pattern is None:
                sources = [self.sets[set_index][i][1] for i in indexes]
                pattern = re.compile("|".join(f"({source})" for source in sources))
                self._compiled[(set_index, indexes)] = pattern
            plan.append((set_index, pattern, list(indexes)))
        return plan

    def scan(self, lower: str) -> list[list[tuple[int, int, int]]]:
        """Per phrase set, the ``(start, end, phrase index)`` of its matches in ``lower``."""
        found: list[list[tuple[int, int, int]]] = [[] for _ in self.sets]
        last_end = [0] * len(self.sets)
        memo = self._memo
        for candidate in self._candidates.finditer(lower):
            word = candidate.group(0)
            plan = memo.get(word)
            if plan is None:
                if len(memo) > _MEMO_LIMIT:
                    memo.clear()
                plan = memo[word] = self._plan(word)
            if not plan:
                continue
            position = candidate.start()
            for set_index, pattern, indexes in plan:
                if position < last_end[set_index]:
                    continue
                match = pattern.match(lower, position)
                if match:
                    found[set_index].append((position, match.end(), indexes[match.lastindex - 1]))
                    last_end[set_index] = match.end()
        return found


@dataclass(frozen=True)
class TriggerRule:
    phrase: str
    kind: str  # negation | uncertainty | pseudo | termination
    pre: bool
    post: bool
    window: int  # pre-window in words (post uses the rules' post window or this when shorter)


@dataclass
class ContextRules:
    triggers: list[TriggerRule]  # in match priority order (longest phrase first), the break rule last
    sources: list[str]  # regex source per trigger
    pre_window: int
    post_window: int


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
    triggers, sources = [], []
    for phrase in sorted(table, key=lambda p: (-len(p), p)):
        entry = table[phrase]
        window = short_window if phrase in short else pre_window
        triggers.append(TriggerRule(phrase, entry["kind"], entry["pre"], entry["post"], window))
        sources.append(phrase_regex(phrase, word_start=_TRIGGER_START))
    triggers.append(TriggerRule("\n", "termination", False, False, 0))
    sources.append(_BREAK_SOURCE)
    return ContextRules(triggers, sources, pre_window, post_window)


@dataclass
class LabelResult:
    state: int
    evidence: list[Evidence] = field(default_factory=list)


def _phrase_set(phrases: Iterable[str]) -> list[tuple[str, str]]:
    """Longest phrase first (ties alphabetical), as (phrase, regex source)."""
    return [(p, phrase_regex(p)) for p in sorted(set(phrases), key=lambda p: (-len(p), p))]


_SENTENCE_PUNCT = frozenset(Sentencizer.default_punct_chars)


class ContextComponent:
    """spaCy component: finds mentions, decides their state, stores them in ``doc.user_data['mgll_mentions']``.

    Each mention is ``(label, start_char, end_char, state, trigger, sentence_start, sentence_end)``.
    """

    def __init__(self, ontology: Ontology, rules: ContextRules, skip_sections: tuple[str, ...]):
        self.ontology = ontology
        self.rules = rules
        self.skip_sections = frozenset(skip_sections)
        self.header_map = load_header_map()
        # Phrase sets: 0 = triggers, then per label (mentions, exclusions), then "other findings".
        sets: list[list[tuple[str, str]]] = [list(zip((r.phrase for r in rules.triggers), rules.sources))]
        self.label_sets: list[tuple[str, int, int | None]] = []  # (label, mention set, exclusion set or None)
        for definition in ontology.label_defs:
            if not definition.synonyms:
                continue
            sets.append(_phrase_set(definition.synonyms))
            mention_set = len(sets) - 1
            exclusion_set = None
            if definition.exclude:
                sets.append(_phrase_set(definition.exclude))
                exclusion_set = len(sets) - 1
            self.label_sets.append((definition.name, mention_set, exclusion_set))
        if ontology.other_findings:
            sets.append(_phrase_set(ontology.other_findings))
            self.label_sets.append(("__other__", len(sets) - 1, None))
        self.scanner = PhraseScanner(sets)
        self.implications = [(frozenset(i.phrases), i.label, i.state) for i in ontology.implications]
        self._punct_hashes: frozenset[int] | None = None

    def _sentence_starts(self, doc: Doc) -> list[int]:
        """Character offsets where spaCy's ``Sentencizer`` (default punctuation) would start sentences; read from
        the token arrays, since creating a Python ``Token`` per word costs more than all the matching."""
        if self._punct_hashes is None:
            self._punct_hashes = frozenset(doc.vocab.strings.add(c) for c in _SENTENCE_PUNCT)
        punct_hashes = self._punct_hashes
        starts = [0]
        seen_period = False
        for orth, is_punct, offset in doc.to_array([ORTH, IS_PUNCT, IDX]).tolist():
            if orth in punct_hashes:
                seen_period = True
            elif seen_period and not is_punct:
                starts.append(offset)
                seen_period = False
        return starts

    def __call__(self, doc: Doc) -> Doc:
        text = doc.user_data.get(TEXT_KEY)
        if text is None:  # ``Doc.text`` re-joins every token: skipped when the caller passed the text along
            text = doc.user_data[TEXT_KEY] = doc.text
        lower = text.lower()
        if len(lower) != len(text):  # a few characters lower-case to two; keep offsets aligned
            lower = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
        boundaries = self._sentence_starts(doc)
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
        found_sets = self.scanner.scan(lower)
        mentions = []
        for label, mention_set, exclusion_set in self.label_sets:
            excluded = found_sets[exclusion_set] if exclusion_set is not None else ()
            for start, end, _ in found_sets[mention_set]:
                if excluded and any(s < end and start < e for s, e, _ in excluded):
                    continue
                if skipped and any(s <= start < e for s, e in skipped):
                    continue
                mentions.append((label, start, end))
        found = []
        if mentions:
            rules = self.rules.triggers
            triggers = [(s, e, rules[i]) for s, e, i in found_sets[0]]
            for label, start, end in mentions:
                index = bisect.bisect_right(boundaries, start) - 1
                sentence_start = boundaries[index]
                sentence_end = boundaries[index + 1] if index + 1 < len(boundaries) else len(text)
                state, trigger = self._state(lower, triggers, start, end, sentence_start, sentence_end)
                found.append((label, start, end, state, trigger, sentence_start, sentence_end))
        doc.user_data["mgll_mentions"] = found
        return doc

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
        self._labels = list(self.ontology.labels)
        self.nlp = spacy.blank("en")
        self.nlp.add_pipe(
            "mgll_context", config={"ontology": str(ontology), "skip_sections": list(skip_sections)}
        )
        self.nlp.max_length = max(self.nlp.max_length, _MAX_CHARS + 1)
        self.warnings: dict[str, int] = {}
        self._implications = self.nlp.get_pipe("mgll_context").implications
        self._no_finding = self.ontology.no_finding
        self._no_finding_ignored = {self._no_finding, *self.ontology.no_finding_ignores}

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

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
        for doc in self.nlp.pipe((self._make_doc(t) for t in texts), batch_size=batch_size):
            yield self._aggregate(doc)

    def _make_doc(self, text) -> Doc:
        prepared = self._prepare(text)
        doc = self.nlp.make_doc(prepared)
        doc.user_data[TEXT_KEY] = prepared
        return doc

    def _aggregate(self, doc: Doc) -> dict[str, LabelResult]:
        text = doc.user_data[TEXT_KEY]
        results: dict[str, LabelResult] = {}
        other_finding = False
        for label, start, end, state, trigger, s_start, s_end in doc.user_data.get("mgll_mentions", []):
            if label == "__other__":
                other_finding |= state in (POSITIVE, UNCERTAIN)
                continue
            mention = text[start:end]
            evidence = Evidence(
                sentence=text[s_start:s_end].strip(), start=start, end=end, mention=mention, trigger=trigger, state=state
            )
            self._add(results, label, state, evidence)
            if state in (POSITIVE, UNCERTAIN):
                lowered = re.sub(r"[\s\-]+", " ", mention.lower())
                for phrases, implied_label, implied_state in self._implications:
                    if lowered in phrases and implied_label != label:
                        self._add(results, implied_label, implied_state, evidence)
        no_finding = self._no_finding
        if no_finding and doc.user_data.get("mgll_has_body"):
            ignored = self._no_finding_ignored
            finding = other_finding or any(
                r.state in (POSITIVE, UNCERTAIN) for name, r in results.items() if name not in ignored
            )
            if not finding:
                results[no_finding] = LabelResult(POSITIVE, [])
            else:
                results.pop(no_finding, None)
        return {name: results[name] for name in self._labels if name in results}

    @staticmethod
    def _add(results: dict[str, LabelResult], label: str, state: int, evidence: Evidence) -> None:
        current = results.get(label)
        if current is None:
            results[label] = LabelResult(state, [evidence])
            return
        current.evidence.append(evidence)
        if state == POSITIVE or (state == UNCERTAIN and current.state == NEGATIVE):
            current.state = state
