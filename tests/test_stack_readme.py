"""Every shell command in README.md is exercised by a named test (or CI), or is documented-only with a reason."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()

# command (exact README line) -> the test(s) that run it, or the steps it consists of
EXERCISED = {
    "make test": [".ci/run"],
    "make demo": [".ci/run", "tests/test_deploy_integration.py::deployed", "tests/test_deploy_integration.py::built_dataset",
                  "tests/test_deploy_integration.py::pretrained"],
    "make down": [".ci/run", "tests/test_stack.py::test_up_twice_then_down_leaves_nothing_running"],
    "make up": ["tests/test_stack.py::test_up_twice_then_down_leaves_nothing_running"],
    "make status": ["tests/test_stack.py::test_up_twice_then_down_leaves_nothing_running"],
    'eval "$(.venv/bin/mgll status --env)"': ["tests/test_stack.py::test_up_twice_then_down_leaves_nothing_running"],
    "prefect deployment run build-dataset/default --param config_path=configs/my_build.yaml --watch":
        ["tests/test_deploy_integration.py::built_dataset"],
    "MGLL_PREFECT_PORT=4300 MGLL_MLFLOW_PORT=5100 make up":
        ["tests/test_stack.py::test_up_twice_then_down_leaves_nothing_running", "tests/fixtures/stack.py::isolated_stack_env"],
}
DOCUMENTED_ONLY = {
    "docker compose -f docker/compose.yaml up -d":
        "no docker engine or compose plugin on the CI machine; tests/test_docker.py checks compose.yaml's consistency "
        "and runs `docker compose config` where the plugin exists",
    "prefect deployment run pretrain-mgll/default --param config_path=configs/pretrain_default.yaml "
    "--param 'overrides=[\"data.dataset=/data/mgll/cxr-v1\"]' --watch":
        "needs a real dataset at /data; the same deployment path with overrides is run through the API by "
        "tests/test_deploy_integration.py::pretrained",
    "make clean": "deletes .mgll (demo data and all runs); its recipe is checked with `make -n clean` below",
}


def readme_commands() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", README, re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_readme_has_the_two_commands_first() -> None:
    assert readme_commands()[:2] == ["make demo", "make test"]


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_is_accounted_for(command: str) -> None:
    assert (command in EXERCISED) != (command in DOCUMENTED_ONLY), f"README command not covered: {command!r}"
    for reference in EXERCISED.get(command, []):
        path, _, name = reference.partition("::")
        source = REPO / path
        assert source.is_file(), f"{reference} does not exist"
        if name:
            assert re.search(rf"^def {name}\(", source.read_text(), re.M), f"{reference} does not exist"


def test_no_stale_entries() -> None:
    commands = set(readme_commands())
    assert not (set(EXERCISED) | set(DOCUMENTED_ONLY)) - commands


@pytest.mark.parametrize("command", [c for c in readme_commands() if re.fullmatch(r"(\S+=\S+ )*make \w+", c)])
def test_make_targets_exist(command: str) -> None:
    target = command.split()[-1]
    result = subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_make_targets_run_what_the_readme_says() -> None:
    def recipe(target: str) -> str:
        return subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True, text=True, timeout=60).stdout

    demo = recipe("demo")
    for step in ("mgll up", "prefect --no-prompt deploy --all", "prefect deployment run build-dataset/demo --watch",
                 "prefect deployment run pretrain-mgll/demo --watch", "mgll status --runs"):
        assert step in demo, f"`make demo` does not run {step!r}"
    assert demo.index("build-dataset/demo") < demo.index("pretrain-mgll/demo")
    assert "-m pytest" in recipe("test")
    assert "mgll down" in recipe("down")
    assert "rm -rf .mgll" in recipe("clean")
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci


def test_make_test_fails_when_pytest_collects_nothing(tmp_path: Path) -> None:
    # Run the real `test` recipe against a test path that has no tests: pytest exits 5, make must fail.
    makefile = (REPO / "Makefile").read_text().replace("$(PY) -m pytest -q", "$(PY) -m pytest -q " + str(tmp_path))
    (tmp_path / "Makefile").write_text(makefile)
    venv = REPO / ".venv"
    result = subprocess.run(
        ["make", "-f", str(tmp_path / "Makefile"), "-C", str(REPO), "-o", "install", "test", f"VENV={venv}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "pytest collected no tests" in result.stderr


def test_ci_runs_both_readme_commands_and_ends_with_the_suite() -> None:
    steps = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith(("#", "set ", "cd ", "trap "))]
    assert "make demo" in steps and steps[-1] == "make test", steps
    assert steps.index("make demo") < steps.index("make down") < steps.index("make test")
