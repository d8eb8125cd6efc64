"""Collective schedules, closed forms and the driver, checked against hand-computed alpha-beta costs."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

from simcluster import collectives, network
from simcluster.collectives import Collective, timing
from simcluster.core import catalog
from simcluster.core.errors import ScenarioError
from simcluster.core.units import SECONDS, parse
from simcluster.fabric import topology
from simcluster.network.analytic import AnalyticNetwork
from simcluster.network.store_forward import StoreForwardNetwork
from simcluster.spec import hardware

H100, A100 = hardware.gpu("h100-sxm"), hardware.gpu("a100-80gb-sxm")
CX7 = hardware.nic("connectx-7")
NVLINK_BYTES_PER_S = 450e9  # H100 NVLink 4, per direction (datasheet)
NIC_BYTES_PER_S = 400e9 / 8  # ConnectX-7 NDR


@pytest.fixture(scope="module")
def node8():
    return topology.build("nvswitch-node", gpus=8, gpus_per_node=8, gpu=H100, nic=CX7)


@pytest.fixture(scope="module")
def rail32():
    return topology.build("rail-fat-tree", gpus=32, gpus_per_node=8, gpu=H100, nic=CX7)


def nccl(protocol: str, key: str) -> float:
    return parse(catalog.load("nccl")["protocols"][protocol][key], SECONDS)


def test_busbw_factors_are_those_of_nccl_tests():
    written = catalog.load("nccl")["busbw_factor"]  # the formulas as nccl-tests' PERFORMANCE.md writes them
    for op, formula in written.items():
        for n in (2, 8, 1000):
            expected = (
                eval(formula.replace("(n", "*(n").lstrip("*"), {"n": n}) if "n" in formula else float(formula)
            )
            assert collectives.busbw_factor(op, n) == pytest.approx(expected), (op, n)


def test_ring_allreduce_closed_form():
    n, size, alpha, rate = 16, 1e9, 5e-6, 100e9
    expected = 2 * (n - 1) * alpha + 2 * (n - 1) / n * size / rate
    assert collectives.alpha_beta_time_s("allreduce", "ring", n, size, alpha, rate) == pytest.approx(expected)


def test_ring_is_one_step_repeated_2n_minus_2_times_with_s_over_n_per_rank(node8):
    size = 8 * 2**20
    steps = collectives.schedule(Collective("allreduce", range(8), size, algorithm="ring"), node8)
    moving = [step for step in steps if step.transfers]
    assert len(moving) == 1 and moving[0].repeat == 2 * 7
    (ring,) = moving[0].transfers
    assert ring.size_bytes == pytest.approx(size / 8)
    assert sorted(ring.pairs[:, 0]) == list(range(8)) and sorted(ring.pairs[:, 1]) == list(range(8))


def test_multi_node_ring_runs_one_channel_per_rail(rail32):
    size = 2**30
    steps = collectives.schedule(Collective("allreduce", range(32), size, algorithm="ring"), rail32)
    (step,) = [s for s in steps if s.transfers]
    nvlink, net = step.transfers
    # the network hop stays on its rail (local rank kept), every GPU sends and receives once, S/(n m) each
    assert np.all(net.pairs[:, 0] % 8 == net.pairs[:, 1] % 8)
    assert np.all(net.pairs[:, 0] // 8 != net.pairs[:, 1] // 8)
    assert sorted(net.pairs[:, 0]) == list(range(32)) and sorted(net.pairs[:, 1]) == list(range(32))
    assert net.size_bytes == pytest.approx(size / 32 / 8)
    assert np.all(nvlink.pairs[:, 0] // 8 == nvlink.pairs[:, 1] // 8) and nvlink.size_bytes == pytest.approx(
        size / 32
    )


MIN_SLICE_BYTES = 32 * 2**10   # NCCL prims_simple.h genericOp: sliceSize/32, sliceSize = 4 MiB / 8 steps x 2 steps


def _hidden_s(op: str, n: int, per_node: int, size: float, bytes_per_s: float, channels: int | None = None) -> float:
    """What a Simple ring's repeats after the first save behind their sliced transfers, from NCCL's rules alone: a
    step's chunk, S/n over ``channels`` (inside a node: one per GPU of the node), goes as two slices, the first
    max(half of it, 32 KiB) (all of it below 32 KiB); a step waits L plus its first slice's share of the transfer
    c = S/n / B, so min(L, c (1 - first/chunk)) of L hides. L: tuning.cc's per-step latency spread over the steps."""
    nodes = n // per_node
    steps = 2 * (n - 1) if op == "allreduce" else n - 1
    inter = (2 * (nodes - 1) if op == "allreduce" else nodes - 1) if nodes > 1 else 0
    latency = ((steps - inter) * nccl("Simple", "nvlink_step_latency")
               + inter * nccl("Simple", "network_step_latency")) / steps
    c = size / n / bytes_per_s
    chunk = size / n / (channels or per_node)
    first = min(chunk, max(chunk / 2, MIN_SLICE_BYTES))
    return (steps - 1) * min(latency, c * (1 - first / chunk))


def test_ring_allreduce_on_one_node_matches_alpha_beta(node8):
    n, size = 8, 256 * 2**20
    call = Collective("allreduce", range(n), size, algorithm="ring", protocol="Simple")
    elapsed = collectives.simulate(call, network.make("analytic", node8))
    path_s = node8.path_latency_s(0, 1)
    alpha = max(
        nccl("Simple", "nvlink_step_latency"), path_s
    )  # NCCL's per-step latency includes the hardware's
    expected = nccl("Simple", "base_latency") + collectives.alpha_beta_time_s(
        "allreduce", "ring", n, size, alpha, NVLINK_BYTES_PER_S
    ) - _hidden_s("allreduce", n, n, size, NVLINK_BYTES_PER_S)
    assert elapsed == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("size", [64 * 2**10, 32 * 2**20])
def test_three_models_agree_with_the_closed_form_on_one_node(node8, n, size):
    call = Collective("allreduce", range(n), size, algorithm="ring", protocol="Simple")
    chunk_bytes = 64 * 2**10
    path_s = node8.path_latency_s(0, 1)
    alpha = max(nccl("Simple", "nvlink_step_latency"), path_s)
    expected = nccl("Simple", "base_latency") + collectives.alpha_beta_time_s(
        "allreduce", "ring", n, size, alpha, NVLINK_BYTES_PER_S
    ) - _hidden_s("allreduce", n, n, size, NVLINK_BYTES_PER_S)
    # store and forward over 2 hops (GPU -> NVSwitch -> GPU) adds at most one chunk time per step
    chunk_slack = 2 * (n - 1) * min(chunk_bytes, size / n) / NVLINK_BYTES_PER_S
    times = {
        name: collectives.simulate(call, model)
        for name, model in (
            ("analytic", network.make("analytic", node8)),
            ("flow", network.make("flow", node8)),
            ("chunk", StoreForwardNetwork(node8, chunk_bytes=chunk_bytes)),
        )
    }
    assert times["analytic"] == pytest.approx(expected, rel=1e-9)
    assert times["flow"] == pytest.approx(expected, rel=1e-6)
    assert expected <= times["chunk"] * (1 + 1e-9) and times["chunk"] <= expected + chunk_slack * (1 + 1e-9)


@pytest.mark.parametrize("size", [8 * 2**20, 512 * 2**20])
def test_three_models_agree_with_the_closed_form_across_nodes(rail32, size):
    """32 GPUs on 4 nodes: each ring step's network class (S/n/8 per NIC, 8 rails) is the bottleneck in both
    latency and bandwidth (8 x 50 GB/s of NICs < 450 GB/s of NVLink), so alpha = the inter-node path latency
    (or NCCL's per-step latency when larger) and B = 8 NICs."""
    n, m = 32, 8
    call = Collective("allreduce", range(n), size, algorithm="ring", protocol="Simple")
    steps = collectives.schedule(call, rail32)
    (step,) = [s for s in steps if s.transfers]
    net = step.transfers[1]
    inter_s = max(rail32.path_latency_s(int(a), int(b)) for a, b in net.pairs)
    alpha = step.overhead_s + inter_s
    expected = nccl("Simple", "base_latency") + collectives.alpha_beta_time_s(
        "allreduce", "ring", n, size, alpha, m * NIC_BYTES_PER_S
    ) - _hidden_s("allreduce", n, m, size, m * NIC_BYTES_PER_S, channels=16)  # 3 x 8 H100 over NDR: nccl#1453
    chunk_bytes = 32 * 2**10
    hops = max(len(rail32.path_links(int(a), int(b))) for a, b in net.pairs)
    chunk_slack = 2 * (n - 1) * (hops - 1) * chunk_bytes / NIC_BYTES_PER_S
    analytic = collectives.simulate(steps, network.make("analytic", rail32))
    flow = collectives.simulate(steps, network.make("flow", rail32))
    chunk = collectives.simulate(steps, StoreForwardNetwork(rail32, chunk_bytes=chunk_bytes))
    assert analytic == pytest.approx(expected, rel=1e-9)
    assert flow == pytest.approx(expected, rel=1e-6)
    assert expected * (1 - 1e-9) <= chunk <= expected + chunk_slack


def test_repeated_ring_steps_are_solved_once(rail32):
    class Counting(AnalyticNetwork):
        starts = 0

        def start(self, transfers, now_s):
            Counting.starts += 1
            return super().start(transfers, now_s)

    model = Counting(rail32)
    call = Collective("allreduce", range(32), 2**26, algorithm="ring")
    collectives.simulate(call, model)
    assert Counting.starts == 2  # one NVLink class + one network class, for all 62 steps
    # ... yet every link is charged for all 62 steps: the network class moves S/(n m) per NIC per step
    nic_links = [i for i, kind in enumerate(rail32.link_kind) if kind == "ib"]
    assert model.link_bytes[nic_links].max() == pytest.approx(62 * 2**26 / 32 / 8)


def test_nvls_moves_s_times_n_plus_1_over_n_per_gpu_in_one_step(node8):
    size = 2**30
    steps = collectives.schedule(Collective("allreduce", range(8), size, algorithm="nvls"), node8, gpu=H100)
    (step,) = [s for s in steps if s.transfers]
    assert step.repeat == 1 and step.transfers[0].size_bytes == pytest.approx(size * 9 / 8)


def test_auto_picks_ring_ll_for_tiny_and_nvls_for_large_messages_on_h100(node8):
    tiny = collectives.schedule(Collective("allreduce", range(8), 128), node8, gpu=H100)
    large = collectives.schedule(Collective("allreduce", range(8), 2**30), node8, gpu=H100)
    assert (tiny.algorithm, tiny.protocol) == ("ring", "LL")
    assert (large.algorithm, large.protocol) == ("nvls", "Simple")
    no_nvls = collectives.schedule(Collective("allreduce", range(8), 2**30), node8, gpu=A100)
    assert no_nvls.algorithm != "nvls"


def test_auto_prefers_the_tree_at_scale_for_medium_messages():
    """NCCL's model: a ring pays 2(n-1) step latencies, a tree 2 log2(nodes): at 256 GPUs, 1 MiB, tree wins
    (without IB SHARP, which would beat both: tests/unit/test_sharp.py).
    """
    fabric = topology.build("rail-fat-tree", gpus=256, gpus_per_node=8, gpu=H100, nic=CX7, sharp="off")
    assert collectives.schedule(Collective("allreduce", range(256), 2**20), fabric).algorithm == "tree"
    assert collectives.schedule(Collective("allreduce", range(256), 8 * 2**30), fabric).algorithm == "ring"


@pytest.mark.parametrize("op", ["reduce_scatter", "all_gather"])
def test_ring_reduce_scatter_and_all_gather_take_n_minus_1_steps(node8, op):
    size = 2**28
    call = Collective(op, range(8), size, algorithm="ring", protocol="Simple")
    elapsed = collectives.simulate(call, network.make("analytic", node8))
    alpha = max(nccl("Simple", "nvlink_step_latency"), node8.path_latency_s(0, 1))
    expected = nccl("Simple", "base_latency") + collectives.alpha_beta_time_s(
        op, "ring", 8, size, alpha, NVLINK_BYTES_PER_S
    ) - _hidden_s(op, 8, 8, size, NVLINK_BYTES_PER_S)
    assert elapsed == pytest.approx(expected, rel=1e-9)


def test_alltoall_sends_s_over_n_to_every_peer_at_once(node8):
    size = 2**28
    steps = collectives.schedule(Collective("alltoall", range(8), size, protocol="Simple"), node8)
    (step,) = [s for s in steps if s.transfers]
    assert len(step.transfers[0].pairs) == 8 * 7 and step.transfers[0].size_bytes == pytest.approx(size / 8)
    elapsed = collectives.simulate(steps, network.make("analytic", node8))
    alpha = step.overhead_s + node8.path_latency_s(0, 1)
    expected = nccl("Simple", "base_latency") + collectives.alpha_beta_time_s(
        "alltoall", "direct", 8, size, alpha, NVLINK_BYTES_PER_S
    )
    assert elapsed == pytest.approx(expected, rel=1e-9)


def test_pipelined_broadcast_approaches_s_over_b(node8):
    size = 2**30
    elapsed = collectives.simulate(
        Collective("broadcast", range(8), size, protocol="Simple"), network.make("analytic", node8)
    )
    assert size / NVLINK_BYTES_PER_S < elapsed < 1.1 * size / NVLINK_BYTES_PER_S


def test_sendrecv_is_one_transfer(rail32):
    size = 2**28
    elapsed = collectives.simulate(
        Collective("sendrecv", [0, 9], size, protocol="Simple"), network.make("analytic", rail32)
    )
    assert elapsed == pytest.approx(
        nccl("Simple", "base_latency")
        + max(nccl("Simple", "network_step_latency"), rail32.path_latency_s(0, 9))
        + size / NIC_BYTES_PER_S,
        rel=1e-9,
    )


def test_hierarchical_costs_its_three_phases(rail32):
    size, m, nodes = 2**30, 8, 4
    call = Collective("allreduce", range(32), size, algorithm="hierarchical", protocol="Simple")
    elapsed = collectives.simulate(call, network.make("analytic", rail32))
    intra_alpha = max(nccl("Simple", "nvlink_step_latency"), rail32.path_latency_s(0, 1))
    inter_alpha = max(nccl("Simple", "network_step_latency"), rail32.path_latency_s(0, 8))
    expected = (
        nccl("Simple", "base_latency")
        + 2 * ((m - 1) * intra_alpha + (m - 1) / m * size / NVLINK_BYTES_PER_S)
        + collectives.alpha_beta_time_s("allreduce", "ring", nodes, size / m, inter_alpha, NIC_BYTES_PER_S)
    )
    assert elapsed == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("count", [2, 6, 8, 32, 100])
def test_double_binary_tree_leaves_of_one_tree_are_inner_nodes_of_the_other(count):
    from simcluster.collectives.algorithms import balanced_tree_parents

    parents = balanced_tree_parents(count)
    assert (parents == -1).sum() == 1  # one root, and every other unit reaches it
    for unit in range(count):
        hops = 0
        while parents[unit] >= 0 and hops <= count:
            unit, hops = parents[unit], hops + 1
        assert hops <= math.ceil(math.log2(count)) + 1
    inner = {int(p) for p in parents if p >= 0}
    leaves = set(range(count)) - inner
    mirrored_leaves = {count - 1 - leaf for leaf in leaves}  # tree B mirrors tree A (even count)
    assert not leaves & mirrored_leaves
    assert all(len(np.flatnonzero(parents == u)) <= 2 for u in range(count))  # binary


def test_merge_runs_disjoint_groups_as_one_schedule(rail32):
    groups = [list(range(k, 32, 8)) for k in range(8)]  # the 8 rails, one GPU per node each
    schedules = [
        collectives.schedule(Collective("allreduce", g, 2**26, algorithm="ring"), rail32) for g in groups
    ]
    merged = collectives.merge(schedules)
    assert len(merged) == len(schedules[0])
    moving = [s for s in merged if s.transfers]
    assert len(moving[0].transfers[0].pairs) == 32


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"op": "allsum"}, "op"),
        ({"algorithm": "butterfly"}, "algorithm"),
        ({"op": "all_gather", "algorithm": "tree"}, "algorithm"),
        ({"protocol": "LL64"}, "protocol"),
        ({"size_bytes": -1.0}, "size"),
    ],
)
def test_bad_collectives_raise_scenario_errors(kwargs, field):
    args = {"op": "allreduce", "group": range(8), "size_bytes": 1024.0, **kwargs}
    with pytest.raises(ScenarioError) as err:
        Collective(**args)
    assert err.value.field == field


def test_nvls_across_nodes_is_refused(rail32):
    with pytest.raises(ScenarioError, match="one NVSwitch domain"):
        collectives.schedule(Collective("allreduce", range(16), 2**20, algorithm="nvls"), rail32, gpu=H100)


def test_empty_or_single_gpu_collectives_take_no_time(node8):
    assert collectives.simulate(Collective("allreduce", [3], 2**20), network.make("flow", node8)) == 0.0
    assert collectives.simulate(Collective("allreduce", range(8), 0), network.make("flow", node8)) == 0.0
    assert math.isfinite(collectives.run(Collective("alltoall", range(8), 8), node8, "flow").time_s)


def test_rail_fabric_beats_a_4_to_1_leaf_spine_by_the_ecmp_collision_factor():
    """256 GPUs (32 nodes), 8 GiB ring allreduce, flow model, NCCL-calibrated.

    Expected ratio and why: every ring step, the last node under each leaf sends its 8 channel flows (one per
    NIC, S/(8n) each) to the first node under the next leaf. On the rail fat-tree they stay on their rails and
    never share a cable, so the ring runs at its NVLink/NIC bound. On the 4:1 leaf-spine a leaf keeps 32 x 50
    / 4 = 400 GB/s of uplinks for those 8 flows (8 cables of 50 GB/s): just enough if ECMP spread them evenly,
    but hash-based ECMP puts up to L of them on one cable, and the class goes at its slowest member's 47/L
    GB/s. Bandwidth-bound, the leaf-spine is therefore L times slower (NVLink-bound rail ring: 370 vs 8 x 47 =
    376 GB/s, a 2% correction), L read from the fabric's routes. L >= 2 for 8 flows hashed on 8 cables (balls
    in bins).
    """
    from simcluster.collectives.algorithms import ring_transfers

    gpus, size = 256, 8 * 2**30
    rail = topology.build("rail-fat-tree", gpus=gpus, gpus_per_node=8, gpu=H100, nic=CX7)
    leaf_spine = topology.build(
        "leaf-spine", gpus=gpus, gpus_per_node=8, gpu=H100, nic=CX7, options={"oversubscription": 4}
    )
    call = Collective("allreduce", range(gpus), size, algorithm="ring", protocol="Simple")
    rail_s = collectives.run(call, rail, "flow").time_s
    leaf_s = collectives.run(call, leaf_spine, "flow").time_s
    layout = [np.arange(node * 8, node * 8 + 8) for node in range(gpus // 8)]
    network_hop = ring_transfers(layout, 1.0)[1]
    links, counts = leaf_spine.links_of(network_hop.pairs)
    collisions = int(counts[np.array([leaf_spine.link_kind[k] == "ethernet" for k in links])].max())
    assert collisions >= 2
    assert leaf_s / rail_s == pytest.approx(collisions * 370 / 376, rel=0.1)


@pytest.mark.parametrize("name,options", [("rail-fat-tree", {}), ("leaf-spine", {"oversubscription": 4}),
                                          ("torus", {})])
def test_schedules_built_once_per_kind_of_group_equal_each_group_built_alone(name, options):
    """The engine builds one group's steps and moves them to the groups that sit alike; the result must be what
    building every group alone and merging gives (pairs, parts, bytes, labels, latencies)."""
    from simcluster.collectives import merge

    fab = topology.build(name, gpus=64, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                         nic=hardware.nic("connectx-7"), options=options)
    layouts = ([tuple(range(i, i + 8)) for i in range(0, 64, 8)], [tuple(range(i, 64, 8)) for i in range(8)],
               [tuple(range(i, i + 16)) for i in range(0, 64, 16)], [tuple(range(64))])
    for groups in layouts:
        for op in ("allreduce", "all_gather", "reduce_scatter"):
            for size in (4.0, 1e5, 1e8):
                moved = timing.engine_schedules(fab, op, groups, size)
                alone = merge([timing.engine_schedule(fab, op, g, size) for g in groups])
                assert len(moved) == len(alone) > 0
                for a, b in zip(moved, alone, strict=True):
                    assert a.repeat == b.repeat and a.overhead_s == pytest.approx(b.overhead_s, rel=1e-12, abs=1e-18)
                    for ta, tb in zip(a.transfers, b.transfers, strict=True):
                        assert np.array_equal(ta.pairs, tb.pairs) and ta.size_bytes == tb.size_bytes
                        assert ta.label == tb.label and ta.part_count == tb.part_count
                        assert (ta.parts is None) == (tb.parts is None)
                        assert ta.parts is None or np.array_equal(ta.parts, tb.parts)


def test_a_fabric_timed_once_is_freed_with_its_calibrated_views():
    # the views are cached per fabric, yet refer to it: the cache must not keep every fabric a process made alive
    import gc
    import weakref

    fabric = topology.build("rail-fat-tree", gpus=16, gpus_per_node=8, gpu=H100, nic=CX7)
    view = timing.calibrated_view(fabric)
    assert timing.calibrated_view(fabric) is view and timing.calibrated_view(view) is view  # made once
    assert timing.isolated_time_s(fabric, "allreduce", tuple(range(16)), 1e8) > 0
    alive = weakref.ref(fabric)
    del fabric, view
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("algorithm,protocol", [("ring", "Simple"), ("tree", "LL128"), ("nvls", "Simple")])
def test_calibrated_capacities_are_each_links_line_rate_times_its_familys_efficiency(algorithm, protocol):
    """The calibrated view reads each link's kind from the fabric's kind codes; every link must get its own kind's
    efficiency, as a link-by-link reading of ``link_kind`` gives (rail fabric: NVLink, PCIe and network links)."""
    from simcluster.collectives import nccl

    fabric = topology.build("rail-fat-tree", gpus=32, gpus_per_node=8, gpu=H100, nic=CX7)
    view = nccl.calibrated(fabric, algorithm, protocol)
    truth = np.array([rate * nccl.efficiency(algorithm, protocol, nccl.link_family(kind))
                      for rate, kind in zip(fabric.link_bytes_per_s.tolist(), fabric.link_kind, strict=True)])
    assert len(set(fabric.link_kind)) >= 3
    assert np.array_equal(view.link_bytes_per_s, truth)


def _kinds_one_group_at_a_time(groups, fabric):
    """The kinds of ``schedule._kinds`` the direct way: per group, its nodes' pattern of first appearance and the
    paths ``_steps`` samples inside and across nodes (its own ``_layout`` and ``_sample_path``)."""
    schedule_module = importlib.import_module("simcluster.collectives.schedule")   # the package names a function so
    by_key: dict = {}
    for group in groups:
        group = tuple(int(g) for g in group)
        server = fabric.gpu_attr("server")
        nodes = [int(server[g]) for g in group]
        first: dict = {}
        pattern = tuple(first.setdefault(node, len(first)) for node in nodes)
        layout = schedule_module._layout(group, fabric, nodes)
        paths = []
        for across in (False, True):
            if across:
                ends = (layout[0][0], layout[1][0]) if len(layout) > 1 else None
            else:
                node = next((gpus for gpus in layout if len(gpus) > 1), None)
                ends = None if node is None else (node[0], node[1])
            if ends is None:
                paths.append((0.0, 0.0))
            else:
                links = fabric.path_links(int(ends[0]), int(ends[1]))
                paths.append((float(np.min(fabric.link_bytes_per_s[links])),
                              fabric.path_latency_s(int(ends[0]), int(ends[1]))))
        by_key.setdefault((pattern, *paths), []).append(group)
    return list(by_key.values())


@pytest.mark.parametrize("name,options", [("rail-fat-tree", {}), ("leaf-spine", {"oversubscription": 4}),
                                          ("torus", {})])
def test_kinds_of_groups_found_all_at_once_equal_those_found_group_by_group(name, options):
    """``_kinds`` finds node patterns and sample paths for all groups at once; the kinds (which groups, in which
    order) must be those of the direct per-group reading, on groups of one node, across nodes, strided, shuffled
    within and across nodes and unevenly spread."""
    schedule_module = importlib.import_module("simcluster.collectives.schedule")   # the package names a function so
    fab = topology.build(name, gpus=64, gpus_per_node=8, gpu=H100, nic=CX7, options=options)
    rng = np.random.default_rng(3)
    shuffled = rng.permutation(64).reshape(8, 8)
    layouts = ([tuple(range(i, i + 8)) for i in range(0, 64, 8)], [tuple(range(i, 64, 8)) for i in range(8)],
               [tuple(range(i, i + 16)) for i in range(0, 64, 16)], [tuple(range(64))],
               [tuple(row) for row in shuffled], [tuple(row) for row in rng.permutation(64).reshape(16, 4)],
               [(0, 1, 8, 9, 2), (16, 24, 17, 25, 18), (32, 33, 34, 35, 36), (40, 48, 56, 41, 49)],
               [(5,), (9,), (63,)], [(3, 11), (12, 13), (20, 4)], [(0, 1, 2), (8, 9), (16, 17, 18), (24, 32)])
    server = fab.gpu_attr("server")
    for groups in layouts:
        found = schedule_module._kinds(groups, fab)
        truth = _kinds_one_group_at_a_time(groups, fab)
        assert [[tuple(row) for row in kind.tolist()] for kind in found] == truth
        # the ends of the sampled paths, group by group (kinds alone do not show them where paths are all alike)
        if len({len(group) for group in groups}) > 1:
            continue
        first, (inside_src, inside_dst), across = schedule_module._sample_pairs(server[np.array(groups)])
        for row, group in enumerate(groups):
            layout = schedule_module._layout(group, fab)
            position = {gpu: at for at, gpu in enumerate(group)}
            node = next((gpus for gpus in layout if len(gpus) > 1), None)
            assert (inside_src[row], inside_dst[row]) == ((-1, -1) if node is None else
                                                          (position[node[0]], position[node[1]]))
            assert across[row] == (position[layout[1][0]] if len(layout) > 1 else -1)
            assert first[row].tolist() == [position[next(gpus for gpus in layout if gpu in gpus)[0]]
                                           for gpu in group]
    assert len(schedule_module._kinds(layouts[5], fab)) > 1   # the shuffled groups are of several kinds
