"""scripts/suite_costs.py, the maker of tests/suite_costs.json (round 28, docs/calibration/round-28.md "Round 28: the
suite's cost table by script"): a test's CPU seconds land in its work unit as tests/suite_order.py names it (one sum for
the tests of an ``xdist_group``), a busy loop of known CPU time is recorded as at least that, a unit ``-k`` cut is left
as it was, and the table keeps what was not run, replaces what was and drops what fell under the threshold."""

from __future__ import annotations

import argparse

import pytest
import suite_order
from scripts_loader import load_script

pytest_plugins = "pytester"

suite_costs = load_script("suite_costs")

BURN_S = 0.3

TESTS = f"""
import time
import pytest


def _burn(seconds):
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


def test_alone():
    _burn({BURN_S})


@pytest.mark.xdist_group("pair")
def test_first_of_pair():
    _burn({BURN_S})


@pytest.mark.xdist_group("pair")
def test_second_of_pair():
    _burn({BURN_S})
"""


def _record(pytester, *args):
    pytester.makepyfile(test_burn=TESTS)
    recorder = suite_costs.Recorder()
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args, plugins=[recorder])
    return result, recorder


def test_each_unit_gets_the_cpu_seconds_of_its_tests(pytester):
    result, recorder = _record(pytester)
    result.assert_outcomes(passed=3)
    assert set(recorder.seconds) == {"test_burn.py::test_alone", "pair"}   # suite_order.unit_of's names
    assert BURN_S <= recorder.seconds["test_burn.py::test_alone"] < 4 * BURN_S
    assert 2 * BURN_S <= recorder.seconds["pair"] < 8 * BURN_S
    assert not recorder.partial and recorder.files == {"test_burn.py"}


def test_a_unit_cut_by_k_is_partial(pytester):
    result, recorder = _record(pytester, "-k", "first or alone")
    result.assert_outcomes(passed=2, deselected=1)
    assert recorder.partial == {"pair"}


def test_the_table_keeps_what_did_not_run_and_replaces_drops_or_adds_what_did():
    table = {"kept": 9.0, "replaced": 5.0, "dropped": 3.0, "cut": 4.0}
    measured = {"replaced": 6.04, "dropped": 1.2, "added": 2.5, "too-short": 0.3, "cut": 0.5}
    new = suite_costs.merged(table, measured, partial={"cut"}, min_seconds=2.0)
    assert new == {"kept": 9.0, "replaced": 6.0, "cut": 4.0, "added": 2.5}
    assert list(new) == ["kept", "replaced", "cut", "added"]   # longest first, as the file is read
    lines = suite_costs.changes(table, new)
    assert len(lines) == 3 and any(line.split()[-2:] == ["dropped", "dropped"] for line in lines)


def test_an_entry_of_a_file_run_whole_that_did_not_run_is_dropped():
    table = {"tests/a.py::renamed": 5.0, "tests/a.py::cut_by_k": 4.0, "tests/a.py": 3.0, "tests/b.py::other": 2.5}
    new = suite_costs.merged(table, {"tests/a.py::new_name": 5.1}, partial={"tests/a.py::cut_by_k"}, min_seconds=2.0,
                             whole_files={"tests/a.py"})
    assert new == {"tests/a.py::new_name": 5.1, "tests/a.py::cut_by_k": 4.0, "tests/b.py::other": 2.5}


def test_the_script_names_units_and_finds_the_table_as_the_suite_does():
    assert suite_costs.suite_order is suite_order   # one grouping logic and one path: the conftest's module


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_min_seconds_is_a_number_of_seconds(value):
    with pytest.raises(argparse.ArgumentTypeError, match="seconds >= 0"):
        suite_costs.non_negative(value)


def test_ctrl_c_in_the_pytest_run_is_the_clis_one_line_and_130(monkeypatch, capsys):
    """pytest catches Ctrl-C itself and returns INTERRUPTED (exit code 2, which the script read as a run with failures
    and printed a table from); through script_entry.call it is the CLI's one line and 130, as every script's Ctrl-C is
    (docs/robustness.md, "Interrupts"), and nothing is written."""
    from simcluster.core import script_entry

    before = suite_order.COSTS_PATH.read_text()
    monkeypatch.setattr(suite_costs.pytest, "main", lambda *args, **kwargs: pytest.ExitCode.INTERRUPTED)
    code = script_entry.call(suite_costs.main, ["tests/unit/test_suite_costs_script.py", "--write"])
    assert code == 130
    assert capsys.readouterr().err == "interrupted by SIGINT\n"
    assert suite_order.COSTS_PATH.read_text() == before
