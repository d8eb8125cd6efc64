"""``validate --jobs N``: the cases on N worker processes (studies.workers, the pool ``sweep`` runs on), the output
byte for byte what one process prints, whichever case finishes first; bad --jobs one line, exit 2; Ctrl-C exit 130
with the finished cases and no worker left behind."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import time

import pytest
from scripts_loader import load_script

from simcluster.cli.app import Interrupted
from simcluster.studies import validation, workers
from tests.cli.scenario_files import assert_one_line

PAIR = "megatron-1.2b-a100"  # two calibration cases: the 1-GPU node, then the 128-GPU data-parallel run


def first_finishes_last(case, network=None, variability=None, extrapolate=False):
    """A stand-in for ``validation.run_case`` (module level: the workers unpickle it by name) whose first case
    finishes after the second."""
    if case["scenario"].endswith("-node"):
        time.sleep(0.5)
    return validation.CaseResult(case["scenario"], "model", 100.0, 90.0, "test", step_time_s=1.0)


def hangs_but_the_first(case, network=None, variability=None, extrapolate=False):
    """``run_case`` whose first case returns (and says so in a file) and whose others take a minute."""
    if case["scenario"].endswith("-node"):
        with open(os.environ["VALJOBS_FLAG"], "w") as flag:
            flag.write("done")
        return validation.CaseResult(case["scenario"], "model", 100.0, 90.0, "test", step_time_s=1.0)
    time.sleep(60.0)
    raise AssertionError("not stopped")


def test_two_workers_print_what_one_prints_in_the_cases_order(cli, monkeypatch):
    monkeypatch.setattr(validation, "run_case", first_finishes_last)  # the workers fork with it
    names = [c["scenario"] for c in validation.cases() if PAIR in c["scenario"]]
    assert len(names) == 2 and names[0].endswith("-node")
    one = cli("validate", "--only", PAIR, "--json", "--jobs", "1")
    two = cli("validate", "--only", PAIR, "--json", "--jobs", "2")
    assert one[0] == two[0] == 0 and one[1] == two[1]  # byte-identical, though the second case finished first
    assert [c["scenario"] for c in json.loads(two[1])["cases"]] == names
    table = cli("validate", "--only", PAIR, "--jobs", "2")
    assert table[1] == cli("validate", "--only", PAIR, "--jobs", "1")[1] and table[1].index(names[0]) < \
        table[1].index(names[1])


def test_simulated_cases_are_the_same_on_two_workers(cli):
    one = cli("validate", "--only", "a100-node", "--json", "--jobs", "1")
    two = cli("validate", "--only", "a100-node", "--json", "--jobs", "2")
    assert one[0] == two[0] == 0 and one[1] == two[1] and json.loads(one[1])["case_count"] == 4


@pytest.mark.parametrize(("argv", "said"), [
    (("--jobs", "0"), "--jobs"), (("--jobs", "-1"), "--jobs"), (("--jobs", "two"), "--jobs"),
    (("--jobs", "1", "--jobs", "2"), "--jobs: given twice"), (("--jobs", "5000"), "--jobs: expected 1 to 1,024"),
])
def test_bad_jobs_is_one_line_naming_the_option(cli, argv, said):
    code, out, err = cli("validate", "--only", PAIR, *argv)
    assert_one_line(code, err, 2)
    assert said in err and out == ""


def test_interrupt_stops_the_workers_and_keeps_the_finished_case(cli, monkeypatch, tmp_path):
    """SIGINT while two workers run: exit 130 at once (not after the minute the other case takes), the JSON object
    with the case finished and the other pending, and no worker process left."""
    flag = tmp_path / "flag"
    monkeypatch.setenv("VALJOBS_FLAG", str(flag))
    monkeypatch.setattr(validation, "run_case", hangs_but_the_first)

    def interrupt():
        deadline = time.monotonic() + 20
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the parent collects the finished case
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    started = time.monotonic()
    code, out, err = cli("validate", "--only", PAIR, "--json", "--jobs", "2")
    assert code == 130 and err == "interrupted by SIGINT\n" and time.monotonic() - started < 30
    report = json.loads(out)
    assert report["partial"] is True and [c["scenario"] for c in report["cases"]] == [f"{PAIR}-node"]
    assert report["pending"] == 1
    assert multiprocessing.active_children() == []


def test_an_interrupt_in_this_process_starts_no_further_call():
    """``--jobs 1``: Ctrl-C during a call is raised at once; the calls finished before are handed back first (a sweep
    --jobs 1 ran the next point before it stopped, round 36)."""
    called = []

    def call(item):
        called.append(item)
        if item == 2:
            raise Interrupted(signal.SIGINT)
        return item * 10

    got = []
    with pytest.raises(Interrupted):
        for item, future in workers.completed(workers.InlineExecutor(), call, range(6), window=2):
            got.append((item, future.result()))
    assert called == [0, 1, 2] and got == [(0, 0), (1, 10)]


def test_fit_host_overheads_refuses_a_bad_jobs(capsys):
    fit = sys.modules.get("fit_host_overheads") or load_script("fit_host_overheads")  # loaded once (its tests' module)

    for value in ("0", "-2", "x"):
        with pytest.raises(SystemExit) as stop:
            fit.main(["--jobs", value])
        assert stop.value.code == 2 and "--jobs" in capsys.readouterr().err


def test_workers_that_cannot_start_or_die_are_one_line_naming_jobs(cli, monkeypatch):
    import contextlib
    import errno
    from concurrent.futures.process import BrokenProcessPool

    @contextlib.contextmanager
    def no_workers(jobs):
        raise OSError(errno.EMFILE, "Too many open files")
        yield  # pragma: no cover - a generator, as the pool it stands for

    with monkeypatch.context() as patch:
        patch.setattr(workers, "local", no_workers)
        code, out, err = cli("validate", "--only", PAIR, "--jobs", "2")
    assert_one_line(code, err, 2)
    assert err.startswith("error: --jobs: cannot start the worker processes: Too many open files") and out == ""

    def killed(*_args, **_kwargs):
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    monkeypatch.setattr(validation, "run_case", killed)
    code, out, err = cli("validate", "--only", PAIR, "--json", "--jobs", "1")
    assert_one_line(code, err, 2)
    assert err.startswith("error: --jobs: a worker process died (A process") and out == ""
