"""Synthetic chest X-ray findings (CheXpert-14, with realistic co-occurrence) and the reports that describe them.

Findings are drawn from a few latent clinical states (heart failure, infection, intensive care, trauma) so that
labels co-occur the way they do in real corpora: effusion with cardiomegaly and edema, pneumonia with consolidation
and opacity, support devices with atelectasis and effusion. Each positive finding carries the details the image
renderer draws (side, lobe, severity, size), and the report sentences name the same details.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
# Labels that make a study abnormal; "No Finding" is positive when none of them is positive or uncertain
# (Support Devices do not count, as in CheXpert).
PATHOLOGY_LABELS = tuple(l for l in CHEXPERT_LABELS if l not in ("No Finding", "Support Devices"))

# lobe -> (x, y) centre in image coordinates (0..1, image left = patient right on a frontal view)
LOBES: dict[str, tuple[float, float]] = {
    "right upper lobe": (0.31, 0.32),
    "right middle lobe": (0.28, 0.52),
    "right lower lobe": (0.30, 0.66),
    "left upper lobe": (0.69, 0.32),
    "lingula": (0.73, 0.52),
    "left lower lobe": (0.71, 0.68),
}
SEVERITY_WORDS = {1: "small", 2: "moderate", 3: "large"}
GRADE_WORDS = {1: "mild", 2: "moderate", 3: "severe"}


@dataclass
class Finding:
    label: str
    severity: int = 1  # 1..3, drawn bigger/brighter in pixels
    side: str = ""  # "right" | "left" | "bilateral" | ""
    lobe: str = ""
    size_mm: int = 0  # nodules
    device: str = ""  # support devices
    rendered: bool = True  # uncertain findings are drawn faintly or not at all

    def as_json(self) -> dict:
        out = {"severity": self.severity}
        for key in ("side", "lobe", "size_mm", "device"):
            value = getattr(self, key)
            if value:
                out[key] = value
        out["rendered"] = self.rendered
        return out


@dataclass
class StudyFindings:
    positive: dict[str, Finding] = field(default_factory=dict)
    uncertain: dict[str, Finding] = field(default_factory=dict)
    negated: list[str] = field(default_factory=list)

    def drawn(self) -> list[Finding]:
        """Findings visible in the pixels (positives, plus uncertain ones drawn faintly)."""
        return list(self.positive.values()) + [f for f in self.uncertain.values() if f.rendered]

    def details_json(self) -> dict:
        return {
            **{k: v.as_json() for k, v in self.positive.items()},
            **{k: {**v.as_json(), "uncertain": True} for k, v in self.uncertain.items()},
        }


def _side(rng: np.random.Generator, p_bilateral: float = 0.0) -> str:
    if rng.random() < p_bilateral:
        return "bilateral"
    return "right" if rng.random() < 0.5 else "left"


def _lobe(rng: np.random.Generator, side: str = "") -> str:
    names = [n for n in LOBES if not side or n.startswith(side) or (side == "left" and n == "lingula")]
    return names[int(rng.integers(len(names)))]


def sample_chronic_findings(rng: np.random.Generator) -> list[Finding]:
    """Findings a patient carries into every study (so the same patient's images resemble each other)."""
    chronic = []
    if rng.random() < 0.08:
        chronic.append(Finding("Cardiomegaly", int(rng.integers(1, 4))))
    if rng.random() < 0.03:
        chronic.append(Finding("Support Devices", 1, device="cardiac pacemaker"))
    if rng.random() < 0.02:
        chronic.append(Finding("Lung Lesion", 1, lobe=_lobe(rng), size_mm=int(rng.integers(6, 31))))
    return chronic


def sample_findings(rng: np.random.Generator, portable: bool, chronic: list[Finding] = ()) -> StudyFindings:
    """Draw one study's findings. ``portable`` (AP, often ICU) raises device, effusion and atelectasis rates;
    ``chronic`` findings (``sample_chronic_findings``) are present in every study of the patient."""
    pos: dict[str, Finding] = {f.label: replace(f) for f in chronic}

    def sev(p_mild: float = 0.45, p_mod: float = 0.35) -> int:
        r = rng.random()
        return 1 if r < p_mild else 2 if r < p_mild + p_mod else 3

    heart_failure = rng.random() < (0.24 if portable else 0.14)
    infection = rng.random() < (0.20 if portable else 0.12)
    icu = portable and rng.random() < 0.65
    trauma = rng.random() < 0.05

    if heart_failure:
        if rng.random() < 0.8 and "Cardiomegaly" not in pos:
            pos["Cardiomegaly"] = Finding("Cardiomegaly", sev())
        if rng.random() < 0.6:
            pos["Edema"] = Finding("Edema", sev(), side="bilateral")
        if rng.random() < 0.6:
            pos["Pleural Effusion"] = Finding("Pleural Effusion", sev(), side=_side(rng, 0.45))
        if rng.random() < 0.2:
            pos["Enlarged Cardiomediastinum"] = Finding("Enlarged Cardiomediastinum", sev(0.6, 0.3))
    elif rng.random() < 0.04 and "Cardiomegaly" not in pos:
        pos["Cardiomegaly"] = Finding("Cardiomegaly", 1)
    if infection:
        lobe = _lobe(rng)
        if rng.random() < 0.75:
            pos["Pneumonia"] = Finding("Pneumonia", sev(), lobe=lobe, side=lobe.split()[0] if " " in lobe else "left")
        if rng.random() < 0.7:
            pos["Consolidation"] = Finding("Consolidation", sev(), lobe=lobe)
        if rng.random() < 0.8:
            pos["Lung Opacity"] = Finding("Lung Opacity", sev(), lobe=lobe)
        if rng.random() < 0.25:
            side = "right" if lobe.startswith("right") else "left"
            pos["Pleural Effusion"] = Finding("Pleural Effusion", 1, side=side)
    if icu:
        device = ["endotracheal tube", "central venous catheter", "nasogastric tube"][int(rng.integers(3))]
        pos["Support Devices"] = Finding("Support Devices", 1, device=device)
        if rng.random() < 0.45:
            pos["Atelectasis"] = Finding("Atelectasis", sev(0.6, 0.3), side=_side(rng, 0.4))
        if rng.random() < 0.35 and "Pleural Effusion" not in pos:
            pos["Pleural Effusion"] = Finding("Pleural Effusion", sev(), side=_side(rng, 0.5))
    elif rng.random() < 0.04 and "Support Devices" not in pos:
        pos["Support Devices"] = Finding("Support Devices", 1, device="cardiac pacemaker")
    if "Atelectasis" not in pos and rng.random() < 0.07:
        pos["Atelectasis"] = Finding("Atelectasis", 1, side=_side(rng, 0.3))
    if "Lung Opacity" not in pos and rng.random() < (0.35 if "Edema" in pos or "Atelectasis" in pos else 0.06):
        pos["Lung Opacity"] = Finding("Lung Opacity", sev(0.6, 0.3), lobe=_lobe(rng))
    if trauma or rng.random() < 0.02:
        side = _side(rng)
        pos["Fracture"] = Finding("Fracture", 1, side=side)
        if trauma and rng.random() < 0.4:
            pos["Pneumothorax"] = Finding("Pneumothorax", sev(0.5, 0.35), side=side)
    if "Pneumothorax" not in pos and rng.random() < (0.09 if icu else 0.035):
        pos["Pneumothorax"] = Finding("Pneumothorax", sev(0.5, 0.35), side=_side(rng))
    if rng.random() < 0.04 and "Lung Lesion" not in pos:
        lobe = _lobe(rng)
        pos["Lung Lesion"] = Finding("Lung Lesion", 1, lobe=lobe, size_mm=int(rng.integers(6, 31)))
    if rng.random() < 0.025:
        pos["Pleural Other"] = Finding("Pleural Other", 1, side=_side(rng, 0.2))

    # Some findings are only hedged in the report ("cannot exclude pneumonia"): they move to uncertain and are
    # drawn faintly half of the time.
    out = StudyFindings()
    hedgeable = {"Pneumonia": 0.35, "Atelectasis": 0.2, "Consolidation": 0.15, "Pleural Effusion": 0.12,
                 "Edema": 0.15, "Pneumothorax": 0.08, "Lung Lesion": 0.15, "Fracture": 0.2, "Cardiomegaly": 0.08}
    for label, finding in pos.items():
        if rng.random() < hedgeable.get(label, 0.0):
            finding.severity = 1
            finding.rendered = rng.random() < 0.5
            out.uncertain[label] = finding
        else:
            out.positive[label] = finding
    # A few uncertain mentions of things that are not there at all.
    if rng.random() < 0.05:
        label = ("Pneumonia", "Atelectasis", "Pleural Effusion")[int(rng.integers(3))]
        if label not in pos:
            out.uncertain[label] = Finding(label, 1, side=_side(rng), lobe=_lobe(rng), rendered=False)
    if not any(l in out.positive or l in out.uncertain for l in PATHOLOGY_LABELS):
        out.positive["No Finding"] = Finding("No Finding", 1)
    return out


# ---------------------------------------------------------------------------------------------- report text

def _finding_sentence(f: Finding, rng: np.random.Generator) -> str:
    side = f.side
    s = SEVERITY_WORDS[f.severity]
    g = GRADE_WORDS[f.severity]
    if f.label == "Pleural Effusion":
        if side == "bilateral":
            return f"{s.capitalize()} bilateral pleural effusions with blunting of the costophrenic angles."
        return f"{s.capitalize()} {side} pleural effusion with a fluid level at the {side} base."
    if f.label == "Cardiomegaly":
        return [f"The heart is {g}ly enlarged.", f"{g.capitalize()} cardiomegaly."][int(rng.integers(2))]
    if f.label == "Edema":
        return f"{g.capitalize()} pulmonary edema with perihilar haziness."
    if f.label == "Enlarged Cardiomediastinum":
        return f"The cardiomediastinal silhouette is {g}ly widened."
    if f.label == "Consolidation":
        return f"{s.capitalize()} area of consolidation in the {f.lobe}."
    if f.label == "Lung Opacity":
        return f"{s.capitalize()} patchy opacity in the {f.lobe}."
    if f.label == "Pneumonia":
        return f"Findings in the {f.lobe} are consistent with pneumonia."
    if f.label == "Atelectasis":
        where = "bibasilar" if side == "bilateral" else f"{side} basilar"
        return f"{g.capitalize()} {where} atelectasis."
    if f.label == "Pneumothorax":
        return f"{s.capitalize()} {side} apical pneumothorax with a visible pleural line."
    if f.label == "Fracture":
        return f"Acute fracture of a {side} lateral rib."
    if f.label == "Lung Lesion":
        return f"A {f.size_mm} mm nodule in the {f.lobe}."
    if f.label == "Pleural Other":
        where = "bilateral" if side == "bilateral" else side
        return f"Mild {where} pleural thickening."
    if f.label == "Support Devices":
        tip = {"endotracheal tube": "The endotracheal tube tip is 4 cm above the carina.",
               "central venous catheter": "A right central venous catheter terminates in the superior vena cava.",
               "nasogastric tube": "A nasogastric tube courses below the diaphragm.",
               "cardiac pacemaker": "A left chest wall cardiac pacemaker is present."}
        return tip[f.device]
    raise KeyError(f.label)


_HEDGES = {
    "Pneumonia": ["Cannot exclude pneumonia.", "Possible early pneumonia.",
                  "Infection is not excluded; pneumonia is possible."],
    "Atelectasis": ["Possible subsegmental atelectasis at the {side} base.",
                    "May represent {side} basilar atelectasis."],
    "Consolidation": ["Possible early consolidation in the {lobe}.", "Questionable consolidation in the {lobe}."],
    "Pleural Effusion": ["Possible small {side} pleural effusion.", "Cannot exclude a trace {side} pleural effusion."],
    "Edema": ["Possible mild pulmonary edema.", "Questionable interstitial edema."],
    "Pneumothorax": ["Questionable tiny {side} apical pneumothorax.", "Cannot exclude a small {side} pneumothorax."],
    "Lung Lesion": ["Possible nodule in the {lobe}.", "Questionable nodule in the {lobe}, recommend CT."],
    "Fracture": ["Possible nondisplaced {side} rib fracture.", "Cannot exclude a {side} rib fracture."],
    "Cardiomegaly": ["Possible mild cardiomegaly.", "Borderline cardiomegaly."],
}
_NEGATIONS = {
    "Pneumothorax": ["No pneumothorax.", "There is no pneumothorax."],
    "Pleural Effusion": ["No pleural effusion.", "No pleural effusions."],
    "Consolidation": ["No focal consolidation.", "No consolidation."],
    "Edema": ["No pulmonary edema.", "There is no pulmonary edema."],
    "Cardiomegaly": ["No cardiomegaly.", "Heart size is normal."],
    "Fracture": ["No displaced rib fracture.", "No acute fracture."],
    "Lung Lesion": ["No suspicious pulmonary nodule.", "No pulmonary nodule or mass."],
    "Pneumonia": ["No evidence of pneumonia."],
    "Enlarged Cardiomediastinum": ["No mediastinal widening."],
}
_IMPRESSION_SHORT = {
    "Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Consolidation": "consolidation in the {lobe}",
    "Edema": "pulmonary edema", "Enlarged Cardiomediastinum": "widened cardiomediastinal silhouette",
    "Fracture": "{side} rib fracture", "Lung Lesion": "{size_mm} mm nodule in the {lobe}",
    "Lung Opacity": "opacity in the {lobe}", "Pleural Effusion": "{sev} {side} pleural effusion",
    "Pleural Other": "pleural thickening", "Pneumonia": "pneumonia", "Pneumothorax": "{sev} {side} pneumothorax",
    "Support Devices": "{device} in place",
}


def _fmt(template: str, f: Finding) -> str:
    return template.format(side=f.side or "right", lobe=f.lobe or "right lower lobe", size_mm=f.size_mm,
                           sev=SEVERITY_WORDS[f.severity], device=f.device)


@dataclass
class ReportPHI:
    """PHI strings a report may carry (each recorded verbatim in phi.json when used)."""

    patient_name: str
    mrn: str
    birth_date: str
    study_date: str
    accession: str
    physician: str
    phone: str


def compose_report(findings: StudyFindings, rng: np.random.Generator, phi: ReportPHI | None,
                   view_text: str) -> tuple[str, list[str], list[str]]:
    """Report text, the PHI strings planted in it, and the labels negated in it (in mention order)."""
    planted: list[str] = []
    negated: list[str] = []
    findings_sents: list[str] = []
    for label in CHEXPERT_LABELS:
        if label in findings.positive and label != "No Finding":
            findings_sents.append(_finding_sentence(findings.positive[label], rng))
    for label, f in findings.uncertain.items():
        options = _HEDGES.get(label, [f"Possible {label.lower()}."])
        findings_sents.append(_fmt(options[int(rng.integers(len(options)))], f))

    mentioned = set(findings.positive) | set(findings.uncertain)
    if "No Finding" in findings.positive:
        findings_sents.append("The lungs are clear.")
        for label in ("Cardiomegaly", "Pleural Effusion", "Pneumothorax"):
            options = _NEGATIONS[label]
            findings_sents.append(options[int(rng.integers(len(options)))])
            negated.append(label)
    else:
        candidates = [l for l in _NEGATIONS if l not in mentioned]
        k = int(rng.integers(1, 4))
        for label in [candidates[i] for i in rng.permutation(len(candidates))[:k]]:
            options = _NEGATIONS[label]
            findings_sents.append(options[int(rng.integers(len(options)))])
            negated.append(label)
    if rng.random() < 0.3:
        findings_sents.append("The osseous structures are unremarkable." if "Fracture" not in mentioned
                              else "Degenerative changes of the spine.")

    impression_items: list[str] = []
    if "No Finding" in findings.positive:
        impression_items.append(["No acute cardiopulmonary process.", "Normal chest radiograph.",
                                 "No acute cardiopulmonary abnormality."][int(rng.integers(3))])
    else:
        for label in CHEXPERT_LABELS:
            if label in findings.positive and label != "No Finding":
                impression_items.append(_fmt(_IMPRESSION_SHORT[label], findings.positive[label]).capitalize() + ".")
        for label, f in findings.uncertain.items():
            impression_items.append(f"Possible {_fmt(_IMPRESSION_SHORT.get(label, label.lower()), f)}.")

    style = int(rng.choice(5, p=[0.3, 0.2, 0.2, 0.1, 0.2]))
    numbered = style == 2 or (len(impression_items) > 1 and rng.random() < 0.3)
    impression = (
        "\n".join(f"{i}. {item}" for i, item in enumerate(impression_items, 1))
        if numbered
        else " ".join(impression_items)
    )
    body = " ".join(findings_sents)
    header_lines = [f"EXAMINATION: {view_text}"]
    if rng.random() < 0.5:
        header_lines.append(["INDICATION: Shortness of breath.", "INDICATION: ___ with cough and fever.",
                             "CLINICAL HISTORY: Chest pain.", "INDICATION: Line placement."][int(rng.integers(4))])
    if rng.random() < 0.4:
        header_lines.append(["COMPARISON: None.", "COMPARISON: XXXX.", "COMPARISON: Prior study from ___."]
                            [int(rng.integers(3))])
    if phi is not None:
        header_lines.insert(0, f"Patient: {phi.patient_name}   MRN: {phi.mrn}   DOB: {phi.birth_date}")
        header_lines.insert(1, f"Exam date: {phi.study_date}   Accession: {phi.accession}")
        planted += [phi.patient_name, phi.mrn, phi.birth_date, phi.study_date, phi.accession]

    if style == 0:  # own-line uppercase headers
        text = "\n".join(header_lines) + f"\n\nFINDINGS:\n{body}\n\nIMPRESSION:\n{impression}"
    elif style == 1:  # inline title-case headers
        text = "\n".join(header_lines) + f"\nFindings: {body}\nImpression: {impression}"
    elif style == 2:  # numbered impression, own line
        text = "\n".join(header_lines) + f"\n\nFINDINGS: {body}\n\nIMPRESSION:\n{impression}"
    elif style == 3:  # all uppercase report
        text = ("\n".join(header_lines) + f"\n\nFINDINGS: {body}\n\nIMPRESSION: {impression}").upper()
        if phi is not None:  # the planted strings must stay findable verbatim
            planted = [p.upper() for p in planted]
    else:  # impression only, as some short portable reports are
        text = "\n".join(header_lines) + f"\n\nIMPRESSION: {body} {impression}"
    if phi is not None:
        footer = f"\n\nDictated by Dr. {phi.physician} on {phi.study_date}. Questions: call {phi.phone}."
        text += footer.upper() if style == 3 else footer
        planted += [phi.physician.upper() if style == 3 else phi.physician, phi.phone]
    return text, planted, negated
