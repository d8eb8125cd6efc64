"""The typer application every subcommand registers on, and the one-line user error of an option."""

from __future__ import annotations

import typer

from simcluster.core.errors import ScenarioError

app = typer.Typer(
    name="simcluster",
    help="Simulate GPU clusters training large models: step time, MFU, network, loss over wall-clock, cost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

USER_ERROR_EXIT = 2


def fail(field: str, message: str) -> None:
    """Raise the one-line user error for a bad command-line option."""
    raise ScenarioError(field, message)
