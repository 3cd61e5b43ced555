"""mgll/config.py: YAML + dotted overrides -> typed config; invalid input -> one paragraph naming the field."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from pydantic import Field

from mgll.config import ConfigError, StrictModel, apply_overrides, flatten_for_logging, load_config, parse_override

REPO = Path(__file__).resolve().parent.parent


class Optim(StrictModel):
    lr: float = 1e-3
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.98])


class Run(StrictModel):
    name: str
    steps: int = Field(10, gt=0)
    optim: Optim = Field(default_factory=Optim)
    tags: dict[str, str] = Field(default_factory=dict)


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def _assert_one_paragraph(message: str) -> None:
    assert message.strip() and "\n\n" not in message and "Traceback" not in message


def test_yaml_and_overrides_keep_types(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "name: base\nsteps: 5\noptim: {lr: 0.01}\n")
    cfg = load_config(Run, path, ["steps=7", "optim.lr=3e-4", "optim.betas=[0.5, 0.6]", "tags.site=a=b"])
    assert cfg.steps == 7 and isinstance(cfg.steps, int)
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.optim.betas == [0.5, 0.6]
    assert cfg.tags == {"site": "a=b"}  # only the first '=' separates key and value
    assert cfg.name == "base"


def test_mapping_overrides_and_data_without_file() -> None:
    cfg = load_config(Run, None, {"optim.lr": 0.5}, data={"name": "x", "optim": {"betas": [0.1, 0.2]}})
    assert (cfg.name, cfg.optim.lr, cfg.optim.betas) == ("x", 0.5, [0.1, 0.2])


def test_overrides_do_not_mutate_input() -> None:
    data = {"optim": {"lr": 1.0}}
    apply_overrides(data, ["optim.lr=2"])
    assert data == {"optim": {"lr": 1.0}}


@pytest.mark.parametrize(
    ("overrides", "field", "hint"),
    [
        (["stepz=3"], "stepz", "Extra inputs are not permitted"),
        (["steps=0"], "steps", "greater than 0"),
        (["optim.lr=fast"], "optim.lr", "'fast'"),
    ],
)
def test_invalid_field_is_named_in_one_paragraph(tmp_path: Path, overrides, field, hint) -> None:
    path = _yaml(tmp_path, "name: base\n")
    with pytest.raises(ConfigError) as info:
        load_config(Run, path, overrides)
    message = str(info.value)
    _assert_one_paragraph(message)
    assert f"field '{field}'" in message and hint in message and str(path) in message


def test_missing_required_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"field 'name': Field required"):
        load_config(Run, _yaml(tmp_path, "steps: 3\n"))


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "does not exist"), ("name: [unclosed\n", "not valid YAML"), ("- a\n- b\n", "mapping at the top level")],
)
def test_bad_files_are_explained(tmp_path: Path, content, expected) -> None:
    path = tmp_path / "cfg.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(Run, path)
    _assert_one_paragraph(str(info.value))


@pytest.mark.parametrize("bad", ["no_equals_sign", "=3", "a..b=1"])
def test_malformed_override(bad: str) -> None:
    with pytest.raises(ConfigError, match="override"):
        parse_override(bad)


def test_override_into_a_scalar_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'name' is a value, not a section"):
        load_config(Run, None, ["name.first=x"], data={"name": "x"})


def test_flatten_for_logging() -> None:
    flat = flatten_for_logging(Run(name="r", optim=Optim(lr=0.1)))
    assert flat["optim.lr"] == "0.1" and flat["name"] == "r" and flat["steps"] == "10"


# The demo configs shipped in configs/ must load into their flows' models.
DEMO_CONFIGS = [
    ("configs/build_demo.yaml", "dataset_builders.config", "BuildConfig"),
    ("configs/pretrain_demo.yaml", "mgll.train_config", "PretrainConfig"),
    ("configs/evaluate_demo.yaml", "mgll.eval_config", "EvaluateConfig"),
    ("configs/ablation_demo.yaml", "mgll.eval_config", "AblationConfig"),
]


@pytest.mark.parametrize(("relpath", "module", "model"), DEMO_CONFIGS)
def test_demo_configs_validate(relpath: str, module: str, model: str) -> None:
    path = REPO / relpath
    assert path.is_file(), f"{relpath} does not exist"
    cls = getattr(importlib.import_module(module), model)
    load_config(cls, path)
    with pytest.raises(ConfigError) as info:
        load_config(cls, path, ["definitely_not_a_field=1"])
    assert "definitely_not_a_field" in str(info.value)
