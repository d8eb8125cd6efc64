"""`simcluster explain TERM`: what a reported term means (MFU, exposed communication, link tier, ...)."""

from __future__ import annotations

import typer

from simcluster.cli.app import app
from simcluster.core import glossary


@app.command()
def explain(term: list[str] = typer.Argument(None, help="a term such as MFU, 'exposed communication', "
                                             "peak_link_utilisation_by_kind; none: list the terms")) -> None:
    """Explain a term of simcluster's output (the glossary, docs/glossary.md)."""
    if not term:
        typer.echo("terms: " + ", ".join(glossary.terms()))
        return
    name, entry = glossary.lookup(" ".join(term))
    typer.echo(glossary.entry_text(name, entry))
