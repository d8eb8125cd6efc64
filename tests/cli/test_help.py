"""`--help` of every command as a user reads it: flags shown without a type, every option listed."""

import re

import pytest
import typer.core
import typer.main

from simcluster.cli import app


def _commands(command, path: tuple[str, ...] = ()):
    """(path, command) of ``simcluster`` and of every command and group under it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_every_subcommand_is_reached():
    names = {" ".join(path) for path, _ in COMMANDS}
    run = dict(COMMANDS)[("run",)]
    assert sum(isinstance(p, typer.core.TyperOption) and p.is_flag for p in run.params) >= 5  # --json, --plot ...
    assert {"run", "compare", "sweep", "replay", "laws loss-vs-time", "laws project", "explain"} <= names


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "simcluster" for p, _ in COMMANDS])
def test_help_shows_no_type_on_flags_and_lists_every_option(cli, path, command):
    code, stdout, _ = cli(*path, "--help")
    assert code == 0
    assert "<bool>" not in stdout  # a flag takes no value (typer 0.29 printed <bool> on each)
    options = [p for p in command.params if isinstance(p, typer.core.TyperOption) and not p.hidden]
    for option in options:
        assert option.opts[0] in stdout, option.opts[0]
    for option in (o for o in options if not o.is_flag):
        # the option's own row: the option column starts the line (after a required-marker '*')
        row = re.compile(rf"│ [* ]? {{0,3}}{re.escape(option.opts[0])}\s")
        line = next(line for line in stdout.splitlines() if row.match(line))
        assert "<" in line, f"{option.opts[0]} takes a value and shows its type: {line}"


def test_help_paragraphs_are_wrapped_by_the_terminal_not_by_the_source():
    # typer's rich help keeps a docstring's line breaks; run's docstring breaks after "links and" at 120 columns
    for path, command in COMMANDS:
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph, " ".join(path)
    run = dict((" ".join(p), c) for p, c in COMMANDS)["run"]
    assert "links and trace" in run.help


# options whose unset value means nothing beyond "not given" (a filter, an extra output, a repeatable addition)
NOTHING_BY_DEFAULT = {"--option", "--topology-option", "--until", "--events", "--vary", "--scheduler", "--only",
                      "--fit", "--out", "--tokens", "--summary"}


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "simcluster" for p, _ in COMMANDS])
def test_an_option_without_a_shown_default_says_what_unset_means(path, command):
    """typer shows [default: X] only for a value; an option left None (the scenario's, the data file's, the trace's)
    says so in its help ('default: the scenario's `network` (flow ...)')."""
    silent = [p.opts[0] for p in command.params if isinstance(p, typer.core.TyperOption) and not p.is_flag
              and not p.required and p.default in (None, [], ()) and p.opts[0] not in NOTHING_BY_DEFAULT
              and "default" not in (p.help or "") and "this or --" not in (p.help or "")]
    assert not silent, f"simcluster {' '.join(path)}: {', '.join(silent)} show no default"


@pytest.mark.parametrize("module", ["simcluster", "simcluster.cli"])
def test_python_dash_m_runs_the_command(module):
    """``python -m simcluster`` and ``python -m simcluster.cli`` are the ``simcluster`` command."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout and "run" in done.stdout
