"""Round 37's attack on the commands (docs/calibration/round-37.md, "Round 37: the commands attacked a fourth time").
Each case failed on main before it:

- stdout's reader gone (``simcluster validate --help | head -1``): click, typer and rich each ended the command with
  exit 1 and no word, where docs/robustness.md's rule (and the scripts') is one line and exit 2;
- stdout closed (``>&-``): every line dropped, then an AttributeError traceback at the last flush; stderr closed
  (``2>&-``): the error line printed into stdout and exit 1;
- ``COLUMNS=0`` printed nothing (exit 0), ``COLUMNS=5`` tables of empty cells, ``COLUMNS=100000000`` a 1.9 GB help;
  ``TERMINAL_WIDTH=abc`` and ``COLUMNS=²`` a ValueError traceback;
- a locale whose encoding is ASCII (``LC_ALL=C`` without Python's locale coercion): the bundled data read in the
  locale's encoding (UnicodeDecodeError traceback: ``validate``, ``run --list``), a scenario named ``smäll`` printed
  with a UnicodeEncodeError traceback after its files were written;
- ``replay`` wrote events.csv and trace.json.gz in place: a crash mid-write left a cut file under the good name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simcluster.cli.terminal import MAX_COLUMNS, MIN_COLUMNS, settle_widths
from tests.cli.scenario_files import SMALL, assert_one_line, write_scenario

ROOT = Path(__file__).resolve().parents[2]


def _simcluster(*args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """``python -m simcluster ARGS`` as a user runs it (the console script's streams, not a test's capture)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "simcluster", *args], cwd=popen.pop("cwd", ROOT),
                            env=environment, text=True, **popen)


# ---- 1. stdout's reader gone, stdout or stderr closed ------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ("validate", "--help"),   # typer's help: rich's Console.on_broken_pipe (SystemExit(1))
    ("laws", "project"),      # a table of the CLI's own Terminal: the same
    ("schema",),              # typer.echo of 78 kB (more than a pipe holds): click's EPIPE handling, sys.exit(1)
])
def test_a_reader_leaving_stdout_is_one_line_and_2(args):
    child = _simcluster(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()   # the reader gone before the command writes (head -1 having read its line)
    err = child.stderr.read()
    assert child.wait(timeout=120) == 2, err[-800:]
    assert err == "error: stdout: closed by its reader (Broken pipe)\n"


def test_a_closed_stdout_is_refused_before_anything_runs(tmp_path):
    scenario = write_scenario(tmp_path, SMALL)
    child = _simcluster("run", str(scenario), "--network", "analytic", "--out", str(tmp_path / "o"),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1))
    err = child.stderr.read()
    assert child.wait(timeout=120) == 2, err[-800:]
    assert err.startswith("error: stdout: closed (>&-)") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()   # refused: nothing simulated, nothing written


def test_a_closed_stderr_keeps_the_error_out_of_stdout(tmp_path):
    child = _simcluster("run", str(tmp_path / "missing.yaml"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                        preexec_fn=lambda: os.close(2))
    out = child.stdout.read()
    assert child.wait(timeout=120) == 2
    assert out == ""   # the error line went to stdout before, and the exit was 1 (an AttributeError at exit)


# ---- 2. widths from the environment ------------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "settled"), [
    ("0", str(MIN_COLUMNS)), ("5", str(MIN_COLUMNS)), ("80", "80"), (" 80 ", "80"), ("0080", "80"),
    ("100000000", str(MAX_COLUMNS)), ("9" * 5000, str(MAX_COLUMNS)),   # past int()'s 4,300 digits
    ("abc", None), ("-5", None), ("", None), ("²", None), ("٣", None), ("8.5", None),
])
def test_widths_from_the_environment_are_settled(given, settled):
    for name in ("COLUMNS", "TERMINAL_WIDTH"):
        environ = {name: given}
        settle_widths(environ)
        assert environ.get(name) == settled


def test_a_width_of_0_prints_the_table_at_the_narrowest_width(cli, monkeypatch):
    """COLUMNS=0 printed nothing, exit 0; now the table as at MIN_COLUMNS, each of its ten columns' cells holding a
    character (at COLUMNS=33, two thirds of them were empty)."""
    monkeypatch.setenv("COLUMNS", str(MIN_COLUMNS))
    code, narrowest, _ = cli("laws", "project")
    assert code == 0 and narrowest.count("\n") > 10
    monkeypatch.setenv("COLUMNS", "0")
    code, out, _ = cli("laws", "project")
    assert code == 0 and out == narrowest
    rows = [line for line in out.splitlines() if line.startswith(("┃", "│"))]   # its header and rows
    assert len(rows) > 10
    assert all(cell.strip() for row in rows for cell in row[1:-1].replace("┃", "│").split("│")), out


@pytest.mark.parametrize("env", [{"TERMINAL_WIDTH": "abc", "COLUMNS": "²"}, {"TERMINAL_WIDTH": "10000000000"}])
def test_a_width_that_is_no_terminal_s_leaves_help_bounded(env):
    """typer read TERMINAL_WIDTH with int() (ValueError traceback), rich read '²' as digits and int() raised; a
    width of 10^10 padded the help's panels to gigabytes."""
    child = _simcluster("--help", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and err == "", err[-800:]
    assert "Usage" in out and max(map(len, out.splitlines())) <= MAX_COLUMNS


# ---- 3. a locale whose encoding is ASCII -------------------------------------------------------------------------
ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}


def test_an_ascii_locale_prints_a_name_it_cannot_encode_as_an_escape(tmp_path):
    scenario = write_scenario(tmp_path, {**SMALL, "name": "smäll"})
    child = _simcluster("run", str(scenario), "--network", "analytic", "--report", "--out", str(tmp_path / "o"),
                        env=ASCII_LOCALE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8")
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and "Traceback" not in err, err[-800:]
    assert "sm\\xe4ll: 8 x h100-sxm" in out
    assert json.loads((tmp_path / "o" / "summary.json").read_text(encoding="utf-8"))["name"] == "smäll"
    # report.html holds the name as written (outputs.write_text in UTF-8; in the locale's ASCII it was a
    # UnicodeEncodeError; summary.json alone cannot tell, JSON escapes it)
    assert "smäll" in (tmp_path / "o" / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(("args", "code", "says"), [
    (("run", "--list"), 0, None),                                       # the bundled scenarios' descriptions
    (("validate", "--only", "zzz"), 2, "error: --only: no calibration case"),   # data/validation.yaml
])
def test_an_ascii_locale_reads_the_bundled_data_as_utf8(args, code, says):
    child = _simcluster(*args, env=ASCII_LOCALE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8")
    out, err = child.communicate(timeout=120)
    assert child.returncode == code and "Traceback" not in err, err[-800:]
    assert says is None or err.startswith(says)


# ---- 4. replay's files written whole -----------------------------------------------------------------------------
def _two_rank_trace(tmp_path: Path) -> Path:
    """Rank 0 of two as a Kineto trace: a GEMM, then an all-reduce of 4 MiB."""
    trace = tmp_path / "rank0.json"
    meta = {"Collective name": "allreduce", "dtype": "Float", "In msg nelems": 1 << 20, "Out msg nelems": 1 << 20,
            "Group size": 2, "Process Group Ranks": "[0, 1]"}
    trace.write_text(json.dumps({"schemaVersion": 1, "distributedInfo": {"rank": 0, "world_size": 2}, "traceEvents": [
        {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7, "ts": 100.0, "dur": 50.0, "args": {}},
        {"ph": "X", "cat": "kernel", "name": "ncclDevKernel_AllReduce_Sum_f32_RING_LL", "pid": 0, "tid": 20,
         "ts": 160.0, "dur": 30.0, "args": meta}]}))
    return trace


def test_replay_leaves_no_cut_trace_when_its_write_fails(cli, tmp_path, monkeypatch):
    """A crash while the Perfetto trace is written, one that runs no cleanup (SIGKILL, the OOM killer, a power cut:
    here the folder's removal on error is switched off and the trace's JSON fails) left trace.json.gz under its own
    name, closed as a valid gzip of nothing; a reader took it for the replay's trace. Now only a temporary file is
    left, and the events written before stay whole."""
    import shutil

    from simcluster.replay import report

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "chrome_trace", full_disk)
    monkeypatch.setattr(shutil, "rmtree", lambda *_args, **_kwargs: None)   # no cleanup, as after SIGKILL
    trace = _two_rank_trace(tmp_path)
    out = tmp_path / "o"
    code, _, err = cli("replay", trace, "--network", "analytic", "--out", out)
    assert_one_line(code, err, 2)
    assert "No space left on device" in err
    assert not (out / "trace.json.gz").exists()
    assert (out / "events.csv").read_text().startswith("rank,")   # written whole before


def test_replay_leaves_no_cut_events_when_their_write_fails(cli, tmp_path, monkeypatch):
    """The same crash while events.csv is written (the review of round 37: the test above fails the trace only, so
    events.csv written in place again passed it): half its rows written, then the disk full. Nothing is left under
    the name events.csv."""
    import shutil

    import pandas

    def half_then_full(self, path, *_args, **_kwargs):
        Path(path).write_text("rank,name\n0,ge", encoding="utf-8")   # a row cut in two
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pandas.DataFrame, "to_csv", half_then_full)
    monkeypatch.setattr(shutil, "rmtree", lambda *_args, **_kwargs: None)   # no cleanup, as after SIGKILL
    out = tmp_path / "o"
    code, _, err = cli("replay", _two_rank_trace(tmp_path), "--network", "analytic", "--out", out)
    assert_one_line(code, err, 2)
    assert "No space left on device" in err
    assert out.is_dir() and not (out / "events.csv").exists()


# ---- 5. a jobs scenario's name -------------------------------------------------------------------------------------
def _two_jobs(name: str, first: str = "a", second: str = "b") -> dict:
    job = {"model": "gpt3-1.3b", "training": {"seq_len": 1024, "global_batch_size": 16, "micro_batch_size": 1},
           "parallelism": {"tp": 1, "pp": 1, "dp": 8}}
    return {"name": name, "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2, "topology": "leaf-spine"},
            "jobs": [{**job, "name": first, "placement": {"first_node": 0}},
                     {**job, "name": second, "placement": {"first_node": 1}}]}


@pytest.mark.parametrize(("name", "says"), [
    ("é" * 150, "is 300 bytes long, at most 200"),   # 150 characters passed; the first job was blamed
    ("a\tb", "must not contain control characters"),
    (" x", "must not start or end with white space"),
])
def test_a_jobs_scenario_s_name_is_refused_as_its_own(name, says):
    from simcluster.core.errors import ScenarioError
    from simcluster.spec import jobs

    with pytest.raises(ScenarioError) as refused:
        jobs.from_dict(_two_jobs(name))
    assert refused.value.field == "name" and says in refused.value.message, str(refused.value)


@pytest.mark.parametrize(("name", "first", "second"), [
    ("n" * 190, "x" * 60 + "1", "x" * 60 + "2"),   # both cut to one name at 200 characters
    ("é" * 100, "a", "b"),                           # 200 bytes: each job refused as 'jobs.0.name: is 202 bytes'
])
def test_each_job_keeps_a_name_of_its_own(name, first, second):
    from simcluster.spec import config, jobs

    placed = jobs.from_dict(_two_jobs(name, first, second)).jobs
    names = [job.scenario.name for job in placed]
    assert len(set(names)) == 2 and all(len(n.encode()) <= config.MAX_NAME_BYTES for n in names)
    assert [n.rsplit("-", 1)[1] for n in names] == [first, second]
    assert all(name.startswith(n.rsplit("-", 1)[0]) for n in names)


# ---- 6. --vary of what names a run ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "says"), [
    ("name", "name: the sweep names each run itself"),          # 'two grid points are the same run' before
    ("description", "description: a scenario's description changes nothing simulated"),   # two equal runs before
])
def test_varying_what_only_names_a_run_is_refused(cli, tmp_path, field, says):
    scenario = write_scenario(tmp_path, SMALL)
    code, _, err = cli("sweep", scenario, "--network", "analytic", "--vary", f"{field}=a,b", "--jobs", "1",
                       "--out", tmp_path / "g")
    assert_one_line(code, err, 2)
    assert err.startswith(f"error: --vary: {says}"), err
    assert not (tmp_path / "g").exists()


def test_the_library_s_trace_writers_leave_no_cut_file(tmp_path, monkeypatch):
    """The review of round 37: the trace writers of ``replay.formats`` (Kineto, Chakra, the synthetic Chakra of the
    tests and benchmarks) wrote in place, so a write cut short left half a trace under its name; now through
    ``outputs.write_text`` / ``write_bytes``, renamed into place whole (or nothing is left)."""
    import pathlib

    from simcluster.replay.formats import synthetic

    def half_then_full(self, data):
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        synthetic.data_parallel_chakra(tmp_path, ranks=2, layers=2, fwd_us=10, ig_us=10, wg_us=10, grad_bytes=1 << 20)
    assert list(tmp_path.iterdir()) == []   # neither dp.0.et cut in two nor its temporary file
