"""Validation cases simulated once per test session, whatever the number of pytest-xdist workers.

``make test`` runs the suite on every core (``pytest -n auto --dist loadgroup``). A module- or session-scoped fixture
is computed once per worker, so a fixture that simulates a whole validation set would run it on each worker that gets
one of its tests. ``case_result(case)`` instead keeps each simulated case in a folder every worker of the session
shares (the parent of the workers' temporary folders; without xdist, the session's own), so that the per-run tests,
spread over the workers, and the tests of the whole set (median, coverage, BF16/FP8 pairs) simulate each case once
between them: a test of the whole set reads the cases already done and simulates the rest. A case is simulated under
a lock of its own (``fcntl.flock`` on a file beside the result), so a worker that reaches a case the other is
simulating waits for that result instead of simulating it again; the file is written whole (``os.replace``), so a
reader never sees half of one.

The tests of one case (the per-run test of test_training_calibration.py and the snapshot test of
test_accuracy_snapshot.py: a test that takes ``case_result`` and is parametrized by ``case``, a scenario name) are one
``xdist_group`` (``pytest_collection_modifyitems`` below), so one worker runs them one after the other: the first
simulates, the second reads the worker's own copy, and neither waits on the other worker's lock.
"""

from __future__ import annotations

import fcntl
import os
import pickle
from pathlib import Path

import pytest

from simcluster.studies import validation

CASE_GROUP = "validation-case:"  # the xdist_group of a case's tests: this prefix and the scenario name


def _shared_folder(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / "validation-cases"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def case_result(tmp_path_factory):
    """``case_result(case) -> validation.CaseResult`` of a case dict of data/validation.yaml, simulated once per
    session across workers (``validation.run_case``, as the scenario is)."""
    folder = _shared_folder(tmp_path_factory)
    done: dict[str, validation.CaseResult] = {}

    def result(case: dict) -> validation.CaseResult:
        name = case["scenario"]
        if name not in done:
            path = folder / f"{name}.pickle"
            with open(folder / f"{name}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if the run raises
                if path.exists():
                    done[name] = pickle.loads(path.read_bytes())
                else:
                    done[name] = validation.run_case(case)
                    partial = path.with_name(f"{path.name}.{os.getpid()}")
                    partial.write_bytes(pickle.dumps(done[name]))
                    os.replace(partial, path)
        return done[name]

    return result


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's hook, which turns the mark into the test's group
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup``: the tests of one validation case (``case_result`` and a ``case`` parameter naming
    the scenario) in the ``xdist_group`` ``validation-case:<scenario>``."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        case = getattr(item, "callspec", None) and item.callspec.params.get("case")
        if isinstance(case, str) and "case_result" in item.fixturenames and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(f"{CASE_GROUP}{case}"))
