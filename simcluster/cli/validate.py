"""`simcluster validate`: every calibration case, simulated vs published TFLOP/s per GPU, with the errors."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from simcluster import validation
from simcluster.cli import app
from simcluster.cli.run import check_network


@app.command()
def validate(
    network: str | None = typer.Option(None, "--network", help="network model: analytic | flow | chunk"),
    only: str | None = typer.Option(None, "--only", help="run only cases whose scenario name contains this"),
    as_json: bool = typer.Option(False, "--json", help="print the cases and error statistics as JSON"),
) -> None:
    """Hold the simulator against published training throughput (shared calibration set)."""
    check_network(network)
    console = Console(stderr=as_json)
    cases = [c for c in validation.cases() if only is None or only in c["scenario"]]
    results = [validation.run_case(case, network)
               for case in track(cases, description="simulating calibration runs", console=console,
                                 transient=True)]
    stats = validation.error_stats(results) if results else {}
    if as_json:
        typer.echo(json.dumps({"cases": [{**r.__dict__, "error": r.error} for r in results], **stats}, indent=2))
        return
    table = Table(title="simulated vs published TFLOP/s per GPU")
    for column in ("scenario", "metric", "published", "simulated", "error"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for r in results:
        table.add_row(r.scenario, r.metric, f"{r.published_tflops:.1f}", f"{r.simulated_tflops:.1f}",
                      f"{r.error:+.1%}")
    console.print(table)
    if stats:
        console.print(f"median |error| {stats['median_abs_error']:.1%}, max |error| {stats['max_abs_error']:.1%} "
                      f"over {stats['case_count']} cases")
