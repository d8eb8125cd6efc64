"""The SMs a data-parallel ring across nodes holds beside the compute: NCCL's channel count, one CTA each
(data/interference.yaml ``network_ring``; docs/calibration.md "Round 35: review of NCCL's SMs per NIC"), checked
against NCCL's maintainer and its logs: one PCI NIC "should just launch 2 SMs", a DGX (A100) with 8 NICs "16 SMs"
(NVIDIA/nccl#689); two GH200 over one NDR port each, `Channel 00/04` (NVIDIA/nccl#1291); 3 x 8 H100, `Channel 00/16`
(NVIDIA/nccl#1453); NCCL 2.10 over one Omni-Path port a GPU, `Channel 00/02` (Jean Zay, round 24)."""

from __future__ import annotations

import pytest

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
