"""The ``simcluster`` command. Each subcommand lives in a module of this package named for it; ``app`` holds
the typer application they register on.

User errors (ScenarioError) print one line and exit with code 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer

# each subcommand module registers its commands on ``app`` when imported
from simcluster.cli import collective, compare, laws, replay, run, schema, sweep, validate  # noqa: F401
from simcluster.cli.app import USER_ERROR_EXIT, app, fail
from simcluster.core.errors import ScenarioError

__all__ = ["USER_ERROR_EXIT", "app", "console", "fail", "main"]


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
