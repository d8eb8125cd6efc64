"""`simcluster replay`: re-run a recorded training run (Kineto or Chakra traces) on a fabric, and ask "what if".

Compute keeps its recorded durations (rescaled when ``--gpu`` changes), communication is re-simulated on the
chosen fabric. Reports recorded vs replayed step time per step, writes the events, a Perfetto trace with both
timelines and timeline pictures; ``--until``/``--events`` print the replayed events in time order instead.
The replay itself is ``simcluster.studies.replay``; this module parses options, prints and writes files.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from simcluster.cli.app import Interrupted, app, fail, keeping
from simcluster.cli.compare import OPTION_HELP, slugs
from simcluster.cli.outputs import NEVER_OVERWRITTEN, folder, fresh_folder, output_dir
from simcluster.cli.run import check_network
from simcluster.cli.terminal import Terminal, styled
from simcluster.collectives import ALGORITHMS
from simcluster.core import catalog, outputs, units
from simcluster.core.errors import ScenarioError, unknown_name
from simcluster.replay.rescale import (
    DEFAULT_GPUS_PER_NODE,
    DEFAULT_NETWORK_MODEL,
    DEFAULT_NIC,
    DEFAULT_NIC_OTHERWISE,
    RESCALE_MODES,
)
from simcluster.spec import config
from simcluster.studies import grid
from simcluster.studies.grid import FabricSpec

if TYPE_CHECKING:  # pandas and the engine: loaded when a replay runs, not with the command line
    from simcluster.studies.replay import ReplayOutcome

_RANK_SUFFIX = re.compile(r"([._-]rank[_-]?\d+)?(\.\d+)?(\.json(\.gz)?|\.et)$", re.IGNORECASE)


# Bytes (UTF-8) of a trace's name kept in the default folder runs/replay-NAME: the file system takes 255 bytes, and
# 'replay-', a '-2' and core.outputs' temporary names add up to about 30.
MAX_TRACE_NAME = 200


def _trace_name(paths: list[Path]) -> str:
    """The run's name from its first file, made a folder name: a character that is not printable (a newline in a
    file name would split the folder's name and every line that prints it) becomes '_'."""
    name = "".join(c if c.isprintable() else "_" for c in _RANK_SUFFIX.sub("", paths[0].name))
    # cut in bytes, not characters (83 CJK characters are 249 bytes); a character cut in two is dropped
    return name.encode()[:MAX_TRACE_NAME].decode(errors="ignore") or "trace"


def _event_lines(events, until_s: float | None, count: int | None) -> list[str]:
    """The replayed events in time order, one line each: time, rank, stream, kind, name, bytes."""
    rows = events if until_s is None else events[events["start_s"] <= until_s]
    if count is not None:
        rows = rows.head(count)
    lines = [f"{'time':>12}  {'rank':>5}  {'stream':>8}  {'kind':<10}  {'bytes':>12}  name"]
    for row in rows.itertuples(index=False):
        size = units.fmt(row.bytes, units.BYTES, 3) if row.bytes else "-"
        lines.append(f"{units.fmt(row.start_s, units.SECONDS, 6):>12}  {row.rank:>5}  {row.cuda_stream:>8}  "
                     f"{row.op_kind:<10}  {size:>12}  {_short(row.name)}")
    return lines


def _short(name: str, width: int = 72) -> str:
    """A kernel name cut to ``width`` characters (C++ template signatures run to hundreds)."""
    return name if len(name) <= width else name[:width - 3] + "..."


def _step_table(steps: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("step", "recorded", "replayed", "change", "compute", "exposed comm", "(recorded)"):
        table.add_column(column, justify="right")
    for s in steps:
        change = s["replayed_step_s"] / s["recorded_step_s"] - 1 if s["recorded_step_s"] > 0 else 0.0
        table.add_row(str(s["step"] if s["step"] is not None else "all"),
                      *(units.fmt(s[k], units.SECONDS, 4) for k in ("recorded_step_s", "replayed_step_s")),
                      f"{change:+.1%}",
                      *(units.fmt(s[k], units.SECONDS, 4) for k in ("compute_s", "exposed_comm_s",
                                                                     "recorded_exposed_comm_s")))
    return table


@app.command("replay")
def replay_command(
    traces: list[Path] = typer.Argument(..., help="trace files of one run: Kineto *.json[.gz] (one per rank) "
                                        "or Chakra *.et"),
    topologies: list[str] = typer.Option([], "--topology", help="fabric NAME[:key=value,...] as in compare: a "
                                         "builtin or a YAML/GraphML file; repeatable (replays on each, side by "
                                         "side); default: what the trace most likely ran on"),
    options: list[str] = typer.Option([], "--option", help=OPTION_HELP),
    topology_option: list[str] = typer.Option([], "--topology-option", help="fabric option KEY=VALUE for every "
                                              "--topology (e.g. oversubscription=4), repeatable"),
    gpu_name: str | None = typer.Option(None, "--gpu", help="GPU catalog name (default: the trace's GPU); "
                                        "another GPU rescales compute only, the fabric stays"),
    nic_name: str | None = typer.Option(None, "--nic", help="NIC catalog name or a line rate such as '25 Gb/s'; "
                                         f"default: {DEFAULT_NIC_OTHERWISE} "
                                         f"({', '.join(sorted(set(DEFAULT_NIC.values())))} with A100)"),
    gpus_per_node: int | None = typer.Option(None, "--gpus-per-node", min=1, help="GPUs per node "
                                             f"(default {DEFAULT_GPUS_PER_NODE})"),
    scale_dp: int = typer.Option(1, "--scale-dp", min=1, help="replicate the data-parallel dimension K times"),
    network: str | None = typer.Option(None, "--network", help=f"network model: {' | '.join(config.NETWORK_MODELS)}; "
                                        f"default: {DEFAULT_NETWORK_MODEL}"),
    gpu_scaling: str = typer.Option("roofline", "--gpu-scaling", help="compute rescaling when --gpu changes: "
                                    "roofline (GEMMs by peak, others by HBM) | peak"),
    out: Path | None = typer.Option(None, "--out", parser=folder,
                                    help="output folder (default runs/replay-<trace>/; "
                                    f"{NEVER_OVERWRITTEN}; with --json, --until or --events only when given)"),
    as_json: bool = typer.Option(False, "--json", help='print the report ({"fabric", "gpu", "steps", '
                                 '"deviations", "assumptions"}; several fabrics: {"replays": [...], "partial": false, '
                                 '"pending": 0}) as JSON'),
    until: str | None = typer.Option(None, "--until", help="print the replayed events starting up to this "
                                     "time, e.g. 12.5ms"),
    events_count: int | None = typer.Option(None, "--events", min=1, help="print the first N replayed events"),
    algorithm: str = typer.Option("auto", "--algorithm", help="collective algorithm where an op has it: "
                                  f"{', '.join(ALGORITHMS)} (as NCCL_ALGO); default: NCCL's choice"),
    expand: bool = typer.Option(False, "--expand", help="one replay agent per rank (no symmetry collapse: ranks "
                                "running the same recorded program are otherwise one agent); slower"),
    report: bool = typer.Option(False, "--report", help="also write report.html: one self-contained page (steps, "
                                "figures, assumptions) that opens offline"),
) -> None:
    """Replay a recorded run (PyTorch-profiler or Chakra traces) on one or several fabrics: recorded vs replayed
    step time."""
    check_network(network)
    if algorithm not in ALGORITHMS:
        raise unknown_name("--algorithm", "algorithm", algorithm, ALGORITHMS)
    if gpu_scaling not in RESCALE_MODES:
        fail("--gpu-scaling", f"expected one of {', '.join(RESCALE_MODES)}, got {gpu_scaling!r}")
    for option, value in (("--gpu", gpu_name), ("--nic", nic_name)):
        if value is not None and (not value.strip() or not value.isprintable()):
            fail(option, f"expected a catalog name, got {value!r}")
    if gpus_per_node is not None and gpus_per_node > config.MAX_GPUS_PER_NODE:
        fail("--gpus-per-node", f"expected 1 to {config.MAX_GPUS_PER_NODE} (the largest NVLink domain announced), "
             f"got {gpus_per_node:,}")
    stepping = until is not None or events_count is not None
    until_s = _until_s(until, events_count, as_json)
    name = _trace_name(traces)
    out_dir = None
    if out is not None or not (as_json or stepping):  # checked before the replay
        out_dir = output_dir(out or Path("runs") / f"replay-{name}")
    fabrics = _fabrics(topologies, options, topology_option)
    if stepping and fabrics and len(fabrics) > 1:
        fail("--topology", "--until/--events print one replay's events: give one --topology")
    console = Terminal(stderr=as_json)
    from simcluster.studies.replay import replay_on_fabrics

    outcomes: list[ReplayOutcome] = []
    try:
        replay_on_fabrics(traces, fabrics=fabrics, gpu_name=gpu_name, nic=nic_name, gpus_per_node=gpus_per_node,
                          scale_dp=scale_dp, network_model=network, gpu_scaling=gpu_scaling, expand=expand,
                          algorithm=algorithm, status=console.status, into=outcomes)
    except Interrupted as stop:  # Ctrl-C: the replays finished so far (on other fabrics) are kept
        stop.message = _write_partial(out_dir, outcomes, len(fabrics or [None]), name)
        raise
    if stepping:
        typer.echo("\n".join(_event_lines(outcomes[0].events, until_s, events_count)))
    written = []
    if out_dir is not None:
        try:
            with fresh_folder(out_dir) as out_dir:  # nothing half-written is left when writing fails
                written = _write(out_dir, outcomes, name)
                if report:
                    written.append(_report(out_dir, outcomes, name, written))
        except Interrupted as stop:  # Ctrl-C while writing: every replay had finished, its report is kept
            stop.message = _keep_report(out_dir, outcomes)
            raise
    if stepping:
        return
    if as_json:
        typer.echo(outputs.dumps(_json_body(outcomes), indent=2))
        return
    first = outcomes[0]
    if first.gpu_assumed:
        console.print(styled(f"the trace does not name its GPU: compute is taken as recorded on {first.gpu} "
                             "(give --gpu to say which)", "yellow"))
    title = f"{name}: {first.plan.world_size} x {first.gpu}"
    console.print(_steps_table(outcomes, title) if len(outcomes) > 1 else
                  _step_table(first.steps, f"{name} replayed on {first.label} ({first.plan.world_size} x "
                                           f"{first.gpu})"))
    for sentence in _assumption_lines(outcomes):
        console.print(f"- {sentence}", highlight=False)
    console.print(f"wrote {', '.join(str(p.relative_to(out_dir)) for p in written)} to {out_dir}/",
                  highlight=False, soft_wrap=True)  # the path whole: the terminal wraps it, rich would fold it


def _report(out_dir: Path, outcomes: list[ReplayOutcome], name: str, written: list[Path]) -> Path:
    """report.html: every replayed step of every fabric, the figures and the replay's assumptions."""
    import pandas as pd

    from simcluster.analysis import report as html_report

    rows = pd.DataFrame([{"fabric": o.label, **step} for o in outcomes for step in o.steps])
    first = outcomes[0]
    return html_report.write_table_report(
        out_dir, f"{name}: replay", f"{name}: {first.plan.world_size} x {first.gpu}, replayed on "
        f"{', '.join(o.label for o in outcomes)}.", rows, list(rows.columns), written, None,
        _assumption_lines(outcomes))


def _fabrics(topologies: list[str], options: list[str], topology_option: list[str]) -> list[FabricSpec] | None:
    """The fabrics of ``--topology`` (compare's syntax, ``--option NAME.key=value``), with ``--topology-option``
    KEY=VALUE applied to every one; None: the trace's default fabric."""
    if not topologies:
        if options or topology_option:
            fail("--topology", "--option/--topology-option need a --topology")
        return None
    shared = [f"topology.{item}" for item in topology_option]
    return grid.fabrics(topologies, [*shared, *options], {})


def _steps_table(outcomes: list[ReplayOutcome], title: str) -> Table:
    """Recorded and replayed step time per step, one column per fabric (with the change)."""
    table = Table(title=title)
    table.add_column("step", justify="right")
    table.add_column("recorded", justify="right")
    for outcome in outcomes:
        table.add_column(outcome.label, justify="right")
    for i, s in enumerate(outcomes[0].steps):
        cells = []
        for outcome in outcomes:
            row = outcome.steps[i]
            change = row["replayed_step_s"] / row["recorded_step_s"] - 1 if row["recorded_step_s"] > 0 else 0.0
            cells.append(f"{units.fmt(row['replayed_step_s'], units.SECONDS, 4)} ({change:+.1%}, exposed "
                         f"{units.fmt(row['exposed_comm_s'], units.SECONDS, 3)})")
        table.add_row(str(s["step"] if s["step"] is not None else "all"),
                      units.fmt(s["recorded_step_s"], units.SECONDS, 4), *cells)
    return table


def _assumption_lines(outcomes: list[ReplayOutcome]) -> list[str]:
    """Every assumption once (those of one fabric only prefixed with its label)."""
    lines: list[str] = []
    for outcome in outcomes:
        for sentence in outcome.assumptions:
            shared = all(sentence in other.assumptions for other in outcomes)
            line = sentence if shared or len(outcomes) == 1 else f"[{outcome.label}] {sentence}"
            if line not in lines:
                lines.append(line)
    return lines


def _until_s(until: str | None, events_count: int | None, as_json: bool) -> float | None:
    """``--until`` in seconds, once checked against ``--events`` and ``--json`` (each prints something else)."""
    if until is not None and events_count is not None:
        fail("--until", "give --until or --events, not both")
    if (until is not None or events_count is not None) and as_json:
        fail("--json", "--json prints the step report; --until/--events print events: choose one")
    if until is None:
        return None
    try:
        value = units.parse(until, units.SECONDS, field="--until")
    except ScenarioError:
        fail("--until", f"expected a time with its unit, such as 12.5ms, got {until!r}")
    if value < 0:  # the replay starts at 0 s: a negative time printed nothing and exited 0
        fail("--until", f"expected a time >= 0 s from the replay's start, got {until!r}")
    return value


def _write_partial(out_dir: Path | None, outcomes: list[ReplayOutcome], total: int, name: str) -> str:
    """Write the replays finished before an interrupt (replay.json marked ``partial`` with the fabrics
    ``pending``); the interrupt's message."""
    said = f"{len(outcomes)} of {total} replays finished"
    if out_dir is None or not outcomes:
        return said
    with keeping(), fresh_folder(out_dir) as out_dir:  # a second Ctrl-C here no longer removes them
        written = _write(out_dir, outcomes, name, pending=total - len(outcomes))
    return f"{said}; wrote {', '.join(str(p.relative_to(out_dir)) for p in written[:2])} to {out_dir}/"


def _keep_report(out_dir: Path, outcomes: list[ReplayOutcome]) -> str:
    """After SIGINT/SIGTERM while the finished replays' files were written (``fresh_folder`` removed them):
    replay.json alone, written again (no figures, events or traces); the interrupt's message."""
    said = f"{len(outcomes)} of {len(outcomes)} replays finished"
    try:
        with keeping(), fresh_folder(out_dir) as folder:  # a second Ctrl-C here no longer removes it
            outputs.write_text(folder / REPORT_FILE, outputs.dumps(_json_body(outcomes), indent=2) + "\n")
    except (OSError, ScenarioError) as err:
        return f"{said} (not written: {err})"
    return f"{said}; wrote replay.json (no figures, events or traces) to {folder}/"


def _json_body(outcomes: list[ReplayOutcome], pending: int = 0) -> dict:
    """The --json report (and replay.json): one fabric's report, or for several (or an interrupted run)
    ``{"replays": [...], "partial": bool, "pending": K}``, the partial/pending keys of sweep, validate and compare."""
    reports = [o.report() for o in outcomes]
    if len(reports) == 1 and not pending:
        return reports[0]
    return {"replays": reports, "partial": pending > 0, "pending": pending}


# The files a replay on several fabrics writes beside the fabrics' folders (a fabric's folder never takes their name).
REPORT_FILE = "replay.json"
OVERLAY_STEM = "step_overlay"


def _write(out_dir: Path, outcomes: list[ReplayOutcome], name: str, pending: int = 0) -> list[Path]:
    """replay.json (the --json report), step_overlay.png (recorded vs each replay) and, per fabric (in a
    folder named after it when there are several): events.csv, trace.json.gz (recorded and replayed side by
    side), timeline.png (replayed) and timeline-recorded.png."""
    from simcluster.analysis.plots import save
    from simcluster.analysis.replay import step_overlay

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / REPORT_FILE]
    outputs.write_text(written[0], outputs.dumps(_json_body(outcomes, pending), indent=2) + "\n")
    written += save(step_overlay([{"label": o.label, "steps": o.steps} for o in outcomes],
                                 title=f"{name}: recorded and replayed step time"), out_dir, OVERLAY_STEM,
                    formats=("png",))
    labels = [outcome.label for outcome in outcomes]
    for outcome, folder_name in zip(outcomes, slugs(labels, (REPORT_FILE, f"{OVERLAY_STEM}.png")), strict=True):
        folder = out_dir if len(outcomes) == 1 else out_dir / folder_name
        written += _write_one(folder, outcome, name)
    return written


def _write_one(out_dir: Path, outcome: ReplayOutcome, name: str) -> list[Path]:
    from simcluster.analysis.timeline import plot_timeline
    from simcluster.replay.report import chrome_trace, recorded_view

    out_dir.mkdir(parents=True, exist_ok=True)
    # through core.outputs, as run's: renamed into place whole (round 37: written in place, a crash that runs no
    # cleanup, SIGKILL or the out-of-memory killer, left a cut events.csv or trace.json.gz under the good name)
    written = [outputs.write_table(outcome.events, out_dir / "events.csv")]
    max_ranks = catalog.load("engine")["trace"]["max_ranks"]
    written.append(out_dir / "trace.json.gz")
    with outputs.atomic_path(written[1]) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as handle:
        json.dump(chrome_trace(outcome.events, max_ranks), handle)
    written.append(plot_timeline(outcome.events, out_dir / "timeline.png",
                                 title=f"{name}: replayed on {outcome.label}", stages=False))
    written.append(plot_timeline(recorded_view(outcome.events), out_dir / "timeline-recorded.png",
                                 title=f"{name}: recorded", stages=False))
    from simcluster.analysis.plots import save
    from simcluster.analysis.timeline import timelines

    both = timelines([("recorded", recorded_view(outcome.events)), (f"replayed on {outcome.label}", outcome.events)],
                     title=f"{name}: recorded and replayed, one time axis")
    written += save(both, out_dir, "timeline-recorded-vs-replayed", formats=("png",))
    return written
