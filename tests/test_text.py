"""Unit tests of the text stage: ontologies, section splitter, composer, labeler, CLIs, hostile input."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dataset_builders.text.compose import compose_texts
from dataset_builders.text.labeler import Labeler
from dataset_builders.text.ontology import OntologyError, load_ontology
from dataset_builders.text.sections import split_sections
from mgll.cli import app


@pytest.fixture(scope="module")
def chexpert() -> Labeler:
    return Labeler("chexpert")


def test_builtin_ontologies_and_grades():
    assert len(load_ontology("chexpert").labels) == 14
    nih = load_ontology("nih")
    assert len(nih.labels) == 15 and "No Finding" in nih.labels
    fundus = load_ontology("fundus")
    assert {"Diabetic Retinopathy", "Glaucoma", "Drusen", "Media Haze"} <= set(fundus.labels)
    grades = [fundus.describe("Diabetic Retinopathy", g) for g in range(5)]
    assert len(set(grades)) == 5 and "Proliferative" in grades[4]
    assert fundus.describe("Glaucoma").startswith("Glaucomatous")
    with pytest.raises(KeyError, match="no grade 7"):
        fundus.describe("Diabetic Retinopathy", 7)
    with pytest.raises(OntologyError, match="unknown ontology 'nope'"):
        load_ontology("nope")


def test_new_label_in_yaml_is_picked_up(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(
        "name: custom\nno_finding: Normal\nlabels:\n"
        "  - {name: Normal, description: nothing, synonyms: []}\n"
        "  - {name: Widget Sign, description: a made-up sign, synonyms: [widget sign*, gizmo]}\n"
    )
    labeler = Labeler(path)
    assert labeler.labels == ["Normal", "Widget Sign"]
    assert labeler.label("There is a widget sign in the apex.")["Widget Sign"].state == 1
    assert labeler.label("No gizmo.")["Widget Sign"].state == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlabels:\n  - {name: A, synonyms: [x]}\n")
    with pytest.raises(OntologyError, match="description"):
        load_ontology(bad)


@pytest.mark.parametrize(
    "text",
    [
        "FINDINGS: Heart normal.\nIMPRESSION: No acute disease.",
        "Findings\nHeart normal.\n\nImpression\nNo acute disease.",
        "findings: Heart normal. impression: No acute disease.",
        "   FINAL REPORT\n   FINDINGS:  Heart normal.\n   IMPRESSION:\n   No acute disease.",
        "1. FINDINGS: Heart normal.\n2. IMPRESSION: No acute disease.",
        "FINDINGS HEART NORMAL.\nIMPRESSION NO ACUTE DISEASE.",
        "Findings - Heart normal. CONCLUSION: No acute disease.",
    ],
)
def test_split_sections_layouts(text):
    sections = {s.name: s for s in split_sections(text)}
    assert sections["findings"].text.lower() == "heart normal."
    assert sections["impression"].text.lower() == "no acute disease."
    for section in sections.values():
        assert text[section.start : section.end] == section.text


def test_split_sections_without_headers_and_prose():
    assert split_sections("") == [] and split_sections("  \n ") == []
    (body,) = split_sections("History of CHF. Lungs clear.")
    assert body.name == "body" and body.text == "History of CHF. Lungs clear."


def test_compose_strips_boilerplate_and_deid_and_keeps_spans():
    report = (
        "INDICATION: cough\nFINDINGS: The heart is normal. There are no XXXX of effusion.\n"
        "IMPRESSION: No acute disease. Dictated by Dr. Somebody."
    )
    composed = compose_texts(report, modality_text="Chest X-ray, PA view")
    assert composed.diagnosis == "No acute disease."
    assert composed.explanation == "The heart is normal. There are no of effusion."
    assert composed.modality == "Chest X-ray, PA view"
    assert "XXXX" not in composed.explanation and "cough" not in composed.explanation + composed.diagnosis
    (span,) = composed.spans["diagnosis"]
    assert report[span[0] : span[1]] == "No acute disease."


def test_compose_headerless_uses_sentence_judgement():
    composed = compose_texts("The heart is normal in size. The lungs are clear. No acute cardiopulmonary abnormality.")
    assert composed.diagnosis == "No acute cardiopulmonary abnormality."
    assert composed.explanation == "The heart is normal in size. The lungs are clear."
    assert "no_sections" in composed.warnings


def test_compose_truncates_at_sentence_end():
    sentences = " ".join(f"Finding number {i} is stable." for i in range(40))
    composed = compose_texts("FINDINGS: " + sentences + " IMPRESSION: Stable.", max_words=20)
    assert len(composed.explanation.split()) <= 20 and composed.explanation.endswith(".")
    assert "truncated:explanation" in composed.warnings


@pytest.mark.parametrize(
    "report, warning",
    [
        ("", "empty_report"),
        ("   \n\t ", "empty_report"),
        (None, "empty_report"),
        ("IMPRESSION:", "header_only"),
        (b"FINDINGS: caf\xe9 \xff lungs clear. IMPRESSION: Normal.", "non_utf8_bytes"),
        ("<html><body><p>FINDINGS: Lungs clear.</p><p>IMPRESSION: Normal.</p></body></html>", "markup_removed"),
        (r"{\rtf1\ansi FINDINGS: Lungs clear. \par IMPRESSION: Normal.}", "rtf_removed"),
        ("FINDINGS: " + "Lungs clear. " * 8000 + "IMPRESSION: Normal.", "truncated:explanation"),
    ],
)
def test_hostile_reports_give_defined_output(report, warning, chexpert):
    composed = compose_texts(report)
    assert warning in composed.warnings
    assert "<" not in composed.diagnosis and "\\rtf" not in composed.explanation
    labels = chexpert.label(report)
    if warning in ("empty_report", "header_only"):
        assert composed.diagnosis == composed.explanation == "" and labels == {}


@pytest.mark.parametrize(
    "text, label, state",
    [
        ("Small left pleural effusion.", "Pleural Effusion", 1),
        ("No pleural effusion or pneumothorax.", "Pneumothorax", 0),
        ("Pneumothorax is not seen.", "Pneumothorax", 0),
        ("Possible right lower lobe pneumonia.", "Pneumonia", -1),
        ("Pneumonia cannot be excluded.", "Pneumonia", -1),
        ("No definite pneumothorax.", "Pneumothorax", -1),
        ("No change in the left effusion.", "Pleural Effusion", 1),
        ("No pneumothorax, but there is a small effusion.", "Pleural Effusion", 1),
        ("Heart size is normal.", "Cardiomegaly", 0),
        ("Mild cardiomegaly.", "Cardiomegaly", 1),
        ("Pericardial effusion.", "Pleural Effusion", None),
        ("INDICATION: pneumonia?\nFINDINGS: Lungs clear.", "Pneumonia", None),
    ],
)
def test_negation_uncertainty_scope(text, label, state, chexpert):
    result = chexpert.label(text)
    assert (result[label].state if label in result else None) == state


def test_aggregation_and_evidence(chexpert):
    text = "No effusion. Small right effusion. Likely atelectasis, possibly pneumonia. CHF."
    result = chexpert.label(text)
    assert result["Pleural Effusion"].state == 1  # positive wins
    assert result["Pneumonia"].state == -1
    assert result["Cardiomegaly"].state == -1  # CHF implies uncertain cardiomegaly (CheXpert rule)
    assert "No Finding" not in result
    for evidence in result["Pleural Effusion"].evidence:
        assert text[evidence.start : evidence.end].lower() == evidence.mention.lower()
        assert evidence.mention.lower() in evidence.sentence.lower()
    assert {e.trigger for e in result["Pleural Effusion"].evidence} == {"no", None}
    normal = chexpert.label("Lungs are clear. Tube in place.")
    assert normal["No Finding"].state == 1 and normal["Support Devices"].state == 1  # devices do not block it
    assert list(chexpert.pipe(["", "Cardiomegaly."], batch_size=1))[1]["Cardiomegaly"].state == 1


def test_cli_sections_and_label(tmp_path):
    csv_path = tmp_path / "reports.csv"
    csv_path.write_bytes(
        b'id,text\na,"FINDINGS: Heart size normal.\nIMPRESSION: Small left effusion."\nb,\nc,"\xff caf\xe9 cardiomegaly"\n'
    )
    runner = CliRunner()
    out = tmp_path / "sections.parquet"
    result = runner.invoke(app, ["sections", "--input", str(csv_path), "--output", str(out)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pylist()
    assert [r["id"] for r in table] == ["a", "b", "c"]
    assert table[0]["diagnosis"] == "Small left effusion." and table[0]["explanation"] == "Heart size normal."
    assert json.loads(table[0]["sections"])[0]["name"] == "findings"
    jsonl = tmp_path / "reports.jsonl"
    jsonl.write_text('{"id": "x", "text": "No pneumothorax. Possible pneumonia."}\nnot json\n')
    out = tmp_path / "labels.parquet"
    result = runner.invoke(app, ["label", "--ontology", "chexpert", "--input", str(jsonl), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "malformed_jsonl_line: 1" in result.output
    (row,) = pq.read_table(out).to_pylist()
    assert row["Pneumothorax"] == 0 and row["Pneumonia"] == -1 and row["Edema"] is None
    assert json.loads(row["evidence"])["Pneumonia"][0]["trigger"] == "possible"


def test_cli_rejects_bad_input(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("report,body\n1,x\n")
    result = CliRunner().invoke(app, ["label", "--input", str(bad), "--output", str(tmp_path / "o.parquet")])
    assert result.exit_code == 2 and "needs columns 'id' and 'text'" in result.output
    result = CliRunner().invoke(app, ["label", "--ontology", "nope", "--input", str(bad), "--output", str(tmp_path / "o.parquet")])
    assert result.exit_code == 2 and "unknown ontology" in result.output


def _random_report(rng, vocabulary: list[str]) -> str:
    pieces = []
    for _ in range(rng.randint(5, 60)):
        pieces.append(rng.choice(vocabulary))
        pieces.append(rng.choice([" ", " ", " ", "-", "/", ". ", ", ", "; ", ": ", "\n", "\n\n", "? "]))
    return "".join(pieces)


def test_phrase_scanner_finds_what_finditer_finds():
    """The first-word index must not change what the alternations match (leftmost-first, non-overlapping)."""
    import random
    import re

    from dataset_builders.text.labeler import PhraseScanner, load_context_rules, phrase_regex

    rules = load_context_rules()
    sets = [list(zip((r.phrase for r in rules.triggers), rules.sources))]
    for phrases in (["nodul*", "nodule", "pleural effusion", "effusion*", "r/o", "heart ... enlarged", "mass"],
                    ["no", "no evidence of", "not", "?", ";", "non-enlarged", "top normal"]):
        sets.append([(p, phrase_regex(p)) for p in phrases])
    scanner = PhraseScanner(sets)
    words = ("no not evidence of nodule nodules nodular pleural effusion effusions r o heart size is mildly enlarged "
             "normal top non enlarged mass masses massive cannot exclude possible there is but x2 3cm").split()
    rng = random.Random(7)
    for _ in range(300):
        text = _random_report(rng, words)
        found = scanner.scan(text)
        for index, phrases in enumerate(sets):
            alternation = re.compile("|".join(f"(?:{source})" for _, source in phrases))
            assert [(s, e) for s, e, _ in found[index]] == [m.span() for m in alternation.finditer(text)], text
            for start, end, phrase_index in found[index]:
                assert re.compile(phrases[phrase_index][1]).match(text, start).end() == end


def test_sentence_starts_match_spacy_sentencizer():
    import spacy

    labeler = Labeler("chexpert")
    component = labeler.nlp.get_pipe("mgll_context")
    reference = spacy.blank("en")
    reference.add_pipe("sentencizer")
    texts = ["", "No effusion.", "FINDINGS: Heart normal.\nIMPRESSION: No acute disease. (See above.) Dr. X ok!",
             ".. Lungs clear?! Yes. 1.5 cm nodule. \"Quoted.\" Next", "...", "a\n\nb. c"]
    for text in texts:
        expected = sorted({0} | {s.start_char for s in reference(text).sents})
        assert sorted(set(component._sentence_starts(labeler.nlp.make_doc(text)))) == expected, text


def test_header_index_finds_what_the_header_regex_finds():
    from dataset_builders.text.sections import _header_matches, load_header_map

    header_map = load_header_map()
    text = ("Clinical history: cough. FINDINGS: lungs clear.\n  IMPRESSION - normal. Comparison/none; "
            "findings and impression: ok. RECOMMENDATIONS follow-up. pre-findings x/impression")
    assert [m.span() for m in _header_matches(text, header_map)] == [m.span() for m in header_map.pattern.finditer(text)]


def test_gap_phrases_and_openi_conventions():
    nih = Labeler("nih")
    assert nih.label("Heart size is mildly enlarged.")["Cardiomegaly"].state == 1
    assert nih.label("The heart is borderline enlarged.")["Cardiomegaly"].state == 1
    assert "Cardiomegaly" not in nih.label("Heart size is upper limits of normal.")
    assert nih.label("Heart size is not enlarged.").get("Cardiomegaly") is None
    assert nih.label("Hyperexpanded lungs, suggestive of emphysema.")["Emphysema"].state == -1
    assert nih.label("Findings most suggestive of pulmonary edema.")["Edema"].state == 1
    assert nih.label("Mild fissural thickening.")["Pleural_Thickening"].state == 1
    assert "Emphysema" not in nih.label("Subcutaneous emphysema in the neck.")
    with pytest.raises(ValueError, match="may only stand between words"):
        from dataset_builders.text.labeler import phrase_regex

        phrase_regex("... enlarged")
