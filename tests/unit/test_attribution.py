"""Exposed communication by link class and peak (windowed) link utilisation: the rule of engine.simulation.bottlenecks
and results.by_link_class, and network.windows."""

from __future__ import annotations

import numpy as np
import pytest

from simcluster import simulate
from simcluster.fabric import topology
from simcluster.network.windows import FIRST_WIDTH_S, WINDOWS, LinkWindows
from simcluster.parallel.layout import Layout
from simcluster.spec import config, hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")


def fabric(name: str, gpus: int, **options):
    return topology.build(name, gpus=gpus, gpus_per_node=8, gpu=H100, nic=CX7, options=options)


def test_tensor_parallel_inside_a_node_is_bound_by_nvlink():
    layout = Layout(tp=8, dp=16)
    assert fabric("rail-fat-tree", 128).bottleneck_tier(layout.ring_pairs("tp")) == "nvlink"


def test_data_parallel_ring_on_a_non_blocking_rail_fabric_is_bound_by_the_nic():
    # every NIC carries one ring send and the spines match the leaves' down capacity: the tie goes to the NIC
    layout = Layout(tp=8, dp=16)
    assert fabric("rail-fat-tree", 128).bottleneck_tier(layout.ring_pairs("dp")) == "nic"


def test_data_parallel_ring_across_oversubscribed_leaves_is_bound_by_the_leaf_uplinks():
    # 4:1 leaves (32 hosts, 8 uplinks of one NIC rate); data-parallel peers 32 ranks apart, so all 32 hosts of a
    # leaf send to the next leaf at once: 4 flows per uplink against 1 per NIC
    layout = Layout(tp=32, dp=4)
    assert fabric("leaf-spine", 128, oversubscription=4).bottleneck_tier(layout.ring_pairs("dp")) == "leaf"


def test_ring_pairs_are_every_rank_and_its_successor():
    layout = Layout(tp=2, pp=3, dp=2)
    tp = layout.ring_pairs("tp")
    assert len(tp) == 12 and set(map(tuple, tp)) >= {(0, 1), (1, 0)}
    pp = layout.ring_pairs("pp", wrap=False)
    assert len(pp) == 2 * 2 * 2   # two boundaries between three stages, for each of the 4 (tp, dp) coordinates
    assert all(layout.coords(int(b))["pp"] == layout.coords(int(a))["pp"] + 1 for a, b in pp)


def test_exposed_comm_by_link_class_sums_to_exposed_comm(small_scenario):
    small_scenario["cluster"].update(topology="leaf-spine", topology_options={"oversubscription": 4,
                                                                             "hosts_per_leaf": 4})
    summary = simulate(config.from_dict(small_scenario)).summary
    by_class = summary["exposed_comm_by_link_class_s"]
    assert set(by_class) >= {"nvlink", "pcie", "nic", "leaf", "spine", "core"}
    assert sum(by_class.values()) == pytest.approx(summary["exposed_comm_s"], rel=1e-9, abs=1e-12)
    for axis, tier in summary["bottleneck_by_parallelism"].items():
        if tier is not None and summary["exposed_comm_by_parallelism_s"][axis] > 0:
            assert by_class[tier] >= summary["exposed_comm_by_parallelism_s"][axis]


def test_peak_utilisation_is_at_least_the_mean_and_at_most_one(small_scenario):
    result = simulate(config.from_dict(small_scenario))
    links = result.links
    assert (links["peak_utilisation"] >= links["utilisation"] * (1 - 1e-9)).all()
    assert (links["peak_utilisation"] <= 1 + 1e-6).all()
    peak = result.summary["peak_link_utilisation_by_kind"]
    assert set(peak) == set(result.summary["busiest_link_utilisation_by_kind"])


def test_windows_conserve_bytes_while_they_widen():
    windows = LinkWindows(2)
    windows.add(0.0, 1.0, np.array([0]), np.array([10.0]))
    windows.add(0.5, 3.0, np.array([1]), np.array([4.0]))
    assert windows.width_s >= 3.0 / WINDOWS and windows.width_s > FIRST_WIDTH_S
    assert windows.bytes.sum(axis=0) == pytest.approx([10.0, 10.0])


def test_early_bursts_stay_in_the_window_of_their_time_through_many_widenings():
    windows = LinkWindows(3)
    windows.add(0.0, 0.5 * FIRST_WIDTH_S, np.array([0]), np.array([2.0]))                  # window 0
    windows.add(2.5 * FIRST_WIDTH_S, 3.0 * FIRST_WIDTH_S, np.array([1]), np.array([4.0]))  # window 2 (odd rows in use)
    windows.add(0.99, 1.0, np.array([2]), np.array([1.0]))                                  # the run lasts 1 s
    assert windows.width_s == FIRST_WIDTH_S * 2 ** 9                      # the first power of two past 1 s / 32
    assert windows.bytes[0, :2] == pytest.approx([FIRST_WIDTH_S, 2 * FIRST_WIDTH_S], rel=1e-12)
    assert windows.bytes[1:, :2].sum() == 0.0
    last = int(0.99 // windows.width_s)
    assert windows.bytes[:, 2].sum() == pytest.approx(0.01) and windows.bytes[last:, 2].sum() == pytest.approx(0.01)


def test_a_burst_reads_as_full_in_its_window_and_diluted_in_the_mean():
    capacity = np.array([100.0])
    windows = LinkWindows(1)
    windows.add(0.0, 0.25, np.array([0]), np.array([100.0]))   # full for a quarter of the run
    windows.add(0.999, 1.0, np.array([0]), np.array([0.0]))      # the run lasts 1 s
    mean = windows.bytes.sum() / (capacity[0] * 1.0)
    assert mean == pytest.approx(0.25)
    assert windows.peak_utilisation(capacity)[0] == pytest.approx(1.0)


class _Experts:  # the two fields of parallelism that bottlenecks() reads for expert parallelism
    def __init__(self, ep: int, etp: int = 1):
        self.ep, self.etp = ep, etp


def test_expert_all_to_all_across_servers_is_bound_by_the_nic_and_inside_one_by_nvlink():
    # issue 18: an expert-parallel all-to-all was charged to no tier ("unattributed") and shown as in-server time
    from simcluster.engine.simulation import bottlenecks

    layout = Layout(dp=32, pp=4, order=("tp", "cp", "dp", "pp"))  # 128 GPUs; a stage: 32 consecutive ranks, 4 servers
    assert bottlenecks(fabric("rail-fat-tree", 128), layout, _Experts(ep=32))["ep"] == "nic"  # 4 servers
    assert bottlenecks(fabric("rail-fat-tree", 128), layout, _Experts(ep=8))["ep"] == "nvlink"  # one server
    assert bottlenecks(fabric("rail-fat-tree", 128), layout, _Experts(ep=1))["ep"] is None
