"""The SMs a data-parallel ring across nodes holds beside the compute: 2 NCCL CTAs for each NIC the ring crosses a node
by, at most 16 (data/interference.yaml network_ctas_per_nic; docs/calibration.md "Round 35: the dense rows simulated
slow"). NCCL's maintainer: "If you have a PCI system with a single NIC [...] it should just launch 2 SMs. If you are on
DGX with 8 NICs and a top speed of 190 GB/s, then it would use 16 SMs" (NVIDIA/nccl#689)."""

from __future__ import annotations

import pytest

from simcluster.engine import overlap
from simcluster.parallel.layout import Layout
from simcluster.spec import config, hardware
from simcluster.workload import interference
from simcluster.workload.kernels import sm_count

H100 = hardware.gpu("h100-sxm")


def test_two_sms_at_one_nic_and_sixteen_at_eight():
    assert interference.ctas("network", H100, nics=1) == 2
    assert interference.ctas("network", H100, nics=8) == 16
    assert interference.ctas("network", H100, nics=4) == 8
    assert interference.ctas("network", H100, nics=16) == 16  # the 8-NIC DGX's count is the ceiling
    assert interference.ctas("network", H100) == 16  # no ring (an all-to-all): the DGX count, as before


def test_compute_bound_work_beside_a_one_nic_ring_keeps_all_but_two_sms():
    sms = sm_count("h100-sxm")
    kernel = interference.comm_kernel("network", 0.0, H100, nics=1)
    assert interference.slowdown(H100, kernel, memory_share=0.0) == pytest.approx(sms / (sms - 2))


@pytest.mark.parametrize("name, members_per_node", [
    ("nemotron4-15b-768-h100", 1),   # tp 8 on 8-GPU nodes: one GPU a node in each data-parallel group
    ("megatron-16b-h100", 2),        # tp 4: two
])
def test_the_engine_charges_a_data_parallel_ring_the_ctas_of_its_nics(name, members_per_node):
    scenario = config.load(name)
    layout = Layout.of(scenario.parallelism)
    nodes = {}
    for rank in layout.group(0, "dp"):
        nodes[rank // scenario.cluster.gpus_per_node] = nodes.get(rank // scenario.cluster.gpus_per_node, 0) + 1
    assert len(nodes) > 1 and min(nodes.values()) == members_per_node
    charged = overlap.slowdowns(scenario, layout).dp
    wire = scenario.cluster.nic.rate * overlap.nccl.efficiency("ring", "Simple", "network")
    share = interference.memory_bound_share(
        [op for part in overlap.PHASES["backward"] for op in overlap.layer_ops(scenario.model, overlap.shard_for(
            scenario))[part]], scenario.cluster.gpu, scenario.training.precision)
    expected = interference.slowdown(scenario.cluster.gpu, interference.CommKernel(2 * members_per_node, wire), share)
    assert charged["backward"] == pytest.approx(expected)
    sixteen = interference.slowdown(scenario.cluster.gpu, interference.CommKernel(16, wire), share)
    assert charged["backward"] < sixteen  # it fails at the DGX's 16 CTAs for every ring
