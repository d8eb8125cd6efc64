"""Round 38: tests that failed by timing on a loaded machine, and the gaps in the commands they revealed
(docs/calibration/round-38.md, "Round 38: tests that failed by timing"). Each case lands the signal at the exact point
on purpose, so it does not depend on when a real one arrives; each failed on main before its fix.

- ``sweep``: a hangup (or Ctrl-C) after the last run, while the results table was computed, said "interrupted by
  SIGHUP" alone and left no results.csv nor sweep.json though every run had finished (round 29's test of a sweep's
  hangup sent it after a fixed 5 s, which under load fell there);
- ``run --samples``: Ctrl-C while the percentiles were taken over the finished samples said "interrupted by SIGINT"
  alone and kept nothing;
- ``compare``: Ctrl-C while a failed run's line was printed (after the last run) said "interrupted by SIGINT" alone
  and kept nothing;
- the ``simcluster`` command: a signal after its modules had loaded and before the command's handlers were in place
  (a test's signal sent at a fixed time falls near there on a loaded machine, whose import takes 3-4 s) was a
  KeyboardInterrupt traceback, or for SIGTERM and SIGHUP a silent death;
- worker processes (``--jobs``): one forked with the parent's handler ran it on the parent's ``terminate`` (an
  interrupt while the workers started) before its own handlers stood, and printed a traceback of ``Interrupted``
  (round 24's test of a SIGINT during ``validate``, once it signalled as the workers appeared).
"""

from __future__ import annotations

import copy
import importlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
import yaml

from simcluster import cli as cli_package
from simcluster.core.errors import ScenarioError
from simcluster.studies import compare as compare_study
from simcluster.studies import samples as sampling
from simcluster.studies import sweep as sweep_study
from simcluster.studies import workers
from tests.cli import scenario_files
from tests.conftest import SMALL

compare_command = importlib.import_module("simcluster.cli.compare")


def _signal_on_first_call(monkeypatch, module, name: str, signum: int) -> list:
    """``module.name`` receiving ``signum`` (a real signal, through the command's handler) on its first call."""
    real, calls = getattr(module, name), []

    def signalled(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            signal.raise_signal(signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, signalled)
    return calls


def test_a_sweep_interrupted_after_its_last_run_keeps_every_run(cli, tmp_path, monkeypatch):
    calls = _signal_on_first_call(monkeypatch, sweep_study, "table", signal.SIGHUP)
    scenario = tmp_path / "small.yaml"
    scenario.write_text(yaml.safe_dump(SMALL, sort_keys=False))
    code, out, err = cli("sweep", scenario, "--gpus", "16,32", "--jobs", "1", "--network", "analytic", "--no-plots",
                         "--out", tmp_path / "sw")
    assert code == 129 and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    assert err.startswith("interrupted by SIGHUP: 2 of 2 runs finished; wrote results.csv, sweep.json"), err
    assert calls and out == ""
    report = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert report["pending"] == 0 and [row["gpus"] for row in report["series"][0]["rows"]] == [16, 32]


def test_run_samples_interrupted_while_their_percentiles_are_taken_keeps_them(cli, tmp_path, monkeypatch):
    data = copy.deepcopy(scenario_files.SMALL)
    data["variability"] = {"kernel_jitter_cv": 0.05, "seed": 7}
    path = scenario_files.write_scenario(tmp_path, data)
    calls = _signal_on_first_call(monkeypatch, sampling, "combine", signal.SIGINT)
    code, out, err = cli("run", path, "--network", "analytic", "--samples", "2", "--json", "--out", tmp_path / "two")
    scenario_files.assert_one_line(code, err, 130)
    assert "2 of 2 samples finished" in err and "summary.json" in err and calls and out == "", err
    kept = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert kept["samples"] == 2 and len(kept["step_time_samples_s"]) == 2


def test_compare_interrupted_while_saying_a_failed_run_keeps_the_finished_one(cli, tmp_path, monkeypatch):
    real, calls = compare_study.run_point, []

    def second_fails(task, label, *args):
        calls.append(label)
        if len(calls) == 2:
            raise ScenarioError("cluster", "refused on purpose")
        return real(task, label, *args)

    monkeypatch.setattr(compare_study, "run_point", second_fails)
    said = _signal_on_first_call(monkeypatch, compare_command, "styled", signal.SIGINT)
    scenario = tmp_path / "small.yaml"
    scenario.write_text(yaml.safe_dump(SMALL, sort_keys=False))
    code, _, err = cli("compare", scenario, "--topology", "rail-fat-tree", "--topology", "leaf-spine", "--network",
                       "analytic", "--out", tmp_path / "c")
    scenario_files.assert_one_line(code, err, 130)
    assert "1 of 2 runs finished; wrote compare.csv, compare.json" in err and len(calls) == 2 and said, err
    report = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert len(report["runs"]) == 1 and len(report["failed"]) == 1 and report["pending"] == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_between_the_import_and_the_commands_handlers_is_one_line(signum):
    """The console entry, with the signal raised where ``main`` starts, before ``_interrupts`` (``settle_widths``)."""
    code = ("import signal, sys\nimport simcluster.cli as cli\n"
            f"cli.settle_widths = lambda environ: signal.raise_signal({int(signum)})\n"
            "sys.argv = ['simcluster', 'schema']\ncli.console()\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert (done.returncode, done.stderr) == (128 + signum, f"interrupted by {signal.Signals(signum).name}\n")
    assert done.stdout == ""


_WORKER_INIT = workers._worker_init


def _terminated_before_its_handlers() -> None:
    """A worker's initializer receiving SIGTERM first, as the parent's ``terminate`` can reach a worker just forked;
    what it raised before its own handlers stand is written to $ROUND38_RAISED (multiprocessing printed it)."""
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # a handler inherited from the parent runs as this call returns
        for _ in range(1000):
            pass
    except BaseException as err:
        Path(os.environ["ROUND38_RAISED"]).write_text(repr(err))
        raise
    _WORKER_INIT()  # the worker's handlers: SIGTERM, pending until here, ends it


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="a handler is inherited through fork")
def test_a_worker_stopped_before_its_own_handlers_dies_without_a_word(monkeypatch, tmp_path):
    raised = tmp_path / "raised"
    monkeypatch.setenv("ROUND38_RAISED", str(raised))
    monkeypatch.setattr(workers, "_worker_init", _terminated_before_its_handlers)
    with cli_package._interrupts(), workers.local(2) as (pool, _slots):  # the command's handlers, inherited
        future = pool.submit(abs, -1)
        with pytest.raises(BrokenProcessPool):
            future.result(timeout=60)
    assert not raised.exists(), raised.read_text()
