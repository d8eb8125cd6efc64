"""`simcluster validate`: every calibration case, simulated vs published TFLOP/s per GPU, with the errors."""

from __future__ import annotations

import contextlib
import functools

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeRemainingColumn
from rich.table import Table

from simcluster.cli.app import Interrupted, app, check_count, fail
from simcluster.cli.run import NETWORK_HELP, check_network
from simcluster.cli.terminal import Terminal, description
from simcluster.core import outputs, units
from simcluster.core.errors import ScenarioError
from simcluster.studies import trends, validation, workers


@app.command()
def validate(
    network: str | None = typer.Option(None, "--network", help=NETWORK_HELP),
    only: str | None = typer.Option(None, "--only", help="run only cases whose scenario name contains this"),
    held_out: bool = typer.Option(False, "--held-out",
                                  help="run the held-out published runs (never used for calibration) instead"),
    as_json: bool = typer.Option(False, "--json", help="print the cases, the error statistics (overall and per "
                                 "series) and the trend series as JSON"),
    variability: str | None = typer.Option(
        None, "--variability", help="what-if: run every case with this variability section: 'measured' "
        "(data/variability.yaml), key=value pairs (gpu_speed_cv=0.015,kernel_jitter_cv=0,seed=1) or both "
        "('measured,seed=1'); default: none, every GPU alike (docs/variability.md)"),
    steady_state: bool = typer.Option(
        False, "--steady-state", help="an interleaved pipeline of many microbatches gets its step extrapolated from "
        "three shorter runs pp microbatches apart where their steps lie on a line at the busiest stage's pace (said in "
        "its row's note; docs/performance.md, round 26); default: every microbatch simulated"),
    jobs: int | None = typer.Option(None, "--jobs", min=1, help="worker processes running the cases (default: one "
                                    "per CPU, as sweep, at most one per case; 1: in this process); the table and "
                                    "--json are the same whatever the number"),
) -> None:
    """Hold the simulator against published training throughput: the calibration set, or --held-out runs. Prints
    each run's error, the error per series and precision, and the scaling trend series (runs of one source differing
    only in GPU count: simulated against published per-GPU throughput with scale)."""
    check_network(network)
    check_count(jobs, "--jobs", workers.MAX_JOBS, workers.MAX_JOBS_REASON)
    if only is not None and not only.strip():  # '' is in every name: an unset shell variable ran them all
        fail("--only", f"expected part of a scenario name, got {only!r}; leave --only out to run every case")
    spread = validation.parse_variability(variability)
    console = Terminal(stderr=as_json)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # piped into a file or CI log: keep the table's rows on one line
    chosen = validation.held_out_cases() if held_out else validation.cases()
    cases = [c for c in chosen if only is None or only in c["scenario"]]
    label = ("held-out" if held_out else "calibration") + (f" (variability {variability})" if spread else "")
    if not cases:
        # the row may be in the other set: `validate --only fmsfsdp` said only that no calibration case has it
        other = validation.cases() if held_out else validation.held_out_cases()
        hint = (f"; {sum(only in c['scenario'] for c in other)} {'calibration' if held_out else 'held-out'} "
                f"case(s) do: {'leave out' if held_out else 'add'} --held-out"
                if any(only in c["scenario"] for c in other) else "")
        fail("--only", f"no {label} case's scenario contains {only!r}{hint}")
    run = functools.partial(validation.run_case, network=network, variability=spread, extrapolate=steady_state)
    finished, stopped = {}, None
    try:  # on --jobs worker processes; the rows in the cases' order whichever finished first (any --jobs: one output)
        # no bar when stderr is not a terminal: rich's stopped bar left a blank line there, before the one line of
        # an interrupt (and after every run with --json); rich.progress.track's bar, its description printed as
        # written (--variability is the user's text)
        with contextlib.closing(validation.run_cases(cases, run, jobs)) as calls, \
                Progress(description("progress.description"), BarColumn(), TaskProgressColumn(),
                         TimeRemainingColumn(elapsed_when_finished=True), console=console, transient=True,
                         disable=not console.is_terminal) as progress:
            for index, result in progress.track(calls, total=len(cases), description=f"simulating {label} runs"):
                finished[index] = result
    except Interrupted as err:  # Ctrl-C: the rows finished are printed, then exit 130 (docs/robustness.md)
        if not finished and not as_json:  # --json prints its object even so: none finished, every case pending
            raise                         # (round 35: stdout was empty, and a reader of the JSON failed on it)
        stopped = err
        label += f", interrupted after {len(finished)} of {len(cases)}"
    except ScenarioError as err:  # a worker process died (killed: out of memory): the rows finished are printed, then
        if err.field != "--jobs" or not finished:  # its one line and exit 2 (round 38: they were lost)
            raise
        stopped = err
        label += f", stopped after {len(finished)} of {len(cases)}"  # why: the error line on stderr
    results = [finished[index] for index in sorted(finished)]
    stats = validation.error_stats(results) if results else {}
    if as_json:
        typer.echo(outputs.dumps({"cases": [{**r.__dict__, "error": r.error} for r in results], **stats,
                                  **({"variability": spread.model_dump()} if spread else {}),
                                  "by_series": validation.error_by_group(results),
                                  "trends": trends.trends([r.__dict__ for r in results]),
                                  # as ``sweep``: an interrupted run says so and how many cases it left
                                  "partial": stopped is not None,
                                  "pending": len(cases) - len(results)}, indent=2))
        if stopped:
            raise stopped
        return
    table = Table(title=f"simulated vs published TFLOP/s per GPU ({label} runs)")
    for column in ("scenario", "metric", "published", "simulated", "error", "memory/GPU"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for r in results:
        memory = units.fmt(r.memory_bytes, units.BYTES) + ("" if r.fits else " (over HBM)")
        table.add_row(r.scenario, r.metric, f"{r.published_tflops:.1f}", f"{r.simulated_tflops:.1f}",
                      f"{r.error:+.1%}", memory)
    console.print(table)
    if stats:
        console.print(f"median |error| {stats['median_abs_error']:.1%}, max |error| {stats['max_abs_error']:.1%} "
                      f"over {stats['case_count']} {label} cases")
    groups = Table(title=f"error per series and precision ({label} runs)")
    for column in ("series / precision", "runs", "median |error|", "max |error|", "mean error"):
        groups.add_column(column, justify="left" if column.startswith("series") else "right")
    for key, g in validation.error_by_group(results).items():
        groups.add_row(key, str(g["case_count"]), f"{g['median_abs_error']:.1%}", f"{g['max_abs_error']:.1%}",
                       f"{g['mean_error']:+.1%}")
    console.print(groups)
    print_trends(console, trends.trends([r.__dict__ for r in results]), label)
    noted = [r for r in results if r.note]
    if noted:   # the shortcut is said where it applied
        console.print(f"{len(noted)} steps extrapolated from their steady state (--steady-state; "
                      f"docs/performance.md, round 26): " + "; ".join(f"{r.scenario}: {r.note}" for r in noted))
    over = [r.scenario for r in results if not r.fits]
    if over:
        console.print(f"the memory model puts {', '.join(over)} above the GPU's HBM, though the published run fit: "
                      f"see docs/calibration.md")
    if stopped:
        raise stopped


def print_trends(console: Terminal, found: dict, label: str) -> None:
    """The trend series (studies/trends.py): per-GPU throughput at each GPU count against the smallest, published and
    simulated, the trend error at the end of the range and its sign; then the runs of one source and model at
    several GPU counts that no series holds, with what differs."""
    if found["series"]:
        table = Table(title=f"scaling trends: throughput per GPU at the largest N / at the smallest ({label} runs)")
        for column in ("series", "GPUs (runs)", "published", "simulated", "trend error", "sign"):
            table.add_column(column, justify="left" if column in ("series", "sign") else "right", no_wrap=True)
        for s in found["series"]:
            first, last = s["points"][0], s["points"][-1]
            table.add_row(s["series"], f"{first['gpus']}-{last['gpus']} ({len(s['points'])})",
                          f"{last['published_efficiency']:.1%}", f"{last['simulated_efficiency']:.1%}",
                          f"{s['end_trend_error']:+.1%}", s["sign"])
        console.print(table)
        console.print("trend error = simulated / published efficiency - 1 (every point: --json 'trends'); optimistic: "
                      "the simulation keeps more of its per-GPU throughput with scale than the published runs did")
    for apart in found["not_grouped"]:
        console.print(f"not a trend series: {', '.join(apart['runs'])} ({apart['family']}, {apart['model']}; "
                      f"differ in {', '.join(apart['differ'])})")
