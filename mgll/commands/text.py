"""``mgll sections`` and ``mgll label``: stream reports (CSV ``id,text`` or JSONL ``{"id","text"}``) to Parquet."""

from __future__ import annotations

from pathlib import Path

import typer

BATCH_ROWS = 1000


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _print_warnings(counts: dict[str, int], total: int) -> None:
    typer.echo(f"{total} reports written", err=True)
    for name, count in sorted(counts.items()):
        typer.echo(f"warning: {name}: {count} report(s)", err=True)


def sections(
    input: Path = typer.Option(..., "--input", "-i", help="reports.csv (columns id,text) or reports.jsonl"),
    output: Path = typer.Option(..., "--output", "-o", help="output .parquet (id, diagnosis, explanation, sections)"),
    max_words: int = typer.Option(0, help="truncate each text to this many words at a sentence end (0: no limit)"),
) -> None:
    """Split reports into sections and diagnosis/explanation texts."""
    from dataset_builders.text.io import ReportInputError, write_sections

    try:
        total, counts = write_sections(input, output, max_words=max_words or None)
    except ReportInputError as err:
        _fail(str(err))
    _print_warnings(counts, total)


def label(
    input: Path = typer.Option(..., "--input", "-i", help="reports.csv (columns id,text) or reports.jsonl"),
    output: Path = typer.Option(..., "--output", "-o", help="output .parquet (id, one column per label, evidence)"),
    ontology: str = typer.Option("chexpert", help="chexpert | nih | fundus | path to an ontology .yaml"),
    batch_size: int = typer.Option(256, min=1, help="reports per spaCy batch"),
) -> None:
    """Extract labels (1/0/-1/null) with evidence from reports."""
    from dataset_builders.text.io import ReportInputError, write_labels
    from dataset_builders.text.ontology import OntologyError

    try:
        total, counts = write_labels(input, output, ontology=ontology, batch_size=batch_size)
    except (ReportInputError, OntologyError) as err:
        _fail(str(err))
    _print_warnings(counts, total)
