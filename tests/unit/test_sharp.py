"""IB SHARP (in-network reduction in InfiniBand switches): which fabrics offer it, the bytes its trees put on each
link, its time against the closed form on an idle fabric, NCCL's choice of it, and clean refusals."""

from __future__ import annotations

import numpy as np
import pytest

from simcluster import collectives, network
from simcluster.collectives import Collective, timing
from simcluster.core import catalog
from simcluster.core.errors import ScenarioError
from simcluster.core.units import BYTES_PER_S, SECONDS, parse
from simcluster.fabric import topology
from simcluster.network.store_forward import StoreForwardNetwork
from simcluster.spec import config, hardware

H100, A100 = hardware.gpu("h100-sxm"), hardware.gpu("a100-80gb-sxm")
CX7, CX6 = hardware.nic("connectx-7"), hardware.nic("connectx-6")
NVLINK_BYTES_PER_S = 450e9  # H100 NVLink 4, per direction (datasheet)
NIC_BYTES_PER_S = 400e9 / 8  # ConnectX-7 NDR
SHARP = catalog.load("nccl")["sharp"]


def us(key: str) -> float:
    return parse(SHARP[key], SECONDS)


def build(topology_name="rail-fat-tree", gpus=32, gpus_per_node=8, gpu=H100, nic=CX7, **kwargs):
    kwargs.setdefault("sharp", "auto")  # the capability where the fabric has it (the scenario's default is off)
    return topology.build(topology_name, gpus=gpus, gpus_per_node=gpus_per_node, gpu=gpu, nic=nic, **kwargs)


def link_bytes(fabric, steps) -> np.ndarray:
    model = network.make("analytic", fabric)
    collectives.simulate(steps, model)
    return model.link_bytes


def links_between(fabric, source_role: str, target_role: str) -> dict:
    """Directed link ids from nodes of one role to nodes of another, grouped by source node."""
    out: dict = {}
    for (u, v), link in zip(fabric.link_ends, range(fabric.links), strict=True):
        if fabric.graph.nodes[u]["role"] == source_role and fabric.graph.nodes[v]["role"] == target_role:
            out.setdefault(u, []).append(link)
    return out


# ---- the capability ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kwargs", "expected"), [
    ("rail-fat-tree", {}, True),                                               # Quantum-2 NDR
    ("rail-fat-tree", {"nic": CX6}, True),                                     # Quantum HDR
    ("fat-tree", {}, True),
    ("leaf-spine", {"options": {"protocol": "infiniband"}}, True),
    ("leaf-spine", {}, False),                                                 # Ethernet/RoCE switches
    ("rail-fat-tree", {"options": {"protocol": "ethernet"}}, False),
    ("torus", {}, False),                                                      # no switches
    ("rail-fat-tree", {"sharp": "off"}, False),
])
def test_infiniband_switches_offer_sharp_unless_turned_off(name, kwargs, expected):
    assert build(name, **kwargs).sharp is expected


def test_one_nvswitch_node_and_a_100g_nic_offer_no_ib_sharp():
    assert build("nvswitch-node", gpus=8).sharp is False
    edr = hardware.NicSpec(name="edr", rate="100 Gb/s", latency="1 us")  # SHARP with NCCL needs ConnectX-6 HDR or newer
    assert build(nic=edr).sharp is False


def test_sharp_on_where_the_switches_cannot_reduce_names_the_field():
    with pytest.raises(ScenarioError) as err:
        build("leaf-spine", sharp="on")
    assert err.value.field == "cluster.sharp" and "\n" not in err.value.message
    assert build(sharp="on").sharp is True


def test_the_scenario_option_is_validated_and_reaches_the_fabric(small_scenario):
    data = {**small_scenario, "cluster": {**small_scenario["cluster"], "sharp": "sometimes"}}
    with pytest.raises(ScenarioError) as err:
        config.from_dict(data)
    assert err.value.field == "cluster.sharp"
    data["cluster"]["sharp"] = "off"
    assert config.from_dict(data).cluster.sharp == "off"
    assert topology.from_scenario(config.from_dict(data)).sharp is False
    assert config.from_dict(small_scenario).cluster.sharp == "off"  # NCCL's default: CollNet disabled


# ---- bytes on the links -----------------------------------------------------------------------------------------

def test_each_nic_sends_and_receives_s_once_where_a_ring_moves_2s_n_minus_1_over_n():
    """One GPU per node (a data-parallel group under tp = 8): SHARP's tree takes S up from every NIC and brings
    the result down once; the ring moves 2(n-1)/n S through every NIC."""
    fabric, size, group = build(gpus=64), 2**28, tuple(range(0, 64, 8))
    n = len(group)
    up = [link for links in links_between(fabric, "nic", "leaf").values() for link in links]
    down = [link for links in links_between(fabric, "leaf", "nic").values() for link in links]
    sharp = link_bytes(fabric, collectives.schedule(Collective("allreduce", group, size, algorithm="sharp"), fabric))
    ring = link_bytes(fabric, collectives.schedule(Collective("allreduce", group, size, algorithm="ring"), fabric))
    used = [link for link in up + down if sharp[link] > 0]
    assert len(used) == 2 * n
    assert sharp[used] == pytest.approx(np.full(2 * n, size), rel=1e-12)
    assert ring[used] == pytest.approx(np.full(2 * n, 2 * (n - 1) / n * size), rel=1e-12)


@pytest.mark.parametrize("gpus_per_node", [1, 2])
def test_every_tier_of_the_tree_carries_s_over_m_once_each_way(gpus_per_node):
    """A three-tier rail fat-tree of radix 4 (2 servers per leaf, 2 leaves per pod, 2 m pods): per rail, every NIC,
    every leaf's uplinks (summed over spines) and every pod's uplinks to the cores carry S/m up and S/m down --
    a reduction tree's counts -- and, with m GPUs per node, every GPU's NVLink 2(m-1)/m S each way."""
    servers = 8
    fabric = build(gpus=servers * gpus_per_node, gpus_per_node=gpus_per_node,
                   options={"radix": 4, "tiers": 3})
    size, m = 2**26, gpus_per_node
    steps = collectives.schedule(Collective("allreduce", range(fabric.gpus), size, algorithm="sharp"), fabric)
    assert steps.algorithm == ("nvls_sharp" if m > 1 else "sharp")  # H100: NVLink SHARP inside the node
    carried = link_bytes(fabric, steps)
    access = [link for u, v in (("nic", "leaf"), ("leaf", "nic")) for links in links_between(fabric, u, v).values()
              for link in links]
    assert carried[access] == pytest.approx(np.full(len(access), size / m), rel=1e-12)
    leaf_up = {leaf: carried[links].sum() for leaf, links in links_between(fabric, "leaf", "spine").items()}
    leaf_down: dict = {}
    for spine_links in links_between(fabric, "spine", "leaf").values():
        for link in spine_links:
            leaf = fabric.link_ends[link][1]
            leaf_down[leaf] = leaf_down.get(leaf, 0.0) + carried[link]
    assert len(leaf_up) == len(leaf_down) == 4 * m  # 4 groups of 2 servers, one leaf per rail
    assert list(leaf_up.values()) + list(leaf_down.values()) == pytest.approx([size / m] * 8 * m, rel=1e-12)
    pods = {}
    for (u, v), link in zip(fabric.link_ends, range(fabric.links), strict=True):
        if {fabric.graph.nodes[u]["role"], fabric.graph.nodes[v]["role"]} == {"spine", "core"}:
            pod = fabric.graph.nodes[u if fabric.graph.nodes[u]["role"] == "spine" else v]["pod"]
            up = fabric.graph.nodes[u]["role"] == "spine"
            pods[pod, up] = pods.get((pod, up), 0.0) + carried[link]
    # pods of 2 leaves (2 m pods); each of the m rail trees crosses the cores once per pod and direction
    assert len(pods) == 2 * 2 * m
    assert list(pods.values()) == pytest.approx([size] * len(pods), rel=1e-12)
    if m > 1:
        nvlink = [link for link, kind in enumerate(fabric.link_kind) if kind == "nvlink"]
        assert carried[nvlink] == pytest.approx(np.full(len(nvlink), size * (m + 1) / m), rel=1e-12)


# ---- time against the closed form -------------------------------------------------------------------------------

def _tree_path(fabric, group) -> tuple[float, int]:
    """(latency, links) of the longest path between two GPUs of the group on one rail in different nodes: up to
    the rail tree's root and down."""
    paths = [(fabric.path_latency_s(a, b), len(fabric.path_links(a, b))) for a in group for b in group
             if a % 8 == b % 8 and a // 8 != b // 8]
    return max(paths)


def _closed_form(fabric, steps, op, m, size, nvls, nvlink_bytes_per_s):
    """The closed form with the latencies of the fabric: the software remainder of NCCL's latency, the longest
    tree path and the NVLink path."""
    step = next(s for s in steps if s.transfers)
    tree_s = _tree_path(fabric, steps.collective.group)[0]
    nvlink_s = fabric.path_latency_s(0, 1) if m > 1 else 0.0
    return collectives.in_network_time_s(op, m, size, step.overhead_s, nvlink_bytes_per_s, NIC_BYTES_PER_S,
                                         nvls=nvls, nvlink_latency_s=nvlink_s, network_latency_s=tree_s)


@pytest.mark.parametrize(("op", "gpu", "stride", "size"), [
    ("allreduce", H100, 8, 2**20), ("allreduce", H100, 8, 2**30),         # 1 GPU per node: NIC-bound
    ("allreduce", H100, 1, 2**20), ("allreduce", H100, 1, 2**30),         # NVLS+SHARP, NVLink-bound
    ("allreduce", A100, 1, 2**30),                                         # CollNetDirect (no NVLS on A100)
    ("reduce_scatter", H100, 1, 2**28), ("all_gather", H100, 8, 2**28),
])
def test_three_models_agree_with_the_closed_form_on_an_idle_fabric(op, gpu, stride, size):
    fabric = build(gpus=64, gpu=gpu, nic=CX7)
    group = tuple(range(0, 64, stride))
    m = 8 // stride
    steps = collectives.schedule(Collective(op, group, size, algorithm="sharp"), fabric)
    nvls = steps.algorithm == "nvls_sharp"
    assert nvls == (gpu is H100 and m > 1 and op == "allreduce")
    expected = _closed_form(fabric, steps, op, m, size, nvls, gpu.nvlink_bandwidth)
    analytic = collectives.simulate(steps, network.make("analytic", fabric))
    flow = collectives.simulate(steps, network.make("flow", fabric))
    # 32 KiB chunks, at most 4,096 of them (a 1 GiB transfer in 256 KiB chunks): the store-and-forward bound below
    # scales with the chunk, so its share of the transfer stays that of a 128 MiB one in 32 KiB chunks, tighter than
    # the 1 MiB cases' (round 32: the suite's CPU time, 32,768 chunks a GiB cost ~20 s a case)
    chunk_bytes = max(32 * 2**10, size // 4096)
    chunk = collectives.simulate(steps, StoreForwardNetwork(fabric, chunk_bytes=chunk_bytes))
    assert analytic == pytest.approx(expected, rel=1e-9)
    assert flow == pytest.approx(expected, rel=1e-9)
    fill_s = (_tree_path(fabric, group)[1] - 1) * chunk_bytes / NIC_BYTES_PER_S  # store-and-forward pipeline fill
    assert expected * (1 - 1e-9) <= chunk <= expected + fill_s


def test_latency_is_one_tree_traversal_not_n_steps():
    """NCCL's CollNetDirect latency (tuning.cc) 2 (min(1, m-1) a_intra + (m-1) a_rank) + a_inter, whatever the
    node count; the step keeps what the fabric's longest tree path does not already charge."""
    for nodes in (4, 64):
        fabric = build(gpus=nodes * 8, gpu=A100)
        steps = collectives.schedule(Collective("allreduce", range(nodes * 8), 2**10, algorithm="sharp"), fabric)
        (step,) = [s for s in steps if s.transfers]
        tree_s = max(fabric.path_latency_s(0, 8 * k) for k in range(1, nodes))
        nccl_s = 2 * (us("direct_intra_latency") + 7 * us("direct_per_local_rank_latency")) + us("direct_inter_latency")
        assert step.overhead_s + tree_s == pytest.approx(nccl_s, rel=1e-12)
        assert step.repeat == 1


@pytest.mark.parametrize("size_bytes", [64e6, 1e9])
@pytest.mark.parametrize("stride", [1, 8])
def test_sharp_runs_in_the_engine_as_it_does_alone(size_bytes, stride):
    """The engine's one network is calibrated for rings; SHARP's classes grow by the efficiency ratio of their
    links (NVLS on NVLink, 0.95 of point-to-point on the NICs), so alone the engine takes what run() gives."""
    import simpy

    from simcluster.engine.drivers import CollectiveDriver, NetworkDriver

    fabric = build(gpus=32)
    group = tuple(range(0, 32, stride))
    alone = collectives.run(Collective("allreduce", group, size_bytes), fabric, "flow")
    assert alone.algorithm in ("sharp", "nvls_sharp")
    env = simpy.Environment()
    driver = CollectiveDriver(env, fabric, NetworkDriver(env, network.make("flow", collectives.calibrated(fabric))))
    env.process(driver.run("allreduce", [group], size_bytes))
    env.run()
    assert env.now == pytest.approx(alone.time_s, rel=1e-12)
    assert [tc.label for step in timing.engine_schedule(fabric, "allreduce", group, size_bytes)
            for tc in step.transfers][0] == "sharp network"


# ---- published figures ------------------------------------------------------------------------------------------

def test_hdr_sharp_per_nic_bandwidth_is_near_the_collnet_rule_of_thumb():
    """sjeaugey (NVIDIA/nccl#320): ~20 GB/s of CollNet algorithm bandwidth per HDR NIC. Our SHARP rate is 0.95
    (Graham et al. 2020) of the 47/50 point-to-point efficiency: 22.3 GB/s, within 15%."""
    measured = catalog.load("nccl")["measured"]["collnet_per_nic_algbw"]
    fabric = build(gpus=64, gpu=A100, nic=CX6)
    outcome = collectives.run(Collective("allreduce", range(0, 64, 8), 2**30), fabric, "analytic")
    assert outcome.algorithm == "sharp"
    assert outcome.algbw_bytes_per_s == pytest.approx(parse(measured["value"], BYTES_PER_S), rel=0.15)


# ---- NCCL's choice ----------------------------------------------------------------------------------------------

def test_auto_picks_sharp_across_nodes_above_a_size_threshold():
    """4 nodes, one GPU each: small all-reduces stay on ring/LL (NCCL's 31 us CollNet latency), large ones go to
    SHARP (half the NIC bytes); turned off, the same call is a ring or a tree."""
    fabric = build(gpus=32)
    group = tuple(range(0, 32, 8))
    small = collectives.schedule(Collective("allreduce", group, 2**10), fabric)
    large = collectives.schedule(Collective("allreduce", group, 2**28), fabric)
    assert small.algorithm in ("ring", "tree") and large.algorithm == "sharp"
    off = collectives.schedule(Collective("allreduce", group, 2**28), build(gpus=32, sharp="off"))
    assert off.algorithm in ("ring", "tree")
    both = collectives.schedule(Collective("allreduce", range(32), 2**28), fabric)
    assert both.algorithm == "nvls_sharp"  # H100 nodes: NVLink SHARP inside, IB SHARP between


def test_auto_never_picks_sharp_inside_one_node_or_for_large_reduce_scatters():
    """Inside a node there is no switch tree; reduce-scatter and all-gather already move (n-1)/n S/m per NIC, so
    SHARP (S/m at 0.95 of the NIC's rate) only helps them where latency dominates."""
    fabric = build(gpus=32)
    assert collectives.schedule(Collective("allreduce", range(8), 2**30), fabric).algorithm == "nvls"
    for op in ("reduce_scatter", "all_gather"):
        assert collectives.schedule(Collective(op, range(0, 32, 8), 2**30), fabric).algorithm == "ring"


# ---- refusals ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fabric_kwargs", "group", "words"), [
    ({"topology_name": "leaf-spine"}, range(32), "InfiniBand"),
    ({"sharp": "off"}, range(32), "InfiniBand"),
    ({}, range(8), "two nodes"),
    ({}, (0, 1, 8), "same number"),
])
def test_forcing_sharp_where_it_cannot_run_is_refused(fabric_kwargs, group, words):
    fabric = build(**fabric_kwargs)
    with pytest.raises(ScenarioError) as err:
        collectives.schedule(Collective("allreduce", group, 2**20, algorithm="sharp"), fabric)
    assert err.value.field == "algorithm" and words in err.value.message


def test_sharp_is_no_algorithm_of_all_to_all():
    with pytest.raises(ScenarioError):
        Collective("alltoall", range(16), 2**20, algorithm="sharp")


# ---- in a training step -----------------------------------------------------------------------------------------

def test_data_parallel_all_reduce_uses_sharp_in_the_engine_and_collapsed_equals_expanded(small_scenario):
    """tp 8 on 4 nodes: every data-parallel group has one GPU per node, its 25 MB gradient buckets go to SHARP
    (S per NIC instead of a ring's 1.5 S), so the exposed reduction shrinks by that ratio; the symmetry collapse
    still holds."""
    from simcluster.engine import simulate

    data = {**small_scenario, "cluster": {**small_scenario["cluster"], "nodes": 4},
            "parallelism": {"tp": 8, "pp": 1, "dp": 4, "zero_stage": 0, "overlap_grad_reduce": False}}
    runs = {}
    for mode in ("auto", "off"):
        data["cluster"]["sharp"] = mode
        runs[mode] = simulate(config.from_dict(data)).summary
    dp = {mode: summary["exposed_comm_by_parallelism_s"]["dp"] for mode, summary in runs.items()}
    # bandwidth-bound: S per NIC at 0.95 of the point-to-point rate against a ring's 2(n-1)/n S = 1.5 S
    assert dp["auto"] / dp["off"] == pytest.approx(1 / (1.5 * SHARP["bandwidth_fraction_of_point_to_point"]),
                                                   rel=0.03)
    data["cluster"]["sharp"] = "auto"
    expanded = simulate(config.from_dict(data), expand=True).summary
    assert expanded["step_time_s"] == pytest.approx(runs["auto"]["step_time_s"], rel=1e-9)


def test_the_collective_command_forces_sharp_or_refuses_in_one_line(cli):
    code, out, _ = cli("collective", "--gpus", "32", "--algorithm", "sharp", "--min-bytes", "1M", "--max-bytes", "1M",
                       "--json")
    assert code == 0 and '"algorithm": "nvls_sharp"' in out
    for args, field in ((("--topology", "leaf-spine", "--algorithm", "sharp"), "--algorithm"),
                        (("--sharp", "on", "--topology", "leaf-spine"), "--sharp"),
                        (("--sharp", "sometimes"), "--sharp")):
        code, _, err = cli("collective", "--gpus", "32", "--max-bytes", "1M", *args)
        assert code == 2 and err.strip().count("\n") == 0 and field in err, (args, err)


def test_nvlink_sharp_prices_its_nvls_bytes_for_the_groups_gpu(monkeypatch):
    """The NVLS bound inside the node depends on the GPU's NVLink generation (``nccl.nvls_bytes``): in-network
    reductions with NVLink SHARP pass the GPU through as ``algorithms.nvls`` does, not the default generation's."""
    from simcluster.collectives import algorithms, nccl

    seen, real = [], nccl.nvls_bytes
    monkeypatch.setattr(nccl, "nvls_bytes", lambda size, n, gpu=None: seen.append(gpu) or real(size, n, gpu))
    b200 = hardware.gpu("b200")
    layout = [np.arange(0, 8), np.arange(8, 16)]
    nccl.sharp_bytes("allreduce", 1e9, 8, True, b200)
    algorithms.sharp("allreduce", layout, 1e9, True, b200)
    assert seen == [b200, b200]
