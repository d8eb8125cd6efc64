"""Fabric builders, routes and file import, checked against hand counts and closed forms."""

from __future__ import annotations

import itertools
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import yaml

from simcluster.core.errors import ScenarioError
from simcluster.fabric import topology
from simcluster.network.base import TransferClass
from simcluster.network.flow import FlowNetwork
from simcluster.spec import config, hardware

H100 = hardware.gpu("h100-sxm")
A100 = hardware.gpu("a100-80gb-sxm")
CX7 = hardware.nic("connectx-7")
CX6 = hardware.nic("connectx-6")
PCIE5 = hardware.pcie("pcie-gen5")
NDR_HOP_S = hardware.switch("infiniband-ndr").latency
NVS_HOP_S = hardware.switch("nvswitch").latency
REPO = Path(__file__).resolve().parents[2]


def build(name, gpus, gpus_per_node=8, gpu=H100, nic=CX7, **options):
    return topology.build(name, gpus=gpus, gpus_per_node=gpus_per_node, gpu=gpu, nic=nic, options=options)


def roles(fabric) -> dict:
    return fabric.summary()["nodes"]


def link_ends(fabric) -> dict:
    """link id -> (u, v)."""
    return {d["link_id"]: (u, v) for u, v, d in fabric.graph.edges(data=True)}


def capacity_to(g, node, role) -> float:
    """Bytes/s leaving ``node`` towards neighbours of ``role``."""
    return sum(g.edges[node, v]["bytes_per_s"] for v in g.successors(node) if g.nodes[v]["role"] == role)


def capacity_from(g, node, role) -> float:
    """Bytes/s entering ``node`` from neighbours of ``role``."""
    return sum(g.edges[v, node]["bytes_per_s"] for v in g.predecessors(node) if g.nodes[v]["role"] == role)


def assert_walk(fabric, src, dst, links):
    """The links form a walk from GPU src to GPU dst."""
    ends = link_ends(fabric)
    here = fabric.gpu_nodes[src]
    for k in links:
        u, v = ends[int(k)]
        assert u == here
        here = v
    assert here == fabric.gpu_nodes[dst]


# ---- builders: hand counts ------------------------------------------------------------------------------

def test_rail_fat_tree_of_two_hgx_nodes_matches_hand_count():
    fabric = build("rail-fat-tree", 16)
    # per server: 8 GPUs, 1 NVSwitch, 8 PCIe switches, 8 NICs; one leaf per rail;
    # min(32, 2 servers) = 2 spines
    assert roles(fabric) == {"gpu": 16, "nvswitch": 2, "pcie": 16, "nic": 16, "leaf": 8, "spine": 2}
    # cables: 16 GPU-NVSwitch, 16 GPU-PCIe + 16 PCIe-NIC, 16 NIC-leaf, 8 leaves x 2 spines; two links each
    assert fabric.summary()["links"] == {"nvlink": 32, "pcie": 64, "ib": 2 * (16 + 16)}
    assert fabric.links == fabric.graph.number_of_edges() == 160
    kinds = np.array(fabric.link_kind)
    assert np.all(fabric.link_bytes_per_s[kinds == "nvlink"] == 450e9)
    assert np.all(fabric.link_bytes_per_s[kinds == "pcie"] == 64e9)
    assert np.all(fabric.link_bytes_per_s[kinds == "ib"] == 400e9 / 8)


def test_rail_fat_tree_puts_gpu_i_of_every_node_on_rail_i():
    fabric = build("rail-fat-tree", 64)
    g = fabric.graph
    for rank in range(64):
        nic = f"n{rank // 8}/nic{rank % 8}"
        (leaf,) = [v for v in g.successors(nic) if g.nodes[v]["role"] == "leaf"]
        assert g.nodes[leaf]["rail"] == rank % 8


def test_rail_fat_tree_uses_hdr_rate_and_radix_for_connectx6():
    fabric = build("rail-fat-tree", 16, gpu=A100, nic=CX6)
    assert np.all(fabric.link_bytes_per_s[np.array(fabric.link_kind) == "ib"] == 200e9 / 8)
    assert np.all(fabric.link_bytes_per_s[np.array(fabric.link_kind) == "nvlink"] == 300e9)


def test_three_tier_rail_fat_tree_matches_hand_count_and_is_non_blocking():
    # radix 8: 4 servers per leaf -> 8 servers make 2 groups x 8 rails = 16 leaves > 8 ports: three tiers,
    # 16 / 4 = 4 pods of 4 aggregation switches, 4 x 4 cores
    fabric = build("rail-fat-tree", 64, radix=8)
    assert roles(fabric) == {"gpu": 64, "nvswitch": 8, "pcie": 64, "nic": 64,
                             "leaf": 16, "spine": 16, "core": 16}
    g = fabric.graph
    for node, role in g.nodes(data="role"):
        if role in ("leaf", "spine"):
            up_role = {"leaf": "spine", "spine": "core"}[role]
            up = capacity_to(g, node, up_role)
            down = capacity_from(g, node, "nic" if role == "leaf" else "leaf")
            assert up >= down > 0
        if role in ("leaf", "spine", "core"):
            assert g.out_degree(node) <= 8  # never more ports than the radix


def test_two_tier_rail_fat_tree_refuses_more_leaves_than_ports():
    with pytest.raises(ScenarioError, match="tiers"):
        build("rail-fat-tree", 64, radix=8, tiers=2)


def test_k4_fat_tree_has_k_cubed_over_4_hosts_and_5k_squared_over_4_switches():
    k = 4
    fabric = build("fat-tree", k**3 // 4, k=k)
    r = roles(fabric)
    assert r["gpu"] == r["nic"] == k**3 // 4
    assert r["leaf"] + r["spine"] + r["core"] == 5 * k * k // 4
    assert r["core"] == (k // 2) ** 2
    g = fabric.graph
    for node, role in g.nodes(data="role"):
        if role in ("leaf", "spine", "core"):
            assert g.out_degree(node) == k  # every switch uses all k ports


def test_fat_tree_default_k_is_smallest_that_fits():
    fabric = build("fat-tree", 100)  # k=6 holds 54 hosts, k=8 holds 128
    assert roles(fabric)["core"] == 16


def test_leaf_spine_uplinks_are_down_capacity_over_oversubscription():
    fabric = build("leaf-spine", 64, oversubscription=4)
    g = fabric.graph
    for node, role in g.nodes(data="role"):
        if role == "leaf":
            down = capacity_from(g, node, "nic")
            up = capacity_to(g, node, "spine")
            assert up == pytest.approx(32 * CX7.rate / 4)
            assert down == pytest.approx(32 * CX7.rate)
    assert set(fabric.link_kind) == {"nvlink", "pcie", "ethernet"}


def test_torus_links_each_gpu_to_two_neighbours_per_dimension():
    fabric = build("torus", 64, dims=[4, 4, 4], link="100 GB/s")
    assert roles(fabric) == {"gpu": 64}
    assert fabric.links == 64 * 6
    assert np.all(fabric.link_bytes_per_s == 100e9)
    assert all(fabric.graph.out_degree(n) == 6 for n in fabric.gpu_nodes)


def test_torus_routes_take_the_short_way_round_in_every_dimension():
    dims = (3, 4, 2)
    fabric = build("torus", 24, dims=list(dims))
    coords = list(np.ndindex(*dims))
    for src, dst in itertools.product(range(24), repeat=2):
        expected = sum(min((b - a) % n, (a - b) % n)
                       for a, b, n in zip(coords[src], coords[dst], dims, strict=True))
        links = fabric.path_links(src, dst, salt=src)
        assert len(links) == expected
        assert_walk(fabric, src, dst, links)


def test_torus_dimension_of_two_is_one_trunk_of_twice_the_rate():
    fabric = build("torus", 8, dims=[2, 4], link="50 GB/s")
    # along the size-2 dimension both neighbours are the same GPU: one edge per direction carrying both cables
    assert fabric.graph.edges["gpu0", "gpu4"]["bytes_per_s"] == 100e9
    assert fabric.graph.edges["gpu0", "gpu1"]["bytes_per_s"] == 50e9


def test_nvswitch_node_routes_gpu_to_gpu_through_one_nvswitch():
    fabric = build("nvswitch-node", 8)
    assert roles(fabric) == {"gpu": 8, "nvswitch": 1}
    links = fabric.path_links(0, 5)
    assert len(links) == 2 and np.all(fabric.link_bytes_per_s[links] == 450e9)
    assert fabric.path_latency_s(0, 5) == pytest.approx(NVS_HOP_S)
    with pytest.raises(ScenarioError, match="nvswitch-node"):
        build("nvswitch-node", 16)


def test_a_fabric_file_is_found_under_topologies_of_the_current_folder_and_the_miss_says_where(tmp_path,
                                                                                                    monkeypatch):
    src = Path(__file__).parents[2] / "topologies" / "two-servers-one-switch.yaml"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScenarioError, match=r"neither a builtin.*under \./topologies/ of the current folder"):
        build("two-servers-one-switch", 8, gpus_per_node=4)
    (tmp_path / "topologies").mkdir()
    (tmp_path / "topologies" / src.name).write_text(src.read_text())
    assert roles(build("two-servers-one-switch", 8, gpus_per_node=4))["gpu"] == 8


def test_gpu_without_nvlink_gets_a_full_mesh():
    fabric = build("nvswitch-node", 8, gpu=hardware.gpu("mi300x"))
    assert "nvswitch" not in roles(fabric)
    links = fabric.path_links(0, 5)
    assert len(links) == 1
    assert fabric.link_bytes_per_s[links[0]] == pytest.approx(448e9 / 7)


# ---- routes -------------------------------------------------------------------------------------------

def test_intra_node_traffic_stays_on_nvlink_and_inter_node_goes_over_nics():
    fabric = build("rail-fat-tree", 16)
    assert {fabric.link_kind[k] for k in fabric.path_links(0, 7)} == {"nvlink"}
    same_rail = fabric.path_links(0, 8)   # GPU 0 of both servers share rail 0's leaf
    assert [fabric.link_kind[k] for k in same_rail] == ["pcie", "pcie", "ib", "ib", "pcie", "pcie"]
    # latency = PCIe switch + NIC on each side + one leaf hop
    assert fabric.path_latency_s(0, 8) == pytest.approx(2 * PCIE5.latency + 2 * CX7.latency + NDR_HOP_S)
    cross_rail = fabric.path_links(0, 9)  # rail 0 -> rail 1: leaf, spine, leaf
    assert len(cross_rail) == 8
    assert fabric.path_latency_s(0, 9) == pytest.approx(2 * PCIE5.latency + 2 * CX7.latency + 3 * NDR_HOP_S)


@pytest.mark.parametrize(("name", "gpus", "options"), [
    ("rail-fat-tree", 64, {"radix": 8}), ("leaf-spine", 48, {"hosts_per_leaf": 8, "oversubscription": 2}),
    ("fat-tree", 54, {}), ("torus", 27, {"dims": [3, 3, 3]}), ("nvswitch-node", 8, {}),
])
def test_every_route_is_a_shortest_walk_between_its_gpus(name, gpus, options):
    fabric = build(name, gpus, **options)
    rng = np.random.default_rng(0)
    for src, dst in rng.integers(0, gpus, size=(40, 2)):
        links = fabric.path_links(int(src), int(dst), salt=int(src) * 7)
        assert_walk(fabric, int(src), int(dst), links)
        if src != dst:
            # GPUs forward only on a torus: elsewhere the shortest path avoids every GPU but the two ends
            blocked = [n for n in fabric.gpu_nodes if n not in (fabric.gpu_nodes[src], fabric.gpu_nodes[dst])]
            view = fabric.graph if fabric.graph.graph.get("gpu_transit") else nx.restricted_view(
                fabric.graph, blocked, [])
            assert len(links) == nx.shortest_path_length(view, fabric.gpu_nodes[src], fabric.gpu_nodes[dst])


def test_ecmp_is_deterministic_and_spreads_over_spines():
    fabric = build("rail-fat-tree", 256)  # 32 servers: 32 spines
    first = [tuple(fabric.path_links(0, 9, salt=s)) for s in range(64)]
    again = [tuple(fabric.path_links(0, 9, salt=s)) for s in range(64)]
    assert first == again
    ends = link_ends(fabric)
    spines = {ends[p[3]][1] for p in first}   # GPU, PCIe, NIC, leaf -> the 4th link enters a spine
    assert all(fabric.graph.nodes[s]["role"] == "spine" for s in spines)
    assert len(spines) > 16


def test_links_of_counts_how_many_pairs_cross_each_link():
    fabric = build("rail-fat-tree", 32, routing="ecmp")   # one hashed path per pair
    pairs = np.array([[i, (i + 1) % 32] for i in range(32)] + [[0, 8], [0, 8]])
    links, counts = fabric.links_of(pairs)
    expected: dict[int, int] = {}
    for s, d in pairs:
        for k in fabric.path_links(int(s), int(d)):
            expected[int(k)] = expected.get(int(k), 0) + 1
    assert dict(zip(links.tolist(), counts.tolist(), strict=True)) == expected
    latencies = fabric.pair_latencies_s(pairs)
    assert latencies[-1] == pytest.approx(fabric.path_latency_s(0, 8))


# ---- routing policies: adaptive spraying vs hash ECMP ------------------------------------------------------

def role_links(fabric, from_role, to_role, node=None) -> list[int]:
    """Link ids from nodes of ``from_role`` (or from/to ``node``) to nodes of ``to_role``."""
    g = fabric.graph
    return [d["link_id"] for u, v, d in g.edges(data=True)
            if g.nodes[u]["role"] == from_role and g.nodes[v]["role"] == to_role and node in (None, u, v)]


def load_on(fabric, pairs) -> np.ndarray:
    """links_of as a dense array over all link ids."""
    links, load = fabric.links_of(np.asarray(pairs))
    dense = np.zeros(fabric.links)
    dense[links] = load
    return dense


def test_infiniband_clos_fabrics_default_to_adaptive_and_ethernet_to_ecmp():
    assert build("rail-fat-tree", 16).routing == "adaptive"
    assert build("fat-tree", 16).routing == "adaptive"
    assert build("leaf-spine", 16).routing == "ecmp"
    assert build("rail-fat-tree", 16, protocol="ethernet").routing == "ecmp"
    assert build("leaf-spine", 16, protocol="infiniband").routing == "adaptive"
    assert build("rail-fat-tree", 16, routing="ecmp").routing == "ecmp"
    assert build("leaf-spine", 16, routing="adaptive").routing == "adaptive"
    assert build("torus", 8, dims=[2, 4]).routing == "ecmp"        # dimension-order, hashed per flow
    with pytest.raises(ScenarioError) as err:
        build("rail-fat-tree", 16, routing="spray")
    assert err.value.field == "cluster.topology_options.routing"
    with pytest.raises(ScenarioError) as err:
        build("torus", 8, routing="adaptive")
    assert err.value.field == "cluster.topology_options.routing"


def test_leaf_spine_ecmp_loads_are_whole_flows_on_hashed_paths():
    fabric = build("leaf-spine", 64, hosts_per_leaf=16)
    pairs = np.array([[i, (i + 17) % 64] for i in range(64)])
    links, load = fabric.links_of(pairs)
    expected: dict[int, int] = {}
    for s, d in pairs:
        for k in fabric.path_links(int(s), int(d)):
            expected[int(k)] = expected.get(int(k), 0) + 1
    assert dict(zip(links.tolist(), load.tolist(), strict=True)) == expected


def test_adaptive_flow_between_two_leaves_puts_one_over_spines_on_every_uplink():
    fabric = build("rail-fat-tree", 256)     # 32 servers: one leaf per rail, 32 spines
    spines = 32
    load = load_on(fabric, [[0, 9]])         # rail 0 of server 0 -> rail 1 of server 1: leaf, spine, leaf
    up = role_links(fabric, "leaf", "spine", "leaf/g0/r0")
    down = role_links(fabric, "spine", "leaf", "leaf/g0/r1")
    assert len(up) == len(down) == spines
    np.testing.assert_allclose(load[up], 1 / spines, rtol=1e-12)
    np.testing.assert_allclose(load[down], 1 / spines, rtol=1e-12)
    assert load[up].sum() == pytest.approx(1.0, rel=1e-12)     # the whole flow leaves the source leaf
    (nic_up,) = role_links(fabric, "nic", "leaf", "n0/nic0")
    (nic_down,) = role_links(fabric, "leaf", "nic", "n1/nic1")
    assert load[nic_up] == load[nic_down] == 1.0               # access segments carry the whole flow
    assert load[role_links(fabric, "leaf", "spine")].sum() == pytest.approx(1.0, rel=1e-12)


def test_adaptive_spray_on_a_symmetric_fat_tree_is_uniform_over_all_shortest_paths():
    fabric = build("fat-tree", 16, gpus_per_node=1, k=4)       # one GPU per host: no NVSwitch shortcut
    g = fabric.graph
    for src, dst in [(0, 15), (0, 3), (5, 6)]:                 # across pods, within a pod, on one edge switch
        a, b = fabric.gpu_nodes[src], fabric.gpu_nodes[dst]
        view = nx.restricted_view(g, [n for n in fabric.gpu_nodes if n not in (a, b)], [])
        paths = list(nx.all_shortest_paths(view, a, b))
        expected = np.zeros(fabric.links)
        for path in paths:
            for u, v in zip(path, path[1:], strict=False):
                expected[g.edges[u, v]["link_id"]] += 1 / len(paths)
        np.testing.assert_allclose(load_on(fabric, [[src, dst]]), expected, rtol=1e-12, atol=1e-15)


def test_sixteen_flows_that_collide_under_ecmp_get_their_fair_share_under_adaptive():
    # 16 flows rail 0 -> rail 1 between different servers of a 16-server fabric with 16 spines: the leaf-spine
    # links can carry them at one flow per uplink, the fair share 16 flows / 16 spines
    pairs = [[8 * k, 8 * ((k + 1) % 16) + 1] for k in range(16)]
    def core_load(fabric):
        used = role_links(fabric, "leaf", "spine", "leaf/g0/r0") + role_links(fabric, "spine", "leaf", "leaf/g0/r1")
        assert len(used) == 2 * 16
        load = load_on(fabric, pairs)
        assert load[role_links(fabric, "leaf", "spine")].sum() == pytest.approx(16, rel=1e-12)  # all go up
        return load[used]

    assert core_load(build("rail-fat-tree", 128, routing="ecmp")).max() > 1   # hash collisions: 2+ on one
    share = core_load(build("rail-fat-tree", 128))
    np.testing.assert_allclose(share, 16 / 16, rtol=1e-12)     # every uplink and downlink: its fair share


def test_adaptive_loads_add_up_to_the_hops_of_every_pair_and_cover_the_representative_path():
    fabric = build("rail-fat-tree", 64, radix=8)                # three tiers
    assert fabric.routing == "adaptive"
    pairs = np.random.default_rng(3).integers(0, 64, size=(200, 2))
    links, load = fabric.links_of(pairs)
    # every shortest path of a pair has the same hop count, and each hop carries all of the pair's bytes
    hops = sum(len(fabric.path_links(int(s), int(d))) for s, d in pairs)
    assert load.sum() == pytest.approx(hops, rel=1e-12)
    used = set(links.tolist())
    for s, d in pairs[:50]:
        assert set(fabric.path_links(int(s), int(d)).tolist()) <= used
    # one switch latency everywhere: the slowest sprayed path is as slow as the representative one
    expected = [fabric.path_latency_s(int(s), int(d)) for s, d in pairs]
    np.testing.assert_allclose(fabric.pair_latencies_s(pairs), expected, rtol=1e-12)


@pytest.mark.parametrize("routing", ["adaptive", "ecmp"])
def test_a_pair_listed_k_times_loads_its_route_k_times(routing):
    # loads add over flows and a route is a function of (src, dst, salt): 1,000 distinct pairs listed 1 to 9 times
    # each (past the size where repeated pairs are routed once) load every link as the distinct pairs do, weighted
    fabric = build("rail-fat-tree", 64, radix=8, routing=routing)
    rng = np.random.default_rng(5)
    distinct = np.unique(rng.integers(0, 64, size=(1200, 2)), axis=0)[:1000]
    times = rng.integers(1, 10, size=len(distinct))
    repeated = np.repeat(distinct, times, axis=0)
    rng.shuffle(repeated)
    assert len(repeated) > 4096
    links, load = fabric.links_of(repeated)
    expected = np.zeros(fabric.links)
    for (src, dst), k in zip(distinct.tolist(), times.tolist(), strict=True):  # one pair at a time
        one_links, one_load = fabric.links_of(np.array([[src, dst]]))
        expected[one_links] += k * np.asarray(one_load, dtype=float)
    assert np.array_equal(links, np.flatnonzero(expected))
    np.testing.assert_allclose(load, expected[links], rtol=1e-12)
    latency_s = {(s, d): fabric.path_latency_s(s, d) for s, d in distinct.tolist()}
    np.testing.assert_allclose(fabric.pair_latencies_s(repeated), [latency_s[(s, d)] for s, d in repeated.tolist()],
                               rtol=1e-12)


def test_access_links_of_parts_are_the_whole_flows_every_route_of_the_part_takes():
    # per part, the access links (GPU -> PCIe -> NIC -> leaf and back down, or NVLink inside a node) carry whole
    # flows on every shortest path, so they appear in the part's whole route with the same load, and nothing else
    fabric = build("rail-fat-tree", 64, radix=8)
    rng = np.random.default_rng(7)
    pairs = rng.integers(0, 64, size=(300, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    part = rng.integers(0, 12, size=len(pairs))
    whole_part, whole_links, whole_load = fabric.links_of_parts(pairs, part)
    whole = dict(zip(zip(whole_part.tolist(), whole_links.tolist(), strict=True), whole_load.tolist(), strict=True))
    access_part, access_links, access_load = fabric.access_links_of_parts(pairs, part)
    assert {fabric.link_class[int(k)] for k in access_links} <= {"nvlink", "pcie", "nic"}
    for key, load in zip(zip(access_part.tolist(), access_links.tolist(), strict=True), access_load.tolist(),
                         strict=True):
        assert whole[key] == load
    kept = {(p, k) for (p, k) in whole if fabric.link_class[k] in ("nvlink", "pcie", "nic")}
    assert kept == set(zip(access_part.tolist(), access_links.tolist(), strict=True))


def test_ring_on_a_two_tier_rail_fabric_runs_at_nic_rate_under_adaptive_routing():
    # 32 servers, one leaf per rail: the ring's 32 node-crossing flows all go rail 7 -> rail 0 over 32 spines
    gpus, size_bytes = 256, 1e8
    ring = np.stack([np.arange(gpus), (np.arange(gpus) + 1) % gpus], axis=1)
    cross_rail_s = 2 * PCIE5.latency + 2 * CX7.latency + 3 * NDR_HOP_S
    finish_s = {}
    for routing in ("adaptive", "ecmp"):
        net = FlowNetwork(build("rail-fat-tree", gpus, routing=routing))
        net.start(TransferClass(ring, size_bytes), 0.0)
        finish_s[routing] = net.next_completion_s()
    assert finish_s["adaptive"] == pytest.approx(size_bytes / CX7.rate + cross_rail_s, rel=1e-9)
    assert finish_s["ecmp"] >= 2 * size_bytes / CX7.rate       # collisions: at most half the NIC rate


def test_scenario_sets_the_routing_of_a_fabric_file_and_other_options_are_refused(tmp_path):
    path = str(REPO / "topologies" / "two-servers-one-switch.yaml")
    assert build(path, 8, gpus_per_node=4).routing == "ecmp"   # a single switch: no switch-to-switch links
    assert build(path, 8, gpus_per_node=4, routing="adaptive").routing == "adaptive"
    with pytest.raises(ScenarioError) as err:
        build(path, 8, gpus_per_node=4, radix=8)
    assert err.value.field == "cluster.topology_options.radix"
    with pytest.raises(ScenarioError) as err:
        build(path, 8, gpus_per_node=4, routing="random")
    assert err.value.field == "cluster.topology_options.routing"


def test_fabric_file_with_infiniband_between_switches_defaults_to_adaptive(tmp_path):
    data = {"nodes": {"g0": "gpu", "g1": "gpu", "s0": "switch", "s1": "switch", "t0": "switch",
                      "t1": "switch"},
            "defaults": {"bandwidth": "400 Gb/s", "kind": "ib"},
            "links": [{"ends": ["g0", "s0"]}, {"ends": ["g1", "s1"]}, {"ends": ["s0", "t0"]},
                      {"ends": ["s0", "t1"]}, {"ends": ["s1", "t0"]}, {"ends": ["s1", "t1"]}]}
    fabric = build(write(tmp_path, data), 2, gpus_per_node=1)
    assert fabric.routing == "adaptive"
    load = load_on(fabric, [[0, 1]])
    np.testing.assert_allclose(load[role_links(fabric, "switch", "switch", "s0")[:2]], 0.5)
    data["defaults"]["kind"] = "ethernet"
    assert build(write(tmp_path, data), 2, gpus_per_node=1).routing == "ecmp"


def test_out_of_range_gpu_is_a_clear_error():
    fabric = build("nvswitch-node", 8)
    with pytest.raises(ScenarioError, match="GPU 8"):
        fabric.path_links(0, 8)


def test_from_scenario_builds_the_scenario_cluster():
    scenario = config.load()
    fabric = topology.from_scenario(scenario)
    assert fabric.gpus == scenario.cluster.gpus
    assert fabric.gpus_per_node == scenario.cluster.gpus_per_node


# ---- options and files: clear errors ----------------------------------------------------------------

def test_unknown_topology_and_option_name_the_field():
    with pytest.raises(ScenarioError) as err:
        build("mesh-of-dreams", 8)
    assert err.value.field == "cluster.topology"
    with pytest.raises(ScenarioError) as err:
        build("leaf-spine", 16, oversubscripton=4)
    assert err.value.field == "cluster.topology_options.oversubscripton"
    with pytest.raises(ScenarioError) as err:
        build("torus", 16, dims=[4, 3])
    assert err.value.field == "cluster.topology_options.dims"
    with pytest.raises(ScenarioError) as err:
        build("torus", 16, link="400 GB")
    assert err.value.field == "cluster.topology_options.link"


def test_shipped_yaml_fabric_loads_and_routes():
    fabric = build(str(REPO / "topologies" / "two-servers-one-switch.yaml"), 8, gpus_per_node=4)
    assert fabric.gpus == 8
    assert {fabric.link_kind[k] for k in fabric.path_links(0, 3)} == {"nvlink"}
    links = fabric.path_links(0, 5)
    assert fabric.link_bytes_per_s[links].min() == pytest.approx(400e9 / 8)
    # link latency 0 + NIC 1 us in, switch 600 ns, NIC 1 us in, GPU 0 in
    assert fabric.path_latency_s(0, 5) == pytest.approx(2.6e-6)


def test_shipped_graphml_fabric_loads_and_routes():
    fabric = build(str(REPO / "topologies" / "four-gpus-one-switch.graphml"), 4, gpus_per_node=2)
    links = fabric.path_links(0, 3)
    assert len(links) == 4
    assert fabric.link_bytes_per_s[links].min() == pytest.approx(400e9 / 8)


def test_graphml_export_round_trips_routes(tmp_path):
    fabric = build("leaf-spine", 16, hosts_per_leaf=8, oversubscription=2)
    path = tmp_path / "fabric.graphml"
    topology.write_graphml(fabric, path)
    again = build(str(path), 16)
    for src, dst in [(0, 1), (0, 8), (3, 12), (15, 0)]:
        assert again.path_latency_s(src, dst) == pytest.approx(fabric.path_latency_s(src, dst))
        assert again.link_bytes_per_s[again.path_links(src, dst)].min() == pytest.approx(
            fabric.link_bytes_per_s[fabric.path_links(src, dst)].min())


GOOD = {
    "nodes": {"g0": "gpu", "g1": "gpu", "sw": {"role": "switch", "latency": "100 ns"}},
    "links": [{"ends": ["g0", "sw"], "bandwidth": "100 Gb/s"},
              {"ends": ["g1", "sw"], "bandwidth": "100 Gb/s"}],
}


def write(tmp_path, data) -> str:
    path = tmp_path / "fabric.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_minimal_yaml_fabric_has_the_declared_capacity_and_latency(tmp_path):
    fabric = build(write(tmp_path, GOOD), 2, gpus_per_node=1)
    assert fabric.link_bytes_per_s[fabric.path_links(0, 1)].tolist() == [12.5e9, 12.5e9]
    assert fabric.path_latency_s(0, 1) == pytest.approx(100e-9)


@pytest.mark.parametrize(("edit", "key", "words"), [
    (lambda d: d["links"][1].pop("bandwidth"), "links[1].bandwidth", "missing bandwidth"),
    (lambda d: d["nodes"].update(g2="gpu"), "nodes.g2", "dangling GPU"),
    (lambda d: (d["nodes"].update(g2="gpu", g3="gpu"),
                d["links"].append({"ends": ["g2", "g3"], "bandwidth": "1 GB/s"})), "links", "disconnected"),
    (lambda d: d["nodes"].update(sw="router"), "nodes.sw.role", "unknown role"),
    (lambda d: d["links"][0].update(bandwith="1 GB/s"), "links[0].bandwith", "unknown key"),
    (lambda d: d["links"][0].update(bandwidth=100), "links[0].bandwidth", "ambiguous"),
    (lambda d: d["links"][0].update(ends=["g0", "nowhere"]), "links[0].ends", "not declared"),
    (lambda d: d["links"][0].update(kind="carrier-pigeon"), "links[0].kind", "unknown link kind"),
])
def test_bad_fabric_file_names_the_file_and_the_key(tmp_path, edit, key, words):
    import copy

    data = copy.deepcopy(GOOD)
    edit(data)
    path = write(tmp_path, data)
    with pytest.raises(ScenarioError) as err:
        build(path, 2, gpus_per_node=1)
    assert err.value.field == f"{path}:{key}"
    assert words in err.value.message
    assert "\n" not in str(err.value)


def test_gpu_reachable_only_through_another_gpu_is_rejected(tmp_path):
    data = {"nodes": {"g0": "gpu", "g1": "gpu", "g2": "gpu", "sw": "switch"},
            "links": [{"ends": ["g0", "sw"], "bandwidth": "1 GB/s"},
                      {"ends": ["g1", "sw"], "bandwidth": "1 GB/s"},
                      {"ends": ["g1", "g2"], "bandwidth": "1 GB/s"}]}
    with pytest.raises(ScenarioError, match="no route"):
        build(write(tmp_path, data), 3, gpus_per_node=1)


def test_file_with_other_gpu_count_than_cluster_is_rejected(tmp_path):
    with pytest.raises(ScenarioError, match="2 GPUs but the cluster has 4"):
        build(write(tmp_path, GOOD), 4, gpus_per_node=1)


def test_unreadable_graphml_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.graphml"
    path.write_text("<graphml><oops")
    with pytest.raises(ScenarioError) as err:
        build(str(path), 2)
    assert err.value.field == str(path)


def test_small_pair_arrays_return_the_same_cached_arrays_and_empty_arrays_route_nowhere():
    # the flow model keys its rate solutions on route identity: the same pipeline pairs must give the same arrays
    fabric = topology.build("rail-fat-tree", gpus=64, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                            nic=hardware.nic("connectx-7"))
    pairs = np.array([[0, 8], [1, 9]])
    assert fabric.links_of(pairs)[0] is fabric.links_of(pairs.copy())[0]
    links, counts = fabric.links_of(np.zeros((0, 2), dtype=np.int64))
    assert len(links) == len(counts) == 0
