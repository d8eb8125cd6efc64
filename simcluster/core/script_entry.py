"""The command line of the repository's scripts (``scripts/``, ``benchmarks/``) under the CLI's rules (round 23):
``--help`` prints the script's help and exits 0; an option it does not take, a scenario it cannot load or a file it
cannot read is one line, ``error: ...``, and exit code 2, never a traceback or a silent run of the defaults.

``Parser`` is argparse with that one-line error (argparse prints its usage block first), ``count`` its type of a
GPU count; ``run`` is the entry of a script that reads ``sys.argv`` itself (flags only, and how many other words it
takes), ``call`` that of a script whose ``main`` parses its command line with a ``Parser`` (both: Ctrl-C is one line
and exit 130). Lines pass through ``core.errors.one_line``, as the CLI's do."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator

from simcluster.core import interrupts
from simcluster.core.errors import ScenarioError, one_line

USAGE_ERROR = 2
INTERRUPTED = 130   # 128 + SIGINT, as the CLI exits (docs/robustness.md, "Exit codes")


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``prog: error: message``, no usage block) and exit 2, and whose
    options taking a value are taken once: argparse keeps the last of ``--structure gap --structure fill`` unsaid
    (round 35: ``fit_host_overheads.py`` ran a refit of the second), as YAML would a key written twice, which the
    scenario reader refuses (``core.inputs``). Options that add up (``action="append"``, ``"count"``) or switch
    (``store_true``) are argparse's as they are."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in (None, "store"):  # the registry the parser's groups share: their options too
            self.register("action", name, _StoreOnce)

    def parse_known_args(self, args=None, namespace=None):
        self.given_once: set[str] = set()  # the destinations set on this command line (``_StoreOnce``)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {one_line(message)}\n")


class _StoreOnce(argparse._StoreAction):
    """argparse's ``store``, refusing a second value for the same option (under any of its names)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(parser, "given_once", None)
        if given is not None and self.option_strings:  # an option; a positional is filled once
            if self.dest in given:
                several = self.nargs in ("*", "+") or isinstance(self.nargs, int) and self.nargs > 1
                parser.error(f"{'/'.join(self.option_strings)}: given twice; "
                             + (f"give all its values after one {option_string} (e.g. {option_string} A B)"
                                if several else "which value is meant?"))
            given.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


def count(text: str) -> int:
    """argparse ``type`` of a whole number >= 1 (a GPU count): 'abc', '2.5', '0' and '-4' are the parser's one-line
    error naming the argument."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def run(main: Callable[[list[str]], int | None], argv: list[str], doc: str | None,
        options: Iterable[str] = (), words: tuple[int, int | None] = (0, None), usage: str = "") -> int:
    """Run ``main(argv)`` as a script: ``-h``/``--help`` prints ``doc`` (exit 0); an argument starting with ``-``
    that is not one of ``options`` (the flags the script takes), or a number of other arguments outside ``words``
    (at least, at most: None for any; ``usage`` names them, e.g. 'TRACE [TRACE ...]'), is refused in one line
    before any work; a ScenarioError or an OSError (a file that cannot be read or written) is one line; Ctrl-C is
    one line, ``interrupted by SIGINT``, and exit code 130. Returns the exit code. A ``--`` ends the options, as in
    POSIX utilities: what follows is words, a name starting with ``-`` too (round 34 review: ``dp_phase_charges.py
    -- ROW`` was ``--: unknown option``); ``main`` gets the command line without it."""
    rest: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, rest = argv[:at], argv[at + 1:]
        if clash := [a for a in rest if a in set(options) | {"-h", "--help"}]:  # main finds its flags anywhere
            print(f"error: {one_line(clash[0])}: after -- but the name of an option (see --help)", file=sys.stderr)
            return USAGE_ERROR
    if "-h" in argv or "--help" in argv:
        try:
            print((doc or "").strip(), flush=True)
        except BrokenPipeError:
            return _stdout_closed()
        return 0
    known = set(options)
    unknown = [a for a in argv if a.startswith("-") and a not in known and not _is_number(a)]
    if unknown:
        takes = f"takes {', '.join(sorted(known))}" if known else "takes no options"
        print(f"error: {one_line(unknown[0])}: unknown option ({takes}; see --help)", file=sys.stderr)
        return USAGE_ERROR
    given = [a for a in argv if a not in known] + rest
    low, high = words
    if high == 0 and given:
        print(f"error: {one_line(given[0])}: takes no arguments (see --help)", file=sys.stderr)
        return USAGE_ERROR
    if len(given) < low or (high is not None and len(given) > high):
        print(f"error: expected {usage or 'arguments'}, got {len(given)} argument{'s' * (len(given) != 1)} "
              "(see --help)", file=sys.stderr)
        return USAGE_ERROR
    return call(main, argv + rest)


def call(main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Run ``main(argv)`` of a script that reads its own command line (a ``Parser``, whose --help and usage errors
    exit by themselves) under ``run``'s rules: a ScenarioError or an OSError is one line and exit 2; Ctrl-C is one
    line, ``interrupted by SIGINT``, and exit 130, what was printed so far staying printed, also when a library
    turned it into an error of its own. Returns the exit code."""
    received: list[int] = []
    try:
        with _recording_sigint(received):
            code = main(argv)
    except KeyboardInterrupt:   # Ctrl-C: the CLI's line and code (what was printed so far stays printed)
        return _interrupted()
    except BrokenPipeError:
        return _stdout_closed()
    except (ScenarioError, OSError) as err:
        if received:   # pydantic's serializers wrap an interrupt as a ValueError, its reader a ScenarioError
            return _interrupted()
        if isinstance(err, ScenarioError):
            print(f"error: {one_line(err)}", file=sys.stderr)
        else:
            where = f"{err.filename}: " if err.filename is not None else ""
            print(f"error: {one_line(where + (err.strerror or str(err)))}", file=sys.stderr)
        return USAGE_ERROR
    return code or 0


def _interrupted() -> int:
    print("interrupted by SIGINT", file=sys.stderr)
    return INTERRUPTED


@contextlib.contextmanager
def _recording_sigint(received: list[int]) -> Iterator[None]:
    """Python's Ctrl-C (a KeyboardInterrupt), recording that it came: pydantic calls a field's serializer inside
    ``model_dump`` and wraps whatever it raises, a KeyboardInterrupt too, as a ValueError, which a validator calling
    ``model_dump`` (a GPU preset's) turns into a validation error; the scenario reader then said ``error:
    cluster.gpu: ... KeyboardInterrupt`` and exit 2 where Ctrl-C is 130 (round 38: CI's run of
    test_ctrl_c_in_a_script...). Only where Python's own handler is in place (not ignored, not a thread)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def record(signum, frame):
        received.append(signum)
        signal.default_int_handler(signum, frame)

    def raise_received() -> None:   # what ``core.interrupts`` asks a caller of a wrapping library to raise
        if received:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, record)
    try:
        with interrupts.raising(raise_received):
            yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def print_reports(report: Callable[[str], list[str]]) -> Callable[[list[str]], int]:
    """The ``main`` of a script that prints one report per scenario named on its command line (``report(name)``,
    its lines); a wrong name or file is ``call``'s one line and exit 2."""
    def main(names: list[str]) -> int:
        for name in names:
            print("\n".join(report(name)))
        return 0
    return main


def subcommands(commands: dict[str, Callable[[], object]]) -> Callable[[list[str]], int]:
    """The ``main`` of a script run as ``script.py COMMAND`` (``run`` with ``words=(1, 1)``): runs
    ``commands[COMMAND]()``; a word that is not one of them is ``call``'s one line naming ``command``, exit 2."""
    def main(argv: list[str]) -> int:
        if not argv or argv[0] not in commands:
            raise ScenarioError("command", f"{argv[0] if argv else ''!r} is not one of {', '.join(commands)}")
        commands[argv[0]]()
        return 0
    return main


def _stdout_closed() -> int:
    """The reader closed stdout (``script --help | head -1``): one line and exit 2, as the CLI's rule for an output
    that cannot be written (docs/robustness.md, "Exit codes"); stdout is pointed at /dev/null first, so the
    interpreter's last flush does not fail a second time."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):   # no file descriptor behind sys.stdout (a test's capture): nothing to flush
        pass
    print("error: stdout: closed by its reader (Broken pipe)", file=sys.stderr)
    return USAGE_ERROR


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
