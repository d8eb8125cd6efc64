"""The command line of the repository's scripts (``scripts/``, ``benchmarks/``) under the CLI's rules (round 23):
``--help`` prints the script's help and exits 0; an option it does not take, a scenario it cannot load or a file it
cannot read is one line, ``error: ...``, and exit code 2, never a traceback or a silent run of the defaults.

``Parser`` is argparse with that one-line error (argparse prints its usage block first); ``run`` is the entry of a
script that reads ``sys.argv`` itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable

from simcluster.core.errors import ScenarioError

USAGE_ERROR = 2


def _line(text: str) -> str:
    return " ".join(str(text).split())


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``prog: error: message``, no usage block) and exit 2."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {_line(message)}\n")


def run(main: Callable[[list[str]], int | None], argv: list[str], doc: str | None,
        options: Iterable[str] = ()) -> int:
    """Run ``main(argv)`` as a script: ``-h``/``--help`` prints ``doc`` (exit 0); an argument starting with ``-``
    that is not one of ``options`` (the flags the script takes) is refused before any work; a ScenarioError or an
    OSError (a file that cannot be read or written) is one line. Returns the exit code."""
    if "-h" in argv or "--help" in argv:
        print((doc or "").strip())
        return 0
    known = set(options)
    unknown = [a for a in argv if a.startswith("-") and a not in known and not _is_number(a)]
    if unknown:
        takes = f"takes {', '.join(sorted(known))}" if known else "takes no options"
        print(f"error: {unknown[0]}: unknown option ({takes}; see --help)", file=sys.stderr)
        return USAGE_ERROR
    try:
        code = main(argv)
    except ScenarioError as err:
        print(f"error: {_line(err)}", file=sys.stderr)
        return USAGE_ERROR
    except OSError as err:
        where = f"{err.filename}: " if err.filename is not None else ""
        print(f"error: {_line(where + (err.strerror or str(err)))}", file=sys.stderr)
        return USAGE_ERROR
    return code or 0


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
