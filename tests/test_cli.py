"""The `mgll` console script: help of every subcommand, and clear errors instead of tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mgll.cli import app

SUBCOMMANDS = ["demo-data", "build-dataset", "sections", "label", "pretrain", "evaluate", "up", "down", "status"]
MGLL = Path(sys.executable).parent / "mgll"


def test_console_script_help() -> None:
    assert MGLL.exists(), "the mgll console script is not installed (run `make install`)"
    result = subprocess.run([str(MGLL), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_status_help_documents_script_outputs() -> None:
    output = CliRunner().invoke(app, ["status", "--help"]).output
    assert "--json" in output and "--env" in output


def test_unknown_subcommand_fails() -> None:
    assert CliRunner().invoke(app, ["no-such-command"]).exit_code != 0


def test_help_does_not_import_heavy_modules() -> None:
    code = "import sys; from mgll.cli import app; print(sorted(m for m in ('torch', 'mlflow', 'prefect', 'open_clip') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
