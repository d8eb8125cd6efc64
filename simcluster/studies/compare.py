"""One scenario on several fabrics (and GPU counts), or several scenarios, side by side: the runs behind
``simcluster compare``.

Each comparison point is a ``grid`` task; ``run_point`` simulates it and prices the time to a target loss, keeping
the fabric for the link heatmap. The records are plain dicts (label, params, scenario, fabric, summary, links,
economics) so the CLI can print, plot and write them.
"""

from __future__ import annotations

import csv
from pathlib import Path

from simcluster.core import outputs
from simcluster.core.errors import ScenarioError
from simcluster.fabric import topology
from simcluster.outcomes import economics, laws
from simcluster.spec import config
from simcluster.studies import grid
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

    scenario = config.from_dict(task.scenario, source="compare")
    fabric = topology.from_scenario(scenario)
    result = simulate(scenario, network=network, fabric=fabric)
    target = target_loss if target_loss is not None else default_target_loss(scenario, law)
    report = economics.time_to_target(result.summary, scenario, law, target_loss=target)
    return {"label": name, "params": task.params, "scenario": scenario, "fabric": fabric,
            "summary": result.summary, "links": result.links, "economics": report}


def as_json(runs: list[dict], law: laws.Law, failures: list) -> dict:
    """The runs (label, params, summary, economics) and the failed points, as ``compare --json`` prints them."""
    return {"law": law.name,
            "runs": [{"label": r["label"], "params": r["params"], "summary": r["summary"], "economics": r["economics"]}
                     for r in runs],
            "failed": [{"label": name, "error": str(err)} for name, err in failures]}


def write_csv(runs: list[dict], path: Path) -> Path:
    fields = ["label", "topology", "gpus", "step_time_s", "compute_s", "exposed_comm_s", "pipeline_bubble_s",
              "tokens_per_s", "mfu", "busiest_link_utilisation", "cost_per_step_usd", "target_loss",
              "time_to_target_s", "gpu_hours", "cost_usd"]
    with outputs.atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for run in runs:
            merged = {"label": run["label"], **run["params"], **run["summary"], **run["economics"]}
            writer.writerow({key: merged.get(key) for key in fields})
    return path
