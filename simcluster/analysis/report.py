"""One self-contained HTML report of a command's results (``--report`` on run, compare, sweep and replay).

Everything is inside the file: the figures the command wrote, embedded as base64 PNG (SVG when that is what was
written); the tables; the scenario as YAML; the assumptions the figures rest on and their sources (the price file
``data/fabric_costs.yaml`` verbatim, with its comments). No script, no stylesheet or font from the network: it
opens offline and can be mailed. The page is built from blocks (``Heading``, ``Text``, ``Table``, ``Image``,
``Pre``), so each command only says what goes in it.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from simcluster.core import outputs, units

# What every figure rests on, with where it comes from (docs/ pages of the repository hold the details).
ASSUMPTIONS = (
    "Step times come from the simulator's discrete-event engine: compute from a roofline with measured GEMM and "
    "attention efficiencies (data/efficiency.yaml), collectives on the network model named in the summary "
    "(flow: max-min fair sharing, Bertsekas & Gallager section 6.5.2), NCCL's measured link efficiencies "
    "(data/nccl.yaml). docs/architecture.md lists the known simplifications.",
    "Exposed communication is the time the compute stream waited for communication. By link class: each "
    "parallelism's exposed seconds are charged to the tier that bounds its traffic (one ring step over all its "
    "groups at once on the idle fabric; ties to the tier closest to the GPU). NVLink and PCIe are inside the "
    "servers: no fabric choice changes them.",
    "Link utilisation: mean = bytes / (capacity x run time); peak = the same over the link's busiest time window "
    "(1/32 to 1/16 of the run).",
    "Cost = GPU-hours x (the GPU-hour price + the fabric's share). The GPU-hour price is an indicative on-demand "
    "cloud rate (data/hardware.yaml) or the scenario's. The fabric's share is its list-price bill of materials "
    "(below) spread evenly over its lifetime and its GPUs, plus its electricity; it assumes the job has the fabric "
    "to itself.",
    "Energy = PUE x (GPUs between idle and TDP by their busy share + node overhead + the fabric's switches and "
    "optics) x time.",
    "Time to a target loss: the scaling law named in the report turns tokens into loss (docs/scaling-laws.md); "
    "the same loss is the same result on every fabric.",
)


@dataclass(frozen=True)
class Heading:
    text: str


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list]
    caption: str = ""


@dataclass(frozen=True)
class Image:
    path: Path
    caption: str = ""


@dataclass(frozen=True)
class Pre:
    text: str
    caption: str = ""


_STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f2f2; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption, caption { font-size: 0.9em; color: #555; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.verdict { background: #eef6ee; border-left: 4px solid #4a4; padding: 0.6em 1em; }
"""

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _cell(value) -> str:
    if isinstance(value, float):
        return html.escape(units.fmt_plain(value))
    return html.escape(str(value))


def render(title: str, blocks: list) -> str:
    """The HTML page of ``blocks``; figures read from their files and embedded."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h2>{html.escape(block.text)}</h2>")
        elif isinstance(block, Text):
            css = ' class="verdict"' if block.text.startswith("Verdict") else ""
            out.append(f"<p{css}>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            out.append("<table>")
            if block.caption:
                out.append(f"<caption>{html.escape(block.caption)}</caption>")
            out.append("<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in block.header)
                       + "</tr></thead><tbody>")
            for row in block.rows:
                out.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
            out.append("</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(Path(block.path).read_bytes()).decode("ascii")
            mime = _MIME.get(Path(block.path).suffix.lower(), "image/png")
            caption = block.caption or Path(block.path).name
            out.append(f'<figure><img alt="{html.escape(caption)}" src="data:{mime};base64,{data}">'
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        elif isinstance(block, Pre):
            if block.caption:
                out.append(f"<p>{html.escape(block.caption)}</p>")
            out.append(f"<pre>{html.escape(block.text)}</pre>")
        else:
            raise TypeError(f"unknown report block {block!r}")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write(out_dir: Path, title: str, blocks: list) -> Path:
    """``out_dir/report.html``, atomically."""
    return outputs.write_text(Path(out_dir) / "report.html", render(title, blocks))


def figures(paths: list[Path]) -> list[Image]:
    """An ``Image`` for every PNG or SVG among ``paths`` (what a command wrote), in order."""
    return [Image(Path(p), _caption(Path(p))) for p in paths if Path(p).suffix.lower() in (".png", ".svg")]


def _caption(path: Path) -> str:
    stem = path.stem
    names = {"breakdown": "Step time per fabric: compute, exposed communication, pipeline bubble",
             "loss_vs_time": "Loss over wall-clock time", "timeline": "Timeline of the simulated step(s)",
             "scaling": "Scaling: throughput and efficiency against GPUs",
             "time_and_cost": "Time and cost to the target loss", "step_overlay": "Recorded and replayed steps",
             "timeline-recorded": "Timeline of the recorded run"}
    if stem.startswith("links-peak-"):
        return f"Peak link utilisation over each link's busiest window: {stem[len('links-peak-'):]}"
    if stem.startswith("links-"):
        return f"Mean link utilisation over the step: {stem[len('links-'):]}"
    return names.get(stem, stem) + (f" ({path.parent.name})" if path.parent.name.startswith("fabric") else "")


def assumptions_blocks() -> list:
    """The assumptions section: the list above and the price file verbatim (its comments are the sources)."""
    prices = resources.files("simcluster").joinpath("data", "fabric_costs.yaml").read_text(encoding="utf-8")
    return [Heading("Assumptions and sources"), *[Text(line) for line in ASSUMPTIONS],
            Pre(prices, "Fabric prices and power (simcluster/data/fabric_costs.yaml; a scenario overrides them under "
                        "economics.fabric_prices):")]


def scenario_block(scenario_dict: dict, caption: str = "Scenario") -> Pre:
    return Pre(yaml.safe_dump(outputs.finite(scenario_dict), sort_keys=False), caption)


def summary_tables(summary: dict) -> list:
    """Tables of one run's summary: the step, where it waited, the links' tiers, the fabric's bill."""
    blocks: list = []
    rows = [[key, summary.get(key)] for key in ("step_time_s", "compute_s", "exposed_comm_s", "pipeline_bubble_s",
                                                 "tokens_per_s", "mfu", "hfu", "cost_per_step_usd",
                                                 "cost_per_step_fabric_usd") if key in summary]
    blocks.append(Table(["quantity", "value"], rows, "The step (seconds, tokens/s, fractions, USD)"))
    by_class = summary.get("exposed_comm_by_link_class_s") or {}
    by_axis = summary.get("exposed_comm_by_parallelism_s") or {}
    if by_class or by_axis:
        blocks.append(Table(["exposed communication", "seconds per step"],
                            [[f"parallelism {k}", v] for k, v in by_axis.items()]
                            + [[f"link tier {k}", v] for k, v in by_class.items()],
                            "Exposed communication by parallelism and by the link tier that bound it"))
    mean = summary.get("busiest_link_utilisation_by_kind") or {}
    peak = summary.get("peak_link_utilisation_by_kind") or {}
    if mean:
        blocks.append(Table(["link class", "busiest link, mean", "busiest link, peak window"],
                            [[k, mean[k], peak.get(k, "n/a")] for k in mean],
                            f"Link utilisation (peak window {summary.get('peak_window_s') or 0:.3g} s)"))
    fabric = summary.get("fabric")
    if fabric:
        rows = [["switches", fabric["switches"]], ["ports used", fabric.get("ports")],
                ["transceivers", fabric["transceivers"]], ["cables", fabric["cables"]], ["NICs", fabric["nics"]],
                ["capex (USD)", fabric["capex_usd"]], ["power (W)", fabric["power_w"]],
                ["lifetime (years)", fabric.get("lifetime_years")],
                ["share of a GPU-hour (USD)", fabric.get("usd_per_gpu_hour")]]
        rows += [[f"switches: {tier}", f"{t['count']} x {t['model']} (radix {t['radix']}, {t['ports_used']} ports "
                                       "used)"] for tier, t in (fabric.get("switches_by_tier") or {}).items()]
        rows += [[f"cables: {reach}", n] for reach, n in (fabric.get("cables_by_reach") or {}).items()]
        blocks.append(Table(["fabric bill of materials", "value"], rows, f"Fabric: {summary.get('topology', '')}"))
    return blocks


# ---- the reports of the commands -----------------------------------------------------------------------------

COMPARE_ROWS = (
    ("GPUs", "gpus"), ("step time (s)", "step_time_s"), ("compute (s)", "compute_s"),
    ("exposed comm. on the fabric (s)", "exposed_comm_network_s"),
    ("exposed comm. on NVLink/PCIe (s)", "exposed_comm_in_server_s"), ("pipeline bubble (s)", "pipeline_bubble_s"),
    ("tokens/s", "tokens_per_s"), ("MFU", "mfu"), ("fabric capex (USD)", "fabric_capex_usd"),
    ("fabric power (W)", "fabric_power_w"), ("fabric share of a GPU-hour (USD)", "fabric_usd_per_gpu_hour"),
    ("cost per step (USD)", "cost_per_step_usd"), ("  of which the network (USD)", "cost_per_step_fabric_usd"),
    ("cost per million tokens (USD)", "cost_per_million_tokens_usd"), ("target loss", "target_loss"),
    ("time to target (days)", "time_to_target_days"), ("GPU-hours to target", "gpu_hours"),
    ("cost to target (USD)", "cost_usd"), ("  of which the network (USD)", "fabric_cost_usd"),
    ("energy to target (MWh)", "energy_mwh"),
)


def write_compare(out_dir: Path, name: str, runs: list[dict], law_name: str, written: list[Path]) -> Path:
    """report.html of ``simcluster compare``: the verdict, the fabrics side by side, each one's summary and bill,
    the figures, the scenario and the assumptions."""
    from simcluster.studies import compare as study

    rows = [study.row(run) for run in runs]
    for r in rows:
        r["time_to_target_days"] = r["time_to_target_s"] / 86400.0
        r["energy_mwh"] = r["energy_j"] / 3.6e9
    blocks: list = [Text(study.verdict(runs, law_name)),
                    Heading("The fabrics side by side"),
                    Table(["quantity", *[f"{i}. {r['label']}" for i, r in enumerate(rows, start=1)]],
                          [[label, *[r.get(key) for r in rows]] for label, key in COMPARE_ROWS])]
    for i, run in enumerate(runs, start=1):
        blocks += [Heading(f"{i}. {run['label']}"), *summary_tables(run["summary"])]
    blocks += [Heading("Figures"), *figures(written)]
    blocks += [Heading("Scenario"), scenario_block(runs[0]["scenario"].model_dump(mode="json"),
                                                   "The scenario of the first fabric (the others differ only in "
                                                   "cluster.topology, its options and the GPU count):")]
    blocks += assumptions_blocks()
    return write(out_dir, f"{name}: which fabric ({law_name} law)", blocks)


def write_run(out_dir: Path, summary: dict, scenario_dict: dict, written: list[Path]) -> Path:
    """report.html of ``simcluster run``."""
    blocks = [Text(f"{summary['gpus']:,} x {summary['gpu']} on {summary['topology']} "
                   f"({summary['network_model']} network model): step {summary['step_time_s']:.4g} s, "
                   f"MFU {summary['mfu']:.1%}, {summary['tokens_per_s']:,.0f} tokens/s."),
              Heading("Summary"), *summary_tables(summary), Heading("Figures"), *figures(written),
              Heading("Scenario"), scenario_block(scenario_dict), *assumptions_blocks()]
    return write(out_dir, f"{summary['name']}: simulated run", blocks)


def write_table_report(out_dir: Path, title: str, lead: str, frame, columns: list[str], written: list[Path],
                       scenario_dict: dict | None, notes: list[str] = ()) -> Path:
    """report.html of a command whose result is a table (``sweep``, ``replay``): its rows (the ``columns`` it
    has), the figures, the scenario and the assumptions."""
    present = [c for c in columns if c in frame]
    blocks: list = [Text(lead), *[Text(note) for note in notes], Heading("Results"),
                    Table(present, frame[present].values.tolist())]
    blocks += [Heading("Figures"), *figures(written)]
    if scenario_dict is not None:
        blocks += [Heading("Scenario"), scenario_block(scenario_dict)]
    blocks += assumptions_blocks()
    return write(out_dir, title, blocks)
