"""The symmetry collapse against the expanded reference, and the check that says when merging held transfers back.

The reference is ``Simulation(expand=True)``: one agent per GPU, every transfer call its own class (``NO_MERGE``, the
expanded default). A collapsed run merges every replica's transfer into one class per representative agent; the
network model checks that every part of a merged class is held at the class's rate by a saturated link (max-min
fairness' bottleneck condition). Where it is (symmetric fabrics) collapsed equals expanded; where it is not, the
summary says so and gives a bound.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simcluster.engine import Simulation
from simcluster.engine.merge import NO_MERGE, SYMMETRIC, default_policy
from simcluster.fabric import topology
from simcluster.network.base import TransferClass
from simcluster.network.flow import FlowNetwork
from simcluster.spec import config, hardware, jobs

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")
SCENARIOS = Path(config.__file__).resolve().parents[1] / "data" / "scenarios"


def scenario(topology="rail-fat-tree", options=None, nodes=4, tp=2, pp=2, dp=8, order=None, layers=8, hidden=2048):
    parallelism = {"tp": tp, "pp": pp, "dp": dp}
    if order:
        parallelism["order"] = order
    return config.from_dict({
        "name": "symmetry",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": nodes, "nic": "connectx-7",
                    "topology": topology, "topology_options": options or {}},
        "model": {"layers": layers, "hidden": hidden, "heads": 16, "vocab": 32000},
        "training": {"seq_len": 2048, "global_batch_size": 4 * dp, "micro_batch_size": 1},
        "parallelism": parallelism,
        "network": "flow",
    })


def collapsed_and_expanded(spec):
    return Simulation(spec).run().summary, Simulation(spec, expand=True).run().summary


def assert_equal_or_flagged_within_bound(collapsed, expanded):
    """The collapsed step equals the reference, or the summary says it is an approximation and by what bound."""
    gap_s = abs(collapsed["step_time_s"] - expanded["step_time_s"])
    symmetry = collapsed["symmetry"]
    assert expanded["symmetry"]["exact"] is True  # the reference merges nothing
    if symmetry["exact"]:
        assert gap_s <= 1e-9 * expanded["step_time_s"]
    else:
        assert gap_s <= symmetry["bound_s"]
        assert "--expand" in symmetry["note"]
        assert symmetry["bound_pct"] == pytest.approx(100 * symmetry["bound_s"] / collapsed["step_time_s"])


# ---- the check, against closed forms ---------------------------------------------------------------------------

def test_per_part_routes_are_the_routes_of_each_part_alone():
    rng = np.random.default_rng(7)
    for name, options in [("leaf-spine", {"oversubscription": 4, "hosts_per_leaf": 16}), ("rail-fat-tree", {}),
                          ("fat-tree", {}), ("fat-tree", {"protocol": "ethernet"})]:
        fabric = topology.build(name, gpus=64, gpus_per_node=8, gpu=H100, nic=CX7, options=options)
        pairs = rng.integers(0, 64, size=(300, 2))
        part = rng.integers(0, 5, size=300)
        entry_part, links, loads = fabric.links_of_parts(pairs, part)
        for p in range(5):
            alone_links, alone_loads = fabric.links_of(pairs[part == p])
            assert np.array_equal(links[entry_part == p], alone_links), name
            assert np.allclose(loads[entry_part == p], alone_loads), name


def test_merged_class_on_a_busy_and_an_idle_nic_holds_the_idle_part_back_by_the_closed_form():
    # two nodes; pair (0, 8) shares GPU 0's NIC with a long background transfer, pair (1, 9) has its own idle NIC.
    # Merged, both run at half of GPU 0's route bottleneck B0 (max-min share with the background); alone, the second
    # would run at its own bottleneck B1 and finish S / B1 earlier than S / (B0 / 2)... the check must find that
    fabric = topology.build("rail-fat-tree", gpus=16, gpus_per_node=8, gpu=H100, nic=CX7)
    model = FlowNetwork(fabric)
    size_bytes = 1e8
    model.start(TransferClass([[0, 8]], 100 * size_bytes, "background"), 0.0)
    merged = model.start(TransferClass([[0, 8], [1, 9]], size_bytes, "pp", parts=[0, 1]), 0.0)
    while merged not in model.advance(model.next_completion_s()):
        pass
    links, counts = fabric.links_of(np.array([[1, 9]]))
    alone_bytes_per_s = float(np.min(fabric.link_bytes_per_s[links] / counts))
    links, counts = fabric.links_of(np.array([[0, 8]]))
    shared_bytes_per_s = float(np.min(fabric.link_bytes_per_s[links] / counts)) / 2
    assert model.held_back_classes == 1
    assert model.held_back_s == pytest.approx(size_bytes / shared_bytes_per_s - size_bytes / alone_bytes_per_s,
                                              rel=1e-9)


def test_merged_class_on_equally_loaded_routes_holds_nothing_back():
    fabric = topology.build("rail-fat-tree", gpus=16, gpus_per_node=8, gpu=H100, nic=CX7)
    model = FlowNetwork(fabric)
    model.start(TransferClass([[0, 8], [1, 9]], 1e8, "background", parts=[0, 1]), 0.0)
    model.start(TransferClass([[0, 8], [1, 9]], 1e6, "pp", parts=[0, 1]), 0.0)
    while model.next_completion_s() < np.inf:
        model.advance(model.next_completion_s())
    assert model.held_back_classes == 0 and model.held_back_s == 0.0


def test_joined_classes_keep_every_calls_parts_apart():
    one = TransferClass([[0, 8]], 1e6, "pp 0->1")
    two = TransferClass([[1, 9], [2, 10]], 1e6, "pp 0->1", parts=[0, 1])
    joined = TransferClass.joined([one, two, one], 1e6, "pp 0->1")
    assert joined.parts.tolist() == [0, 1, 2, 3] and joined.part_count == 4
    assert TransferClass.joined([one], 1e6, "pp").parts is None  # one part stays one part


def test_expanded_runs_merge_nothing_by_default_and_collapsed_runs_merge_equal_steps():
    assert default_policy(expand=True) is NO_MERGE and default_policy(expand=False) is SYMMETRIC


# ---- collapsed against expanded ----------------------------------------------------------------------------------

def test_collapsed_equals_expanded_on_the_rail_fat_tree_and_says_it_is_exact():
    collapsed, expanded = collapsed_and_expanded(scenario())
    assert collapsed["agents"] == 2 and expanded["agents"] == 32
    assert collapsed["symmetry"]["exact"] is True and collapsed["symmetry"]["bound_s"] == 0.0
    assert collapsed["step_time_s"] == pytest.approx(expanded["step_time_s"], rel=1e-9)


def test_ecmp_leaf_spine_4_to_1_is_flagged_and_within_its_bound():
    # 4:1 oversubscribed, 16 NICs per leaf, hash ECMP: the data-parallel rings of the two tensor-parallel ranks hash
    # onto unequally loaded uplinks
    collapsed, expanded = collapsed_and_expanded(
        scenario("leaf-spine", {"oversubscription": 4, "hosts_per_leaf": 16}, nodes=8, pp=4))
    assert collapsed["symmetry"]["exact"] is False and collapsed["symmetry"]["held_back_classes"] > 0
    assert_equal_or_flagged_within_bound(collapsed, expanded)


def test_graphml_fabric_with_one_slow_nic_is_flagged_and_within_its_bound(tmp_path):
    # a rail-optimised fat-tree exported to GraphML with one NIC cable cut to a quarter: replicas are no longer equal
    fabric = topology.build("rail-fat-tree", gpus=32, gpus_per_node=8, gpu=H100, nic=CX7)
    graph = fabric.graph
    for u, v in [*graph.out_edges("n0/nic3"), *graph.in_edges("n0/nic3")]:
        if graph.nodes[u]["role"] != "pcie" and graph.nodes[v]["role"] != "pcie":   # the cable to the leaf
            graph.edges[u, v]["bytes_per_s"] /= 4
    path = tmp_path / "slow-nic.graphml"
    topology.write_graphml(fabric, path)
    collapsed, expanded = collapsed_and_expanded(scenario(str(path)))
    assert collapsed["symmetry"]["exact"] is False
    assert_equal_or_flagged_within_bound(collapsed, expanded)


def test_order_with_tensor_parallelism_across_nodes_on_a_leaf_spine_is_equal_or_flagged():
    # data-parallel ranks innermost: the two ranks of a tensor-parallel group are 16 GPUs apart, on different nodes
    spec = scenario("leaf-spine", {"oversubscription": 4, "hosts_per_leaf": 16}, order="dp-cp-pp-tp")
    collapsed, expanded = collapsed_and_expanded(spec)
    assert_equal_or_flagged_within_bound(collapsed, expanded)


def small_bundled_scenarios(max_gpus: int = 64) -> list[str]:
    names = []
    for path in sorted(SCENARIOS.glob("*.yaml")):
        if jobs.is_jobs_file(str(path)):  # several jobs on one fabric: tests/unit/test_jobs.py
            continue
        spec = config.load(str(path))
        if spec.cluster.gpus <= max_gpus:
            names.append(path.stem)
    return names


@pytest.mark.slow
@pytest.mark.parametrize("name", small_bundled_scenarios())
def test_bundled_scenario_collapsed_equals_expanded_when_exact(name):
    spec = config.load(str(SCENARIOS / f"{name}.yaml"))
    data = config.rebuildable(spec)  # framework defaults unset (an infinite default bucket is no input value)
    data["training"]["steps"] = 1
    spec = config.from_dict(data)
    # Symmetry is a property of the ranks, not of how many microbatches each runs: a replica runs at most two per
    # pipeline stage here (at least two), enough for every schedule's warm-up, steady state and drain to appear, so
    # the shipped layouts are checked without simulating their full batches (round 32: the suite's CPU time).
    keep = max(2, 2 * spec.parallelism.pp)
    if spec.microbatches > keep:
        data["training"]["global_batch_size"] = keep * spec.parallelism.dp * spec.training.micro_batch_size
        spec = config.from_dict(data)
    collapsed = Simulation(spec, check_memory=False).run().summary
    expanded = Simulation(spec, expand=True, check_memory=False).run().summary
    assert_equal_or_flagged_within_bound(collapsed, expanded)


@pytest.mark.parametrize("spec", [
    scenario(),                                                                   # symmetric: the merged run stands
    scenario("leaf-spine", {"oversubscription": 4, "hosts_per_leaf": 8}, nodes=8, pp=4),   # flagged: rerun
], ids=["rail-fat-tree", "leaf-spine-4to1"])
def test_expanded_simulate_merges_only_where_proven_and_equals_the_reference(spec):
    """``simulate(expand=True)`` (and ``run --expand``) first merges equal calls, which the network checks, and
    reruns with every call its own class when the check fails: either way the reference's step time."""
    from simcluster.engine import simulate

    reference = Simulation(spec, expand=True, merge=NO_MERGE).run().summary
    fast = simulate(spec, expand=True).summary
    assert fast["step_time_s"] == pytest.approx(reference["step_time_s"], rel=1e-9)
    assert fast["symmetry"]["exact"] is True
