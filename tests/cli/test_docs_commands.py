"""Every `simcluster COMMAND ...` the docs and the README show names a real command, and each of its `--options` is
one that command takes (the parser's own list, as `--help` prints it), so a renamed or dropped option cannot stay
documented. docs/calibration.md is left out: it is a log of what was run at the time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.core
import typer.main

from simcluster.cli import app

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "calibration.md") + [ROOT / "README.md"]
# `simcluster` then the words of the command and its arguments, to the end of the code span or line (a line ending
# in a backslash goes on)
COMMAND = re.compile(r"(?<![\w/.-])simcluster ((?:\\\n|[^`\n|])*)")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _options(command) -> dict[tuple[str, ...], set[str]]:
    """Each command path (('run',), ('laws', 'eval'), ...) and the options it takes."""
    found = {}

    def walk(cmd, path):
        subs = getattr(cmd, "commands", {})
        if not subs:
            found[path] = {opt for p in cmd.params if isinstance(p, typer.core.TyperOption)
                           for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
        for name, sub in subs.items():
            walk(sub, (*path, name))

    walk(command, ())
    return found


OPTIONS = _options(typer.main.get_command(app))
GROUPS = {path[0] for path in OPTIONS if len(path) > 1}
TOP = {path[0] for path in OPTIONS}


def documented() -> list[tuple[str, tuple[str, ...], str]]:
    """(page:line, command path, the text after it) of every command shown in code (and in prose when its first
    word is a command)."""
    shown = []
    for page in PAGES:
        text = page.read_text()
        for match in COMMAND.finditer(text):
            words = match.group(1).split()
            if not words or not re.fullmatch(r"[a-z][a-z-]*", words[0]):
                continue
            in_code = text[match.start() - 1] == "`" or text.count("```", 0, match.start()) % 2 == 1
            if words[0] not in TOP and not in_code:
                continue   # prose: "simcluster promises ..."
            path = tuple(words[:2]) if words[0] in GROUPS else (words[0],)
            if words[0] in GROUPS and (len(words) < 2 or not re.fullmatch(r"[a-z][a-z-]*", words[1])):
                continue   # `simcluster laws eval|optimal|...`: the list of the group's commands
            line = text.count("\n", 0, match.start()) + 1
            shown.append((f"{page.name}:{line}", path, match.group(1)))
    return shown


def test_the_docs_show_commands():
    assert len(documented()) >= 40


@pytest.mark.parametrize(("where", "path", "rest"), documented(), ids=[w for w, _, _ in documented()])
def test_documented_command_and_options_exist(where, path, rest):
    assert path in OPTIONS, f"{where}: no command simcluster {' '.join(path)}"
    unknown = sorted(set(OPTION.findall(rest)) - OPTIONS[path])
    assert not unknown, f"{where}: simcluster {' '.join(path)} takes no {', '.join(unknown)}"


DOCS_CODE = " ".join(re.findall(r"`[^`]+`|```.*?```", " ".join(page.read_text() for page in PAGES), re.S))


@pytest.mark.parametrize("path", sorted(OPTIONS), ids=[" ".join(path) for path in sorted(OPTIONS)])
def test_every_option_is_named_in_the_docs(path):
    """The other way: each option a command takes is shown with it or named in code (`--no-plots`), so none is
    reachable only through --help (a --X/--no-X pair is named by either)."""
    shown = {option for _, command, rest in documented() if command == path for option in OPTION.findall(rest)}
    unnamed = sorted(option for option in OPTIONS[path] - shown - {"--help"}
                     if not re.search(rf"(?:{re.escape(option)}|--no-{re.escape(option[2:])})(?![\w-])", DOCS_CODE))
    assert not unnamed, f"simcluster {' '.join(path)}: no page names {', '.join(unnamed)}"
