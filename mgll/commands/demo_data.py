"""Placeholder until its owner lands it; every function here exits non-zero."""
import typer
def demo_data() -> None:
    raise typer.Exit(2)
