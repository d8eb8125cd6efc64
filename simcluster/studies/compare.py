"""One scenario on several fabrics (and GPU counts), or several scenarios, side by side: the runs behind
``simcluster compare``.

Each comparison point is a ``grid`` task; ``run_point`` simulates it and prices the time to a target loss, keeping
the fabric for the link heatmap. The records are plain dicts (label, params, scenario, fabric, summary, links,
economics) so the CLI can print, plot and write them.
"""

from __future__ import annotations

import csv
from pathlib import Path

from simcluster.core import outputs, units
from simcluster.core.errors import ScenarioError
from simcluster.fabric import topology
from simcluster.outcomes import economics, laws
from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.studies import grid, sweep
from simcluster.studies.sweep import default_target_loss


def label(task: grid.Task, several_counts: bool, scenario: str | None = None) -> str:
    """The column name of a point: its fabric, and its GPU count when several are compared; prefixed with its
    scenario's name when several scenarios are."""
    name = f"{task.params['topology']} @ {task.params['gpus']:,} GPUs" if several_counts else task.params["topology"]
    return f"{scenario}: {name}" if scenario else name


def run_point(task: grid.Task, name: str, network: str | None, law: laws.Law, target_loss: float | None) -> dict:
    """Simulate one point and price it; ``target_loss`` None: the compute-optimal loss of the model (the
    default of ``sweep``). A ScenarioError (the point does not fit, an invalid fabric) propagates."""
    if task.error is not None:
        raise ScenarioError(task.params["topology"], task.error)
    from simcluster.engine import simulate  # the engine (simpy) only when a run is asked for

    # as it runs (a defaulted deferral that would not fit is off), so the report shows what was simulated
    scenario = memory.with_fitting_deferral(config.from_dict(task.scenario, source="compare"))
    fabric = topology.from_scenario(scenario)
    result = simulate(scenario, network=network, fabric=fabric)
    target = target_loss if target_loss is not None else default_target_loss(scenario, law)
    report = economics.time_to_target(result.summary, scenario, law, target_loss=target)
    return {"label": name, "params": task.params, "scenario": scenario, "fabric": fabric,
            "summary": result.summary, "links": result.links, "economics": report}


# Tiers of exposed communication inside a server: no fabric choice changes them.
IN_SERVER_TIERS = ("nvlink", "pcie")


def exposed_split_s(summary: dict) -> tuple[float, float]:
    """(exposed communication on the scale-out fabric, inside the servers: NVLink and PCIe), seconds per step; what
    no tier claims (``unattributed``) counts as inside the servers' GPUs."""
    by_tier = summary.get("exposed_comm_by_link_class_s") or {}
    inside = sum(by_tier.get(tier, 0.0) for tier in (*IN_SERVER_TIERS, "unattributed"))
    return sum(by_tier.values()) - inside, inside


def row(run: dict) -> dict:
    """One fabric's figures, flat: what ``compare --json`` leads each run with and compare.csv holds."""
    s, e = run["summary"], run["economics"]
    fabric = s.get("fabric") or {}
    network_s, in_server_s = exposed_split_s(s)
    return {
        "label": run["label"], "topology": run["params"]["topology"], "gpus": s["gpus"],
        "step_time_s": s["step_time_s"], "compute_s": s["compute_s"], "exposed_comm_s": s["exposed_comm_s"],
        "exposed_comm_network_s": network_s, "exposed_comm_in_server_s": in_server_s,
        "pipeline_bubble_s": s["pipeline_bubble_s"], "tokens_per_s": s["tokens_per_s"], "mfu": s["mfu"],
        "busiest_link_utilisation": s["busiest_link_utilisation"],
        "goodput": s.get("goodput"), "interruptions_per_day": s.get("interruptions_per_day"),
        "checkpoint_interval_s": s.get("checkpoint_interval_s"),
        "fabric_capex_usd": fabric.get("capex_usd"), "fabric_power_w": fabric.get("power_w"),
        "fabric_usd_per_gpu_hour": fabric.get("usd_per_gpu_hour"),
        "cost_per_step_usd": s["cost_per_step_usd"], "cost_per_step_fabric_usd": s.get("cost_per_step_fabric_usd"),
        "cost_per_million_tokens_usd": s["cost_per_step_usd"] / s["tokens_per_step"] * 1e6,
        "energy_per_million_tokens_j": e["facility_power_w"] / s["tokens_per_s"] * 1e6,
        "target_loss": e["target_loss"], "time_to_target_s": e["time_to_target_s"], "gpu_hours": e["gpu_hours"],
        "cost_usd": e["cost_usd"], "fabric_cost_usd": e.get("fabric_cost_usd"), "energy_j": e["energy_j"],
    } | _token_drop(run) | sweep.flat_attribution(s)


def _token_drop(run: dict) -> dict:
    """The run's resolved training.moe_token_drop (``sweep.moe_token_drop``), for an MoE model only."""
    drop = sweep.moe_token_drop(run["scenario"]) if "scenario" in run else None
    return {} if drop is None else {sweep.TOKEN_DROP_COLUMN: drop}


# Below this a duration is the rounding noise of a difference of times (an exposure of 4e-15 s is a span minus the
# compute that overlapped it); nothing the simulator times is shorter (its fastest link latency is ~0.1 us).
NOISE_S = 1e-9


def seconds(value: float) -> str:
    """A duration for a report; zero, or rounding noise under a nanosecond, reads '0 s'."""
    return "0 s" if abs(value) < NOISE_S else units.fmt(value, units.SECONDS)


def verdict(runs: list[dict], law_name: str) -> str:
    """One paragraph: each fabric's time, cost and energy to the target against the first fabric's, its fabric's
    capital cost, and which reaches the target loss (the same result) for the least money."""
    rows = [row(run) for run in runs]
    first = rows[0]
    target = first["target_loss"]
    goal = f"to loss {target:.3f}, {law_name} law" if target is not None else "per token"

    def figures(r: dict) -> str:
        capex = "" if r["fabric_capex_usd"] is None else f", fabric capex {units.fmt_usd(r['fabric_capex_usd'])}"
        return (f"{units.fmt_days(r['time_to_target_s'])}, {units.fmt_usd(r['cost_usd'])} "
                f"(network {units.fmt_usd(r['fabric_cost_usd'] or 0.0)}{capex}), "
                f"{units.fmt_energy(r['energy_j'])}; exposed communication "
                f"{seconds(r['exposed_comm_network_s'])} on the fabric + "
                f"{seconds(r['exposed_comm_in_server_s'])} on NVLink/PCIe in the servers per step")

    parts = [f"{first['label']}: {figures(first)}"]
    for r in rows[1:]:
        parts.append(f"{r['label']}: {figures(r)}; x{r['time_to_target_s'] / first['time_to_target_s']:.3f} time, "
                     f"x{r['cost_usd'] / first['cost_usd']:.3f} cost, x{r['energy_j'] / first['energy_j']:.3f} energy "
                     f"of {first['label']}")
    cheapest = min(rows, key=lambda r: r["cost_usd"])
    fastest = min(rows, key=lambda r: r["time_to_target_s"])
    if len(rows) > 1:
        dearest = max(rows, key=lambda r: r["cost_usd"])
        saving = dearest["cost_usd"] - cheapest["cost_usd"]
        end = (f"cheapest for the same result: {cheapest['label']}, {units.fmt_usd(saving)} "
               f"({saving / dearest['cost_usd']:.1%}) less than {dearest['label']}")
        end += ("; it is also the fastest" if fastest is cheapest else
                f"; fastest: {fastest['label']} ({fastest['time_to_target_s'] / cheapest['time_to_target_s']:.3f}x "
                "the cheapest's time)")
    else:
        end = f"one fabric: {cheapest['label']}"
    return f"Verdict ({goal}): " + ". ".join(parts) + ". " + end[0].upper() + end[1:] + "."


def as_json(runs: list[dict], law: laws.Law, failures: list) -> dict:
    """``compare --json``: the verdict, and per fabric its flat figures (``row``: topology, step_time_s,
    fabric_capex_usd, cost_per_step_usd ...) then its params, summary and economics; the failed points."""
    return {"law": law.name,
            "verdict": verdict(runs, law.name) if runs else None,
            "runs": [row(r) | {"params": r["params"], "summary": r["summary"], "economics": r["economics"]}
                     for r in runs],
            "failed": [{"label": name, "error": str(err)} for name, err in failures]}


def write_csv(runs: list[dict], path: Path) -> Path:
    """compare.csv: one ``row`` per fabric (columns: the union of the rows' keys, in first-seen order)."""
    rows = [row(run) for run in runs]
    fields = list(dict.fromkeys(key for r in rows for key in r))
    with outputs.atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({key: r.get(key) for key in fields})
    return path
