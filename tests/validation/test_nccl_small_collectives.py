"""Small collectives (8 B to a few KiB) across nodes against NCCL's own latency model and published runs.

Independent truths (none read from simcluster's data files):

- NCCL's tuning model, src/graph/tuning.cc of NCCL 2.19-2.21 (read, NVIDIA/nccl, ``ncclTopoTuneModel``): a tree
  allreduce costs baseLat[Tree][LL] + 2((nRanks/nNodes - 1) hwLat[NVLINK][Tree][LL] + log2i(nNodes)
  hwLat[NET][Tree][LL]) = 6.8 + 2((m-1) 0.6 + log2(N) 5.0) us, plus bytes over its LL bandwidth (negligible at
  8-128 B). NCCL printed that model's value for a 128 B allreduce on 2 x 8 H100 with NCCL_DEBUG_SUBSYS=TUNING:
  "128 Bytes -> Algo 0 proto 0 time 25.214764" (Algo 0 = Tree, proto 0 = LL; twichell, NVIDIA/nccl#1453) =
  6.8 + 2(7 x 0.6 + 1 x 5.0), so the formula and its constants are the ones NCCL ran.
- Measured: 2 nodes x 8 Hopper GPUs (H20: NVLink 4, NVSwitch 3), one NDR ConnectX-7 per GPU, NCCL 2.21.5,
  NCCL_ALGO=NVLSTree, 4-512 B: 46.3-47.8 us (haswelliris, NVIDIA/nccl#1244). NCCL's model rates NVLSTree there at
  hwLat[NVLINK][NVLSTree] + 2 log2(2) hwLat[NET][NVLSTree] = 23-25 + 28 = 51-53 us, i.e. the model is within ~12% of
  the measurement at 2 nodes, and slower than tree/LL (25.2 us), which is why NCCL's default picks tree/LL.
  A tree/LL small allreduce that came out slower than the measured NVLSTree one would contradict both.

- Measured inside one node: nccl-tests all_reduce_perf on one 8-GPU H20 server (Hopper, NVLink 4 through NVSwitch;
  LCAI-TIHU, deepseek-ai/DeepEP#303; S: the GPU count is the server's, not printed in the excerpt read), out-of-place
  64 B-4 KiB: 14.50, 15.50, 15.70, 16.26, 16.38, 16.49, 16.69 us (4-16 B: 12.5 us). NCCL's ring/LL model for 8 ranks,
  6.6 + 14 x 0.6 = 15.0 us, is what the simulator charges there.

Before this test the simulator charged the tree NCCL's latency AND the network path latency (4.13 us) at each of
its K + 2 depth - 1 pipelined steps: 91 us for 2 x 8 H100 at 8 B, 3.6x NCCL's model and 2x the measured NVLSTree.
Tolerance: 5% of NCCL's model (the simulated time adds the bytes over the bandwidth and never goes below the
fabric path latency; at these sizes both are < 1%).
"""

from __future__ import annotations

import math

import pytest

from simcluster import collectives
from simcluster.collectives import Collective
from simcluster.fabric import topology
from simcluster.spec import hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")

# tuning.cc (NCCL 2.19-2.21), Tree row, LL protocol, microseconds
TREE_LL_BASE_US, TREE_LL_NVLINK_US, TREE_LL_NET_US = 6.8, 0.6, 5.0
NCCL1453_MODEL_128B_US = 25.214764          # NCCL's own printout, 2 x 8 H100, tree/LL, 128 B
NCCL1244_NVLSTREE_SMALL_US = (46.25, 47.76)  # measured, 2 x 8 Hopper, NDR, 4-512 B (out-of-place)
TOLERANCE = 0.05


def nccl_tree_ll_us(ranks_per_node: int, nodes: int) -> float:
    return TREE_LL_BASE_US + 2 * ((ranks_per_node - 1) * TREE_LL_NVLINK_US
                                  + int(math.log2(nodes)) * TREE_LL_NET_US)


def allreduce(nodes: int, per_node: int, size: int, network: str = "analytic"):
    fabric = topology.build("rail-fat-tree", gpus=nodes * per_node, gpus_per_node=per_node, gpu=H100, nic=CX7)
    return collectives.run(Collective("allreduce", range(nodes * per_node), size), fabric, network, gpu=H100)


def test_the_formula_is_what_nccl_printed():
    """The closed form reproduces NCCL's printed model time (nccl#1453) to 0.02 us (its 128 B over the bandwidth)."""
    assert nccl_tree_ll_us(8, 2) == pytest.approx(NCCL1453_MODEL_128B_US, abs=0.02)


@pytest.mark.parametrize("nodes,per_node", [(2, 8), (3, 8), (4, 4), (4, 8), (6, 8), (8, 8), (12, 8), (16, 8), (32, 8)])
@pytest.mark.parametrize("size", [8, 128])
def test_small_multi_node_allreduce_costs_nccls_tree_latency_once(nodes, per_node, size):
    """2-32 nodes of H100, 8-128 B: NCCL's choice (tree/LL) at NCCL's latency, not that plus a path latency per
    pipelined step."""
    outcome = allreduce(nodes, per_node, size)
    assert (outcome.algorithm, outcome.protocol) == ("tree", "LL")
    assert outcome.time_s * 1e6 == pytest.approx(nccl_tree_ll_us(per_node, nodes), rel=TOLERANCE)


@pytest.mark.parametrize("network", ["analytic", "flow"])
def test_two_node_small_allreduce_is_faster_than_the_measured_nvls_tree(network):
    """nccl#1244: NVLSTree, which NCCL's model rates slower than tree/LL here, measured 46-48 us on 2 x 8 Hopper;
    NCCL's default (tree/LL) must not come out slower than that."""
    outcome = allreduce(2, 8, 128, network)
    assert outcome.time_s * 1e6 < min(NCCL1244_NVLSTREE_SMALL_US)
    assert outcome.time_s * 1e6 == pytest.approx(NCCL1453_MODEL_128B_US, rel=TOLERANCE)


DEEPEP303_ALLREDUCE_US = {64: 14.50, 128: 15.50, 256: 15.70, 512: 16.26, 1024: 16.38, 2048: 16.49, 4096: 16.69}
ONE_NODE_TOLERANCE = 0.12  # one run; the 4-16 B rows (12.5 us) are 20% below, not used


@pytest.mark.parametrize("size", sorted(DEEPEP303_ALLREDUCE_US))
def test_one_node_small_allreduce_takes_the_measured_time(size):
    """One node of 8 Hopper GPUs, 64 B-4 KiB: ring/LL at NCCL's 15 us, within 12% of DeepEP#303's nccl-tests run."""
    outcome = allreduce(1, 8, size)
    assert (outcome.algorithm, outcome.protocol) == ("ring", "LL")
    assert outcome.time_s * 1e6 == pytest.approx(DEEPEP303_ALLREDUCE_US[size], rel=ONE_NODE_TOLERANCE)
