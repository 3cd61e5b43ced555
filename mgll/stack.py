"""The embedded local stack: Prefect server, a ``process`` work pool + worker, and an MLflow tracking server.

Everything binds to 127.0.0.1 and keeps its state under ``state_dir()`` (``MGLL_HOME``, default ``<repo>/.mgll``)::

    .mgll/prefect/          PREFECT_HOME (SQLite database, local result storage)
    .mgll/mlflow/           mlflow.db (backend store) + artifacts/ (served over HTTP by the tracking server)
    .mgll/stack/<svc>.json  PID record: pid, process-group id, port, command line, process start time
    .mgll/stack/env.sh      the environment clients need (``. .mgll/stack/env.sh``), same as ``mgll status --env``
    .mgll/logs/<svc>.log    service logs

Each service runs in its own session/process group so ``down`` can stop it and all its children with one
signal.  A PID record is trusted only while the process with that PID still has the recorded start time and
command line, so a stale record whose PID was reused by an unrelated process is detected and discarded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

from mgll.settings import REPO_ROOT, state_dir

WORK_POOL = os.environ.get("MGLL_WORK_POOL", "mgll-process")
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000
HOST = "127.0.0.1"
SERVICES = ("prefect-server", "mlflow", "prefect-worker")  # start order; stop order is the reverse


class StackError(RuntimeError):
    """A service could not be started, reached or stopped; the message says which and why."""


@dataclass
class Ports:
    prefect: int = DEFAULT_PREFECT_PORT
    mlflow: int = DEFAULT_MLFLOW_PORT

    @classmethod
    def from_env(cls, prefect: int | None = None, mlflow: int | None = None) -> "Ports":
        def pick(explicit: int | None, var: str, default: int) -> int:
            raw = explicit if explicit is not None else os.environ.get(var, default)
            try:
                port = int(raw)
            except (TypeError, ValueError):
                raise StackError(f"{var}={raw!r} is not a port number") from None
            if not 1 <= port <= 65535:
                raise StackError(f"{var}={port} is outside 1-65535")
            return port

        return cls(
            prefect=pick(prefect, "MGLL_PREFECT_PORT", DEFAULT_PREFECT_PORT),
            mlflow=pick(mlflow, "MGLL_MLFLOW_PORT", DEFAULT_MLFLOW_PORT),
        )


@dataclass
class ServiceRecord:
    name: str
    pid: int
    pgid: int
    port: int | None
    cmdline: list[str]
    create_time: float
    log: str
    url: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class ServiceStatus:
    name: str
    url: str | None
    pid: int | None
    port: int | None
    running: bool
    healthy: bool
    log: str | None
    detail: str = ""


# ----------------------------------------------------------------------------------------------- locations
def stack_dir() -> Path:
    return state_dir() / "stack"


def logs_dir() -> Path:
    return state_dir() / "logs"


def prefect_home() -> Path:
    return state_dir() / "prefect"


def mlflow_dir() -> Path:
    return state_dir() / "mlflow"


def _record_path(name: str) -> Path:
    return stack_dir() / f"{name}.json"


def _bin(tool: str) -> str:
    """The console script installed beside this interpreter (the repo's .venv), so services use the same env."""
    candidate = Path(sys.executable).parent / tool
    return str(candidate) if candidate.exists() else tool


def prefect_api_url(port: int) -> str:
    return f"http://{HOST}:{port}/api"


def mlflow_uri(port: int) -> str:
    return f"http://{HOST}:{port}"


# ----------------------------------------------------------------------------------------------- environment
def client_env(ports: Ports) -> dict[str, str]:
    """What flows, workers and CLI clients need to reach this stack (and to stay offline and out of $HOME)."""
    state = state_dir()
    return {
        "MGLL_HOME": str(state),
        "MGLL_REPO_ROOT": str(REPO_ROOT),  # prefect.yaml's pull step changes into it
        "PREFECT_API_URL": prefect_api_url(ports.prefect),
        "PREFECT_HOME": str(prefect_home()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOCAL_STORAGE_PATH": str(prefect_home() / "storage"),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "MLFLOW_TRACKING_URI": mlflow_uri(ports.mlflow),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "MPLCONFIGDIR": str(state / "cache" / "matplotlib"),
        "MPLBACKEND": "Agg",
        "PYDICOM_DATA_HOME": str(state / "cache" / "pydicom"),
    }


def _service_env(ports: Ports, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(client_env(ports))
    env.update(extra or {})
    return env


def env_exports(ports: Ports | None = None) -> str:
    """Shell ``export`` lines for ``eval "$(mgll status --env)"``."""
    ports = ports or current_ports()
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in client_env(ports).items())


# ----------------------------------------------------------------------------------------------- records
def _read_record(name: str) -> ServiceRecord | None:
    path = _record_path(name)
    if not path.is_file():
        return None
    try:
        return ServiceRecord(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        path.unlink(missing_ok=True)  # unreadable record: nothing can be verified against it
        return None


def _write_record(record: ServiceRecord) -> None:
    stack_dir().mkdir(parents=True, exist_ok=True)
    tmp = _record_path(record.name).with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2))
    tmp.replace(_record_path(record.name))


def _is_alive(record: ServiceRecord) -> bool:
    """True only if ``record.pid`` is still the process we started (same start time and command line)."""
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(proc.create_time() - record.create_time) < 0.05 and _same_command(proc.cmdline(), record.cmdline)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _same_command(live: list[str], launched: list[str]) -> bool:
    """A console script runs as ``python /path/to/script args...``: compare the script and its arguments."""
    if not launched or len(live) < len(launched):
        return False
    return live[len(live) - len(launched) + 1 :] == launched[1:] and Path(launched[0]).name in Path(live[len(live) - len(launched)]).name


def live_record(name: str) -> ServiceRecord | None:
    """The record of a running service; a stale record (dead or reused PID) is removed and None returned."""
    record = _read_record(name)
    if record is None:
        return None
    if _is_alive(record):
        return record
    _record_path(name).unlink(missing_ok=True)
    return None


def current_ports() -> Ports:
    """Ports of the running stack where recorded, else from env/defaults."""
    ports = Ports.from_env()
    server, mlflow = _read_record("prefect-server"), _read_record("mlflow")
    if server and server.port:
        ports.prefect = server.port
    if mlflow and mlflow.port:
        ports.mlflow = mlflow.port
    return ports


@contextlib.contextmanager
def _stack_lock() -> Iterator[None]:
    """Serialise concurrent ``up``/``down`` on the same state dir."""
    stack_dir().mkdir(parents=True, exist_ok=True)
    with open(stack_dir() / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------------- ports/health
def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """An unused loopback port (for tests and for users who do not care)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _port_owner(port: int) -> str:
    with contextlib.suppress(psutil.AccessDenied, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(conn.pid)
                    return f"pid {conn.pid} ({' '.join(proc.cmdline())[:120]})"
                return f"pid {conn.pid}"
    return "another process"


def _require_free(port: int, service: str, var: str) -> None:
    if not port_is_free(port):
        raise StackError(
            f"cannot start {service}: port {port} on {HOST} is already in use by {_port_owner(port)}. "
            f"Stop that process or choose another port, e.g. `{var}={port + 1} mgll up`."
        )


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _health_url(name: str, ports: Ports) -> str | None:
    if name == "prefect-server":
        return f"{prefect_api_url(ports.prefect)}/health"
    if name == "mlflow":
        return f"{mlflow_uri(ports.mlflow)}/health"
    return None


def _log_tail(path: str | Path, lines: int = 25) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    return ""


def _wait_healthy(record: ServiceRecord, url: str, timeout: float) -> None:
    """Wait for ``url``; on failure stop what was spawned (nothing half-started is left behind) and raise."""
    try:
        _poll_healthy(record, url, timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            _stop_record(record, grace=5)
        _record_path(record.name).unlink(missing_ok=True)
        raise


def _poll_healthy(record: ServiceRecord, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_alive(record):
            raise StackError(f"{record.name} exited during start-up; last lines of {record.log}:\n{_log_tail(record.log)}")
        if _http_ok(url):
            return
        time.sleep(0.5)
    raise StackError(f"{record.name} did not answer {url} within {timeout:.0f} s; see {record.log}:\n{_log_tail(record.log)}")


# ----------------------------------------------------------------------------------------------- start
def _spawn(name: str, cmd: list[str], env: dict[str, str], port: int | None, url: str | None) -> ServiceRecord:
    logs_dir().mkdir(parents=True, exist_ok=True)
    log_path = logs_dir() / f"{name}.log"
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO_ROOT),
            start_new_session=True,  # own session + process group: immune to the caller's signals, killable as one
        )
    ps = psutil.Process(proc.pid)
    deadline = time.monotonic() + 10
    # Until exec() completes the child still shows the parent's command line; wait so the record is verifiable.
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            if _same_command(ps.cmdline(), cmd):
                break
        time.sleep(0.02)
    record = ServiceRecord(
        name=name, pid=proc.pid, pgid=os.getpgid(proc.pid) if proc.poll() is None else proc.pid, port=port, cmdline=cmd,
        create_time=ps.create_time(), log=str(log_path), url=url,
    )
    _write_record(record)
    return record


def _start_prefect_server(ports: Ports, timeout: float) -> ServiceRecord:
    _require_free(ports.prefect, "the Prefect server", "MGLL_PREFECT_PORT")
    prefect_home().mkdir(parents=True, exist_ok=True)
    cmd = [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(ports.prefect), "--analytics-off"]
    record = _spawn("prefect-server", cmd, _service_env(ports), ports.prefect, prefect_api_url(ports.prefect).removesuffix("/api"))
    _wait_healthy(record, _health_url("prefect-server", ports), timeout)
    return record


def _start_mlflow(ports: Ports, timeout: float) -> ServiceRecord:
    _require_free(ports.mlflow, "the MLflow server", "MGLL_MLFLOW_PORT")
    (mlflow_dir() / "artifacts").mkdir(parents=True, exist_ok=True)
    cmd = [
        _bin("mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{mlflow_dir() / 'mlflow.db'}",
        "--artifacts-destination", str(mlflow_dir() / "artifacts"),
        "--serve-artifacts",
        "--host", HOST, "--port", str(ports.mlflow), "--workers", "1",
    ]
    env = _service_env(ports, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    record = _spawn("mlflow", cmd, env, ports.mlflow, mlflow_uri(ports.mlflow))
    _wait_healthy(record, _health_url("mlflow", ports), timeout)
    return record


def ensure_work_pool(ports: Ports, pool: str = WORK_POOL) -> None:
    """Create the ``process`` work pool if it is missing (``prefect deploy`` needs it to exist)."""
    env = _service_env(ports)
    inspect = subprocess.run([_bin("prefect"), "work-pool", "inspect", pool], env=env, capture_output=True, text=True)
    if inspect.returncode == 0:
        return
    created = subprocess.run(
        [_bin("prefect"), "work-pool", "create", pool, "--type", "process"], env=env, capture_output=True, text=True
    )
    if created.returncode != 0 and "already exists" not in (created.stdout + created.stderr):
        raise StackError(f"could not create work pool {pool!r}: {(created.stdout + created.stderr).strip()[-800:]}")


def _start_worker(ports: Ports, pool: str) -> ServiceRecord:
    ensure_work_pool(ports, pool)
    cmd = [_bin("prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", f"{pool}-worker"]
    # The worker runs each flow with its own interpreter (this venv) and passes its environment on to the flow.
    env = _service_env(ports, {"PREFECT_WORKER_QUERY_SECONDS": os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "3")})
    record = _spawn("prefect-worker", cmd, env, None, None)
    record.extra = {"pool": pool}
    _write_record(record)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if not _is_alive(record):
                raise StackError(f"the Prefect worker exited at start-up; last lines of {record.log}:\n{_log_tail(record.log)}")
            if _worker_online(ports, pool)[0]:
                return record
            time.sleep(1.0)
        raise StackError(f"the Prefect worker did not come online in pool {pool!r} within 90 s; see {record.log}")
    except BaseException:
        with contextlib.suppress(Exception):
            _stop_record(record, grace=5)
        _record_path(record.name).unlink(missing_ok=True)
        raise


def up(prefect_port: int | None = None, mlflow_port: int | None = None, timeout: float = 180.0,
       pool: str = WORK_POOL) -> dict[str, ServiceStatus]:
    """Start whatever is not running yet; a service that is already up is left alone. Returns ``status()``."""
    requested = Ports.from_env(prefect_port, mlflow_port)
    with _stack_lock():
        server, mlflow, worker = (live_record(n) for n in SERVICES)
        # A running service keeps its port; mixing ports of two different stacks would be a silent mess.
        ports = Ports(prefect=server.port if server else requested.prefect, mlflow=mlflow.port if mlflow else requested.mlflow)
        if server is None:
            _start_prefect_server(ports, timeout)
        if mlflow is None:
            _start_mlflow(ports, timeout)
        if worker is None:
            _start_worker(ports, pool)
        _write_env_file(ports)
    return status()


def _write_env_file(ports: Ports) -> None:
    (stack_dir() / "env.sh").write_text(env_exports(ports))


# ----------------------------------------------------------------------------------------------- stop
def _stop_record(record: ServiceRecord, grace: float) -> None:
    group = [record.pid]
    with contextlib.suppress(psutil.Error):
        group += [c.pid for c in psutil.Process(record.pid).children(recursive=True)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pgid, sig)
        for pid in group:  # children that left the group (rare) get the signal directly
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        _, alive = psutil.wait_procs([p for p in map(_proc_or_none, group) if p], timeout=grace)
        if not alive:
            return
    raise StackError(f"{record.name} (pid {record.pid}) survived SIGKILL")


def _proc_or_none(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def down(grace: float = 10.0) -> list[str]:
    """Stop every recorded service (SIGTERM to its process group, SIGKILL after ``grace`` s). Returns names stopped."""
    stopped = []
    with _stack_lock():
        for name in reversed(SERVICES):
            record = live_record(name)
            if record is not None:
                _stop_record(record, grace)
                stopped.append(name)
            _record_path(name).unlink(missing_ok=True)
    return stopped


# ----------------------------------------------------------------------------------------------- status
def _worker_online(ports: Ports, pool: str) -> tuple[bool, str]:
    import httpx

    try:
        resp = httpx.post(f"{prefect_api_url(ports.prefect)}/work_pools/{pool}/workers/filter", json={}, timeout=3)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        return False, f"cannot ask the Prefect API about pool {pool!r}: {exc}"
    online = [w["name"] for w in resp.json() if w.get("status") == "ONLINE"]
    return bool(online), f"pool {pool!r}: online workers {online}"


def status() -> dict[str, ServiceStatus]:
    ports = current_ports()
    out: dict[str, ServiceStatus] = {}
    for name in SERVICES:
        record = live_record(name)
        running = record is not None
        if name == "prefect-worker":
            pool = (record.extra or {}).get("pool", WORK_POOL) if record else WORK_POOL
            healthy, detail = _worker_online(ports, pool) if running else (False, "not running")
            url = None
        else:
            url = record.url if record else (prefect_api_url(ports.prefect).removesuffix("/api") if name == "prefect-server" else mlflow_uri(ports.mlflow))
            healthy = running and _http_ok(_health_url(name, ports))
            detail = _health_url(name, ports) if running else "not running"
        out[name] = ServiceStatus(
            name=name, url=url, pid=record.pid if record else None,
            port=record.port if record else (ports.prefect if name == "prefect-server" else ports.mlflow if name == "mlflow" else None),
            running=running, healthy=healthy, log=record.log if record else None, detail=detail,
        )
    return out


def status_json() -> dict:
    ports = current_ports()
    services = status()
    return {
        "prefect_api_url": prefect_api_url(ports.prefect),
        "prefect_ui_url": prefect_api_url(ports.prefect).removesuffix("/api"),
        "mlflow_tracking_uri": mlflow_uri(ports.mlflow),
        "state_dir": str(state_dir()),
        "healthy": all(s.healthy for s in services.values()),
        "services": {name: asdict(s) for name, s in services.items()},
    }


def recent_runs(limit_per_experiment: int = 3) -> list[dict]:
    """Latest MLflow runs of the pipeline experiments on the running tracking server (for `make demo`'s summary)."""
    from mlflow.tracking import MlflowClient

    from mgll.tracking import EXPERIMENTS

    client = MlflowClient(tracking_uri=mlflow_uri(current_ports().mlflow))
    rows = []
    for experiment_name in EXPERIMENTS.values():
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            continue
        for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                                      max_results=limit_per_experiment):
            rows.append({
                "experiment": experiment_name, "run_id": run.info.run_id, "run_name": run.info.run_name,
                "status": run.info.status, "parent_run_id": run.data.tags.get("mlflow.parentRunId"),
                "url": f"{mlflow_uri(current_ports().mlflow)}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}",
            })
    return rows
