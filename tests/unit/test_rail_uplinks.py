"""Rail fat-tree leaf uplinks wider than a NIC link (``topology_options.spines``): a leaf's down capacity carried up
over fewer, wider cables, as MegaScale's ToRs split each 400G down port into two 200G NIC links and keep 400G uplinks
(Jiang et al., NSDI 2024, arXiv 2402.15627, section 3.6). Checked against closed forms: cable rates, the conservation
of each tier's capacity, and a two-flow ECMP collision that no longer halves each flow's rate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from simcluster.core.errors import ScenarioError
from simcluster.fabric import bom, topology
from simcluster.network.base import TransferClass
from simcluster.network.flow import FlowNetwork
from simcluster.spec import config, hardware

A100 = hardware.gpu("a100-80gb-sxm")
CX6 = hardware.nic("connectx-6")   # 200 Gb/s
SIZE = 1e8


def build(gpus, gpus_per_node=1, **options):
    return topology.build("rail-fat-tree", gpus=gpus, gpus_per_node=gpus_per_node, gpu=A100, nic=CX6,
                          options={"protocol": "ethernet", **options})


def edges_of(fabric, link_class):
    return [k for k, c in enumerate(fabric.link_class) if c == link_class]


def transfer_s(fabric, pairs) -> float:
    """Time for every pair of ``pairs`` to send SIZE bytes at once on an idle fabric."""
    net = FlowNetwork(fabric)
    net.start(TransferClass(np.asarray(pairs, dtype=np.int64), SIZE), 0.0)
    return net.next_completion_s()


def latency_s(fabric, pairs) -> float:
    return float(np.max(fabric.pair_latencies_s(np.asarray(pairs, dtype=np.int64))))


@pytest.mark.parametrize("spines", [8, 4, 2, 1])
def test_each_uplink_carries_the_leafs_down_capacity_over_spines(spines):
    # radix 16: 8 NICs a leaf; 16 single-GPU servers: 2 leaves, two tiers
    fabric = build(16, radix=16, spines=spines)
    rate = fabric.link_bytes_per_s
    g = fabric.graph
    assert fabric.summary()["nodes"]["spine"] == spines
    assert np.all(rate[edges_of(fabric, "nic")] == CX6.rate)
    for leaf in ("leaf/g0/r0", "leaf/g1/r0"):
        up = [g.edges[leaf, f"spine/{s}"]["bytes_per_s"] for s in range(spines)]
        assert up == pytest.approx([8 * CX6.rate / spines] * spines)   # 8 x rate / spines a cable
        assert sum(up) == pytest.approx(8 * CX6.rate)                   # = the leaf's 8 NIC links: non-blocking
    # conservation: the leaf-to-spine tier carries what the NICs bring, whatever the spine count
    up_total = sum(d["bytes_per_s"] for u, v, d in g.edges(data=True) if u.startswith("leaf") and v.startswith("spine"))
    assert up_total == pytest.approx(16 * CX6.rate)


def test_the_default_is_radix_over_two_spines_of_the_nic_rate_exactly():
    for gpus, options in ((64, {"radix": 8}), (72, {"radix": 8, "tiers": 3}), (24, {"radix": 16})):
        default, explicit = build(gpus, 8, **options), build(gpus, 8, spines=options["radix"] // 2, **options)
        assert default.graph.number_of_nodes() == explicit.graph.number_of_nodes()
        assert list(default.link_bytes_per_s) == list(explicit.link_bytes_per_s)
        assert list(default.graph.edges(data=True)) == list(explicit.graph.edges(data=True))


def test_three_tiers_make_pods_of_spines_leaves_with_1_to_1_aggregation_switches():
    # radix 8 (4 NICs a leaf), spines 2: uplinks of 2 x rate; a switch above holds 8 x 2 / 4 = 4 such ports, so two
    # tiers hold 4 leaves; 12 single-GPU servers = 3 leaves would fit, tiers: 3 gives pods of 2 leaves
    fabric = build(12, radix=8, spines=2, tiers=3)
    nodes = fabric.summary()["nodes"]
    assert nodes["leaf"] == 3 and nodes["spine"] == 2 * 2 and nodes["core"] == 2 * 2   # 2 pods; cores 2 groups of 2
    g = fabric.graph
    for p in range(2):
        for i in range(2):
            agg = f"spine/p{p}/{i}"
            down = [u for u in g.predecessors(agg) if u.startswith("leaf")]
            up = [v for v in g.successors(agg) if v.startswith("core")]
            assert up == [f"core/{i}/0", f"core/{i}/1"]             # aggregation switch i to core group i
            assert len(down) == (2 if p == 0 else 1)
            for v in down + up:                                       # every cable above the leaves: 2 x rate
                assert g.edges[agg, v]["bytes_per_s"] == pytest.approx(2 * CX6.rate)
    # a full pod's aggregation tier sends up exactly what its leaves bring: 2 leaves x 4 NICs x rate
    pod0_up = sum(g.edges[f"spine/p0/{i}", f"core/{i}/{c}"]["bytes_per_s"] for i in range(2) for c in range(2))
    assert pod0_up == pytest.approx(2 * 4 * CX6.rate)


def test_wider_uplinks_mean_fewer_ports_above_so_fewer_leaves_in_two_tiers():
    assert build(16, radix=8, spines=2).summary()["nodes"]["leaf"] == 4        # 4 leaves = 8 x 2 / 4 ports: fits
    with pytest.raises(ScenarioError) as err:
        build(20, radix=8, spines=2, tiers=2)                                # 5 leaves
    assert err.value.field == "cluster.topology_options.tiers" and "at most 4 leaves" in err.value.message
    assert "core" in build(20, radix=8, spines=2).summary()["nodes"]           # three tiers by default


def _colliding_pairs(fabric, sources, destinations):
    """Two pairs from different NICs to different NICs whose hashed (ECMP) paths share a leaf-to-spine link."""
    uplinks = set(edges_of(fabric, "leaf-spine"))
    for (s1, s2), (d1, d2) in itertools.product(itertools.combinations(sources, 2),
                                                itertools.permutations(destinations, 2)):
        a = set(fabric.path_links(s1, d1)) & uplinks
        b = set(fabric.path_links(s2, d2)) & uplinks
        if a & b:
            return [[s1, d1], [s2, d2]]
    raise AssertionError("no two hashed flows collide")


def test_two_hashed_flows_on_one_uplink_halve_at_the_nic_rate_and_not_at_twice_it():
    # 8 single-GPU servers, radix 8: leaf 0 holds GPUs 0-3, leaf 1 GPUs 4-7; hash ECMP over the spines
    narrow, wide = build(8, radix=8, routing="ecmp"), build(8, radix=8, spines=2, routing="ecmp")
    for fabric, per_flow in ((narrow, CX6.rate / 2), (wide, CX6.rate)):
        pairs = _colliding_pairs(fabric, range(4), range(4, 8))
        assert transfer_s(fabric, pairs) == pytest.approx(SIZE / per_flow + latency_s(fabric, pairs), rel=1e-9)


@pytest.mark.parametrize("spines", [4, 2, 1])
def test_sprayed_traffic_between_two_leaves_runs_at_the_nic_rate_whatever_the_uplink_width(spines):
    fabric = build(8, radix=8, spines=spines, routing="adaptive")
    pairs = [[i, 4 + i] for i in range(4)]   # every NIC of leaf 0 to one of leaf 1: the whole down capacity
    assert transfer_s(fabric, pairs) == pytest.approx(SIZE / CX6.rate + latency_s(fabric, pairs), rel=1e-9)


@pytest.mark.parametrize(("options", "message"), [
    ({"radix": 8, "spines": 5}, "must be from 1 to radix/2 = 4"),
    ({"spines": 0}, "expected an integer from 1"),
    ({"spines": 2.5}, "expected an integer from 1"),
])
def test_bad_spines_name_their_field(options, message):
    with pytest.raises(ScenarioError) as err:
        build(8, **options)
    assert err.value.field == "cluster.topology_options.spines" and message in err.value.message


def test_bad_spines_exit_2_with_one_line(cli, write_scenario, small_scenario, tmp_path):
    small_scenario["cluster"]["topology_options"] = {"radix": 8, "spines": 9}
    code, _, err = cli("run", write_scenario(small_scenario), "--json", "--out", tmp_path / "o")
    assert code == 2 and err.startswith("error: cluster.topology_options.spines: must be from 1 to radix/2 = 4")
    assert err.count("\n") == 1, err


def test_the_megascale_scenarios_state_the_papers_fabric():
    # section 3.6: 200G NICs; a ToR's 400G down port split in two 200G ports, uplinks 400G ("the bandwidth of each
    # uplink is double of that of a downlink"); 32 down / 32 up at every layer; 64 servers on one set of ToRs
    scenario = config.load("megascale2024-megatron-175b-3072-a100")
    fabric = topology.from_scenario(scenario)
    assert scenario.cluster.nic.rate == CX6.rate == pytest.approx(200e9 / 8)
    g = fabric.graph
    leaf = "leaf/g0/r0"
    nics = [u for u in g.predecessors(leaf) if g.nodes[u]["role"] == "nic"]
    aggs = [v for v in g.successors(leaf) if g.nodes[v]["role"] == "spine"]
    assert len(nics) == 64 and len(aggs) == 32
    assert [g.edges[leaf, v]["bytes_per_s"] for v in aggs] == pytest.approx([2 * CX6.rate] * 32)
    agg = aggs[0]
    down = [u for u in g.predecessors(agg) if g.nodes[u]["role"] == "leaf"]
    up = [v for v in g.successors(agg) if g.nodes[v]["role"] == "core"]
    assert len(down) == 32 and len(up) == 32   # a full pod: 32 ToRs down, 32 cores up (1:1)


def test_bad_spines_that_do_not_divide_radix_over_two_name_their_field():
    # radix 8: 4 NIC links a leaf; 3 uplinks would be 4/3 NIC links wide each, no port a switch has
    with pytest.raises(ScenarioError) as err:
        build(8, radix=8, spines=3)
    assert err.value.field == "cluster.topology_options.spines" and "must divide radix/2 = 4" in err.value.message


@pytest.mark.parametrize("spines", [4, 2, 1])
def test_the_bill_counts_a_wide_uplink_as_one_cable_and_the_switches_by_capacity(spines):
    # 8 single-GPU servers, radix 8: 2 leaves of 4 NICs, two tiers; every leaf one cable to each of its spines,
    # each 4 / spines NIC links wide
    cost = bom.bill(build(8, radix=8, spines=spines))
    wide = 4 // spines
    assert cost["cables_by_class"] == {"nic": 8, "leaf-spine": 2 * spines}
    # switches counted by capacity in NIC-rate ports: a leaf 4 down and 4 up, a spine 2 leaves x wide
    assert cost["switches_by_tier"]["leaf"]["ports_used"] == 2 * (4 + spines * wide) == 16
    assert cost["switches_by_tier"]["spine"]["ports_used"] == spines * 2 * wide == 8
    # an optical cable is two transceivers, whatever its rate (fabric_costs.yaml: priced per 400G end)
    assert cost["transceivers"] == 2 * cost["cables"] == 2 * (8 + 2 * spines)


def test_the_bill_of_three_tiers_counts_one_cable_per_wide_link_above_the_leaves():
    # radix 8, spines 2, 16 servers: 4 leaves in 2 pods of 2 leaves under 2 aggregation switches; 2 x 2 cores
    cost = bom.bill(build(16, radix=8, spines=2, tiers=3))
    assert cost["cables_by_class"] == {"nic": 16, "leaf-spine": 4 * 2, "spine-core": 4 * 2}
    assert cost["switches_by_tier"]["core"]["ports_used"] == 4 * 2 * 2   # 2 pods' cables of 2 NIC links each


def test_an_exported_fabric_keeps_its_wide_uplink_ports_in_the_bill(tmp_path):
    # write_graphml carries the uplink port rate (graph attribute uplink_port), so the file read back prices the same
    # cables and transceivers as the builder's fabric; without it each 2x uplink would be two NIC-rate cables
    fabric = build(16, radix=8, spines=2, tiers=3)
    path = tmp_path / "rail.graphml"
    topology.write_graphml(fabric, path)
    again = topology.build(str(path), gpus=16, gpus_per_node=1, gpu=A100, nic=CX6)
    assert again.tables.graph_attrs["uplink_port_bytes_per_s"] == pytest.approx(2 * CX6.rate)
    built, read = bom.bill(fabric), bom.bill(again)
    assert read["cables"] == built["cables"] == 16 + 4 * 2 + 4 * 2
    assert read["transceivers"] == built["transceivers"]


def test_a_fabric_files_uplink_port_is_a_checked_bandwidth(tmp_path):
    base = ("nodes: {g0: gpu, g1: gpu, sw: switch}\n"
            "links: [{ends: [g0, sw], bandwidth: 200 Gb/s}, {ends: [g1, sw], bandwidth: 200 Gb/s}]\n")
    good = tmp_path / "good.yaml"
    good.write_text("uplink_port: 400 Gb/s\n" + base)
    fabric = topology.build(str(good), gpus=2, gpus_per_node=1, gpu=A100, nic=CX6)
    assert fabric.tables.graph_attrs["uplink_port_bytes_per_s"] == pytest.approx(50e9)
    bad = tmp_path / "bad.yaml"
    bad.write_text("uplink_port: -400 Gb/s\n" + base)
    with pytest.raises(ScenarioError) as err:
        topology.build(str(bad), gpus=2, gpus_per_node=1, gpu=A100, nic=CX6)
    assert err.value.field.endswith(":uplink_port")
