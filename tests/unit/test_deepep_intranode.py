"""DeepEP's intranode all-to-all runs at its SM-bound rate (collectives/deepep.py, data/moe.yaml deepep_intranode)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from simcluster import collectives
from simcluster.collectives import Collective, deepep
from simcluster.core.token_routing import TokenRouting
from simcluster.fabric import topology
from simcluster.spec import hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")

# tile-ai/tilescale PR #40: DeepEP's intranode kernels on 8 H100 (NVLink 4), 10 channels = 20 SMs, 32 experts, 4096
# tokens x 7168: dispatch 1.0045 ms, combine 1.1552 ms on 330.9 MB of received BF16 rows a rank, the rank's own among
# them (round 24; data/moe.yaml deepep_intranode): 306.5 GB/s for the pair (test_deepep_h100.py checks the bytes).
MEASURED_RECEIVED_GB_S = 306.5
MEASURED_SMS = 20
MEGATRON_DEEPEP_SMS = 20            # --moe-deepep-num-sms default (Megatron-Core MoE README)
NCCL_NVLINK4_GB_S = 370.0           # nccl.yaml: NCCL's achieved NVLink 4 rate (sjeaugey, NVIDIA/nccl-tests#212)


@pytest.mark.parametrize(("ranks", "slowdown"), [(8, 1.380), (4, 1.610), (2, 2.414)])
def test_h100_intranode_deepep_is_slower_than_nccl_on_the_same_bytes_the_more_the_smaller_the_group(ranks, slowdown):
    """NCCL's 370 GB/s over DeepEP's remote rate: the kernels copy every received row at 306.5 GB/s (20 SMs),
    (ranks - 1)/ranks of them remote: EP 8 1.380, EP 4 1.610, EP 2 2.414 (fails with the own rows counted as
    remote, or with the benchmark's 8 ranks used for every group)."""
    assert deepep.intranode_slowdown(H100, ranks) == pytest.approx(
        NCCL_NVLINK4_GB_S / (MEASURED_RECEIVED_GB_S * MEGATRON_DEEPEP_SMS / MEASURED_SMS * (ranks - 1) / ranks),
        rel=1e-9)
    assert deepep.intranode_slowdown(H100, ranks) == pytest.approx(slowdown, abs=1e-3)


def test_a_link_slower_than_deepeps_sms_binds_instead():
    """H800's NVLink (~200 GB/s a direction, NCCL's share 164 GB/s) is below what 20 SMs copy (268 GB/s): the link
    binds, as DeepEP's README measured there (153 GB/s at 24 SMs, close to the ~160 achievable), so no slowdown;
    an NVLink generation without a measurement keeps NCCL's rate too."""
    h800 = SimpleNamespace(nvlink_generation=4, nvlink_bandwidth=200e9)
    assert deepep.intranode_slowdown(h800, 8) == 1.0
    assert deepep.intranode_slowdown(hardware.gpu("b200"), 8) == 1.0


def test_the_intranode_alltoall_moves_deepeps_rows_at_deepeps_rate():
    """EP 8 on one H100 node, 128 experts top-8: the all-to-all's remote bytes per GPU over its time (latency
    cancelled by running two sizes, NCCL's calibrated fabric) is DeepEP's remote rate, 268 GB/s, not NCCL's 370; the
    bytes a GPU sends (the deduplicated 4.67 of 7 peers' share) count once, as before."""
    fabric = topology.build("rail-fat-tree", gpus=8, gpus_per_node=8, gpu=H100, nic=CX7)
    size = 2048 * 8 * 4096 * 2.0
    remote = 7 * TokenRouting(128, 8).gpu_hit(1, 8) * size / 8
    rates = []
    for ratio in (0.0, deepep.intranode_ratio(H100)):
        routing = TokenRouting(128, 8, intranode_ratio=ratio)
        time_s = [collectives.run(Collective("alltoall", range(8), s, algorithm="hierarchical", protocol="Simple",
                                             routing=routing), fabric).time_s for s in (size, 2 * size)]
        rates.append(remote / (time_s[1] - time_s[0]) / 1e9)
    assert rates[0] == pytest.approx(NCCL_NVLINK4_GB_S, rel=0.01)
    assert rates[1] == pytest.approx(268.19, rel=0.01)


def test_the_engine_charges_deepeps_rate_to_an_ep_group_of_one_node():
    """A step with DeepEP's all-to-all (``ep_alltoall: hierarchical``) on one H100 node, EP 8: each MoE layer's 4
    all-to-alls cost the scheduled all-to-all at DeepEP's rate (the engine's routing carries the slowdown), within
    5%, and the exposed EP time is about 1.38x what NCCL's rate would give (latency aside)."""
    from simcluster.engine import simulate
    from simcluster.parallel.plan import dispatch_bytes
    from simcluster.workload import moe
    from tests.unit.test_expert_parallel import _moe_scenario

    sc = _moe_scenario("h100-sxm", 8, 1, ep=8, ep_alltoall="hierarchical", moe_dispatcher="flex")
    fabric = topology.from_scenario(sc)
    base = moe.token_routing(sc.model.moe)
    slowed = moe.token_routing(sc.model.moe, intranode_ratio=deepep.intranode_ratio(H100))
    alone = {r.intranode_ratio: collectives.run(Collective("alltoall", range(8), dispatch_bytes(sc),
                                                           algorithm="hierarchical", routing=r), fabric).time_s
             for r in (base, slowed)}
    exposed = simulate(sc, fabric=fabric).summary["exposed_comm_by_parallelism_s"]["ep"]
    assert exposed == pytest.approx(4 * sc.model.moe_layers * alone[slowed.intranode_ratio], rel=0.05)
    assert alone[slowed.intranode_ratio] / alone[0.0] == pytest.approx(1.38, rel=0.05)
    # NCCL's all-to-all dispatcher on the same path (hierarchical without DeepEP): NCCL's rate, no slowdown
    nccl_run = _moe_scenario("h100-sxm", 8, 1, ep=8, ep_alltoall="hierarchical")
    nccl_exposed = simulate(nccl_run, fabric=fabric).summary["exposed_comm_by_parallelism_s"]["ep"]
    assert nccl_exposed == pytest.approx(4 * sc.model.moe_layers * alone[0.0], rel=0.05)
