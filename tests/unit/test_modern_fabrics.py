"""Rail-only (Wang et al. 2023) and multi-plane leaf-spine fabrics: their counts, routes and a collective against its
closed form on the idle fabric."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from simcluster import simulate
from simcluster.core.errors import ScenarioError
from simcluster.fabric import bom, topology
from simcluster.network.base import TransferClass
from simcluster.network.flow import FlowNetwork
from simcluster.spec import config, hardware

H100 = hardware.gpu("h100-sxm")
MI300X = hardware.gpu("mi300x")
CX7 = hardware.nic("connectx-7")
PCIE5 = hardware.pcie(CX7.host)
HOP_S = hardware.switch("infiniband-ndr").latency
NVS_S = hardware.switch("nvswitch").latency


def build(name, gpus, gpu=H100, **options):
    return topology.build(name, gpus=gpus, gpus_per_node=8, gpu=gpu, nic=CX7, options=options)


def test_rail_only_has_one_switch_per_rail_and_no_spine_when_the_servers_fit():
    fabric = build("rail-only", 128)   # 16 servers <= radix 64: one switch per rail
    roles = fabric.summary()["nodes"]
    assert roles["leaf"] == 8 and "spine" not in roles
    assert bom.bill(fabric)["cables_by_class"] == {"nic": 128}


def test_rail_only_beyond_the_radix_builds_each_rail_its_own_non_blocking_clos():
    servers, radix = 128, 64
    b = bom.bill(build("rail-only", servers * 8))
    leaves_per_rail = math.ceil(servers / (radix // 2))
    spines_per_rail = math.ceil(leaves_per_rail * (radix // 2) / radix)
    assert b["switches_by_tier"]["leaf"]["count"] == 8 * leaves_per_rail
    assert b["switches_by_tier"]["spine"]["count"] == 8 * spines_per_rail
    # as much up as down on every leaf: non-blocking inside a rail
    assert b["cables_by_class"] == {"nic": servers * 8, "leaf-spine": servers * 8}
    rail_fat_tree = bom.bill(build("rail-fat-tree", servers * 8))
    assert b["switches"] < rail_fat_tree["switches"]


def test_rail_only_same_rail_goes_through_the_rail_switch_and_cross_rail_through_nvswitch():
    fabric = build("rail-only", 128)
    same_rail = [fabric.link_class[i] for i in fabric.path_links(0, 8)]      # rail 0 of servers 0 and 1
    assert same_rail == ["pcie", "pcie", "nic", "nic", "pcie", "pcie"]
    cross = [fabric.link_class[i] for i in fabric.path_links(0, 9)]          # rail 0 -> rail 1, another server
    assert cross.count("nvlink") == 2 and cross.count("nic") == 2 and "leaf-spine" not in cross
    assert fabric.path_latency_s(0, 9) == pytest.approx(2 * PCIE5.latency + 2 * CX7.latency + HOP_S + PCIE5.latency
                                                        + NVS_S, rel=0.5)   # order of magnitude: hops counted
    inside = [fabric.link_class[i] for i in fabric.path_links(0, 1)]
    assert inside == ["nvlink", "nvlink"]


def test_rail_only_routes_are_shortest_walks():
    fabric = build("rail-only", 64)
    rng = np.random.default_rng(1)
    blocked_gpus = set(fabric.gpu_nodes)
    for src, dst in rng.integers(0, 64, size=(30, 2)):
        if src == dst:
            continue
        links = fabric.path_links(int(src), int(dst))
        ends = {fabric.gpu_nodes[src], fabric.gpu_nodes[dst]}
        view = nx.restricted_view(fabric.graph, blocked_gpus - ends, [])
        assert len(links) == nx.shortest_path_length(view, *(fabric.gpu_nodes[i] for i in (src, dst)))


def test_rail_only_needs_an_nvlink_switch():
    with pytest.raises(ScenarioError, match="cluster.topology"):
        build("rail-only", 64, gpu=MI300X)


def test_ring_over_one_rail_runs_at_the_nic_rate_on_rail_only():
    # GPU 0 of 16 servers: every send crosses its NIC and the rail switch once
    ring_ranks = np.arange(0, 128, 8)
    pairs = np.stack([ring_ranks, np.roll(ring_ranks, -1)], axis=1)
    size_bytes = 1e8
    net = FlowNetwork(build("rail-only", 128))
    net.start(TransferClass(pairs, size_bytes), 0.0)
    latency_s = 2 * PCIE5.latency + 2 * CX7.latency + HOP_S
    assert net.next_completion_s() == pytest.approx(size_bytes / CX7.rate + latency_s, rel=1e-9)


def test_multi_plane_splits_every_nic_over_its_planes():
    fabric = build("multi-plane", 256, planes=2)
    b = bom.bill(fabric)
    assert b["cables_by_class"]["nic"] == 2 * 256
    nic_links = [i for i, c in enumerate(fabric.link_class) if c == "nic"]
    assert np.allclose(fabric.link_bytes_per_s[nic_links], CX7.rate / 2)
    leaves = [n for n, d in fabric.graph.nodes(data=True) if d["role"] == "leaf"]
    assert {fabric.graph.nodes[n]["plane"] for n in leaves} == {0, 1}


def test_a_flow_between_leaves_uses_both_planes_at_full_nic_rate_under_adaptive_routing():
    # two hosts on different leaves: each plane carries half, so the pair gets the whole NIC rate
    fabric = build("multi-plane", 256, planes=2, protocol="infiniband")
    size_bytes = 1e8
    net = FlowNetwork(fabric)
    net.start(TransferClass(np.array([[0, 200]]), size_bytes), 0.0)
    hops_s = fabric.pair_latencies_s(np.array([[0, 200]]))[0]
    assert net.next_completion_s() == pytest.approx(size_bytes / CX7.rate + hops_s, rel=1e-9)


def test_multi_plane_oversubscription_divides_each_plane_uplinks():
    fabric = build("multi-plane", 512, planes=2, oversubscription=2)
    graph, cls = fabric.graph, fabric.link_class
    for leaf in [n for n, d in graph.nodes(data=True) if d["role"] == "leaf"]:
        down = sum(d["bytes_per_s"] for _, _, d in graph.out_edges(leaf, data=True) if cls[d["link_id"]] == "nic")
        up = sum(d["bytes_per_s"] for _, _, d in graph.out_edges(leaf, data=True)
                 if cls[d["link_id"]] == "leaf-spine")
        assert up == pytest.approx(down / 2)


@pytest.mark.parametrize("topology_name", ["rail-only", "multi-plane"])
def test_a_training_step_runs_on_the_new_fabrics(small_scenario, topology_name):
    small_scenario["cluster"]["topology"] = topology_name
    summary = simulate(config.from_dict(small_scenario)).summary
    assert summary["step_time_s"] > 0 and summary["fabric"]["capex_usd"] > 0
    assert summary["topology"] == topology_name
