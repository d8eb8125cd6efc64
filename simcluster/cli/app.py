"""The typer application every subcommand registers on, the one-line user error of an option, and the checked
option types (finite floats) and interrupts shared by the subcommands."""

from __future__ import annotations

import contextlib
import inspect
import math
import signal
import threading
import time
from collections.abc import Iterator

import typer
import typer.core

from simcluster.core.errors import ScenarioError


def _untyped_flags(command, ctx) -> None:
    """Give every flag (an option that takes no value: ``--json``, ``--help``) an empty metavar, so that help shows
    no type for it. typer 0.29's rich help prints each option's ``display_type_rich``, which for a flag is
    ``<bool>``, as if ``--json`` took a value; click's plain help (and typer's rich help before 0.29) print none.
    A flag's metavar is read nowhere else: click never asks a flag for a value."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and not getattr(param, "count", False) and param.metavar is None:
            param.metavar = ""


def _one_line_paragraphs(text: str | None) -> str | None:
    """A docstring's paragraphs each on one line: typer's rich help keeps a docstring's line breaks in the list of
    commands, so a sentence broken at the source's 120 columns came out broken mid-line."""
    if not text:
        return text
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in inspect.cleandoc(text).split("\n\n"))


class Command(typer.core.TyperCommand):
    """Every subcommand's class (``Typer.command`` defaults to it): help without ``<bool>`` on flags, and
    paragraphs that the terminal wraps rather than the source."""

    def __init__(self, name, *, help: str | None = None, **kwargs):  # noqa: A002 (click's name)
        super().__init__(name, help=_one_line_paragraphs(help), **kwargs)

    def format_help(self, ctx, formatter) -> None:
        _untyped_flags(self, ctx)
        return super().format_help(ctx, formatter)

    def make_parser(self, ctx):
        """click's parser, refusing an option that takes one value given twice: click keeps the last unsaid
        (round 35 review: ``laws eval --params 1e9 --params 2e9`` evaluated 2e9; round 35 refused the same in the
        scripts, ``core.script_entry.Parser``). Options that add up (``multiple``, ``count``) and switches are
        click's as they are."""
        parser = super().make_parser(ctx)
        parse = parser.parse_args

        def parse_once(args):
            opts, rest, order = parse(args=args)
            seen = set()
            for param in order:
                if (param.param_type_name == "option" and not (param.multiple or param.count or param.is_flag)
                        and not ctx.resilient_parsing):  # (typer's own copy of click: no isinstance)
                    if param.name in seen:
                        raise ScenarioError("/".join(param.opts), "given twice; which value is meant?")
                    seen.add(param.name)
            return opts, rest, order

        parser.parse_args = parse_once
        return parser


class Group(typer.core.TyperGroup):
    """The class of ``simcluster`` and of its command groups (``laws``): help without ``<bool>`` on flags."""

    def format_help(self, ctx, formatter) -> None:
        _untyped_flags(self, ctx)
        return super().format_help(ctx, formatter)


class Typer(typer.Typer):
    """``typer.Typer`` whose commands and groups are ``Command`` and ``Group``; every command group of the CLI is
    one (a plain ``typer.Typer`` would bring ``<bool>`` back to its help)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("cls", Group)
        super().__init__(**kwargs)

    def command(self, name: str | None = None, *, cls: type[typer.core.TyperCommand] | None = None, **kwargs):
        return super().command(name, cls=cls or Command, **kwargs)


app = Typer(
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
    """SIGINT, SIGTERM or SIGHUP received: the CLI exits with 128 + the signal number (130, 143, 129), one line.

    A BaseException, not a KeyboardInterrupt: click turns KeyboardInterrupt into a bare Abort (and an empty line),
    and ``except Exception`` handlers in libraries must not swallow it."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.message = message
        super().__init__(signum, message)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# The signals a command turns into ``Interrupted`` (cli._handled_signals; SIGHUP where there is one).
INTERRUPTS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


# How long ``keeping`` ignores a further signal: the files it guards are written in well under a second (a table,
# one summary; round 29), so a signal later than this is the user asking again for a write that does not end (a
# hung network file system, a stalled pipe): it then raises as any signal does, and the command exits (round 30).
# Not a measured quantity but a bound: ``run``'s kept summary.json (7.5 kB) takes 4-5 ms here (round 30's review),
# and ``docker stop`` sends SIGKILL 10 s after its SIGTERM by default (docker-stop(1), ``-t, --time=10``): a longer
# grace would not be honoured in a container anyway. The CLI's handler also records, not raises, a signal within
# this of the one it raised (``cli._raise_interrupted``: the second of two sent together; round 30's review).
KEEP_GRACE_S = 10.0


@contextlib.contextmanager
def keeping() -> Iterator[None]:
    """While an interrupted command writes the work it had finished (a run's summary.json, a compare's or sweep's
    partial table, a replay's report): a further SIGINT, SIGTERM or SIGHUP is ignored for ``KEEP_GRACE_S``. It raised
    inside the write, and ``fresh_folder`` removed what was being kept (round 29). These files are small (a table,
    one summary) and written in well under a second; the command then exits for the first signal. A signal after
    the grace raises ``Interrupted`` (what is half-written is then removed): nothing can hang on a write that never
    ends. Only handlers that raise are replaced (``nohup``'s SIG_IGN stays); outside the main thread, where no
    handler runs, nothing is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in INTERRUPTS}
    previous = {signum: handler for signum, handler in previous.items() if callable(handler)}
    until = [time.monotonic() + KEEP_GRACE_S]  # set to infinity once the write is done: nothing raises after it

    def ignore(signum, _frame) -> None:
        if time.monotonic() > until[0]:
            raise Interrupted(signum, "again while finished work was written: the write abandoned")

    for signum in previous:
        signal.signal(signum, ignore)
    try:
        yield
    finally:
        until[0] = math.inf
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # a signal still pending runs through ``ignore`` first
