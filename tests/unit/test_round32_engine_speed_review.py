"""Review of round 32's engine speed change (docs/calibration/round-32.md, "Round 32: review of the engine speed
change"): a collective of one kind of group routes its pairs once (the route set its latencies are read from is the one
the network model then finds), several kinds keep the latency-only pass; the route caches are caches (evicting every
entry moves no step time, no event, and link figures by float rounding only); group members by strides are the
groups their coordinates define for every axis set the engine asks; the bottleneck tier by class codes is the one
the per-link class names give, own classes and ties included."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import yaml

from simcluster.collectives import timing
from simcluster.engine import Simulation, simulate
from simcluster.fabric import classes, topology
from simcluster.fabric.routing import Router
from simcluster.network.base import class_load
from simcluster.parallel.layout import Layout
from simcluster.spec import config, hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")


def _fabric(name: str, gpus: int, **options):
    return topology.build(name, gpus=gpus, gpus_per_node=8, gpu=H100, nic=CX7, options=options)


def _counted(monkeypatch) -> dict:
    """Count route sets made (``Fabric._computed_route_set``) and latency-only passes (``Router.latencies``)."""
    counts = {"route sets": 0, "latency passes": 0}
    made, latencies = topology.Fabric._computed_route_set, Router.latencies

    def route_set(self, pairs, salt):
        counts["route sets"] += 1
        return made(self, pairs, salt)

    def latency_pass(self, *args, **kwargs):
        counts["latency passes"] += 1
        return latencies(self, *args, **kwargs)

    monkeypatch.setattr(topology.Fabric, "_computed_route_set", route_set)
    monkeypatch.setattr(Router, "latencies", latency_pass)
    return counts


def _distinct_pairs(steps) -> set:
    return {tc.pairs.tobytes() for step in steps for tc in step.transfers if tc.members}


def test_one_kind_of_group_routes_each_pair_array_once_and_the_model_finds_it(monkeypatch):
    fabric = _fabric("rail-fat-tree", 128)             # adaptive: the latency-only pass exists and is not taken
    assert fabric.routing == "adaptive"
    counts = _counted(monkeypatch)
    view = timing.calibrated_view(fabric)
    groups = [tuple(range(rail, 128, 8)) for rail in range(8)]   # one rank per node, each on its own rail: alike
    steps = timing.engine_schedules(view, "allreduce", groups, 64e6)
    made = counts["route sets"]
    assert counts["latency passes"] == 0
    assert made == len(_distinct_pairs(steps)) > 0
    loads = [class_load(view, tc) for step in steps for tc in step.transfers if tc.members]
    assert counts["route sets"] == made                  # the network model's routes: found, not made again
    routed = [fabric.route_set_of(tc.pairs) for step in steps for tc in step.transfers if tc.members]
    assert all(load[0] is links for load, (links, _, _) in zip(loads, routed, strict=True))


def test_several_kinds_of_group_take_the_latency_only_pass_and_route_only_the_joined_classes(monkeypatch):
    fabric = _fabric("rail-fat-tree", 128)
    counts = _counted(monkeypatch)
    view = timing.calibrated_view(fabric)
    groups = [(0, 1, 8, 9), (16, 24, 17, 25)]         # members in another order over their nodes: two kinds
    steps = timing.engine_schedules(view, "allreduce", groups, 64e6)
    assert counts["latency passes"] > 0 and counts["route sets"] == 0
    for step in steps:
        for tc in step.transfers:
            class_load(view, tc)
    assert counts["route sets"] == len(_distinct_pairs(steps))   # the joined classes only
    # the latencies the steps were netted with are the route sets' own (the same floats either way)
    fresh = _fabric("rail-fat-tree", 128)
    for step in steps:
        for tc in step.transfers:
            moving = tc.pairs[tc.pairs[:, 0] != tc.pairs[:, 1]]
            assert np.array_equal(fresh.pair_latencies_s(moving), fabric.route_set_of(moving)[2])


def _small_run(expand: bool):
    return simulate(config.from_dict({
        "name": "caches", "network": "flow",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 4, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "model": {"layers": 8, "hidden": 1024, "heads": 8, "vocab": 32000},
        "training": {"seq_len": 1024, "global_batch_size": 16, "micro_batch_size": 1},
        "parallelism": {"tp": 2, "pp": 2, "dp": 8, "zero_stage": 1}}), expand=expand, steps=1)


@pytest.mark.parametrize("expand", [False, True])
def test_route_caches_holding_one_entry_move_no_step_and_link_figures_by_rounding_only(monkeypatch, expand):
    counts = _counted(monkeypatch)
    kept = _small_run(expand)
    made = counts["route sets"]
    monkeypatch.setattr(topology, "_ROUTE_CACHE_ENTRIES", 1)
    monkeypatch.setattr(topology, "_SMALL_CACHE_ENTRIES", 1)
    evicted = _small_run(expand)
    assert counts["route sets"] - made > made           # the small caches made route sets again
    assert evicted.summary["step_time_s"] == kept.summary["step_time_s"]
    assert evicted.summary["events"] == kept.summary["events"]
    assert evicted.events.equals(kept.events)
    # the flow model numbers routes by the identity of their link arrays (flow.FlowNetwork._route_of): a route made
    # again is a route of its own, whose bytes are summed apart, so link figures may differ in their last bits
    links, again = kept.links, evicted.links
    assert links["link_id"].tolist() == again["link_id"].tolist()
    for column in ("bytes", "utilisation", "peak_utilisation"):
        np.testing.assert_allclose(again[column], links[column], rtol=1e-13, atol=0)


@pytest.mark.parametrize("order", ["tp-cp-pp-dp", "dp-tp-cp-pp", "pp-dp-cp-tp"])
def test_strides_and_group_members_follow_the_coordinates(order):
    layout = Layout(tp=2, cp=2, pp=3, dp=2, order=tuple(order.split("-")))
    for axis in ("tp", "cp", "pp", "dp"):
        assert layout.stride(axis) == layout.rank(**{axis: 1})
        assert layout.moved([0], axis, 1).tolist() == [layout.stride(axis)]
    with pytest.raises(ValueError):
        layout.stride("ep")
    sim = Simulation.__new__(Simulation)                 # only ``plan.layout`` is read by the group helpers
    sim.plan = type("Plan", (), {"layout": layout})()
    ranks = np.arange(layout.world_size, dtype=np.int64)
    for axes in (("tp",), ("dp", "cp"), ("tp", "pp"), ("tp", "cp", "pp", "dp"), ("pp", "tp")):
        members = sim._members(np.unique(sim._bases(ranks, axes)), axes)
        for rank in ranks.tolist():
            coords = layout.coords(rank)
            want = [layout.rank(**{**coords, **dict(zip(axes, values, strict=True))})
                    for values in itertools.product(*(range(getattr(layout, a)) for a in axes))]
            assert want in members.tolist()


def _file_fabric(tmp_path):
    """Two leaves of two GPUs under two spines; the leaf-spine cables carry two own classes a scenario invents
    ("optical-a" from leaf i to spine i, "optical-b" across: unknown tiers, of one rank, so a tie between them goes
    to the class the binding links meet first, which is not the class numbered first), the GPU links none."""
    nodes = {f"g{i}": "gpu" for i in range(4)}
    nodes.update({"l0": "switch", "l1": "switch", "s0": "switch", "s1": "switch"})
    links = [{"ends": [f"g{i}", f"l{i // 2}"], "bandwidth": "800 Gb/s"} for i in range(4)]
    links += [{"ends": [f"l{leaf}", f"s{spine}"], "class": f"optical-{'ab'[leaf != spine]}"}
              for leaf in range(2) for spine in range(2)]
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump({"nodes": nodes, "defaults": {"bandwidth": "100 Gb/s", "kind": "ethernet"},
                                    "links": links}))
    return topology.build(str(path), gpus=4, gpus_per_node=1, gpu=H100, nic=CX7, options={"routing": "ecmp"})


def _tier_by_names(fabric, pairs) -> str | None:
    """``bottleneck_tier`` as it read the per-link class names before round 32."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    if not len(pairs):
        return None
    links, counts = fabric.links_of(pairs)
    load = np.asarray(counts, dtype=float) / fabric.link_bytes_per_s[links]
    binding = links[load >= load.max() * (1 - 1e-6)]
    found = dict.fromkeys(fabric.link_class[i] for i in binding.tolist())
    return min((classes.tier(name) for name in found), key=classes.tier_order)


def test_bottleneck_tier_by_codes_is_the_tier_the_class_names_give(tmp_path):
    fabric = _file_fabric(tmp_path)
    assert set(fabric.link_class) >= {"optical-a", "optical-b"}
    rng = np.random.default_rng(5)
    cross = np.array([[0, 2], [1, 3], [2, 0], [3, 1]])
    assert fabric.bottleneck_tier(cross) in ("optical-a", "optical-b")   # uplinks at 100 Gb/s bind, not GPUs
    assert fabric.bottleneck_tier([[0, 0]]) is None
    tiers = set()
    for _ in range(40):
        pairs = rng.integers(0, 4, size=(int(rng.integers(1, 9)), 2))
        tier = fabric.bottleneck_tier(pairs)
        assert tier == _tier_by_names(fabric, pairs)
        tiers.add(tier)
    assert {"optical-a", "optical-b"} <= tiers
