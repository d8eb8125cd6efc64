"""The order the suite's work starts in under pytest-xdist (``make test``: ``-n auto --dist loadgroup``): longest
first.

pytest-xdist's loadgroup scheduler hands out work units (a test, or all the tests of one ``xdist_group``) in the
order of its queue and gives a worker its next unit when the worker is nearly out of tests; by default it sorts the
queue by the number of tests a unit has, so the single tests that simulate a whole published run (the held-out
validation cases, tens of CPU seconds each) came last, in file order, and the run ended with one worker simulating
while the other waited. Started first instead, the long units are spread over the workers while the many short
ones are still left to even the load out (the longest-processing-time-first rule).

``COST_S`` (tests/suite_costs.json): the CPU seconds of the longest units (2 s or more), keyed by the unit's
``xdist_group`` name or, for a test of no group, its node id. Made by ``scripts/suite_costs.py`` (round 28), which runs
the tests it is given in one process with the groups of ``make test`` and replaces their units' entries::

    PYTHONPATH=. python scripts/suite_costs.py tests/unit/test_sharp.py tests/validation --write

(``tests`` for the whole table; without ``--write`` it prints what would change). Rounds 27 and 28 measured it by
hand (docs/calibration/round-27.md "Round 27: the test suite's time", "Round 28: the suite's cost table by script"). The
numbers set the order only: a stale or missing entry costs time, never a result; a unit not listed counts
``DEFAULT_TEST_S`` a test, which keeps pytest-xdist's own order (more tests first) among them.
"""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_TEST_S = 0.05

COSTS_PATH = Path(__file__).parent / "suite_costs.json"   # made by scripts/suite_costs.py
COST_S: dict[str, float] = json.loads(COSTS_PATH.read_text())


def unit_of(item) -> str:
    """The scheduling unit of a test: its ``xdist_group`` name, else its node id (as pytest-xdist groups them)."""
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return item.nodeid.split("@")[0]
    return str(marker.args[0] if marker.args else marker.kwargs.get("name", "default"))


def name_group(item) -> None:
    """Give a test of an ``xdist_group`` the node id ``<id>@<group>`` if pytest-xdist has not: its loadgroup scheduler
    finds a test's group only in that suffix, which pytest-xdist 3.8 writes to ``item._nodeid``, a field pytest 9.2's
    structured node ids no longer read (pytest-dev/pytest-xdist#1386, fix open in #1388). Without it every test was
    its own unit: the tests sharing a module fixture (tests/conftest.py) or a validation case
    (tests/validation/conftest.py) were spread over the workers, which computed the fixture or the case each."""
    group = unit_of(item)
    if group == item.nodeid.split("@")[0] or item.nodeid.endswith(f"@{group}"):
        return
    item._id = type(item._id).parse(f"{item.nodeid}@{group}")  # what the fix does: the id the scheduler splits


def longest_first(items: list) -> list:
    """``items`` with the tests of each unit together, the units by ``COST_S`` (else ``DEFAULT_TEST_S`` a test),
    longest first; units of equal cost keep the order they were collected in."""
    units: dict[str, list] = {}
    for item in items:
        units.setdefault(unit_of(item), []).append(item)
    order = sorted(units, key=lambda unit: -COST_S.get(unit, DEFAULT_TEST_S * len(units[unit])))
    return [item for unit in order for item in units[unit]]
