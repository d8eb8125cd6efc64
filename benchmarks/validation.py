"""How long `simcluster validate --held-out` (or the calibration set) takes, and which runs cost most.

Runs the cases in this process as `validate` runs them (``studies.validation.run_case``, one after the other) and
prints, per case, its CPU seconds (``time.process_time``: user + system of this process) and wall seconds, then the
total and the slowest ``--top`` cases with their share of the total CPU. CPU seconds are the comparable figure on a
shared machine (the load average is printed first and last: wall time also counts the other processes' turns).

``--jobs N`` (default: one per CPU, as `validate`): first the same cases on N worker processes
(``validation.run_cases``, what `validate --jobs N` runs; before the pass in this process, so that the workers fork
from a process whose caches are as cold as that pass's), timed by the wall clock, every result checked equal to the
pass in this process; both wall times are printed. On a machine others share, the load average says how many cores
were the set's. ``--jobs 1``: the pass in this process only.

``--against FILE`` (a `validate --json` or `validate --held-out --json` output, e.g. a baseline taken on main) checks
every case's step time, TFLOP/s and memory against that file's as floats (``==``, not a tolerance): speed work must not
move a result; a case that differs prints DIFF and the script exits 1. ``--json FILE`` writes the per-case figures.

Run: PYTHONPATH=. .venv/bin/python benchmarks/validation.py [--calibration] [--only SUBSTRING ...] [--top N]
[--jobs N] [--against BASELINE.json] [--json OUT.json]   (the held-out set alone: 7-12 min of CPU on one core)
"""

from __future__ import annotations

import json
import os
import sys
import time

from simcluster.core import script_entry
from simcluster.engine import simulate  # noqa: F401 (imported before the first case: not counted in its time)
from simcluster.studies import validation, workers


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def compared(case: str, result: validation.CaseResult, baseline: dict | None) -> list[str]:
    """The fields of ``result`` that differ from the baseline's row of ``case`` (none when it has no such row)."""
    if baseline is None or case not in baseline:
        return []
    row = baseline[case]
    fields = {"step_time_s": result.step_time_s, "simulated_tflops": result.simulated_tflops,
              "memory_bytes": result.memory_bytes}
    return [f"{key} {row[key]!r} -> {value!r}" for key, value in fields.items() if row.get(key) != value]


def main(argv: list[str] | None = None) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", action="store_true", help="the calibration set instead of the held-out one")
    parser.add_argument("--only", nargs="*", default=None, help="cases whose scenario contains any of these")
    parser.add_argument("--top", type=script_entry.count, default=12, help="how many of the slowest cases to list")
    parser.add_argument("--against", help="a validate --json output whose results every case must equal")
    parser.add_argument("--json", dest="out", help="write the per-case figures to this file")
    parser.add_argument("--jobs", type=script_entry.count, default=None,
                        help="then time the set on this many worker processes too (default: one per CPU; 1: not)")
    args = parser.parse_args(argv)
    cases = validation.cases() if args.calibration else validation.held_out_cases()
    if args.only:
        cases = [c for c in cases if any(part in c["scenario"] for part in args.only)]
    if not cases:
        parser.error(f"--only: no case's scenario contains any of {args.only}")
    baseline = None
    if args.against:
        with open(args.against) as f:
            try:
                baseline = {c["scenario"]: c for c in json.load(f)["cases"]}
            except (ValueError, KeyError, TypeError) as err:
                parser.error(f"--against {args.against}: not a validate --json output ({err!r})")
    label = "calibration" if args.calibration else "held-out"
    print(f"{len(cases)} {label} cases; load average {_load()}", flush=True)
    jobs, pooled_wall = min(args.jobs or workers.default_jobs(), len(cases)), None
    if jobs > 1:  # first: the workers fork from this process before its own pass has warmed any cache
        wall = time.perf_counter()
        pooled = dict(validation.run_cases(cases, jobs=jobs))
        pooled_wall = time.perf_counter() - wall
        print(f"{pooled_wall:.1f} s wall on {jobs} worker processes; load average {_load()}", flush=True)
    rows, results, differ = [], [], 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for case in cases:
        cpu, wall = time.process_time(), time.perf_counter()
        result = validation.run_case(case)
        results.append(result)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        moved = compared(case["scenario"], result, baseline)
        differ += bool(moved)
        rows.append({"scenario": case["scenario"], "cpu_s": cpu, "wall_s": wall, "step_time_s": result.step_time_s})
        print(f"{cpu:8.2f} s CPU {wall:8.2f} s wall  {case['scenario']}"
              + (f"  DIFF {'; '.join(moved)}" if moved else ""), flush=True)
    total_cpu, total_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(f"total: {total_cpu:.1f} s CPU, {total_wall:.1f} s wall over {len(rows)} {label} cases; "
          f"load average {_load()}")
    if rows:
        print(f"slowest {min(args.top, len(rows))} (CPU s, share of the total):")
        for row in sorted(rows, key=lambda r: -r["cpu_s"])[:args.top]:
            print(f"  {row['cpu_s']:8.2f} s {row['cpu_s'] / max(total_cpu, 1e-9):6.1%}  {row['scenario']}")
    if jobs > 1:
        unequal = [case["scenario"] for index, case in enumerate(cases)
                   if pooled[index].__dict__ != results[index].__dict__]
        differ += len(unequal)
        print(f"wall: {total_wall:.1f} s in this process, {pooled_wall:.1f} s on {jobs} worker processes "
              f"({total_wall / pooled_wall:.2f}x; load average {_load()}); "
              + (f"{len(unequal)} result(s) DIFFER: {', '.join(unequal)}" if unequal else
                 f"all {len(cases)} results equal"))
    if baseline is not None:
        print(f"results against {args.against}: " + (f"{differ} case(s) DIFFER" if differ else
                                                       f"all {len(rows)} equal (step, TFLOP/s, memory)"))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"set": label, "total_cpu_s": total_cpu, "total_wall_s": total_wall, "jobs": jobs,
                       "jobs_wall_s": pooled_wall, "cases": rows}, f, indent=1)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
