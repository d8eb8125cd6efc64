"""Errors raised for users. A ScenarioError names the field at fault; the CLI prints it on one line, exit 2."""

from __future__ import annotations

from collections.abc import Mapping


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
        field = str(self.field)
        if len(field) > MAX_FIELD_CHARS:  # a file path thousands of characters long: its ends say which
            field = f"{field[:MAX_FIELD_CHARS // 2]}...{field[-MAX_FIELD_CHARS // 4:]} ({len(field):,} chars)"
        return f"{field}: {self.message}" if field else self.message


# A field (a file's path) longer than this is printed by its two ends: the file systems' PATH_MAX is 4096 bytes,
# and a 5,000-character path filled the error line before the message could say what was wrong.
MAX_FIELD_CHARS = 240


class OutOfMemoryError(ScenarioError):
    """A layout whose per-GPU memory exceeds the GPU's HBM; the message carries the breakdown."""


# An error line is cut here: a message that quotes a huge input must still be one readable line.
MAX_ERROR_CHARS = 2000


def one_line(text: str) -> str:
    """``text`` on one printable line: control characters escaped (a field named 'a\\nb' stays one line), cut at
    ``MAX_ERROR_CHARS``. The CLI's error lines and the scripts' (core.script_entry) both pass through it."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


# Characters of a user's unknown name quoted back in an error: enough to recognise it, short enough that the line
# still shows the known names (a 200,000-character GPU name was echoed whole, then cut at MAX_ERROR_CHARS).
MAX_QUOTED_NAME = 60


def did_you_mean(name: object, known, key=str.lower) -> str:
    """"did you mean 'h100-sxm'? " for the known names closest to ``name`` (difflib's ratio >= 0.6 on ``key`` of
    each, case ignored by default), or "" when none is close. ``known``: names, or a mapping of spellings matched
    (aliases) to the name shown. The one suggester of the package (core.glossary uses it too)."""
    import difflib

    pairs = known.items() if isinstance(known, Mapping) else ((k, k) for k in known)
    by_key: dict[str, str] = {}
    for spelling, shown in pairs:
        by_key.setdefault(key(str(spelling)), str(shown))
    try:
        text = str(name)[:200]
    except ValueError:  # an integer past Python's digit limit (``shown``): no name is close to it
        return ""
    close = difflib.get_close_matches(key(text), by_key, n=3, cutoff=0.6)
    shown = dict.fromkeys(by_key[c] for c in close)  # several aliases of one name: the name once
    return f"did you mean {' or '.join(repr(c) for c in shown)}? " if shown else ""


def shown(value: object, limit: int = MAX_QUOTED_NAME) -> str:
    """``repr(value)`` for an error line, cut at ``limit`` characters. An integer past Python's limit for turning
    one into digits (``sys.get_int_max_str_digits``, 4,300: YAML's ``0x`` followed by 5,000 digits, a 3,000-group
    sexagesimal) is shown by its size: its repr raised ValueError, a traceback (round 31)."""
    try:
        text = repr(value)
    except ValueError:
        if isinstance(value, int):
            return f"an integer of {value.bit_length():,} bits"
        return f"a {type(value).__name__} holding an integer too long to print"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def quoted(name: object) -> str:
    """``name`` quoted for an error line, cut at ``MAX_QUOTED_NAME`` characters."""
    if isinstance(name, int) and not isinstance(name, bool):
        return shown(name)
    text = str(name)
    return repr(text) if len(text) <= MAX_QUOTED_NAME else f"{text[:MAX_QUOTED_NAME]!r}... ({len(text):,} chars)"


def unknown_name(field: str, what: str, name: object, known) -> ScenarioError:
    """The error for ``name`` not among ``known`` (a catalog, a list of choices): the closest known names first
    (``did_you_mean``), then every known name."""
    known = [str(k) for k in known]
    return ScenarioError(field, f"unknown {what} {quoted(name)} ({did_you_mean(name, known)}known: "
                         f"{', '.join(known)})")
