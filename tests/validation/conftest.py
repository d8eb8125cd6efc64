"""Validation cases simulated once per test session, whatever the number of pytest-xdist workers.

``make test`` runs the suite on every core (``pytest -n auto``). A module- or session-scoped fixture is computed once
per worker, so a fixture that simulates a whole validation set would run it on each worker that gets one of its
tests. ``case_result(case)`` instead keeps each simulated case in a folder every worker of the session shares (the
parent of the workers' temporary folders; without xdist, the session's own), so that the per-run tests, spread over
the workers, and the tests of the whole set (median, coverage, BF16/FP8 pairs) simulate each case once between them:
a test of the whole set reads the cases already done and simulates the rest. Two workers that reach the same case at
once both simulate it (a run is deterministic: the same result); the file is written whole (``os.replace``), so a
reader never sees half of one.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from simcluster.studies import validation


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
            if path.exists():
                done[name] = pickle.loads(path.read_bytes())
            else:
                done[name] = validation.run_case(case)
                partial = path.with_name(f"{path.name}.{os.getpid()}")
                partial.write_bytes(pickle.dumps(done[name]))
                os.replace(partial, path)
        return done[name]

    return result
