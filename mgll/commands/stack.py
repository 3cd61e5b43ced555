"""``mgll up`` / ``mgll down`` / ``mgll status``: the embedded local Prefect + MLflow stack (see mgll/stack.py)."""

from __future__ import annotations

import json
from typing import Optional

import typer


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def up(
    prefect_port: Optional[int] = typer.Option(None, help="Prefect server port [env MGLL_PREFECT_PORT, default 4200]."),
    mlflow_port: Optional[int] = typer.Option(None, help="MLflow server port [env MGLL_MLFLOW_PORT, default 5000]."),
    timeout: float = typer.Option(180.0, help="Seconds to wait for each health endpoint."),
) -> None:
    """Start the Prefect server, the process work pool + worker and the MLflow server (idempotent)."""
    from mgll import stack

    try:
        services = stack.up(prefect_port=prefect_port, mlflow_port=mlflow_port, timeout=timeout)
    except stack.StackError as exc:
        _fail(str(exc))
    _print_table(services)
    typer.echo(f'\nClients: eval "$(mgll status --env)"   (or: . {stack.stack_dir() / "env.sh"})')


def down(grace: float = typer.Option(10.0, help="Seconds between SIGTERM and SIGKILL.")) -> None:
    """Stop every service started by `mgll up` (by recorded PID, whole process group)."""
    from mgll import stack

    try:
        stopped = stack.down(grace=grace)
    except stack.StackError as exc:
        _fail(str(exc))
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def status(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (prefect_api_url, mlflow_tracking_uri, services)."),
    as_env: bool = typer.Option(False, "--env", help='Shell export lines: eval "$(mgll status --env)".'),
    runs: bool = typer.Option(False, "--runs", help="Also list the latest MLflow runs of the mgll-* experiments."),
) -> None:
    """Show each service's URL, PID and health."""
    from mgll import stack

    if as_env:
        typer.echo(stack.env_exports(), nl=False)
        return
    if as_json:
        info = stack.status_json()
        if runs:
            info["runs"] = _runs_or_fail(stack)
        typer.echo(json.dumps(info, indent=2))
        return
    services = stack.status()
    _print_table(services)
    if runs:
        info = stack.status_json()
        typer.echo(f"\nPrefect UI: {info['prefect_ui_url']}\nMLflow UI:  {info['mlflow_tracking_uri']}\n")
        for run in _runs_or_fail(stack):
            typer.echo(f"{run['experiment']:<20} run_id={run['run_id']}  {run['status']:<9} {run['run_name']}")


def _runs_or_fail(stack) -> list[dict]:
    if not stack.status()["mlflow"].healthy:
        typer.echo("(the MLflow server is not running: no runs to list; start it with `mgll up`)", err=True)
        return []
    return stack.recent_runs()


def _print_table(services: dict) -> None:
    for s in services.values():
        health = "healthy" if s.healthy else ("running, not healthy" if s.running else "stopped")
        typer.echo(f"{s.name:<15} {health:<22} pid={s.pid or '-':<8} {s.url or s.detail}")
