"""``mgll`` console script. Each subcommand lives in ``mgll/commands/<name>.py`` and imports its work lazily."""

from __future__ import annotations

import typer

from mgll.commands import build, demo_data, evaluate, pretrain, stack, text

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

app.command("demo-data", help="Generate the synthetic DICOM + report + fundus demo corpus.")(demo_data.demo_data)
app.command("build-dataset", help="Build WebDataset shards + manifest + card from sources.")(build.build_dataset)
app.command("sections", help="Split reports into sections and diagnosis/explanation texts.")(text.sections)
app.command("label", help="Extract labels (1/0/-1/absent) with evidence from reports.")(text.label)
app.command("pretrain", help="Pretrain an open_clip model with the MGLL loss (or a baseline).")(pretrain.pretrain)
app.command("evaluate", help="Zero-shot, linear-probe, fine-tune and retrieval benchmarks.")(evaluate.evaluate)
app.command("up", help="Start the local Prefect server, worker and MLflow server.")(stack.up)
app.command("down", help="Stop the local services started by `mgll up`.")(stack.down)
app.command("status", help="Show URL, PID and health of each local service.")(stack.status)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
