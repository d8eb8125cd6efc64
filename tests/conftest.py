"""Shared fixtures: scenario files written from dicts, and the CLI invoked in-process; and, under pytest-xdist
(``make test``: ``-n auto --dist loadgroup``), the tests of a module that share a module-scoped fixture kept on one
worker (``pytest_collection_modifyitems``) and the longest work started first (tests/suite_order.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import suite_order
import yaml

from simcluster.cli import main

SMALL = {
    "name": "small",
    "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2, "nic": "connectx-7", "topology": "rail-fat-tree"},
    "model": "gpt3-1.3b",
    "training": {"seq_len": 2048, "global_batch_size": 32, "micro_batch_size": 1, "precision": "bf16"},
    "parallelism": {"tp": 2, "pp": 2, "dp": 4},
}


@pytest.fixture
def small_scenario() -> dict:
    """A 16-GPU 3D-parallel scenario as a plain dict, to be edited by a test."""
    return copy.deepcopy(SMALL)


@pytest.fixture
def write_scenario(tmp_path):
    """Write a dict (or raw text) as a scenario file and return its path."""

    def write(data, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return path

    return write


@pytest.fixture
def cli(capsys):
    """Run `simcluster ARGS` in-process; returns (exit_code, stdout, stderr)."""

    def invoke(*args: str):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


@pytest.fixture
def rebalancing_grids(monkeypatch):
    """Every GPU taken as one whose GEMM grids re-balance across the SMs a communication kernel leaves (no persistent
    one-CTA-per-SM grids: data/interference.yaml persistent_grid_gpus empty), so that Transformer Engine's margin-less
    pipeline and bulk GEMMs are charged as configured (the wave model beside their kernels) on the H100 spec too."""
    from simcluster.workload import interference
    monkeypatch.setitem(interference.constants(), "persistent_grid_gpus", [])


# Fixture scopes computed once per worker: tests sharing one (a simulated sweep, a script's table) are kept on one
# worker so that the fixture is not computed again on the other.
SHARED_SCOPES = ("module", "class", "package")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the mark into the test's group
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup``, give every test that uses a module-, class- or package-scoped fixture the
    ``xdist_group`` of its file: pytest-xdist then runs them on one worker, which computes the fixture once (with
    ``--dist load`` or ``worksteal`` such a fixture would be computed on each worker that got one of the tests).
    Tests without such a fixture stay free to go to any worker. Session-scoped fixtures that are expensive share
    their work through files instead (tests/validation/conftest.py)."""
    if not getattr(config.option, "loadgroup", False):  # set by pytest-xdist on its workers under loadgroup
        return
    for item in items:
        fixturedefs = getattr(item, "_fixtureinfo", None)
        if fixturedefs is None or item.get_closest_marker("xdist_group"):
            continue
        if any(d.scope in SHARED_SCOPES for defs in fixturedefs.name2fixturedefs.values() for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def pytest_configure(config):
    """Under ``--dist loadgroup``, pytest-xdist's scheduler (in the controlling process) takes its work in the order
    the tests are collected (longest first, below) instead of sorting it by the number of tests a group has."""
    if config.getoption("dist", None) == "loadgroup":
        config.option.loadscopereorder = False
    _signals_at_their_defaults()


def _signals_at_their_defaults() -> None:
    """SIGINT and SIGHUP as an interactive terminal gives them, whatever started the suite: a shell's background job
    (``make test &``) starts with SIGINT ignored and ``nohup`` with SIGHUP ignored, and an ignored signal stays ignored
    in every process the tests start, so the tests that send one (``signal.raise_signal``, a child's Ctrl-C or hangup)
    saw nothing happen and failed (round 38: 12 failures of a fresh clone's ``nohup make test &``). The suite tests
    what a user's command does when the signal comes; the commands' own rule for an ignored signal (left ignored) is
    tested by setting it ignored in the test."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) is signal.SIG_IGN:
        signal.signal(hangup, signal.SIG_DFL)


# after the hook above, tests/validation/conftest.py's and pytest-xdist's (a second implementation of the hook)
@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
def pytest_collection_modifyitems_grouped_longest_first(config, items):
    """Under ``--dist loadgroup``: every grouped test's node id ends in ``@<group>`` (``suite_order.name_group``:
    the scheduler reads the group from there), and the work units longest first (tests/suite_order.py)."""
    if getattr(config.option, "loadgroup", False):
        for item in items:
            suite_order.name_group(item)
        items[:] = suite_order.longest_first(items)
