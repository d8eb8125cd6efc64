"""DeepEP's internode all-to-all runs its network phase at DeepEP's measured NIC rate (collectives/deepep.py,
data/moe.yaml deepep_internode), against DeepEP's own README table."""

from __future__ import annotations

import pytest

from simcluster import collectives
from simcluster.collectives import Collective, deepep
from simcluster.core.token_routing import TokenRouting
from simcluster.fabric import topology
from simcluster.spec import hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")

# deepseek-ai/DeepEP README, "Normal kernels with NVLink and RDMA forwarding" (EP 32 / 64 rows after PR #130): H800,
# CX7 400 Gb/s InfiniBand, 4096 tokens, hidden 7168, top-4 groups, top-8 of 256 experts, 24 SMs; bottleneck
# bandwidth RDMA, as tests/test_internode.py counts it: the (token, node) pairs with an expert there, the token's own
# node among them (DeepEP#51), x hidden x 2 bytes (BF16 combine; the FP8 dispatch x (1 + 4/128) / 2).
TOKENS, HIDDEN, TOP_K, EXPERTS = 4096, 7168, 8, 256
README_COMBINE_GB_S = {4: 57.0, 8: 50.0}
README_DISPATCH_GB_S = {4: 58.0, 8: 51.0}
NCCL_NIC_EFFICIENCY = 47.0 / 50.0   # nccl.yaml measured.per_nic_busbw: 47 GB/s of a 400 Gb/s NIC


def test_the_nic_fraction_is_the_readme_figures_without_the_own_nodes_tokens():
    """EP 32 (4 nodes) 58 and 57 GB/s x 3/4, EP 64 (8 nodes) 51 and 50 x 7/8: 43.66 GB/s of 50 on the NIC, 0.873;
    fails with the own node's tokens counted (1.13 of the line rate, above it) or EP 16's NVLink-bound 43."""
    figures = [rate * (n - 1) / n for table in (README_DISPATCH_GB_S, README_COMBINE_GB_S) for n, rate in table.items()]
    assert deepep.internode_nic_fraction(CX7) == pytest.approx(sum(figures) / 4 / 50.0, rel=1e-12)
    assert deepep.internode_nic_fraction(CX7) == pytest.approx(0.8731, abs=1e-4)
    assert deepep.internode_ratio(CX7) == pytest.approx(NCCL_NIC_EFFICIENCY / 0.873125, rel=1e-9)


def test_a_nic_without_a_measurement_keeps_nccls_rate():
    """ConnectX-8 (800 Gb/s): no DeepEP figure, ratio 0, the routing's slowdown 1; a routing can never be faster than
    NCCL's network phase (a ratio below 1 is the link binding)."""
    assert deepep.internode_ratio(hardware.nic("connectx-8")) == 0.0
    assert TokenRouting(EXPERTS, TOP_K).internode_slowdown() == 1.0
    assert TokenRouting(EXPERTS, TOP_K, internode_ratio=0.9).internode_slowdown() == 1.0


def test_a_connectx7_named_nic_at_another_rate_has_no_measurement():
    """DeepEP was measured on 400 Gb/s ConnectX-7: a scenario's own NIC spec named connectx-7 at 200 Gb/s (or an
    effective per-GPU rate) has no figure, ratio 0; at the measured 400 Gb/s it has the catalogue NIC's."""
    assert deepep.internode_ratio(hardware.NicSpec(name="connectx-7", rate="200 Gb/s")) == 0.0
    assert deepep.internode_ratio(hardware.NicSpec(name="connectx-7", rate="400 Gb/s")) == deepep.internode_ratio(CX7)


def test_the_slowdown_scales_the_network_phase_only():
    """One hierarchical all-to-all (4 nodes of 8, Qwen3-like routing): with DeepEP's ratio the network class
    carries exactly the ratio times its bytes, the NVLink class and the latencies are untouched; inside one node
    (DeepEP's intranode kernels) the internode ratio changes nothing."""
    import numpy as np

    from simcluster.collectives.algorithms import alltoall_hierarchical

    ratio = deepep.internode_ratio(CX7)
    size = 2048 * TOP_K * 4096 * 2.0

    def classes(layout, internode_ratio):
        routing = TokenRouting(128, TOP_K, intranode_ratio=1.38, internode_ratio=internode_ratio)
        steps = alltoall_hierarchical(layout, size, "Simple", routing)
        return {tc.label: tc.size_bytes for step in steps for tc in step.transfers}, [s.overhead_s for s in steps]

    four = [np.arange(8 * i, 8 * i + 8) for i in range(4)]
    (plain, plain_latency), (slowed, slowed_latency) = classes(four, 0.0), classes(four, ratio)
    assert slowed["alltoall network"] == pytest.approx(ratio * plain["alltoall network"], rel=1e-12)
    assert slowed["alltoall nvlink"] == plain["alltoall nvlink"]
    assert slowed_latency == plain_latency
    assert classes([np.arange(8)], ratio) == classes([np.arange(8)], 0.0)


@pytest.mark.parametrize("nodes", [4, 8])
def test_the_hierarchical_alltoall_reproduces_deepeps_readme_combine(nodes):
    """DeepEP's benchmark shape on nodes x 8 H100 with 400 Gb/s NICs (rail fat-tree): one BF16 combine of 4096
    tokens, top-8 of 256 experts in node groups, at most 4 nodes a token. The README's counted bytes over the
    simulated time give its 57 (EP 32) and 50 (EP 64) GB/s within 3%; at NCCL's NIC rate the model was 9% and 7%
    faster than DeepEP's kernel (62.2, 53.4 GB/s)."""
    fabric = topology.build("rail-fat-tree", gpus=8 * nodes, gpus_per_node=8, gpu=H100, nic=CX7)
    size = TOKENS * TOP_K * HIDDEN * 2.0
    rates = {}
    for ratio in (0.0, deepep.internode_ratio(CX7)):
        routing = TokenRouting(EXPERTS, TOP_K, groups=nodes, group_limit=min(nodes, 4), internode_ratio=ratio)
        counted = TOKENS * nodes * routing.node_hit(nodes) * HIDDEN * 2.0
        time_s = collectives.run(Collective("alltoall", range(8 * nodes), size, algorithm="hierarchical",
                                            protocol="Simple", routing=routing), fabric).time_s
        rates[ratio] = counted / time_s / 1e9
    assert rates[deepep.internode_ratio(CX7)] == pytest.approx(README_COMBINE_GB_S[nodes], rel=0.03)
    assert rates[0.0] > 1.05 * README_COMBINE_GB_S[nodes]


def test_the_engine_charges_deepeps_nic_rate_across_nodes_only_with_the_flex_dispatcher():
    """Two H100 nodes, EP 16, DeepEP's hierarchical all-to-all: the flex dispatcher's exposed EP time grows by
    about the ratio (1.077, less for the latency and the NVLink phase), NCCL's alltoall dispatcher on the same
    path keeps NCCL's rate."""
    from simcluster.engine import simulate
    from tests.unit.test_expert_parallel import _moe_scenario

    def exposed(**parallelism):
        sc = _moe_scenario("h100-sxm", 8, 2, ep=16, ep_alltoall="hierarchical", **parallelism)
        return simulate(sc).summary["exposed_comm_by_parallelism_s"]["ep"]

    ratio = exposed(moe_dispatcher="flex") / exposed()
    assert 1.03 < ratio <= deepep.internode_ratio(CX7) + 1e-9
