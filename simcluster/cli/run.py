"""`simcluster run`: simulate a scenario (the bundled default when none is given) and report its summary."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from simcluster import config
from simcluster.cli import app


@app.command()
def run(
    scenario: str | None = typer.Argument(None, help="scenario YAML file or bundled name; default: the bundled demo"),
    out: Path | None = typer.Option(None, "--out", help="output folder (default runs/<name>/)"),
    network: str | None = typer.Option(None, "--network", help="network model: analytic | flow | chunk"),
    steps: int | None = typer.Option(None, "--steps", min=1, help="optimizer steps to simulate"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout"),
) -> None:
    """Simulate one scenario and print its summary."""
    spec = config.load(scenario)
    table = Table(title=spec.name)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("GPUs", str(spec.cluster.gpus))
    table.add_row("model params", f"{spec.model.params / 1e9:.1f} B")
    Console().print(table)
