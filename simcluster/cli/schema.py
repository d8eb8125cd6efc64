"""`simcluster schema`: the JSON Schema of the scenario YAML, for editors and other tools."""

from __future__ import annotations

import json

import typer

from simcluster.cli.app import app
from simcluster.spec import config


@app.command()
def schema() -> None:
    """Print the JSON Schema of the scenario YAML."""
    typer.echo(json.dumps(config.json_schema(), indent=2))
