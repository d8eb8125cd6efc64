"""`simcluster schema`: the JSON Schema of the scenario YAML, for editors and other tools."""

from __future__ import annotations

import typer

from simcluster.cli.app import app
from simcluster.core import outputs
from simcluster.spec import config


@app.command()
def schema() -> None:
    """Print the JSON Schema of the scenario YAML."""
    typer.echo(outputs.dumps(config.json_schema(), indent=2))
