"""The ``simcluster`` command. Each subcommand lives in a module of this package named for it.

User errors (ScenarioError) print one line and exit with code 2, never a traceback.
"""

from __future__ import annotations

import sys

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


# ---- subcommand registration: one import per module, each registers its commands on `app` ----
from simcluster.cli import collective as _collective  # noqa: E402,F401
from simcluster.cli import compare as _compare  # noqa: E402,F401
from simcluster.cli import laws as _laws  # noqa: E402,F401
from simcluster.cli import replay as _replay  # noqa: E402,F401
from simcluster.cli import run as _run  # noqa: E402,F401
from simcluster.cli import schema as _schema  # noqa: E402,F401
from simcluster.cli import sweep as _sweep  # noqa: E402,F401
from simcluster.cli import validate as _validate  # noqa: E402,F401

# ---- end of registration ----


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: typer app with user errors turned into exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except ScenarioError as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
    except typer.Exit as err:
        return err.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except Exception as err:
        # usage errors of the (vendored or not) click layer carry their own exit code (2) and message
        message, code = getattr(err, "format_message", None), getattr(err, "exit_code", None)
        if callable(message) and isinstance(code, int):
            text = " ".join(message().split())
            print(f"error: {text} (see --help)", file=sys.stderr)
            return code
        raise
    return 0


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
