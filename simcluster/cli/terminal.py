"""The one place the CLI builds what writes to the terminal: rich consoles, progress bars and spinners that print
text as written, never read as rich markup or emoji codes.

Names and paths come from the user (a scenario's ``name:``, ``--out``, a fabric file, a trace's sentences); rich
reads ``[...]`` in a string as markup (``[/]`` raised MarkupError, ``x[bold]y`` printed ``xy``) and ``:name:`` as an
emoji. ``Terminal`` turns both off for every string it prints and for table titles and cells; the CLI styles its own
text with ``rich.text.Text`` and explicit styles (``styled``), never with markup strings. A spinner's text
(``Terminal.status``) and a progress bar's description (``description``) are read as markup by rich whatever the
console, so they go through here too (round 36, docs/robustness.md).

The environment's widths are settled here too (``settle_widths``, round 37): rich and typer take ``COLUMNS`` and
``TERMINAL_WIDTH`` as they are, so ``COLUMNS=0`` printed nothing, ``COLUMNS=5`` tables of empty cells,
``COLUMNS=100000000`` a 1.9 GB help, and ``TERMINAL_WIDTH=abc`` or ``COLUMNS=²`` a traceback.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping

from rich.console import Console
from rich.progress import TextColumn
from rich.text import Text


class Terminal(Console):
    """A ``rich.console.Console`` without markup or emoji codes; ``status`` shows its text as written."""

    def __init__(self, **kwargs):
        kwargs.setdefault("markup", False)
        kwargs.setdefault("emoji", False)
        super().__init__(**kwargs)

    def status(self, status, **kwargs):
        """rich's spinner reads a string as markup (``rich.spinner.Spinner`` calls ``Text.from_markup``)."""
        return super().status(Text(status) if isinstance(status, str) else status, **kwargs)


def styled(text: str, style: str) -> Text:
    """``text`` as written, in ``style`` (the CLI's own emphasis: a bold cell, a red 'failed')."""
    return Text(text, style=style)


def description(style: str | None = None) -> TextColumn:
    """A progress bar's column of its task's description, printed as written (rich's ``TextColumn`` reads its
    formatted text as markup by default)."""
    return TextColumn("{task.description}", style=style or "none", markup=False)


# The widest a terminal can say it is: the kernel reports a terminal's size in ``struct winsize``, whose ``ws_col``
# is an unsigned short (POSIX ``tcgetwinsize``, Linux ``asm-generic/termios.h``). A width above it is no terminal's;
# typer's help panels are padded to the width (COLUMNS=100000000: 1.9 GB of spaces).
MAX_COLUMNS = 65_535
# The narrowest width at which every cell of the CLI's widest table of fixed columns (10: ``laws project``'s year,
# six limits, binding, efficiency and loss) keeps one character: rich gives a column its text, a space each side
# and a border, 10 x 3 + 11 = 41. Below it rich prints cells empty, and at 0 nothing at all, exit 0 (round 37).
MIN_COLUMNS = 41
# The variables rich (COLUMNS) and typer's help (TERMINAL_WIDTH, read with ``int``) take a width from.
WIDTH_VARIABLES = ("COLUMNS", "TERMINAL_WIDTH")
_WHOLE = re.compile(r"[0-9]+")


def settle_widths(environ: MutableMapping[str, str]) -> None:
    """Each of ``WIDTH_VARIABLES`` set in ``environ`` made a width rich and typer print by: a whole number of ASCII
    digits taken into ``MIN_COLUMNS`` .. ``MAX_COLUMNS``; anything else removed, so the terminal's own width is
    used (rich ignores a COLUMNS that is not digits, but reads ``'²'`` as digits and raises in ``int``; typer raised
    on any ``TERMINAL_WIDTH`` that is not an integer)."""
    for name in WIDTH_VARIABLES:
        value = environ.get(name)
        if value is None:
            continue
        if not _WHOLE.fullmatch(value.strip()):
            del environ[name]
            continue
        digits = value.strip().lstrip("0") or "0"  # a 5,000-digit width is past Python's int() limit: MAX_COLUMNS
        width = MAX_COLUMNS if len(digits) > len(str(MAX_COLUMNS)) else min(max(int(digits), MIN_COLUMNS),
                                                                            MAX_COLUMNS)
        if str(width) != value:
            environ[name] = str(width)
