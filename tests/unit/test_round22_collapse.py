"""Round 22: the flow model's components found in one pass over the routes' link classes (``FlowNetwork._components``)
instead of a look-up per pair of routes; nothing a run computes may move.

Independent truth: the components of a set of routes are the connected components of the graph whose edges join two
routes sharing a link (read from the raw link ids, not from the link classes), and the expanded reference's step times
on small hash-ECMP and sprayed fabrics are those main (bf7cee4) computed with the pairwise pass, to the last digit.
"""

from __future__ import annotations

import numpy as np
import pytest

from simcluster.engine.merge import NO_MERGE, SYMMETRIC
from simcluster.engine.simulation import Simulation, lower_bound_step_s
from simcluster.fabric import topology
from simcluster.network.flow import FlowNetwork
from simcluster.spec import config, hardware


def _components_by_pairs(links: list[set[int]], key: list[int]) -> list[list[int]]:
    """Connected components of ``key``'s routes (indices into ``key``) over 'shares a link', by depth-first search;
    in the order of their first index, each ascending."""
    seen, out = set(), []
    for start in range(len(key)):
        if start in seen:
            continue
        stack, found = [start], []
        seen.add(start)
        while stack:
            i = stack.pop()
            found.append(i)
            for j in range(len(key)):
                if j not in seen and links[key[i]] & links[key[j]]:
                    seen.add(j)
                    stack.append(j)
        out.append(sorted(found))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_components_are_the_connected_components_of_routes_sharing_a_link(seed):
    fabric = topology.build("leaf-spine", gpus=64, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                            nic=hardware.nic("connectx-7"), options={})
    model = FlowNetwork(fabric)
    rng = np.random.default_rng(seed)
    total = len(fabric.link_bytes_per_s)
    links = []
    for route in range(40):   # a few links each, many disjoint: components of one to several routes
        ids = rng.choice(total, size=rng.integers(1, 4), replace=False)
        links.append(set(ids.tolist()))
        model._classes.add(route, ids, rng.choice([1.0, 2.0], size=len(ids)))
    key = sorted(rng.choice(40, size=30).tolist())   # a multiset: a route may send twice
    assert model._components(tuple(key)) == _components_by_pairs(links, key)


def _scenario(options: dict, nodes: int = 8, pp: int = 4, order: str | None = None) -> config.Scenario:
    parallelism = {"tp": 2, "pp": pp, "dp": 8} | ({"order": order} if order else {})
    return config.from_dict({
        "name": "round22", "network": "flow",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": nodes, "nic": "connectx-7",
                    "topology": "leaf-spine", "topology_options": {"hosts_per_leaf": 16} | options},
        "model": {"layers": 8, "hidden": 2048, "heads": 16, "vocab": 32000},
        "training": {"seq_len": 2048, "global_batch_size": 32, "micro_batch_size": 1},
        "parallelism": parallelism})


ECMP = {"oversubscription": 4, "protocol": "ethernet"}
# step_time_s on main (bf7cee4), expanded: every call its own class (the reference), and merged (SYMMETRIC, checked)
CASES = {
    "ecmp-4to1": (_scenario(ECMP), 0.05418987549071412, 0.056510128767309875),
    "ecmp-4to1-dp-innermost": (_scenario(ECMP, nodes=4, pp=2, order="dp-cp-pp-tp"), 0.08968318451373977,
                               0.0896220163577114),
    "sprayed-2to1": (_scenario({"oversubscription": 2, "protocol": "infiniband"}), 0.04248667651569099,
                     0.04248667651569099),
}


@pytest.mark.parametrize("name", CASES)
def test_expanded_step_times_are_mains(name):
    spec, reference_s, merged_s = CASES[name]
    reference = Simulation(spec, expand=True, merge=NO_MERGE, check_memory=False).run(1).summary
    merged = Simulation(spec, expand=True, merge=SYMMETRIC, check_memory=False).run(1).summary
    assert reference["step_time_s"] == pytest.approx(reference_s, rel=1e-12, abs=0)
    assert merged["step_time_s"] == pytest.approx(merged_s, rel=1e-12, abs=0)
    assert reference["symmetry"]["exact"] is True


# ---- the lower bound of a flagged collapsed run (``simulation.lower_bound_step_s``) ----------------------------


@pytest.mark.parametrize("name", ["ecmp-4to1", "ecmp-4to1-dp-innermost"])
def test_flagged_collapsed_run_brackets_the_exact_step_from_below(name):
    """The relaxation (every class at its fastest part's time alone) is no slower than the exact reference; the
    summary reports it with which side it bounds."""
    spec, reference_s, _merged_s = CASES[name]
    collapsed = Simulation(spec, check_memory=False).run(1).summary["symmetry"]
    assert collapsed["exact"] is False
    assert collapsed["lower_bound_s"] <= reference_s
    assert collapsed["lower_bound_pct"] > 0
    assert "lower bound" in collapsed["note"] and "not a proof" in collapsed["note"]


def test_lower_bound_equals_the_step_where_nothing_contends():
    """On a rail fat-tree whose transfers never share a link with another class's, the relaxation is the run itself:
    every class alone at its own bottleneck is what max-min sharing gives it (one part each: a pipeline pair)."""
    spec = config.from_dict({
        "name": "alone", "network": "flow",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "model": {"layers": 8, "hidden": 2048, "heads": 16, "vocab": 32000},
        "training": {"seq_len": 2048, "global_batch_size": 8, "micro_batch_size": 1},
        "parallelism": {"tp": 8, "pp": 2, "dp": 1}})
    step_s = Simulation(spec, expand=True, merge=NO_MERGE, check_memory=False).run(1).summary["step_time_s"]
    assert lower_bound_step_s(spec, 1) == pytest.approx(step_s, rel=1e-9)


def test_exact_and_unchecked_runs_report_no_lower_bound():
    spec, _reference_s, _merged_s = CASES["sprayed-2to1"]
    symmetry = Simulation(spec, check_memory=False).run(1).summary["symmetry"]
    assert symmetry["exact"] is True and symmetry["lower_bound_s"] is None and symmetry["lower_bound_pct"] is None
