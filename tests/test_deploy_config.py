"""prefect.yaml (static): six required deployments, entrypoints that exist, demo parameters that exist."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from tests.fixtures.stack import flow_name

REPO = Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
FLOWS = {"build-dataset": "flows/build_dataset.py", "pretrain-mgll": "flows/pretrain.py", "evaluate-mgll": "flows/evaluate.py"}


def test_six_required_deployments_are_declared() -> None:
    declared = {(d["entrypoint"].split(":")[0], d["name"]) for d in SPEC["deployments"]}
    for path in FLOWS.values():
        assert {(path, "demo"), (path, "default")} <= declared


@pytest.mark.parametrize("deployment", SPEC["deployments"], ids=lambda d: f"{d['entrypoint']}/{d['name']}")
def test_entrypoints_and_parameters(deployment: dict) -> None:
    path, func = deployment["entrypoint"].split(":")
    name = flow_name(deployment["entrypoint"])  # asserts the file exists and func is a @flow(name=...)
    if path in FLOWS.values():
        assert name == next(k for k, v in FLOWS.items() if v == path)
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    signature = inspect.signature(getattr(module, func).fn)
    assert {"config_path", "overrides"} <= set(signature.parameters)
    for key, value in deployment["parameters"].items():
        assert key in signature.parameters, f"{deployment['name']}: {func} has no parameter {key}"
        if key.endswith("config_path"):
            assert (REPO / value).is_file(), f"{deployment['name']}: {key} {value} does not exist"
    assert deployment["work_pool"]["name"] == "mgll-process"


def test_pull_step_only_changes_into_the_checkout() -> None:
    assert SPEC["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $MGLL_REPO_ROOT }}"}}]
    assert not SPEC.get("build") and not SPEC.get("push")  # no image build, no upload


def test_pool_name_matches_the_stack() -> None:
    from mgll.stack import WORK_POOL

    assert {d["work_pool"]["name"] for d in SPEC["deployments"]} == {WORK_POOL}
