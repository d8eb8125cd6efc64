"""`simcluster sweep`: a grid of runs over GPU counts, fabrics and varied fields; scaling plots and the knee.

    simcluster sweep gpt3-175b-1024-h100 --gpus 64,128,...,8192 \\
        --topology rail-fat-tree --topology leaf-spine:oversubscription=4 --jobs 2
    simcluster sweep SCENARIO --gpus 256,512 --vary parallelism.tp=4,8 --scheduler tcp://10.0.0.5:8786

Runs go to local processes (``--jobs``, default one per CPU) or to a Dask cluster (``--scheduler``, needs
``simcluster[distributed]``). Every run leaves a shard in ``OUT/shards/``; running the same command again reuses
them and computes only what is missing (``--fresh`` recomputes everything). How grid points are built:
``simcluster.studies.grid``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from simcluster.cli.app import Interrupted, app, check_count, check_target_loss, fail, finite, keeping
from simcluster.cli.compare import LAW_HELP, OPTION_HELP, TOPOLOGY_HELP
from simcluster.cli.outputs import check_writable, folder, named, os_problem
from simcluster.cli.run import NETWORK_HELP, check_network
from simcluster.cli.terminal import Terminal, description
from simcluster.core import outputs, units
from simcluster.core.errors import ScenarioError
from simcluster.outcomes import economics, laws, returns
from simcluster.spec import config
from simcluster.studies import grid, sweep, workers
from simcluster.studies.samples import MAX_SAMPLES

# The columns of the sweep's report.html, in order (those a run has).
REPORT_COLUMNS = ["series", "gpus", "status", "step_time_s", "tokens_per_s", "mfu", "efficiency", "exposed_comm_s",
                  "exposed_comm_nvlink_s", "exposed_comm_pcie_s", "exposed_comm_nic_s", "exposed_comm_leaf_s",
                  "exposed_comm_spine_s", "exposed_comm_core_s", "peak_utilisation_nic", "peak_utilisation_leaf-spine",
                  "fabric_capex_usd", "cost_per_step_usd", "time_to_target_s", "cost_usd", "energy_j"]


def _results_table(frame, groups: list[dict]) -> Table:
    """One row per run; a series is named by its number when its label would not fit (``_series_legend``)."""
    table = Table(title=f"to loss {groups[0]['target_loss']:.3f} ({groups[0]['law']} law)" if groups else "sweep",
                  box=None, title_justify="left")   # no rules: fits 80 columns
    numbers = _series_numbers(frame)
    long_labels = max((len(label) for label in numbers), default=0) > SERIES_WIDTH
    table.add_column("series", no_wrap=True, overflow="ellipsis", max_width=SERIES_WIDTH)
    for column in ("GPUs", "tokens/s", "effic.", "MFU", "step", "days", "cost"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in frame[frame["status"] == "ok"].itertuples(index=False):
        days = units.fmt_days(row.time_to_target_s).removesuffix(" days")
        series = f"{numbers[row.series]}. {row.series}"[:SERIES_WIDTH] if long_labels else row.series
        table.add_row(series, f"{row.gpus:,}", units.fmt_count(row.tokens_per_s), f"{row.efficiency:.1%}",
                      f"{row.mfu:.1%}", f"{row.step_time_s:.3f}s", days,
                      units.fmt_usd(row.cost_usd))
    return table


# Widest series label the results table shows in full (the other columns take about 62 of 80).
SERIES_WIDTH = 16


def _series_numbers(frame) -> dict[str, int]:
    return {label: i for i, label in enumerate(dict.fromkeys(frame["series"]), start=1)}


def _series_legend(frame) -> list[str]:
    """The full label of every numbered series, when some label is too wide for the table."""
    numbers = _series_numbers(frame)
    if max((len(label) for label in numbers), default=0) <= SERIES_WIDTH:
        return []
    return [f"{i}. {label}" for label, i in numbers.items()]


def _failures_table(failed: list[dict]) -> Table:
    table = Table(title=f"{len(failed)} failed run(s)")
    table.add_column("parameters")
    table.add_column("error")
    for shard in failed:
        params = ", ".join(f"{key}={value}" for key, value in shard["params"].items())
        table.add_row(params, f"{shard['status']}: {shard['error']}")
    return table


def _knee_line(group: dict) -> str:
    knee = group["knee"]
    if knee["first_below_gpus"] is None:
        return (f"{group['label']}: efficiency stays >= {knee['threshold']:.0%} up to {knee['knee_gpus']:,} GPUs "
                f"({knee['knee_efficiency']:.1%})")
    return (f"{group['label']}: knee at {knee['knee_gpus']:,} GPUs ({knee['knee_efficiency']:.1%}); "
            f"{knee['first_below_gpus']:,} GPUs fall to {knee['first_below_efficiency']:.1%}")


def _plots(groups: list[dict], threshold: float, out_dir: Path, name: str, law: str) -> list[Path]:
    from simcluster.analysis import plots, scaling

    written = plots.save(scaling.scaling(groups, threshold, title=f"{name}: scaling"), out_dir, "scaling")
    title = f"{name}: to loss {groups[0]['target_loss']:.3f} ({law} law)"
    return written + plots.save(scaling.time_and_cost(groups, title=title), out_dir, "time_and_cost")


@app.command("sweep")
def sweep_command(
    scenario: str | None = typer.Argument(None, help="scenario YAML file or bundled name; default: the demo"),
    gpus: str | None = typer.Option(None, "--gpus", help="GPU counts, e.g. 64,128,...,16384 (doublings; '...' "
                                    "continues a whole factor: 64,256,... by 4) or 64,96,128; default: the scenario's"),
    topologies: list[str] = typer.Option([], "--topology", help=TOPOLOGY_HELP),
    options: list[str] = typer.Option([], "--option", help=OPTION_HELP),
    vary: list[str] = typer.Option([], "--vary", help="scenario field and values, e.g. parallelism.tp=4,8 or "
                                   "micro_batch_size=1,2 (repeatable; fixing parallelism.dp or "
                                   "training.global_batch_size stops their scaling with the GPU count)"),
    jobs: int | None = typer.Option(None, "--jobs", min=1, help="local worker processes (default: one per CPU; "
                                    "1: in this process)"),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address tcp://HOST:PORT "
                                         "(needs dask: pip install the distributed extra)"),
    network: str | None = typer.Option(None, "--network", help=NETWORK_HELP),
    target_loss: float | None = typer.Option(None, "--target-loss", parser=finite,
                                             help="loss to reach (nats/token); default: "
                                             "the loss of a compute-optimal run of the model"),
    law: str = typer.Option(sweep.DEFAULT_LAW, "--law", help=LAW_HELP),
    threshold: float = typer.Option(returns.DEFAULT_EFFICIENCY_THRESHOLD, "--threshold", parser=finite,
                                    help="scaling efficiency below which more GPUs are deemed wasteful (knee)"),
    out: Path | None = typer.Option(None, "--out", parser=folder,
                                    help="output folder (default runs/<name>-sweep/); the same "
                                    "grid resumes there, another grid or other files (`.` too) go to NAME-2, ... "
                                    "(reusing the runs it shares)"),
    samples: int = typer.Option(1, "--samples", min=1, max=MAX_SAMPLES,
                                help="variability seeds per point: the scaling plot draws the p10-p90 band "
                                f"(grid points x samples at most {grid.MAX_GRID_POINTS:,} simulations); the "
                                "seeds differ only with a `variability` section (in the scenario, or "
                                "--vary variability=measured): without one every sample is the same"),
    fresh: bool = typer.Option(False, "--fresh", help="ignore existing shards and recompute every run"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="draw the PNG/PDF figures"),
    as_json: bool = typer.Option(False, "--json", help="print rows, series and failures as JSON on stdout"),
    table_format: str = typer.Option("csv", "--format", help="results table: csv | parquet (needs pyarrow)"),
    html: bool = typer.Option(False, "--report", help="also write report.html: one self-contained page (rows, knees, "
                              "figures, scenario, assumptions) that opens offline"),
) -> None:
    """Grid of runs (GPU counts x fabrics x varied fields) on local processes or a Dask cluster, resumable;
    writes results (CSV or Parquet), throughput/efficiency and time/cost-to-target plots with the knee."""
    check_network(network)
    outputs.check_table_format(table_format)
    chosen = laws.get(law)
    check_target_loss(target_loss)
    if not 0.0 < threshold <= 1.0:
        fail("--threshold", f"must be within (0, 1], got {threshold:g}")
    if jobs is not None and scheduler is not None:
        raise ScenarioError("--jobs", "give --jobs (local processes) or --scheduler (Dask), not both")
    check_count(jobs, "--jobs", workers.MAX_JOBS, workers.MAX_JOBS_REASON)
    if scheduler is not None:
        sweep.check_scheduler(scheduler)
    spec = config.load(scenario)
    base = config.rebuildable(spec)
    counts = grid.parse_gpus(gpus) if gpus is not None else None
    tasks = grid.grid(base, counts, grid.fabrics(topologies, options, base), grid.parse_vary(vary), network,
                      samples=samples)
    _check_targets(tasks, chosen, target_loss)
    requested = check_writable(named(out or Path("runs") / f"{spec.name}-sweep"))
    console = Terminal(stderr=True)
    out_dir, undo = None, None
    try:  # the workers first: a Dask scheduler that cannot be reached is refused before a folder is made
        with sweep.executor(jobs, scheduler) as (pool, slots):
            out_dir, undo = _grid_folder(requested, tasks)
            note = _FolderNote(requested, out_dir)
            with Progress(description("progress.description"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=console,
                          transient=as_json,
                          disable=not console.is_terminal) as progress:  # no bar in logs: an interrupt stays one line
                bar = progress.add_task(f"{spec.name}: {len(tasks)} runs on {slots} worker(s)", total=len(tasks))
                run = sweep.run_grid(tasks, out_dir, pool, slots, resume=not fresh,
                                     on_done=lambda shard, reused: (progress.advance(bar), note.said(shard)),
                                     shard_sources=sweep.sibling_folders(requested, out_dir))
    except Interrupted as stop:
        if out_dir is not None:
            stop.message = _write_partial(tasks, out_dir, chosen, target_loss, threshold, table_format)
        raise
    except OSError as err:  # a full disk: the shards written so far are whole (atomic) and resume the sweep
        if out_dir is None:  # no folder yet: the worker processes could not start (no /dev/shm, too many files)
            fail("--jobs", f"cannot start the worker processes: {err.strerror or err}; --jobs 1 runs in this one")
        fail("--out", f"writing into {str(out_dir)!r} failed ({os_problem(err)}); the finished runs' shards "
             "are kept: run the same command to resume")
    if not run.summaries:  # a refusal: nothing kept, one line (round 33: the folder of failures stayed, and the
        first = run.failed[0]  # note on a taken folder came before the error)
        if undo is not None:  # the folder, and its parents, made (or found empty) for this sweep
            undo()
        raise ScenarioError("sweep", f"all {len(tasks)} runs failed; first ({first['params']}): {first['error']}")
    written, writing = [], "table"
    try:  # from the last run on: an interrupt while the table is computed keeps it too (round 38: said nothing)
        note.said()
        frame, groups = sweep.table(run, tasks, chosen, target_loss, threshold, out_dir)
        report = {"law": chosen.name, "threshold": threshold, "executed": len(run.executed),
                  "reused": len(run.reused), "partial": False, "pending": 0, "out_dir": str(out_dir),
                  "series": groups, "failed": run.failed}
        written = _write_results(frame, report, out_dir, table_format)
        if plots:
            writing = "figures"
            written += _plots(groups, threshold, out_dir, spec.name, chosen.name)
        if html:
            writing = "report"
            from simcluster.analysis import report as html_report

            written.append(html_report.write_table_report(
                out_dir, f"{spec.name}: sweep ({chosen.name} law)",
                f"{len(tasks)} runs; target loss {groups[0]['target_loss']:.3f} ({chosen.name} law).", frame,
                REPORT_COLUMNS, written, base, [_knee_line(group) for group in groups]))
    except Interrupted as stop:  # Ctrl-C while writing: every run had finished; say what is kept (round 29)
        stop.message = (f"{len(tasks)} of {len(tasks)} runs finished; wrote {', '.join(p.name for p in written)} "
                        f"to {out_dir}/ ({writing} interrupted)" if written else
                        _write_partial(tasks, out_dir, chosen, target_loss, threshold, table_format))
        raise
    if as_json:
        typer.echo(outputs.dumps({**report, "rows": frame.to_dict(orient="records")}, indent=1, default=str))
        return
    console = Terminal(width=80) if not Terminal().is_terminal else Terminal()
    for line in _series_legend(frame):
        console.print(line, highlight=False)
    console.print(_results_table(frame, groups))
    for group in groups:
        console.print(_knee_line(group), highlight=False)
    note = sweep.token_drop_note(frame.get(sweep.TOKEN_DROP_COLUMN, ()))
    if note:
        console.print(note, highlight=False)
    if run.failed:
        console.print(_failures_table(run.failed))
    console.print(f"{len(tasks)} runs: {len(run.executed)} computed, {len(run.reused)} reused from shards, "
                  f"{len(run.failed)} failed", highlight=False)
    console.print(f"wrote {', '.join(p.name for p in written)} to {out_dir}/", highlight=False, soft_wrap=True)


def _check_targets(tasks: list, law, target_loss: float | None) -> None:
    """``--target-loss`` reachable by every model of the grid (``--vary model=...`` gives several), checked before
    simulating: a target below one model's floor failed the whole sweep after every run."""
    if target_loss is None:
        return
    seen = set()
    for task in tasks:
        model = repr(task.scenario.get("model")) if task.scenario is not None and task.error is None else None
        if model is None or model in seen:
            continue
        seen.add(model)
        try:
            scenario = config.from_dict(task.scenario, source="sweep")
        except ScenarioError:  # an invalid grid point is that run's failure, reported with the others
            continue
        economics.check_target_reachable(scenario, law, target_loss, field="--target-loss")


def _grid_folder(requested: Path, tasks: list) -> tuple[Path, Callable[[], None] | None]:
    """``sweep.folder_for``: the folder and what undoes it; a folder that cannot be made is the one-line error of
    --out."""
    try:
        return sweep.folder_for(requested, tasks)
    except OSError as err:
        fail("--out", f"cannot write into {str(requested)!r}: {os_problem(err)}")
    raise AssertionError("unreachable: fail raises")


class _FolderNote:
    """``X/ holds another grid's sweep or other outputs: writing to X-2/``, said once, when the first run finishes
    or is reused (a run's own note or an interrupt's line may name the folder before: round 33), never before a
    sweep whose every run fails, which is one error line and leaves nothing (as ``cli.outputs.fresh_folder``)."""

    def __init__(self, requested: Path, out_dir: Path):
        self.line = (f"{requested}/ holds another grid's sweep or other outputs: writing to {out_dir}/"
                     if out_dir != requested else None)

    def said(self, shard: dict | None = None) -> None:
        if self.line is not None and (shard is None or shard.get("status") == "ok"):
            typer.echo(self.line, err=True)
            self.line = None


def _write_results(frame, report: dict, out_dir: Path, table_format: str = "csv") -> list[Path]:
    """results.csv (or .parquet) and sweep.json, each written atomically."""
    written = [sweep.write_table(frame, out_dir, table_format), out_dir / "sweep.json"]
    outputs.write_text(written[1], outputs.dumps(report, indent=1, default=str) + "\n")
    return written


def _write_partial(tasks: list, out_dir: Path, chosen, target_loss: float | None, threshold: float,
                   table_format: str = "csv") -> str:
    """After SIGINT/SIGTERM: the table of the runs finished so far (their shards), marked partial; the line the
    CLI prints. Running the same command again resumes from the shards."""
    run = sweep.collect(tasks, out_dir)
    finished = len(tasks) - len(run.pending)
    kept = f"{finished} of {len(tasks)} runs finished"
    try:
        frame, groups = sweep.table(run, tasks, chosen, target_loss, threshold, out_dir)
        report = {"law": chosen.name, "threshold": threshold, "executed": None, "reused": None, "partial": True,
                  "pending": len(run.pending), "out_dir": str(out_dir), "series": groups, "failed": run.failed}
        with keeping():  # a second Ctrl-C while they are written no longer drops them (the shards stay anyway)
            written = _write_results(frame, report, out_dir, table_format)
    except (ScenarioError, OSError, ValueError) as err:
        return f"{kept}, kept as shards in {out_dir}/ (no results table: {err}); run the same command to resume"
    return (f"{kept}; wrote {', '.join(p.name for p in written)} (partial) to {out_dir}/; run the same command "
            "to resume")
