"""`simcluster compare`: one scenario on several fabrics (and GPU counts), side by side; or several scenarios (other
GPUs, other racks), each on its own fabric or on those given.

    simcluster compare gpt3-175b-1024-h100 --topology rail-fat-tree --topology leaf-spine:oversubscription=4
    simcluster compare SCENARIO --topology leaf-spine --option leaf-spine.oversubscription=2 --gpus 512 --gpus 2048
    simcluster compare deepseek-v3-256-h100 deepseek-v3-256-b200 deepseek-v3-256-gb200-nvl72

A fabric is ``NAME[:key=value,...]``: a builtin (``simcluster.fabric.topology.BUILTIN``) or a topology file, with the
options of its builder (``cluster.topology_options``, docs/topologies.md). ``--gpus`` moves the scenario to that
many GPUs the way ``sweep`` does (data parallelism absorbs the count, the global batch follows it).
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from simcluster.cli.app import Interrupted, app, check_count, check_target_loss, fail, finite, keeping
from simcluster.cli.outputs import NEVER_OVERWRITTEN, folder, fresh_folder, output_dir
from simcluster.cli.run import NETWORK_HELP, check_network
from simcluster.cli.terminal import Terminal, styled
from simcluster.core import outputs, units
from simcluster.core.errors import ScenarioError
from simcluster.core.units import SECONDS, fmt
from simcluster.fabric import topology
from simcluster.outcomes import economics, laws
from simcluster.spec import config
from simcluster.studies import compare as study
from simcluster.studies import grid, sweep

TOPOLOGY_HELP = ("fabric NAME[:key=value,...], repeatable; e.g. rail-fat-tree, leaf-spine:oversubscription=4 "
                 f"(builtins: {', '.join(topology.BUILTIN)}); default: the scenario's")
OPTION_HELP = "builder option NAME.key=value for every --topology NAME (topology.key=value: for all), repeatable"
LAW_HELP = "scaling law for the time to target: chinchilla | chinchilla-refit | kaplan"


# Characters of a label kept in a file or folder name (``slug``): with a prefix (``links-peak-``) and a suffix
# (``.png``) well under the 255 bytes a file system takes a name. A fabric file named with 245 characters made
# ``links-<name>.png`` too long: the comparison ran, then failed writing its figures (round 31).
MAX_SLUG_CHARS = 120


def slug(label: str, hashed: bool = False) -> str:
    """``label`` as a file name: runs of other characters as one ``_``, no ``.`` or ``_`` at either end; a label
    longer than ``MAX_SLUG_CHARS`` (or any label when ``hashed``) cut, with the sha256 of the whole label (12 hex
    digits) after the cut, so that two long labels stay two names; a label with no character kept, the hash alone.
    Round 34: ``../名前`` (a fabric file named in another script, a relative path) was ``..``, and ``replay`` wrote that
    fabric's events.csv, trace and timelines into the output folder's parent, over the user's files there; ``./___``
    was ``.``, the output folder itself; ``./f.yaml`` a hidden folder, ``._f.yaml``."""
    text = re.sub(r"[^A-Za-z0-9.=-]+", "_", label).strip("._")
    if text and len(text) <= MAX_SLUG_CHARS and not hashed:
        return text
    # surrogatepass: a file name that is not UTF-8 reaches a label as lone surrogates (os.fsdecode)
    digest = hashlib.sha256(label.encode(errors="surrogatepass")).hexdigest()[:12]
    return f"{text[:MAX_SLUG_CHARS - 13]}-{digest}" if text else digest


def slugs(labels: list[str], reserved: tuple[str, ...] = ()) -> list[str]:
    """``slug`` of each of ``labels``, the hash added to those whose slugs coincide (``a b.yaml`` and ``a_b.yaml``
    are both ``a_b.yaml``: one figure or folder overwrote the other's, round 31 review), case ignored (``F.yaml``
    and ``f.yaml`` name one file on a file system that ignores case, macOS's and Windows's; round 34), and to those
    equal to one of ``reserved``, the names of the files written beside them (round 34 review: ``replay`` on a fabric
    file named ``replay.json`` made its folder where its report was, and failed after the whole replay)."""
    names = [slug(label) for label in labels]
    counts = collections.Counter(name.casefold() for name in [*names, *reserved])
    return [slug(label, hashed=True) if counts[name.casefold()] > 1 else name
            for label, name in zip(labels, names, strict=True)]


def _fabric_name(run: dict) -> str:
    name = str(run["params"]["topology"]).split(":")[0]
    return Path(name).stem if "/" in name or name.endswith((".yaml", ".graphml")) else name


def _distinct_suffixes(names: list[str]) -> list[str]:
    """Each name without the prefix all share, cut at a '-': deepseek-v3-256-h100, ...-b200 -> h100, b200."""
    common = os.path.commonprefix(names)
    cut = common.rfind("-") + 1 if len(set(names)) > 1 else 0
    return [name[cut:] or name for name in names]


def short_labels(runs: list[dict]) -> list[str]:
    """Column headers that fit: each run's number and what sets it apart from the others (scenario, builtin fabric
    name, GPU count; the legend above the table gives the full names)."""
    parts = [[] for _ in runs]
    # the scenario's own name: study.label prefixes it ("name: fabric") when several scenarios are compared
    scenario_names = [run["label"].split(": ", 1)[0] if ": " in run["label"] else "" for run in runs]
    if len(set(scenario_names)) > 1:
        for part, suffix in zip(parts, _distinct_suffixes(scenario_names), strict=True):
            part.append(suffix)
    fabrics = [_fabric_name(run) for run in runs]
    if len(set(fabrics)) > 1 or len(set(scenario_names)) == 1:
        for part, fabric in zip(parts, fabrics, strict=True):
            part.append(fabric)
    counts = [run["summary"]["gpus"] for run in runs]
    if len(set(counts)) > 1:
        for part, count in zip(parts, counts, strict=True):
            part.append(f"@{count:,}")
    return [f"{index}. {' '.join(part)}" for index, part in enumerate(parts, start=1)]


def _table(runs: list[dict], law: laws.Law, target_loss: float) -> Table:
    """The comparison, one column per fabric, within 80 columns for two or three fabrics."""
    table = Table(title=f"to loss {target_loss:.3f} ({law.name} law)", title_justify="left")
    table.add_column("quantity", no_wrap=True)
    for header in short_labels(runs):
        table.add_column(header, justify="right", overflow="fold")
    rows = [
        ("GPUs", lambda r, s: f"{s['gpus']:,}"),
        ("layout tp x cp x pp x dp (ep)", lambda r, s: "{tp}x{cp}x{pp}x{dp}".format(**s["layout"])
         + (f" ({s['layout']['ep']})" if s["layout"].get("ep", 1) > 1 else "")),
        ("step time", lambda r, s: fmt(s["step_time_s"], SECONDS, 4)),
        ("  compute", lambda r, s: fmt(s["compute_s"], SECONDS, 4)),
        ("  exposed comm: fabric", lambda r, s: study.seconds(r["exposed_comm_network_s"])),
        ("  exposed comm: NVLink/PCIe", lambda r, s: study.seconds(r["exposed_comm_in_server_s"])),
    ]
    if any(run["summary"]["layout"].get("ep", 1) > 1 for run in runs):  # a dense model has no such row
        rows.append(("    of which expert parallel", lambda r, s: _share(s, s["exposed_comm_by_parallelism_s"]["ep"])))
    if any(sweep.TOKEN_DROP_COLUMN in study.row(run) for run in runs):  # MoE: NeMo's token drop on or off per run
        rows.append(("MoE token drop (cap 1.0)", lambda r, s: {True: "yes", False: "no"}.get(
            r.get(sweep.TOKEN_DROP_COLUMN), "n/a")))
    rows += [
        ("  pipeline bubble", lambda r, s: fmt(s["pipeline_bubble_s"], SECONDS, 4)),
        ("tokens/s", lambda r, s: f"{s['tokens_per_s']:,.0f}"),
        ("MFU", lambda r, s: f"{s['mfu']:.1%}"),
        ("busiest link, mean/peak", lambda r, s: _busiest(s)),
        ("fabric capex", lambda r, s: units.fmt_usd(r["fabric_capex_usd"] or 0.0)),
        ("fabric power", lambda r, s: fmt(r["fabric_power_w"] or 0.0, units.WATTS)),
        ("cost per step (network)", lambda r, s: f"{units.fmt_usd(r['cost_per_step_usd'])} "
                                                 f"({units.fmt_usd(r['cost_per_step_fabric_usd'] or 0.0)})"),
        ("goodput (failures, checkpoints)", lambda r, s: "n/a" if r["goodput"] is None else f"{r['goodput']:.1%}"),
        ("time to target", lambda r, s: units.fmt_days(r["time_to_target_s"])),
        ("GPU-hours to target", lambda r, s: units.fmt_count(r["gpu_hours"])),
        ("cost to target", lambda r, s: units.fmt_usd(r["cost_usd"])),
        ("energy to target", lambda r, s: units.fmt_energy(r["energy_j"])),
    ]
    flat = [study.row(run) for run in runs]
    for name, cell in rows:
        table.add_row(name, *[cell(r, run["summary"]) for r, run in zip(flat, runs, strict=True)])
    return table


def _busiest(summary: dict) -> str:
    """The busiest link's mean utilisation over the run and its busiest window's (peak)."""
    peak = summary.get("peak_link_utilisation_by_kind") or {}
    top = max(peak.values(), default=None)
    mean = f"{summary['busiest_link_utilisation']:.0%}"
    return mean if top is None else f"{mean}/{top:.0%}"


def legend(runs: list[dict]) -> str:
    """The full name of every numbered fabric."""
    return "\n".join(f"{index}. {run['label']}" for index, run in enumerate(runs, start=1))


def _share(summary: dict, seconds: float) -> str:
    return f"{fmt(seconds, SECONDS, 4)} ({seconds / summary['step_time_s']:.1%})"


@app.command()
def compare(
    scenarios: list[str] | None = typer.Argument(None, help="scenario YAML file(s) or bundled name(s); several: "
                                                 "each one's runs side by side; default: the demo"),
    topologies: list[str] = typer.Option([], "--topology", help=TOPOLOGY_HELP),
    gpus: list[int] = typer.Option([], "--gpus", min=1, help="GPU count(s) to run at, repeatable; default: the "
                                   "scenario's"),
    options: list[str] = typer.Option([], "--option", help=OPTION_HELP),
    target_loss: float | None = typer.Option(None, "--target-loss", parser=finite,
                                             help="loss to reach (nats/token); default: "
                                             "the loss of a compute-optimal run of the model"),
    law: str = typer.Option(sweep.DEFAULT_LAW, "--law", help=LAW_HELP),
    network: str | None = typer.Option(None, "--network", help=NETWORK_HELP),
    out: Path | None = typer.Option(None, "--out", parser=folder,
                                    help="output folder (default runs/<name>-compare/; "
                                    f"{NEVER_OVERWRITTEN})"),
    as_json: bool = typer.Option(False, "--json", help="print the runs (summary, economics) as JSON on stdout"),
    report: bool = typer.Option(False, "--report", help="also write report.html: one self-contained page (verdict, "
                                "tables, figures, scenario, assumptions) that opens offline"),
) -> None:
    """Run a scenario on each fabric (and GPU count): step time, MFU, communication, links, time and cost to a
    target loss, side by side; writes compare.csv/json and the plots."""
    check_network(network)
    chosen = laws.get(law)
    check_target_loss(target_loss)
    for count in gpus:
        check_count(count, "--gpus", config.MAX_GPUS, "a plausibility bound: about fifty times the largest clusters")
    if len(set(gpus)) != len(gpus):
        fail("--gpus", f"counts repeat: {gpus}")
    specs = [config.load(scenario) for scenario in (scenarios or [None])]
    if len(set(s.name for s in specs)) != len(specs):
        fail("SCENARIO", f"scenario names repeat: {', '.join(s.name for s in specs)}")
    for each in specs:  # before simulating: a target below the model's floor failed every run after it
        economics.check_target_reachable(each, chosen, target_loss, field="--target-loss")
    spec = specs[0]
    labelled = []  # (task, label) over the scenarios, each with its own fabric unless --topology is given
    for each in specs:
        base = config.rebuildable(each)
        tasks = grid.grid(base, list(gpus) or None, grid.fabrics(topologies, options, base), network=network)
        prefix = each.name if len(specs) > 1 else None
        labelled += [(task, study.label(task, len(gpus) > 1, prefix)) for task in tasks]
    out_dir = output_dir(out or Path("runs") / f"{spec.name}-compare")  # before simulating
    console = Terminal(stderr=True)
    runs, failures = [], []
    try:
        for task, label in labelled:
            with console.status(f"simulating {label} ..."):
                try:
                    runs.append(study.run_point(task, label, network, chosen, target_loss))
                except ScenarioError as err:
                    failures.append((label, err))
    except Interrupted as stop:  # Ctrl-C: the runs finished so far are kept
        stop.message = _write_partial(runs, failures, len(labelled), out_dir, chosen)
        raise
    if not runs:
        label, err = failures[0]
        raise ScenarioError(err.field, f"{err.message} (every run failed; first: {label})")
    try:  # from the last run on: an interrupt while the failures are said keeps the runs too (round 38)
        for label, err in failures:
            # soft_wrap: the terminal wraps the line; rich would fold a long path mid-name (round 36's fresh-clone
            # run: ``f.y aml`` under pytest-xdist's longer temporary folders)
            console.print(Text.assemble(styled("failed", "red"), f" {label}: {err}"), soft_wrap=True)
        target = runs[0]["economics"]["target_loss"]
        title = spec.name if len(specs) == 1 else os.path.commonprefix([s.name for s in specs]).rstrip("-_") + "-*"
        with fresh_folder(out_dir) as out_dir:
            written = _outputs(runs, failures, out_dir, chosen, target, title)
            if report:
                from simcluster.analysis import report as html_report

                written.append(html_report.write_compare(out_dir, title, runs, chosen.name, written))
    except Interrupted as stop:  # Ctrl-C while drawing: every run had finished, kept without the figures
        stop.message = _write_partial(runs, failures, len(labelled), out_dir, chosen)
        raise
    if as_json:
        typer.echo(outputs.dumps(_report(runs, chosen, failures), indent=2, default=str))
        return
    typer.echo(legend(runs))
    Terminal(width=80).print(_table(runs, chosen, target))
    typer.echo(study.verdict(runs, chosen.name))
    note = sweep.token_drop_note(study.row(run).get(sweep.TOKEN_DROP_COLUMN) for run in runs)
    if note:
        typer.echo(note)
    typer.echo(f"wrote {', '.join(p.name for p in written)} to {out_dir}/")


def _report(runs: list[dict], chosen: laws.Law, failures: list, pending: int | None = None) -> dict:
    """compare.json and ``--json``: ``study.as_json`` with ``partial`` and ``pending`` always present, as ``sweep``
    and ``validate`` write them; ``pending`` None: a finished compare (false, 0)."""
    return study.as_json(runs, chosen, failures) | {"partial": pending is not None, "pending": pending or 0}


def _write_partial(runs: list[dict], failures: list, total: int, out_dir: Path, chosen: laws.Law) -> str:
    """After SIGINT/SIGTERM: compare.csv and compare.json of the runs finished so far (no plots), the JSON marked
    ``partial`` with the runs ``pending``; the line the CLI prints."""
    kept = f"{len(runs)} of {total} runs finished"
    if not runs:
        return kept
    try:
        with keeping(), fresh_folder(out_dir) as folder:  # a second Ctrl-C here no longer removes them
            study.write_csv(runs, folder / "compare.csv")
            report = _report(runs, chosen, failures, total - len(runs) - len(failures))
            outputs.write_text(folder / "compare.json", outputs.dumps(report, indent=2, default=str) + "\n")
    except (OSError, ScenarioError) as err:
        return f"{kept} (not written: {err})"
    return f"{kept}; wrote compare.csv, compare.json (partial) to {folder}/"


def _outputs(runs: list[dict], failures: list, out_dir: Path, chosen: laws.Law, target: float,
             name: str) -> list[Path]:
    from simcluster.analysis import heatmap, plots

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [study.write_csv(runs, out_dir / "compare.csv"), out_dir / "compare.json"]
    outputs.write_text(written[1], outputs.dumps(_report(runs, chosen, failures), indent=2, default=str) + "\n")
    written += plots.save(plots.step_breakdown(runs, title=f"{name}: step time per fabric"), out_dir, "breakdown")
    duration_s = 1.3 * max(run["economics"]["time_to_target_s"] for run in runs)
    curves = [{"label": run["label"], "report": run["economics"],
               "curve": economics.loss_curve(run["summary"], run["scenario"], chosen, duration_s)} for run in runs]
    written += plots.save(plots.loss_over_time(curves, target, title=f"{name}: loss over wall-clock time "
                                               f"({chosen.name} law)"), out_dir, "loss_vs_time")
    top = max(run["summary"]["busiest_link_utilisation"] for run in runs)
    for run, name in zip(runs, slugs([run["label"] for run in runs]), strict=True):
        figure = heatmap.link_utilisation(run["links"], run["fabric"], title=f"Link utilisation: {run['label']}",
                                          vmax=top)
        written += plots.save(figure, out_dir, f"links-{name}")
        if "peak_utilisation" in run["links"]:  # the bursts the step average hides, on a 0-100% scale
            figure = heatmap.link_utilisation(run["links"], run["fabric"], vmax=1.0, column="peak_utilisation",
                                              title=f"Peak link utilisation: {run['label']}")
            written += plots.save(figure, out_dir, f"links-peak-{name}")
    return written
