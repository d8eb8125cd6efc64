"""The one place the CLI builds what writes to the terminal: rich consoles, progress bars and spinners that print
text as written, never read as rich markup or emoji codes.

Names and paths come from the user (a scenario's ``name:``, ``--out``, a fabric file, a trace's sentences); rich
reads ``[...]`` in a string as markup (``[/]`` raised MarkupError, ``x[bold]y`` printed ``xy``) and ``:name:`` as an
emoji. ``Terminal`` turns both off for every string it prints and for table titles and cells; the CLI styles its own
text with ``rich.text.Text`` and explicit styles (``styled``), never with markup strings. A spinner's text
(``Terminal.status``) and a progress bar's description (``description``) are read as markup by rich whatever the
console, so they go through here too (round 36, docs/robustness.md).
"""

from __future__ import annotations

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
