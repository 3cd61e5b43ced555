"""Typed run configs loaded from YAML with ``--set key=value`` overrides.

Every flow has one pydantic model (``BuildConfig`` in ``dataset_builders.config``, ``PretrainConfig`` in
``mgll.train_config``, ``EvaluateConfig`` in ``mgll.eval_config``).  This module only knows how to turn a
YAML file plus dotted overrides into one of them, and how to explain a validation failure in one paragraph.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or override that cannot become a valid config; the message is meant for users."""


class StrictModel(BaseModel):
    """Base for all config sections: unknown keys are errors (catches typos such as ``batchsize``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003). The value is parsed as YAML so types survive."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. --set train.lr=3e-4)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any] | None) -> dict:
    """Return a copy of ``data`` with dotted overrides applied (list of ``k=v`` strings or a ``{k: v}`` dict)."""
    result = copy.deepcopy(dict(data))
    if not overrides:
        return result
    items = (
        [(k.split("."), v) for k, v in overrides.items()]
        if isinstance(overrides, Mapping)
        else [parse_override(o) for o in overrides]
    )
    for path, value in items:
        node: Any = result
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            where = ".".join(path[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit():
                    raise ConfigError(f"override {'.'.join(path)}: {where!r} needs a list index (e.g. sources.0.root)")
                index = int(part)
                if index >= len(node):
                    raise ConfigError(f"override {'.'.join(path)}: index {index} is past the end of a list of {len(node)}")
                if last:
                    node[index] = value
                else:
                    node = node[index]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override {'.'.join(path)}: {'.'.join(path[:depth])!r} is a value, not a section")
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return result


def format_validation_error(model: type[BaseModel], err: ValidationError, origin: str) -> str:
    problems = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        given = e.get("input")
        given_txt = "" if isinstance(given, (dict, list)) else f" (got {given!r})"
        problems.append(f"field '{field}': {e['msg']}{given_txt}")
    return f"Invalid {model.__name__} in {origin}: " + "; ".join(problems) + "."


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    return data


def build_config(
    model: type[T],
    data: Mapping[str, Any] | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    origin: str = "config",
) -> T:
    merged = apply_overrides(data or {}, overrides)
    try:
        return model.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(format_validation_error(model, err, origin)) from None


def load_config(
    model: type[T],
    path: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> T:
    """Load ``path`` (YAML) and/or ``data``, apply overrides, validate. Raises ``ConfigError`` with one paragraph."""
    base: dict = read_yaml(path) if path else {}
    if data:
        base = apply_overrides(base, dict(_flatten(data)))
    return build_config(model, base, overrides, origin=str(path) if path else "config")


def _flatten(data: Mapping[str, Any], prefix: str = ""):
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, full + ".")
        else:
            yield full, value


def flatten_for_logging(cfg: BaseModel | Mapping[str, Any]) -> dict[str, str]:
    """Dotted key -> string value, for MLflow params."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else dict(cfg)
    return {k: str(v) for k, v in _flatten(data)}
