"""De-identification: salted identifier hashes, PHI harvested from headers, and report-text scrubbing.

Identifiers (patient, study, series, sample keys) become HMAC-SHA256(salt, kind:value) prefixes, so equal ids map to
equal hashes within one salt and cannot be reversed without it.  Free text is scrubbed of: every name/id/date/
institution string found in the DICOM header of the same study, dates in common formats, phone numbers, e-mail
addresses, ID-like tokens (long digit runs, MRN/accession patterns), titled names ("Dr. Smith"), and existing de-id
placeholders (``XXXX``, ``___``, ``[** ... **]``), all normalised to ``REDACTED_TOKEN``.  See ``config.py`` for the
salt policy.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from typing import Iterable

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

REDACTED_TOKEN = "[REDACTED]"

# Header elements whose values are PHI (never copied; harvested only to scrub free text of them).
PHI_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "RequestingPhysician",
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StationName",
    "DeviceSerialNumber",
    "IssuerOfPatientID",
    "MedicalRecordLocator",
)

_PHI_TAGS = tuple((keyword, tag_for_keyword(keyword)) for keyword in PHI_KEYWORDS)

_MONTHS = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
_PATTERNS = [
    # existing de-identification placeholders first, so they are normalised rather than re-matched
    re.compile(r"\[\*\*.*?\*\*\]"),
    re.compile(r"\b[X]{3,}\b"),
    re.compile(r"_{3,}"),
    re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"),  # e-mail
    re.compile(r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?\b"),  # 2021-03-04
    re.compile(r"\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b"),  # 03/04/2021, 3.4.21
    re.compile(rf"\b{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{2,4}}\b", re.I),  # March 4, 2021
    re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTHS},?\s+\d{{2,4}}\b", re.I),  # 4 March 2021
    re.compile(rf"\b{_MONTHS}\s+\d{{4}}\b", re.I),  # March 2021
    re.compile(r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b"),  # 20210304
    re.compile(r"(?:\+?\d{1,2}[\s.-]?)?\(?\b\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b"),  # phone numbers
    re.compile(r"\b(?:ext|x)\.?\s?\d{3,5}\b", re.I),
    # ID-like tokens: labelled ids, long digit runs, letter+digit codes of 6+ characters with 4+ digits
    re.compile(r"\b(?:MRN|MR#|ACC(?:ESSION)?|ACCT|SSN|ID|Patient ID|Accession(?: No\.?| Number)?)\s*[:#]?\s*[A-Z0-9-]{3,}\b", re.I),
    re.compile(r"\b\d{5,}\b"),
    re.compile(r"\b(?=(?:[A-Z-]*\d){4})(?=[A-Z0-9-]*[A-Z])[A-Z0-9][A-Z0-9-]{5,}\b"),
    # titled names: "Dr. Jane Smith", "Mrs Smith"
    re.compile(r"\b(?:Dr|Drs|Mr|Mrs|Ms|Miss|Prof)\.?\s+(?:[A-Z][a-zA-Z'-]+\.?\s?){1,3}"),
    # dates of birth spelled out: "DOB: ..." keeps whatever follows up to the line end out
    re.compile(r"\b(?:DOB|D\.O\.B\.|date of birth)\s*[:#]?\s*\S+", re.I),
]
_SPACES = re.compile(r"[ \t]{2,}")
_REPEATED = re.compile(rf"(?:{re.escape(REDACTED_TOKEN)}[\s,]*){{2,}}")


def generate_salt() -> str:
    return secrets.token_hex(32)


class Deidentifier:
    """Salted, keyed hashing of identifiers. ``repr`` never shows the salt."""

    def __init__(self, salt: str):
        if not salt:
            raise ValueError("a de-identification salt must not be empty")
        self._key = salt.encode()

    def __repr__(self) -> str:  # keep the salt out of logs and tracebacks
        return "Deidentifier(<salt redacted>)"

    def hash_id(self, kind: str, value: str | None, length: int = 16) -> str:
        if value is None or str(value).strip() == "":
            return ""
        mac = hmac.new(self._key, f"{kind}:{str(value).strip()}".encode(), hashlib.sha256)
        return mac.hexdigest()[:length]


def resolve_salt(config_salt: str | None, salt_file_reader, salt_file_writer) -> tuple[str, str]:
    """Return (salt, origin) by the policy in ``config.py``; origin is "config" | "env" | "generated"."""
    if config_salt:
        return config_salt, "config"
    env = os.environ.get("MGLL_DEID_SALT")
    if env:
        return env, "env"
    existing = salt_file_reader()
    if existing:
        return existing, "generated"
    salt = generate_salt()
    salt_file_writer(salt)
    return salt, "generated"


def _person_name_parts(value) -> list[str]:
    text = str(value or "")
    parts = [text.replace("^", " ").strip()]
    parts += [p for p in re.split(r"[\^\s,]+", text) if p]
    return parts


def header_phi(ds: Dataset) -> list[str]:
    """Every PHI string in a DICOM header (names split into components, dates in several spellings)."""
    found: list[str] = []
    present = ds.keys()  # a tag lookup; ``ds.get`` of an absent keyword raises and catches an AttributeError
    for keyword, tag in _PHI_TAGS:
        if tag not in present:
            continue
        value = ds[tag].value
        if value is None or value == "":
            continue
        values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        for item in values:
            if keyword.endswith("Name") or keyword.endswith("Names") or "Physician" in keyword:
                found += _person_name_parts(item)
            elif keyword.endswith("Date") and len(str(item)) == 8 and str(item).isdigit():
                found += date_spellings(str(item))
            else:
                found.append(str(item))
    return sorted({f.strip() for f in found if len(f.strip()) >= 2}, key=len, reverse=True)


def date_spellings(yyyymmdd: str) -> list[str]:
    y, m, d = yyyymmdd[:4], yyyymmdd[4:6], yyyymmdd[6:8]
    return [yyyymmdd, f"{y}-{m}-{d}", f"{m}/{d}/{y}", f"{d}/{m}/{y}", f"{int(m)}/{int(d)}/{y}", f"{y}/{m}/{d}", f"{d}.{m}.{y}"]


def scrub_text(text: str, phi: Iterable[str] = ()) -> str:
    """Remove PHI from free text: known strings (case-insensitive, whole words), then the generic patterns."""
    if not text:
        return ""
    out = str(text)
    # Most header values do not occur in a given text; compiling a pattern per value per file dominated the cost.
    # For ASCII text and value, re.I is ASCII case folding, so a substring test rules a value out exactly.
    folded = out.lower() if out.isascii() else None
    for value in sorted({p for p in phi if p and len(p) >= 2}, key=len, reverse=True):
        if folded is not None and value.isascii() and value.lower() not in folded:
            continue
        out = re.sub(rf"(?<![\w]){re.escape(value)}(?![\w])", REDACTED_TOKEN, out, flags=re.I)
        folded = out.lower() if out.isascii() else None
    for pattern in _PATTERNS:
        out = pattern.sub(REDACTED_TOKEN, out)
    out = _REPEATED.sub(REDACTED_TOKEN + " ", out)
    return _SPACES.sub(" ", out).strip()


def scrub_header_text(value, phi: Iterable[str]) -> str:
    """Header descriptions (StudyDescription, SeriesDescription) sometimes carry names or dates: scrub them too."""
    return scrub_text(str(value or "").strip(), phi)
