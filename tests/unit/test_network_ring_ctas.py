"""The SMs a data-parallel ring across nodes holds beside the compute: NCCL's channel count, one CTA each
(data/interference.yaml ``network_ring``; docs/calibration/round-35.md "Round 35: review of NCCL's SMs per NIC"),
checked against NCCL's maintainer and its logs: one PCI NIC "should just launch 2 SMs", a DGX (A100) with 8 NICs "16
SMs" (NVIDIA/nccl#689); two GH200 over one NDR port each, `Channel 00/04` (NVIDIA/nccl#1291); 3 x 8 H100, `Channel
00/16` (NVIDIA/nccl#1453); NCCL 2.10 over one Omni-Path port a GPU, `Channel 00/02` (Jean Zay, round 24). The same count
splits a ring step's bytes into chunks (``algorithms.ring_channels``; docs/calibration/round-35.md "Round 35: one
channel count a ring"): a channel's chunk is S / (channels x ranks), whose slices (prims_simple.h: two, at least 32 KiB)
set how much of each step's latency the transfer hides."""

from __future__ import annotations

import numpy as np
import pytest

from simcluster import collectives
from simcluster.collectives import Collective, algorithms
from simcluster.core import catalog
from simcluster.engine import overlap
from simcluster.parallel.layout import Layout
from simcluster.spec import config, hardware
from simcluster.workload import interference
from simcluster.workload.kernels import sm_count

H100, A100 = hardware.gpu("h100-sxm"), hardware.gpu("a100-80gb-sxm")
NDR, HDR, XDR = hardware.nic("connectx-7"), hardware.nic("connectx-6"), hardware.nic("connectx-8")


@pytest.mark.parametrize("gpu, nic, per_node, channels", [
    (A100, HDR, 1, 2),    # nccl#689: one NIC, 2 SMs (one 24 GB/s search channel, doubled by ncclTopoPostset only)
    (A100, HDR, 8, 16),   # nccl#689: a DGX with 8 NICs (190 GB/s: 8 x HDR), 16 SMs
    (A100, HDR, 2, 4),
    (H100, NDR, 1, 4),    # nccl#1291: one 48 GB/s search channel, ncclTopoDupChannels, then the postset: 00/04
    (H100, NDR, 2, 8),
    (H100, NDR, 4, 16),
    (H100, NDR, 8, 16),   # nccl#1453: 8 search channels, not doubled on Hopper above 4 under 50 GB/s: 00/16
])
def test_nccl_channel_count_at_the_logged_layouts(gpu, nic, per_node, channels):
    assert interference.network_ring_channels(per_node, nic, gpu) == channels
    assert interference.ctas("network", gpu, (per_node, nic)) == channels


def test_a_slow_port_runs_one_search_channel_and_an_800g_port_is_doubled_twice():
    omni_path = hardware.NicSpec(name="omni-path", rate="21.6 Gb/s", host="pcie-gen4")
    assert interference.network_ring_channels(1, omni_path, A100) == 2  # Jean Zay's NCCL 2.10 log: 00/02
    b300 = hardware.gpu("b300")
    # 96 GB/s found, doubled to 2 x 48, postset 4, and at 48 > 45 GB/s the "<8 PPN" doubling: 8 (connect.cc)
    assert interference.network_ring_channels(1, XDR, b300) == 8
    assert interference.ctas("network", b300, (8, XDR)) == 16  # 32 by NCCL's count; ctas.network is the ceiling


def test_an_all_to_all_keeps_the_dgx_count_and_a_ring_needs_a_gpu_a_node():
    assert interference.ctas("network", H100) == 16
    with pytest.raises(ValueError, match="at least one GPU a node"):
        interference.network_ring_channels(0, NDR, H100)


def test_compute_bound_work_beside_a_one_port_hdr_ring_keeps_all_but_two_sms():
    sms = sm_count("a100-80gb-sxm")
    kernel = interference.comm_kernel("network", 0.0, A100, ring=(1, HDR))
    assert kernel.ctas == 2
    assert interference.slowdown(A100, kernel, memory_share=0.0) == pytest.approx(sms / (sms - 2))


@pytest.mark.parametrize("name, members_per_node, channels, other", [
    ("nemotron4-15b-768-h100", 1, 4, 16),  # tp 8 on 8-GPU nodes, NDR: one GPU a node; 16 (the DGX's) differs
    ("megatron-16b-h100", 2, 8, 4),        # tp 4: two; 4 (2 a NIC, a 200 Gb/s port's count) differs
])
def test_the_engine_charges_a_data_parallel_ring_nccls_channels(name, members_per_node, channels, other):
    scenario = config.load(name)
    layout = Layout.of(scenario.parallelism)
    nodes = {}
    for rank in layout.group(0, "dp"):
        nodes[rank // scenario.cluster.gpus_per_node] = nodes.get(rank // scenario.cluster.gpus_per_node, 0) + 1
    assert len(nodes) > 1 and min(nodes.values()) == members_per_node
    assert scenario.cluster.nic.name == "connectx-7"
    charged = overlap.slowdowns(scenario, layout).dp
    wire = scenario.cluster.nic.rate * overlap.nccl.efficiency("ring", "Simple", "network")
    share = interference.memory_bound_share(
        [op for part in overlap.PHASES["backward"] for op in overlap.layer_ops(scenario.model, overlap.shard_for(
            scenario))[part]], scenario.cluster.gpu, scenario.training.precision)

    def factor(ctas):
        return interference.slowdown(scenario.cluster.gpu, interference.CommKernel(ctas, wire), share)

    assert charged["backward"] == pytest.approx(factor(channels))
    assert factor(channels) != pytest.approx(factor(other))  # the check can fail


def test_every_host_link_in_the_catalog_has_nccls_pcie_figure():
    assert set(catalog.load("hardware")["pcie"]) <= set(interference.constants()["network_ring"]["pcie_x16_gb_s"])


SLICE = 32 * 2**10   # prims_simple.h genericOp: a Simple slice is at least sliceSize / 32 = 32 KiB
CHUNK = 48 * 2**10   # between one and two slices: the hidden part c (1 - 32/48) = c/3 names the chunk exactly


def _nodes(count: int, per_node: int) -> list[np.ndarray]:
    return [np.arange(node * 8, node * 8 + per_node) for node in range(count)]


def _hidden(layout, size, nic, gpu, step_s=1e-7):
    (_, moving) = algorithms.ring("allreduce", layout, size, "Simple", step_s, nic, gpu)
    assert moving.overhead_s > step_s  # NCCL's per-step latency (microseconds) exceeds what can hide here
    return moving.hidden_s


@pytest.mark.parametrize("gpu, nic, per_node, channels", [
    (A100, HDR, 1, 2), (A100, HDR, 2, 4), (A100, HDR, 4, 8), (A100, HDR, 8, 16),    # 200 Gb/s: 2 a NIC
    (H100, HDR, 1, 2), (H100, HDR, 8, 16),                                         # Hopper at 24 GB/s: no doubling
    (H100, NDR, 1, 4), (H100, NDR, 2, 8), (H100, NDR, 4, 16), (H100, NDR, 8, 16),  # 400 Gb/s: 4 a NIC, 16 at most
])
def test_a_ring_steps_chunk_is_its_bytes_over_nccls_channels_and_ranks(gpu, nic, per_node, channels):
    layout = _nodes(4, per_node)
    ranks = 4 * per_node
    assert algorithms.ring_channels(layout, nic, gpu) == channels == interference.ctas("network", gpu, (per_node, nic))
    size = CHUNK * channels * ranks        # S / (channels x ranks) = 48 KiB a channel
    c = 1e-7
    assert _hidden(layout, size, nic, gpu, c) == pytest.approx(c * (1 - SLICE / CHUNK))
    # the same ring with no NIC known runs the old count, one channel a rail: its chunk is channels / per_node times
    # larger (two slices of half of it), so it hides another share; the model gives that one, and the two differ
    # (round 37 test audit: this line compared two closed forms with each other, calling no code)
    old = CHUNK * channels / per_node
    assert algorithms.ring_channels(layout, None, None) == per_node
    assert _hidden(layout, size, None, None, c) == pytest.approx(c * (1 - max(old / 2, SLICE) / old))
    assert c * (1 - max(old / 2, SLICE) / old) != pytest.approx(c * (1 - SLICE / CHUNK))


def test_more_channels_hide_less_of_a_one_gpu_a_node_rings_latency():
    """8 H100 nodes, one GPU each, over NDR: 128 KiB a step. One channel (the rail count) would cut two 64 KiB
    slices and hide half the step's transfer; NCCL's 4 channels carry 32 KiB chunks, one slice each: nothing hides."""
    layout, size, c = _nodes(8, 1), 8 * 128 * 2**10, 1e-7
    assert _hidden(layout, size, None, None, c) == pytest.approx(c / 2)  # no NIC known: one channel a rail
    assert _hidden(layout, size, NDR, H100, c) == 0.0


def test_inside_one_node_a_ring_keeps_one_channel_a_gpu():
    assert algorithms.ring_channels([np.arange(8)], NDR, H100) == 8


def test_the_scheduler_gives_a_ring_across_nodes_the_fabrics_nic():
    """2 H100 nodes over one HDR port each, one GPU a node: NCCL's 2 channels. At 128 KiB a ring the chunk is
    128 KiB / (2 x 2) = 32 KiB, one slice: nothing hides (one channel a rail would cut 64 KiB, two slices, and hide);
    at 512 KiB the 128 KiB chunks do hide."""
    from simcluster.fabric import topology
    fabric = topology.build("rail-fat-tree", gpus=16, gpus_per_node=8, gpu=H100, nic=HDR)

    def hidden(size):
        steps = collectives.schedule(Collective("allreduce", (0, 8), size, algorithm="ring", protocol="Simple"),
                                     fabric)
        (moving,) = [s for s in steps if s.transfers]
        return moving.hidden_s

    assert hidden(2 * 2 * SLICE) == 0.0
    assert hidden(4 * 2 * 2 * SLICE) > 0.0
