"""Errors raised for users. A ScenarioError names the field at fault; the CLI prints it on one line, exit 2."""

from __future__ import annotations


class ScenarioError(ValueError):
    """A user error in a scenario, a command-line option or an input file.

    ``field`` is the dotted path of what is wrong (``parallelism.tp``, ``cluster.gpu``, ``--op``),
    ``message`` says what was expected.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        # args are the constructor's, so that copies (SimPy re-raising a process's error, pickling) rebuild it
        super().__init__(field, message)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class OutOfMemoryError(ScenarioError):
    """A layout whose per-GPU memory exceeds the GPU's HBM; the message carries the breakdown."""


# An error line is cut here: a message that quotes a huge input must still be one readable line.
MAX_ERROR_CHARS = 2000


def one_line(text: str) -> str:
    """``text`` on one printable line: control characters escaped (a field named 'a\\nb' stays one line), cut at
    ``MAX_ERROR_CHARS``. The CLI's error lines and the scripts' (core.script_entry) both pass through it."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."
