"""`simcluster run`: simulate a scenario (the bundled default when none is given) and report its summary."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from simcluster.cli.app import Interrupted, app, fail, keeping
from simcluster.cli.outputs import NEVER_OVERWRITTEN, folder, fresh_folder, output_dir
from simcluster.cli.terminal import Terminal, description
from simcluster.core import outputs
from simcluster.core.errors import ScenarioError, unknown_name
from simcluster.core.units import BYTES, SECONDS, fmt
from simcluster.outcomes import accuracy_card
from simcluster.spec import config
from simcluster.spec import jobs as jobs_spec
from simcluster.spec.config import NETWORK_MODELS
from simcluster.studies.samples import MAX_SAMPLES

# A run projected (from its second step's wall time) to take longer than this is announced on one line: every step is
# simulated, and steady state comes in the first few, so a user who wrote steps: 1000 learns early what it costs.
LONG_RUN_S = 60.0


class LongRunNotice:
    """``on_step`` of a run: after the second step (the first one builds routes and caches), one warning line when
    the steps left would take over ``LONG_RUN_S`` at the second step's pace (a log has no progress bar to say it)."""

    def __init__(self, console: Terminal, total_steps: int, advance):
        import time

        self._clock = time.perf_counter
        self._console, self._total, self._advance = console, total_steps, advance
        self._done, self._first_done_at = 0, 0.0

    def __call__(self, index) -> None:
        self._advance(index)
        self._done += 1
        if self._done == 1:
            self._first_done_at = self._clock()
        elif self._done == 2:
            per_step_s = self._clock() - self._first_done_at
            if per_step_s * (self._total - 2) > LONG_RUN_S:
                self._console.print(f"warning: {self._total:,} steps to simulate at about {per_step_s:.2g} s each "
                                    f"(about {per_step_s * self._total / 60:.0f} min); steady state comes in the "
                                    "first few steps: lower training.steps or --steps to finish sooner",
                                    soft_wrap=True)


# What --expand costs, said before the wait (round 34 review: the 10,752-GPU MLPerf GPT-3 row's expanded run printed
# nothing in a log for minutes; a terminal shows only a spinner). Measured: docs/performance.md (round 16: ~140 events
# an expanded GPU schedules a step, ~13 us of CPU each; 16,384 GPUs of Llama 3 405B one step in 30-60 s) and
# docs/calibration/round-34.md "Round 34: the expanded run at 10,752 GPUs" (10,752 GPUs: 178.8 s of CPU with the split
# pass; not done in 15 min before it).
EXPAND_NOTE = ("--expand simulates every GPU as its own agent (about 140 events a GPU a step, ~13 us of CPU each): "
               "Llama 3 405B on 16,384 GPUs about a minute a step, MLPerf's GPT-3 175B on 10,752 GPUs about 3 min "
               "of CPU, and a run whose merged calls are not proven exact is simulated again (the flagged calls "
               "unmerged, up to 3 more times; the summary's symmetry.passes lists them); Ctrl-C stops it (exit 130); "
               "without --expand: seconds")


# --network of the commands that simulate a scenario: unset, the scenario's own `network` key decides
NETWORK_HELP = (f"network model: {' | '.join(NETWORK_MODELS)}; default: the scenario's `network` "
                f"({config.Scenario.model_fields['network'].default} unless it states one)")


def check_network(network: str | None) -> None:
    if network is not None and network not in NETWORK_MODELS:
        raise unknown_name("--network", "network model", network, NETWORK_MODELS)


def scenario_tables() -> list[Table]:
    """``run --list``: one table per question, each bundled scenario that answers it with its description."""
    from simcluster.studies import scenarios

    tables = []
    for group in scenarios.groups():
        table = Table(title=Text.assemble((group.question, "bold"), f"\n$ {group.command}"), title_justify="left",
                      box=None, title_style="",
                      show_header=False, padding=(0, 1))
        table.add_column("scenario", no_wrap=True, style="bold")
        table.add_column("what it is")
        for name, text in group.scenarios:
            table.add_row(name, text)
        tables.append(table)
    return tables


def model_line(preset: dict | None) -> str:
    """Where the model came from: a preset by name, an inline model taken as the preset of its shape (which a user
    must be told: its architecture and NeMo's per-model settings are the preset's), or a model of its own."""
    if preset is None:
        return "inline, as written"
    if preset["chosen_by"] == "shape":
        return f"inline shape = preset {preset['name']} (its architecture and NeMo settings used)"
    if preset["chosen_by"] == "ambiguous":
        return "inline, as written (presets of its shape disagree: no NeMo recipe settings)"
    if preset["chosen_by"] in ("shape+vocab", "shape+nearest-vocab"):
        return f"inline, as written; NeMo recipe settings of {preset['name']} ({preset['chosen_by']})"
    return f"preset {preset['name']}"


def summary_table(summary: dict, memory) -> Table:
    """The readable summary printed after a run."""
    table = Table(title=f"{summary['name']}: {summary['gpus']} x {summary['gpu']} on {summary['topology']}, "
                        f"network model {summary['network_model']}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    layout = summary["layout"]
    rows = [
        ("model", model_line(summary.get("model_preset"))),
        ("layout (tp x cp x pp x dp)", f"{layout['tp']} x {layout['cp']} x {layout['pp']} x {layout['dp']}"
         + (f", ep {layout['ep']}" if layout.get("ep", 1) > 1 else "")),
        ("microbatches per replica", str(summary["microbatches"])),
        ("step time", fmt(summary["step_time_s"], SECONDS, 4)),
        *([(f"  p50 / p90 / p99 over {summary['samples']} seeds", " / ".join(
            fmt(summary[f"step_time_p{p}_s"], SECONDS, 4) for p in (50, 90, 99)))] if "samples" in summary else []),
        ("  compute", fmt(summary["compute_s"], SECONDS, 4)),
        ("  exposed communication", fmt(summary["exposed_comm_s"], SECONDS, 4)),
        ("    by parallelism", ", ".join(f"{axis} {fmt(value, SECONDS, 3)}" for axis, value
                                         in summary["exposed_comm_by_parallelism_s"].items() if value > 0) or "-"),
        ("  pipeline bubble", fmt(summary["pipeline_bubble_s"], SECONDS, 4)),
        ("tokens/s", f"{summary['tokens_per_s']:,.0f}"),
        ("model TFLOP/s per GPU (MFU)", f"{summary['model_tflops_per_gpu']:.1f} ({summary['mfu']:.1%})"),
        ("hardware TFLOP/s per GPU (HFU)", f"{summary['hardware_tflops_per_gpu']:.1f} ({summary['hfu']:.1%})"),
        ("busiest link utilisation", f"{summary['busiest_link_utilisation']:.1%}"),
        ("cost per step", f"${summary['cost_per_step_usd']:.2f}"),
        ("goodput (failures, checkpoints, restarts)", f"{summary['goodput']:.1%}"),
        ("  interruptions per day", f"{summary['interruptions_per_day']:.3g}"),
        ("  checkpoint every", "-" if summary["checkpoint_interval_s"] is None
         else fmt(summary["checkpoint_interval_s"], SECONDS, 3)),
    ]
    rows += [(f"memory: {label}", fmt(value, BYTES, 3)) for label, value in memory.rows()]
    rows += accuracy_card.lines(summary["accuracy"]) if summary.get("accuracy") else []
    rows.append(("simulated in", f"{summary['wall_time_s']:.2f} s wall, {summary['events']:,} events"))
    for label, value in rows:
        table.add_row(label, value)
    return table


@app.command()
def run(
    scenario: str | None = typer.Argument(None, help="scenario YAML file or bundled name; default: the bundled demo "
                                          f"({config.DEFAULT_SCENARIO})"),
    out: Path | None = typer.Option(None, "--out", parser=folder,
                                    help=f"output folder (default runs/<name>/; {NEVER_OVERWRITTEN})"),
    network: str | None = typer.Option(None, "--network", help=NETWORK_HELP),
    steps: int | None = typer.Option(None, "--steps", min=1, max=config.MAX_STEPS,
                                     help="optimizer steps to simulate; default: the scenario's training.steps "
                                     f"({config.Training.model_fields['steps'].default} unless it states them)"),
    expand: bool = typer.Option(False, "--expand", help="one agent per GPU (no symmetry collapse); slower"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout"),
    trace_ranks: int | None = typer.Option(
        None, "--trace-ranks", min=1,
        help="ranks written to trace.json.gz (default 256; the collapsed simulation records one pipeline's stages)"),
    plot: bool = typer.Option(False, "--plot", help="also draw timeline.png (loads matplotlib: about a second)"),
    no_memory_check: bool = typer.Option(
        False, "--no-memory-check", help="simulate even a layout the memory model says does not fit (the summary "
        "still reports the memory it needs): for runs known to fit, e.g. with a leaner schedule"),
    samples: int = typer.Option(1, "--samples", min=1, max=MAX_SAMPLES,
                                help="runs with variability seeds seed, seed+1, ...: the summary gains "
                                "the step time's p10, p50, p90 and p99 (step_time_p50_s, ...); the files are "
                                "the median sample's. The "
                                "samples differ only with a `variability` section in the scenario (e.g. "
                                "`variability: measured`, docs/variability.md): without one they are identical"),
    table_format: str = typer.Option("csv", "--format", help="events table: csv | parquet (needs pyarrow)"),
    report: bool = typer.Option(False, "--report", help="also write report.html: one self-contained page (summary, "
                                "tables, figures incl. the timeline, scenario, assumptions) that opens offline"),
    list_scenarios: bool = typer.Option(False, "--list", help="list the bundled scenarios, grouped by the question "
                                        "each answers, with what each is for; runs nothing"),
) -> None:
    """Simulate a training scenario: step time, MFU, communication, memory and the error to expect (the validation
    harness's on published runs like it); writes summary, events, links and trace (and timeline.png with --plot)."""
    if list_scenarios:
        if scenario is not None:
            fail("--list", "lists the bundled scenarios; give no SCENARIO with it")
        # an option of a run said nothing with --list: `run --list --json | jq` got the tables (round 35)
        for given, option in ((out is not None, "--out"), (network is not None, "--network"),
                              (steps is not None, "--steps"), (expand, "--expand"), (as_json, "--json"),
                              (trace_ranks is not None, "--trace-ranks"), (plot, "--plot"),
                              (no_memory_check, "--no-memory-check"), (samples != 1, "--samples"),
                              (table_format != "csv", "--format"), (report, "--report")):
            if given:
                fail(option, "is an option of a run; --list runs nothing (it prints the bundled scenarios' tables)")
        console = Terminal()
        for table in scenario_tables():
            console.print(table)
            console.print()
        return
    check_network(network)
    outputs.check_table_format(table_format)
    if jobs_spec.is_jobs_file(scenario):
        for given, option in ((expand, "--expand"), (samples > 1, "--samples"), (plot, "--plot"),
                              (report, "--report")):
            if given:
                fail(option, "does not apply to a scenario with several jobs (each job's files are written)")
        run_jobs(jobs_spec.load(scenario), out, network, steps, as_json, not no_memory_check, table_format)
        return
    spec = config.load(scenario)
    out_dir = output_dir(out or Path("runs") / spec.name)  # before a simulation of hours
    from simcluster.engine import Simulation
    from simcluster.engine.merge import SYMMETRIC
    from simcluster.engine.simulation import run_expanded

    console = Terminal(stderr=as_json)
    sim = Simulation(spec, network, expand=expand, check_memory=not no_memory_check, merge=SYMMETRIC)
    from simcluster.parallel import memory

    if note := memory.dropped_deferral_note(spec, sim.scenario):
        console.print(f"note: {note}", soft_wrap=True)
    from simcluster.workload import fp32_embedding_grads

    for note in (config.gpu_catalog_note(spec), config.fp8_recipe_note(spec), config.mcore_version_note(spec),
                 fp32_embedding_grads.note(spec)):
        if note:
            console.print(f"note: {note}", soft_wrap=True)
    if sim.network_name == "chunk":   # minutes where flow takes seconds: said before the wait
        from simcluster.network.store_forward import cost_note

        console.print(f"note: {cost_note()}", soft_wrap=True)
    if expand:
        console.print(f"note: {EXPAND_NOTE}", soft_wrap=True)
    spec = sim.scenario  # what is simulated, dumped and reported
    if sim.memory.total_bytes > spec.cluster.gpu.hbm_capacity:
        console.print(f"warning: the memory model puts this layout at {fmt(sim.memory.total_bytes, BYTES, 3)} per "
                      f"GPU, over the {fmt(spec.cluster.gpu.hbm_capacity, BYTES, 3)} of {spec.cluster.gpu.name}; "
                      "simulated anyway (--no-memory-check)")
    per_run = steps or spec.training.steps
    total = per_run * samples
    results = []
    from simcluster.studies import samples as sampling

    with Progress(SpinnerColumn(), description(), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as progress:  # no bar in logs: errors stay one line
        task = progress.add_task(f"simulating {spec.name} ({spec.cluster.gpus} GPUs), steps", total=total)
        # on stderr always, as the progress it stands in for: stdout keeps what the run reports (the summary, --json)
        # the bar at the step this run is at, after the samples done: an expanded run simulated again (engine.
        # run_expanded) starts over at step 0, where advancing counted past the total ("2/1"; round 34 review)
        on_step = LongRunNotice(Terminal(stderr=True), total,
                                lambda index: progress.update(task, completed=len(results) * per_run + index + 1))

        def simulate(seeded, first=None):
            def build(merge):
                if first is not None and merge is SYMMETRIC:
                    return first
                return Simulation(seeded, network, expand=True, check_memory=not no_memory_check, merge=merge)

            if expand:  # merged where proven exact, else rerun with every call its own class (engine.run_expanded)
                return run_expanded(build, steps, on_step=on_step)
            simulation = first or Simulation(seeded, network, check_memory=not no_memory_check, merge=SYMMETRIC)
            return simulation.run(steps, on_step=on_step)

        try:
            results.append(simulate(spec, sim))
            for seeded in list(sampling.scenarios(spec, samples))[1:]:
                results.append(simulate(seeded))
            # the percentiles here: an interrupt while they are taken keeps the samples (round 38: said nothing)
            result = sampling.combine(results, spec.tokens_per_step) if samples > 1 else results[0]
        except Interrupted as stop:  # samples that finished are kept, as a sweep's or a compare's runs (round 30)
            if samples > 1 and results:
                partial = sampling.combine(results, spec.tokens_per_step)
                partial.summary.update(partial=True, samples_requested=samples)
                stop.message = keep_summary(partial.summary, out_dir,
                                            f"{len(results)} of {samples} samples finished", "percentiles over them")
            raise
    try:
        if result.summary["symmetry"]["exact"] is False:  # the collapse approximated: say so, on one line
            console.print(f"warning: {result.summary['symmetry']['note']}", soft_wrap=True)
        with fresh_folder(out_dir) as out_dir:  # unique again if another run took it meanwhile
            written = result.write(out_dir, trace_ranks=trace_ranks, table_format=table_format)
            if plot or report:  # opt-in (the report embeds it): matplotlib alone costs more than a small run
                from simcluster.analysis.timeline import plot_timeline

                written.append(plot_timeline(result.events, out_dir / "timeline.png", title=spec.name))
            if report:
                from simcluster.analysis import report as html_report

                written.append(html_report.write_run(out_dir, result.summary, spec.model_dump(mode="json"),
                                                     written))
    except Interrupted as stop:  # Ctrl-C while writing: the simulation had finished, its summary is kept
        stop.message = keep_summary(result.summary, out_dir)
        raise
    if as_json:
        typer.echo(outputs.dumps({**result.summary, "out_dir": str(out_dir)}, indent=2))
        return
    console.print(summary_table(result.summary, result.memory))
    console.print(f"wrote {', '.join(p.name for p in written)} to {out_dir}/", highlight=False, soft_wrap=True)


def keep_summary(summary: dict, out_dir: Path, done: str = "the simulation had finished", what: str = "") -> str:
    """After SIGINT/SIGTERM while a finished run's files were written (``fresh_folder`` removed them), or between
    the samples of ``run --samples`` (``done``: how many finished): its summary.json alone, written again; the line
    the CLI prints."""
    try:
        with keeping(), fresh_folder(out_dir) as folder:  # a second Ctrl-C here no longer removes it
            outputs.write_text(folder / "summary.json", outputs.dumps(summary, indent=2) + "\n")
    except (OSError, ScenarioError) as err:
        return f"{done} (summary not written: {err})"
    return (f"{done}; wrote summary.json ({what + ', ' if what else ''}no events, links, trace or figures) "
            f"to {folder}/")


def jobs_table(summary: dict) -> Table:
    """Each job's step time with the other jobs and alone on the same nodes."""
    table = Table(title=f"{summary['name']}: {len(summary['jobs'])} jobs on {summary['gpus']} x "
                        f"{summary['gpu']}, {summary['topology']}, network model {summary['network_model']}")
    for column in ("job", "GPUs", "nodes", "step time", "alone", "slowdown", "exposed comm", "(alone)"):
        table.add_column(column, justify="left" if column in ("job", "nodes") else "right")
    for row in summary["jobs"]:
        nodes = row["nodes"]
        shown = ",".join(map(str, nodes)) if len(nodes) <= 8 else f"{nodes[0]},{nodes[1]},...,{nodes[-1]}"
        table.add_row(row["name"], str(row["gpus"]), shown, fmt(row["step_time_s"], SECONDS, 4),
                      fmt(row["step_time_alone_s"], SECONDS, 4), f"{row['slowdown']:.3f}x",
                      fmt(row["exposed_comm_s"], SECONDS, 3), fmt(row["exposed_comm_alone_s"], SECONDS, 3))
    return table


def run_jobs(spec, out: Path | None, network: str | None, steps: int | None, as_json: bool, check_memory: bool,
             table_format: str) -> None:
    """Several jobs on one fabric (``engine.jobs``): together, then each alone on its nodes; summary.json holds
    the ``jobs`` rows, each job's folder its own files from the run together."""
    out_dir = output_dir(out or Path("runs") / spec.name)
    from simcluster.engine import jobs as jobs_engine

    console = Terminal(stderr=as_json)
    with console.status(f"simulating {len(spec.jobs)} jobs together, then each alone", spinner="dots"):
        result = jobs_engine.run(spec, network, steps, check_memory)
    summary = result.summary
    try:
        with fresh_folder(out_dir) as out_dir:
            written = [outputs.write_text(out_dir / "summary.json", outputs.dumps(summary, indent=2) + "\n")]
            for job, together in zip(spec.jobs, result.together, strict=True):
                together.write(out_dir / job.name, table_format=table_format)
                written.append(out_dir / job.name)
    except Interrupted as stop:  # Ctrl-C while writing: the jobs' simulation had finished, its summary is kept
        stop.message = keep_summary(summary, out_dir)
        raise
    if as_json:
        typer.echo(outputs.dumps({**summary, "out_dir": str(out_dir)}, indent=2))
        return
    console.print(jobs_table(summary))
    console.print(f"wrote {', '.join(p.name for p in written)} to {out_dir}/", highlight=False, soft_wrap=True)
