"""The embedded stack with real processes: idempotent up, status, stale records, busy ports, clean down."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mgll import stack

REPO = Path(__file__).resolve().parent.parent


def _mgll(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mgll.cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=REPO,
    )


@pytest.mark.integration
def test_up_twice_then_down_leaves_nothing_running(stack_home: Path) -> None:
    first = _mgll("up")
    assert first.returncode == 0, first.stderr + first.stdout
    info = json.loads(_mgll("status", "--json").stdout)
    assert info["healthy"], info
    pids = {name: s["pid"] for name, s in info["services"].items()}
    assert all(pids.values()), pids
    ports = [int(os.environ["MGLL_PREFECT_PORT"]), int(os.environ["MGLL_MLFLOW_PORT"])]
    assert info["prefect_api_url"] == f"http://127.0.0.1:{ports[0]}/api"
    assert info["mlflow_tracking_uri"] == f"http://127.0.0.1:{ports[1]}"
    # the whole process tree of every service, to prove later that none of it survives `down`
    tree = [p for pid in pids.values() for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]]

    second = _mgll("up")
    assert second.returncode == 0, second.stderr
    again = json.loads(_mgll("status", "--json").stdout)
    assert {name: s["pid"] for name, s in again["services"].items()} == pids  # nothing new was started

    env_lines = _mgll("status", "--env").stdout
    assert f"export PREFECT_API_URL={info['prefect_api_url']}" in env_lines
    assert f"export MLFLOW_TRACKING_URI={info['mlflow_tracking_uri']}" in env_lines

    down = _mgll("down")
    assert down.returncode == 0, down.stderr
    assert "prefect-server" in down.stdout
    gone, alive = psutil.wait_procs(tree, timeout=5)
    assert not alive, f"still running after down: {[(p.pid, p.cmdline()) for p in alive]}"
    assert all(stack.port_is_free(p) for p in ports)
    assert not list((stack_home / "stack").glob("*.json"))
    assert "nothing was running" in _mgll("down").stdout


def test_stale_record_with_reused_pid_is_discarded(stack_home: Path) -> None:
    # A record naming a PID that now belongs to another process (here: this pytest process) must not be trusted.
    me = psutil.Process()
    record = stack.ServiceRecord(
        name="mlflow", pid=me.pid, pgid=os.getpgid(me.pid), port=5999, cmdline=["mlflow", "server"],
        create_time=me.create_time(), log="/dev/null",
    )
    stack._write_record(record)
    assert stack.live_record("mlflow") is None
    assert not (stack_home / "stack" / "mlflow.json").exists()
    # and `down` with such a record does not signal the unrelated process
    stack._write_record(record)
    assert stack.down() == []
    assert me.is_running()


def test_dead_pid_record_is_discarded(stack_home: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    record = stack.ServiceRecord(
        name="prefect-server", pid=proc.pid, pgid=proc.pid, port=4999, cmdline=[sys.executable, "-c", "pass"],
        create_time=time.time(), log="/dev/null",
    )
    stack._write_record(record)
    assert stack.status()["prefect-server"].running is False
    assert not (stack_home / "stack" / "prefect-server.json").exists()


def test_busy_port_owned_by_another_process_is_a_clear_error(stack_home: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = _mgll("up", "--prefect-port", str(port), timeout=60)
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "MGLL_PREFECT_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((stack_home / "stack").glob("*.json"))  # nothing was started


def test_invalid_port_env_is_reported(stack_home: Path) -> None:
    result = _mgll("up", env={"MGLL_MLFLOW_PORT": "fifty"}, timeout=60)
    assert result.returncode == 1
    assert "MGLL_MLFLOW_PORT='fifty'" in result.stderr and "Traceback" not in result.stderr


def test_status_when_nothing_runs(stack_home: Path) -> None:
    info = json.loads(_mgll("status", "--json").stdout)
    assert info["healthy"] is False
    assert all(s["running"] is False and s["pid"] is None for s in info["services"].values())
    assert info["mlflow_tracking_uri"].endswith(os.environ["MGLL_MLFLOW_PORT"])
