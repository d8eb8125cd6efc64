"""The typer application every subcommand registers on, the one-line user error of an option, and the checked
option types (finite floats) and interrupts shared by the subcommands."""

from __future__ import annotations

import math

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


def finite(text) -> float:
    """Parser of every float option, ``typer.Option(..., parser=finite)``: click's FLOAT reads 'inf' and 'nan'
    as numbers; a ValueError here becomes click's one-line usage error (exit 2)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def check_count(value: int | None, option: str, maximum: int, reason: str) -> int | None:
    """An integer option within [1, maximum]; ``reason`` says why the bound (it is printed with the error)."""
    if value is not None and not 1 <= value <= maximum:
        fail(option, f"expected 1 to {maximum:,}, got {value:,} ({reason})")
    return value


def check_at_least(value: float, low: float, option: str, reason: str) -> float:
    """A number option >= ``low`` (finite already: ``finite``); ``reason`` says why the bound."""
    if not value >= low:
        fail(option, f"expected at least {low:g}, got {value:g} ({reason})")
    return value


# A loss target above this is no target: a uniform guess over a vocabulary of 10^8 tokens already scores
# ln(1e8) = 18.4 nats/token, and every model starts below it; above it the tokens needed round to zero.
MAX_TARGET_LOSS = 20.0


def check_target_loss(value: float | None, option: str = "--target-loss") -> float | None:
    """A target loss in (0, MAX_TARGET_LOSS] nats/token, or None."""
    if value is not None and not 0.0 < value <= MAX_TARGET_LOSS:
        fail(option, f"expected a loss in (0, {MAX_TARGET_LOSS:g}] nats/token, got {value:g} (a uniform guess over "
             "10^8 tokens scores 18.4)")
    return value


class Interrupted(BaseException):
    """SIGINT or SIGTERM received: the CLI exits with 128 + the signal number (130, 143) and one line.

    A BaseException, not a KeyboardInterrupt: click turns KeyboardInterrupt into a bare Abort (and an empty line),
    and ``except Exception`` handlers in libraries must not swallow it."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.message = message
        super().__init__(signum, message)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
