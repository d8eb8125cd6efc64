"""What the fitted per-kernel gap is made of, read on the CUDA-graphed rows (round 34; docs/calibration/round-34.md
"Round 34: what the per-kernel gap is made of, read on the graphed rows"). A diagnostic: nothing is fitted or written.

    PYTHONPATH=.:scripts python scripts/graphed_rows_gap.py ON.json [ON.json ...] [--fixed-us 2,8]
    PYTHONPATH=.:scripts python scripts/graphed_rows_gap.py --trace TRACE.json.gz

ON.json: ``simcluster validate --json`` or ``validate --held-out --json`` output of a copy of the package whose
efficiency.yaml sets ``host_overhead.cuda_graphs: true`` (the graphed kernels pay ``graph_node_s``, no gap, no host
time). Per row whose scenario states ``training.cuda_graph_scope`` (pipeline-parallel size 1): the published step
(the JSON's simulated step times simulated over published throughput), the graphed simulated step, microbatches a
step, one microbatch's kernels and device time (``layer_kernels.microbatch_kernels``), and the time the graphed model
lacks (published - graphed step) per microbatch, per kernel and over the device time. A per-kernel device cost that
graphs do not remove would show as the same time per kernel on every row; a kernel-class speed as the same share of
the device time. Then what-ifs added to the graphed step (microbatches x the added time, the kernels' time being
serial on the stream), each with the error it would leave (published / step - 1, positive = simulated too fast): a
fixed device time per memory-bound kernel (``--fixed-us``, comma-separated microseconds) and one wave of every
tensor-core kernel (``kernels.wave_s``: round 9's "fill" at one wave).

``--trace``: the device duration (CUPTI's, launch latency excluded) of PyTorch's ``vectorized_elementwise_kernel``
launches in a Kineto trace, min and median by grid size (thread blocks): what a small memory-bound kernel takes on
the device however few bytes it moves.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections import defaultdict

from accuracy_tables import InputError, load_cases
from kineto_kernel_gaps import trace_events
from layer_kernels import microbatch_kernels

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.spec import config

ELEMENTWISE = "vectorized_elementwise_kernel"


def published_step_s(case: dict) -> float:
    """A validate case's published step: its simulated step over simulated / published throughput (the JSON's
    ``error`` is published step / simulated step - 1)."""
    return case["step_time_s"] * case["simulated_tflops"] / case["published_tflops"]


def microbatch_terms(scenario, fixed_s: float) -> dict:
    """One microbatch's kernels, device time, and the two what-ifs: ``fixed_s`` on every memory-bound kernel (any
    kernel without tensor-core work: no wave) and one wave of every tensor-core kernel."""
    rows = microbatch_kernels(scenario)
    memory_bound = [row for row in rows if row["wave_s"] == 0.0]
    return {"kernels": len(rows), "device_s": sum(row["time_s"] for row in rows),
            "memory_bound": len(memory_bound), "fixed_s": fixed_s * len(memory_bound),
            "fill_s": sum(row["wave_s"] for row in rows)}


def row_report(case: dict, fixed_us: list[float]) -> dict | None:
    """The row's terms (module doc), or None where its scenario states no graph scope or runs pipeline stages."""
    scenario = config.load(case["scenario"])
    if scenario.training.cuda_graph_scope == "none" or scenario.parallelism.pp != 1:
        return None
    published, graphed = published_step_s(case), case["step_time_s"]
    mb = scenario.microbatches
    terms = microbatch_terms(scenario, 0.0)
    missing = (published - graphed) / mb
    out = {"scenario": case["scenario"], "published_s": published, "graphed_s": graphed, "microbatches": mb,
           "kernels": terms["kernels"], "device_s": terms["device_s"], "missing_s": missing,
           "missing_per_kernel_s": missing / terms["kernels"], "missing_share": missing / terms["device_s"],
           "memory_bound": terms["memory_bound"], "fill_s": terms["fill_s"],
           "fill_error": published / (graphed + mb * terms["fill_s"]) - 1.0, "fixed": {}}
    for us in fixed_us:
        added = terms["memory_bound"] * us * 1e-6
        out["fixed"][us] = (added, published / (graphed + mb * added) - 1.0)
    return out


def trace_floor(path: str) -> dict[int, tuple[int, float, float]]:
    """Grid size (thread blocks) -> (launches, min, median device duration in us) of the trace's vectorized
    elementwise kernels."""
    by_grid: dict[int, list[float]] = defaultdict(list)
    for event in trace_events(path):
        if event.get("cat") == "kernel" and ELEMENTWISE in event.get("name", ""):
            grid = event.get("args", {}).get("grid")
            # whole block counts only (round 34 review: [2, "a", 1] made the key "aa", then a TypeError traceback)
            if isinstance(grid, list) and 1 <= len(grid) <= 3 and all(
                    isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in grid):
                by_grid[math.prod(grid)].append(float(event["dur"]))
    return {grid: (len(durs), min(durs), statistics.median(durs)) for grid, durs in sorted(by_grid.items())}


# The fields of a validate --json case this script reads, checked by ``accuracy_tables.load_cases`` (the
# throughputs and the step positive). Round 34 review: a published TFLOP/s of 0 was a ZeroDivisionError traceback,
# a missing or null one a KeyError or TypeError; the file was read by ``open`` (a FIFO waited forever, /dev/zero
# filled memory, bytes that are not UTF-8 a UnicodeDecodeError traceback).
CASE_FIELDS = {"scenario": str, "step_time_s": (int, float), "simulated_tflops": (int, float),
               "published_tflops": (int, float)}
# Largest --fixed-us: a whole millisecond of device time on every memory-bound kernel is far past any kernel's floor
# (the trace's one-block elementwise kernels take 1.3-2.3 us); nan, inf and negative values printed nan and -100%.
MAX_FIXED_US = 1000.0


def cases_of(path: str) -> list[dict]:
    """The cases of one validate --json file, each with ``CASE_FIELDS``; a one-line ScenarioError otherwise."""
    try:
        return load_cases(path, CASE_FIELDS)
    except InputError as err:
        raise ScenarioError("validate output", str(err)) from None


def fixed_values(text: str) -> list[float]:
    """``--fixed-us``: comma-separated microseconds, each from 0 to ``MAX_FIXED_US`` (ValueError otherwise)."""
    values = [float(part) for part in text.split(",") if part.strip()]
    if any(not (math.isfinite(us) and 0.0 <= us <= MAX_FIXED_US) for us in values):
        raise ValueError(text)
    return values


def report_lines(reports: list[dict], fixed_us: list[float]) -> list[str]:
    head = (f"{'row':42} {'pub s':>8} {'graphed':>8} {'mb':>3} {'kern':>5} {'dev ms':>8} {'lacks ms':>8} "
            f"{'us/kern':>7} {'/dev':>6} | " + " ".join(f"{f'+{us:g}us/mem':>15}" for us in fixed_us)
            + f" {'+1 wave/tc':>15}")
    lines = ["per microbatch; what-ifs: added ms a microbatch, then the error they would leave", head]
    for r in reports:
        whatifs = " ".join(f"{added * 1e3:6.2f} {error:+8.1%}" for added, error in r["fixed"].values())
        lines.append(f"{r['scenario']:42} {r['published_s']:8.4f} {r['graphed_s']:8.4f} {r['microbatches']:3d} "
                     f"{r['kernels']:5d} {r['device_s'] * 1e3:8.2f} {r['missing_s'] * 1e3:8.2f} "
                     f"{r['missing_per_kernel_s'] * 1e6:7.2f} {r['missing_share']:6.1%} | {whatifs} "
                     f"{r['fill_s'] * 1e3:6.2f} {r['fill_error']:+8.1%}")
    return lines


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(prog="graphed_rows_gap.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="validate --json outputs simulated with cuda_graphs on")
    parser.add_argument("--fixed-us", default="2,8", help="fixed device us per memory-bound kernel, comma-separated")
    parser.add_argument("--trace", help="a Kineto trace: elementwise kernel durations by grid size")
    args = parser.parse_args(argv)
    if not args.files and not args.trace:
        parser.error("give validate JSON files, --trace, or both")
    try:
        fixed_us = fixed_values(args.fixed_us)
    except ValueError:
        parser.error(f"--fixed-us: expected comma-separated microseconds from 0 to {MAX_FIXED_US:g}, got "
                     f"{args.fixed_us!r}")
    if repeated := sorted({path for path in args.files if args.files.count(path) > 1}):  # each row reported twice
        parser.error(f"{repeated[0]}: given twice; each file is read once")
    reports = [r for path in args.files for case in cases_of(path) if (r := row_report(case, fixed_us))]
    if args.files:
        print("\n".join(report_lines(reports, fixed_us)))
    if args.trace:
        print(f"{args.trace}: {ELEMENTWISE} device duration by grid (blocks): launches, min us, median us")
        for grid, (n, low, mid) in trace_floor(args.trace).items():
            print(f"  {grid:8d} {n:5d} {low:7.2f} {mid:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))
