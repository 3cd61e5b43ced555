"""Label ontologies as data: ``dataset_builders/ontologies/<name>.yaml`` (or any YAML path) -> ``Ontology``.

Adding a label, a synonym or a grade text is an edit of the YAML file; nothing in code lists labels.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from mgll.config import ConfigError, StrictModel, format_validation_error, read_yaml

ONTOLOGY_DIR = Path(__file__).resolve().parent.parent / "ontologies"
BUILTIN_ONTOLOGIES = ("chexpert", "nih", "fundus")


class OntologyError(ConfigError):
    """An ontology name that does not exist or a YAML file that is not a valid ontology."""


class LabelDef(StrictModel):
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    synonyms: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    grades: dict[int, str] = Field(default_factory=dict)

    @field_validator("synonyms", "exclude")
    @classmethod
    def _clean_phrases(cls, phrases: list[str]) -> list[str]:
        cleaned = [str(p).strip().lower() for p in phrases]
        if any(not p or p == "*" for p in cleaned):
            raise ValueError("phrases must be non-empty (a lone '*' is not a phrase)")
        return cleaned


class Implication(StrictModel):
    phrases: list[str] = Field(min_length=1)
    label: str
    state: int

    @field_validator("state")
    @classmethod
    def _state(cls, value: int) -> int:
        if value not in (1, 0, -1):
            raise ValueError("state must be 1, 0 or -1")
        return value


class Ontology(StrictModel):
    name: str
    description: str = ""
    no_finding: str | None = None
    no_finding_ignores: list[str] = Field(default_factory=list)
    label_defs: list[LabelDef] = Field(alias="labels", min_length=1)
    other_findings: list[str] = Field(default_factory=list)
    implications: list[Implication] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_references(self) -> "Ontology":
        names = [d.name for d in self.label_defs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate label names: {duplicates}")
        referenced = [self.no_finding] if self.no_finding else []
        referenced += self.no_finding_ignores + [i.label for i in self.implications]
        unknown = sorted({r for r in referenced if r not in names})
        if unknown:
            raise ValueError(f"labels referenced but not defined under 'labels': {unknown}")
        return self

    @property
    def labels(self) -> list[str]:
        return [d.name for d in self.label_defs]

    def label(self, name: str) -> LabelDef:
        for definition in self.label_defs:
            if definition.name == name:
                return definition
        raise KeyError(f"label {name!r} is not in ontology {self.name!r} (labels: {', '.join(self.labels)})")

    def synonyms(self, name: str) -> list[str]:
        return self.label(name).synonyms

    def describe(self, label: str, grade: int | str | None = None) -> str:
        """Clinical description of ``label``; with ``grade``, the grade's own text when the ontology has one."""
        definition = self.label(label)
        if grade is None or grade == "":
            return definition.description
        try:
            grade_key = int(float(grade))
        except (TypeError, ValueError):
            raise KeyError(f"grade {grade!r} of label {label!r} is not a number") from None
        if grade_key in definition.grades:
            return definition.grades[grade_key]
        if definition.grades:
            raise KeyError(
                f"label {label!r} has no grade {grade_key} (grades: {sorted(definition.grades)}) in ontology {self.name!r}"
            )
        return definition.description


def ontology_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise OntologyError(f"ontology file {str(candidate)!r} does not exist")
        return candidate
    path = ONTOLOGY_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in ONTOLOGY_DIR.glob("*.yaml") if not p.stem.endswith("mapping"))
        raise OntologyError(f"unknown ontology {str(name_or_path)!r}; available: {', '.join(available)} (or a .yaml path)")
    return path


def load_ontology(name_or_path: str | Path) -> Ontology:
    """A built-in ontology by name (``chexpert``, ``nih``, ``fundus``) or a YAML file path."""
    path = ontology_path(name_or_path).resolve()
    return _load_cached(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=32)
def _load_cached(path: str, _mtime_ns: int) -> Ontology:
    data = read_yaml(path)
    try:
        return Ontology.model_validate(data)
    except ValidationError as err:
        raise OntologyError(format_validation_error(Ontology, err, path)) from None


def nih_to_chexpert() -> dict[str, list[str] | None]:
    """NIH ChestX-ray14 label -> CheXpert observations (``None``: no CheXpert counterpart)."""
    data = read_yaml(ONTOLOGY_DIR / "nih_chexpert_mapping.yaml")
    return dict(data["nih_to_chexpert"])
