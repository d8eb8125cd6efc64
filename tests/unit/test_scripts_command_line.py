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


def _trace(tmp_path, text: str) -> str:
    path = tmp_path / "trace.json"
    path.write_text(text)
    return str(path)


BAD_TRACE = ("not json", "not valid JSON")
BAD_EVENT = ('{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "gemm", "pid": 1, "tid": 2, "ts": "x", "dur": 3}]}',
             "ts is 'x'")


@pytest.mark.parametrize(("script", "argv", "needle"), [
    ("benchmarks/fabric_memory.py", ["abc"], "argument gpus"),
    ("benchmarks/fabric_memory.py", ["0"], "argument gpus"),
    ("benchmarks/sweep.py", ["--out"], "--out"),
    ("benchmarks/engine.py", ["quick"], "quick: takes no arguments"),
    ("scripts/blackwell_kernels.py", ["abc"], "abc: takes no arguments"),
    ("scripts/tp_overlap_baseline.py", ["h100"], "h100: takes no arguments"),
    ("scripts/docs_numbers.py", ["no-such-block"], "no-such-block: no such block"),
    ("scripts/moe_layout_split.py", ["one"], "ROW TWIN"),
    ("scripts/moe_layout_split.py", ["demo", "demo"], "demo: not a validation row"),
    ("scripts/kineto_kernel_gaps.py", [], "TRACE"),
    ("scripts/suite_costs.py", [], "required: tests"),
    ("scripts/suite_costs.py", ["tests/no_such_file.py"], "no_such_file.py: no such test file"),
    ("scripts/suite_costs.py", ["tests", "--min-seconds", "-1"], "--min-seconds"),
    ("scripts/suite_costs.py", ["tests", "--", "-n", "2"], "-n: the costs are measured in one process"),
    ("scripts/kineto_kernel_gaps.py", BAD_TRACE, None),
    ("scripts/kineto_launch_intervals.py", BAD_TRACE, None),
    ("scripts/kineto_kernel_gaps.py", BAD_EVENT, None),
    ("scripts/kineto_launch_intervals.py", BAD_EVENT, None),
    ("scripts/kineto_host_calls.py", [], "TRACE"),
    ("scripts/kineto_host_calls.py", BAD_TRACE, None),
    ("scripts/kineto_host_calls.py", BAD_EVENT, None),
    ("scripts/kineto_call_launches.py", [], "TRACE"),
    ("scripts/kineto_call_launches.py", BAD_TRACE, None),
    ("scripts/kineto_call_launches.py", BAD_EVENT, None),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_argument_is_one_line_naming_it(tmp_path, script, argv, needle):
    """Round 23's leftovers: a word where a number goes, a malformed trace file, an argument a script does not take,
    a missing argument; each one line naming what is wrong, exit 2, before any work."""
    if needle is None:  # a trace file's content, and what the line says of it
        argv, needle = [_trace(tmp_path, argv[0])], argv[1]
    code, _out, err = _as_main(ROOT / script, *argv)
    assert code == 2, (code, err[-500:])
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err


def test_script_entry_counts_the_words_a_script_takes(capsys):
    from simcluster.core import script_entry

    def ran(argv):
        raise AssertionError(f"ran with {argv}")

    assert script_entry.run(ran, ["x"], "doc", words=(0, 0)) == 2
    assert capsys.readouterr().err == "error: x: takes no arguments (see --help)\n"
    assert script_entry.run(ran, ["--flag"], "doc", ["--flag"], words=(1, None), usage="TRACE [TRACE ...]") == 2
    assert capsys.readouterr().err == "error: expected TRACE [TRACE ...], got 0 arguments (see --help)\n"
    assert script_entry.run(ran, ["a", "b", "c"], "doc", words=(2, 2), usage="ROW TWIN") == 2
    assert "expected ROW TWIN, got 3 arguments" in capsys.readouterr().err
    assert script_entry.run(lambda argv: len(argv), ["--flag", "a", "b"], "doc", ["--flag"], words=(2, 2)) == 3
    assert script_entry.run(ran, ["a\nb"], "doc", words=(0, 0)) == 2  # a word with a newline stays one line
    assert capsys.readouterr().err.count("\n") == 1
