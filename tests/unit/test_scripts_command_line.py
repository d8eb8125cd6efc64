"""Every script under scripts/ and benchmarks/ as a user starts it (round 23): ``--help`` prints its help and exits 0
without doing any work, and an option it does not take is one line naming the option, exit code 2, never a
traceback and never a run of the defaults (simcluster.core.script_entry). Each script runs as ``__main__`` in this
process (its imports are shared), under a time limit: a script that ignored the flag and started its work fails."""

from __future__ import annotations

import contextlib
import io
import runpy
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*ROOT.glob("scripts/*.py"), *ROOT.glob("benchmarks/*.py")])
LIMIT_S = 20  # help and refusals take milliseconds once the modules are loaded (the first load: a few seconds)


def _as_main(path: Path, *argv: str) -> tuple[int, str, str]:
    """Run ``path`` as ``python path ARGV``; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()

    def alarm(_signum, _frame):
        raise TimeoutError(f"{path.name} {' '.join(argv)} did not return within {LIMIT_S} s (running its work?)")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(LIMIT_S)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(path), *argv]
    sys.path.insert(0, str(path.parent))
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        sys.argv, sys.path[:] = saved_argv, saved_path
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_help_works(path):
    code, out, err = _as_main(path, "--help")
    assert code == 0, (code, err[-500:])
    assert out.strip() and "Traceback" not in err


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_an_unknown_option_is_one_line_and_exit_2(path):
    code, out, err = _as_main(path, "--no-such-option")
    assert code == 2, (code, err[-500:])
    # the option named, or (argparse checks them first) the required arguments missing, or what the script takes
    assert err.count("\n") == 1 and any(w in err for w in ("--no-such-option", "required", "takes")), err
    assert "Traceback" not in err


def test_script_entry_turns_a_scenario_error_and_a_missing_file_into_one_line(capsys):
    from simcluster.core import script_entry
    from simcluster.core.errors import ScenarioError

    def bad_scenario(_argv):
        raise ScenarioError("model", "unknown preset 'x'")

    def missing(_argv):
        open("/nonexistent/file.json")

    assert script_entry.run(bad_scenario, [], "doc") == 2
    assert capsys.readouterr().err == "error: model: unknown preset 'x'\n"
    assert script_entry.run(missing, [], "doc") == 2
    assert capsys.readouterr().err == "error: /nonexistent/file.json: No such file or directory\n"
    assert script_entry.run(lambda argv: 3, ["-1.5"], "doc") == 3  # a negative number is a value, not an option
