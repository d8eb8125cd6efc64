"""The suite's cost table (tests/suite_costs.json, read by tests/suite_order.py) from a pytest run of the given tests.

    PYTHONPATH=. python scripts/suite_costs.py TESTS... [--min-seconds S] [--write] [-- PYTEST OPTIONS]

Runs pytest in this process on TESTS (files, directories or node ids; ``tests`` for the whole suite) with the
grouping of ``make test`` (pytest-xdist's ``loadgroup`` option set, so tests/conftest.py and
tests/validation/conftest.py give their tests the same ``xdist_group`` marks, and ``suite_order.unit_of`` names each
test's unit) and records the CPU seconds of each test (``time.process_time`` plus the CPU of the child processes it
waited for, from set-up to tear-down, so a module fixture counts once, in the unit of the test that built it), summed
over its unit. One process: the times are a single core's, as a pytest-xdist worker spends them.

The table printed (and with ``--write`` written) is the current one with every unit of this run replaced: its
measured seconds if at least ``--min-seconds`` (default 2, the table's threshold since round 28), else dropped. The
units not run keep their entries, but for those of a file run whole (a test renamed or removed). A unit of which
``-k``/``-m`` deselected some tests is not changed (its cost would be part of one); a node id selects part of a unit
without pytest saying so, so give whole files. A validation case's unit holds the simulation only if no test of the
whole set (median, coverage) reached the case first, as under ``make test``. Nothing is written if a test failed or
errored, or without ``--write``. Options after ``--`` go to pytest (e.g. ``-- -x -k sharp``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))   # suite_order as tests/conftest.py imports it (one module for both)

import suite_order  # noqa: E402

from simcluster.core import script_entry  # noqa: E402

DEFAULT_MIN_S = 2.0


def cpu_seconds() -> float:
    """This process's CPU seconds and those of the children it has waited for (a test that runs a subprocess)."""
    times = os.times()
    return time.process_time() + times.children_user + times.children_system


class Recorder:
    """A pytest plugin: the CPU seconds of each work unit of the run (``suite_order.unit_of``) and the units that
    were only partly selected."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.partial: set[str] = set()
        self.files: set[str] = set()   # the test files collected (node ids' file part, relative to the root)

    def pytest_configure(self, config):
        config.option.loadgroup = True   # what pytest-xdist sets on its workers under --dist loadgroup

    def pytest_collection_finish(self, session):
        self.files.update(item.nodeid.split("::")[0] for item in session.items)

    def pytest_deselected(self, items):
        self.partial.update(suite_order.unit_of(item) for item in items)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item):
        start = cpu_seconds()
        try:
            return (yield)
        finally:
            unit = suite_order.unit_of(item)
            self.seconds[unit] = self.seconds.get(unit, 0.0) + cpu_seconds() - start


def merged(table: dict[str, float], measured: dict[str, float], partial: set[str],
           min_seconds: float, whole_files: set[str] = frozenset()) -> dict[str, float]:
    """``table`` with each fully measured unit replaced by its seconds (to 0.1 s) or dropped if under
    ``min_seconds``, and an entry of a test or file group of ``whole_files`` (files run whole) that did not run
    dropped (a test renamed or removed); longest first, ties by name."""
    new = {unit: s for unit, s in table.items()
           if unit in measured or unit in partial or unit.split("::")[0] not in whole_files}
    for unit, seconds in measured.items():
        if unit in partial:
            continue
        if seconds >= min_seconds:
            new[unit] = round(seconds, 1)
        else:
            new.pop(unit, None)
    return dict(sorted(new.items(), key=lambda kv: (-kv[1], kv[0])))


def changes(old: dict[str, float], new: dict[str, float]) -> list[str]:
    """One line per entry added, dropped or changed."""
    lines = []
    for unit in sorted(old.keys() | new.keys(), key=lambda u: -max(old.get(u, 0.0), new.get(u, 0.0))):
        before, after = old.get(unit), new.get(unit)
        if before == after:
            continue
        text = "new" if before is None else f"{before:6.1f} ->"
        lines.append(f"  {text:>9} {'dropped' if after is None else f'{after:6.1f}':>7}  {unit}")
    return lines


def non_negative(text: str) -> float:
    """argparse ``type`` of a number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _relative(path: str) -> str:
    """A path as pytest's node ids spell it: relative to the repository's root."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path


def main(argv: list[str]) -> int:
    ours, pytest_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = script_entry.Parser(description=__doc__.splitlines()[0],
                                 epilog="Options after -- go to pytest (e.g. -- -x -k sharp). Nothing is written "
                                 "without --write, nor if a test failed, errored or was interrupted.")
    parser.add_argument("tests", nargs="+", help="test files, directories or node ids to run ('tests': all)")
    parser.add_argument("--min-seconds", type=non_negative, default=DEFAULT_MIN_S,
                        help=f"keep a unit of at least this many CPU seconds (default {DEFAULT_MIN_S:g})")
    parser.add_argument("--write", action="store_true", help=f"write {suite_order.COSTS_PATH.relative_to(ROOT)}")
    args = parser.parse_args(ours)
    parallel = [a for a in pytest_args if a.split("=")[0] in ("-n", "--numprocesses", "--dist") or a.startswith("-n")]
    if parallel:
        parser.error(f"{parallel[0]}: the costs are measured in one process (no pytest-xdist workers)")
    missing = [t for t in args.tests if not Path(t.split("::")[0]).exists()]
    if missing:
        parser.error(f"{missing[0]}: no such test file or directory")

    recorder = Recorder()
    code = pytest.main([*pytest_args, *args.tests], plugins=[recorder])
    if code == pytest.ExitCode.INTERRUPTED:   # Ctrl-C: pytest caught it; the CLI's one line and 130 (script_entry)
        raise KeyboardInterrupt
    if not recorder.seconds:
        print(f"error: no test ran (pytest exit code {int(code)})", file=sys.stderr)
        return 2
    old = json.loads(suite_order.COSTS_PATH.read_text())
    cut = {_relative(t.split("::")[0]) for t in args.tests if "::" in t}   # files of which a node id ran part
    new = merged(old, recorder.seconds, recorder.partial, args.min_seconds, recorder.files - cut)
    ran = sorted(recorder.seconds.items(), key=lambda kv: -kv[1])
    print(f"\n{len(ran)} units run, {sum(s for _, s in ran):.1f} CPU s; {len(recorder.partial)} with tests "
          "deselected (kept as they were)")
    for unit, seconds in ran[:10]:
        print(f"  {seconds:6.1f}  {unit}")
    lines = changes(old, new)
    print(f"table: {len(old)} -> {len(new)} entries, {len(lines)} changed (>= {args.min_seconds:g} s)")
    print("\n".join(lines))
    if not args.write:
        return 0
    if code != 0:
        print(f"error: not written: pytest exit code {int(code)} (a test failed, errored or was interrupted)",
              file=sys.stderr)
        return 1
    suite_order.COSTS_PATH.write_text(json.dumps(new, indent=1) + "\n")
    print(f"wrote {suite_order.COSTS_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))
