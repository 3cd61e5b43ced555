"""``mgll build-dataset``: build shards + manifest + card from a config file or a ``--source KIND:PATH`` shortcut."""

from __future__ import annotations

from typing import List, Optional

import typer


def build_dataset(
    config: Optional[str] = typer.Option(None, "--config", "-c", help="build config YAML (see configs/build_default.yaml)"),
    source: Optional[str] = typer.Option(None, "--source", help="shortcut without a file: KIND:PATH, e.g. dicom_xray:/data/dicoms"),
    out: Optional[str] = typer.Option(None, "--out", help="output directory or fsspec URL (with --source, or to override the config's)"),
    overrides: List[str] = typer.Option([], "--set", help="override a config value: key=value (repeatable)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Exit 0 when the build completed (even with rejects), 2 on a configuration error."""
    import logging

    from mgll.config import ConfigError

    try:
        from dataset_builders.config import config_from_shortcut, load_build_config

        if source:
            if config:
                raise ConfigError("give either --config FILE or --source KIND:PATH, not both")
            if not out:
                raise ConfigError("--source needs --out (where to write the dataset)")
            cfg = config_from_shortcut(source, out, list(overrides))
        elif config:
            cfg = load_build_config(config, list(overrides) + ([f"out={out}"] if out else []))
        else:
            raise ConfigError("give --config FILE or --source KIND:PATH --out DIR")
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)

    from dataset_builders.build import build, log_build_to_mlflow
    from mgll.config import flatten_for_logging
    from mgll.tracking import tracking_run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with tracking_run("build", run_name="build-dataset", params=flatten_for_logging(cfg.redacted())):
            summary = build(cfg, progress=progress)
            log_build_to_mlflow(cfg, summary)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except OSError as exc:  # output location not writable, disk full, source vanished mid-build...
        typer.echo(f"error: build stopped by an I/O error ({type(exc).__name__}: {exc}); rerun to resume", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"built {summary.out}: {summary.inputs} inputs -> {summary.samples} samples "
        f"({', '.join(f'{k} {v}' for k, v in sorted(summary.per_split.items()))}), {summary.rejects} rejects, "
        f"{summary.duplicates} duplicates, {summary.samples_per_s:.1f} samples/s"
        + ("" if summary.finalized else " (unchanged: nothing rewritten)")
    )
    if summary.rejects_by_reason:
        typer.echo("rejects: " + "; ".join(f"{k}: {v}" for k, v in summary.rejects_by_reason.items()))
