"""`simcluster schema`: the JSON Schema of the scenario YAML, for editors and other tools."""

from __future__ import annotations

import typer

from simcluster.cli.app import app
from simcluster.core import outputs
from simcluster.spec import config
from simcluster.spec import jobs as jobs_spec


@app.command()
def schema(jobs: bool = typer.Option(False, "--jobs", help="the schema of a scenario with several jobs on one "
                                     "fabric (docs/scenario.md) instead")) -> None:
    """Print the JSON Schema of the scenario YAML."""
    document = jobs_spec.JobsScenario.model_json_schema() if jobs else config.json_schema()
    typer.echo(outputs.dumps(document, indent=2))
