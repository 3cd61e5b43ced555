"""``mgll demo-data``: write the synthetic DICOM + report + fundus demo corpus (see dataset_builders/synthetic.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def demo_data(
    out: Optional[Path] = typer.Option(
        None, "--out", "-o",
        help="Output folder (default: $MGLL_HOME/demo/raw, i.e. .mgll/demo/raw). A previous demo corpus there is replaced.",
    ),
    n: int = typer.Option(2000, "--n", "--n-studies", min=1, help="Number of chest X-ray studies."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed writes byte-identical files."),
    n_fundus: int = typer.Option(200, "--n-fundus", min=0, help="Number of fundus images in the label-table subset."),
    image_size: int = typer.Option(256, "--image-size", min=16, help="Image side in pixels."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Generate the synthetic demo corpus: DICOMs with planted fake PHI, reports, fundus table, ground truth."""
    import json

    from dataset_builders.synthetic import DemoCorpusError, generate_demo_corpus
    from mgll.settings import state_dir

    target = out if out is not None else state_dir() / "demo" / "raw"
    try:
        summary = generate_demo_corpus(target, n_studies=n, seed=seed, n_fundus=n_fundus, image_size=image_size)
    except DemoCorpusError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    expected = summary["expected"]
    typer.echo(
        f"demo corpus written to {summary['out_dir']} in {summary['seconds']} s: {summary['n_patients']} patients, "
        f"{summary['n_studies']} studies, {summary['n_dicom_files']} DICOM files, {summary['n_fundus_files']} fundus "
        f"images, {summary['n_reports']} reports"
    )
    typer.echo(
        f"expected: {expected.get('sample', 0)} samples ({summary['expected_frames']} frames), "
        f"{expected.get('reject', 0)} rejects {summary['rejects_by_reason']}, {expected.get('duplicate', 0)} duplicates"
    )
    typer.echo(f"ground truth: {Path(summary['out_dir']) / 'ground_truth.parquet'}; planted PHI: phi.json")
