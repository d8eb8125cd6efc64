"""Compute slowed by communication kernels beside it: the per-GPU model against its closed form, and the engine
applying it where communication overlaps compute (data-parallel reductions in the backward, tp_comm_overlap)."""

from __future__ import annotations

import pytest
from scenario_data import sequence_parallel_grads_s, with_changes

from simcluster.collectives import timing
from simcluster.core import catalog
from simcluster.engine import Simulation, simulate
from simcluster.parallel.plan import bucket_count
from simcluster.spec import config, hardware
from simcluster.workload import interference
from simcluster.workload.kernels import hbm_fraction, sm_count

H100 = hardware.gpu("h100-sxm")


def test_compute_bound_work_loses_the_sms_nccl_holds():
    # 24 CTAs of an NVLink ring on 132 SMs (H100 SXM whitepaper): 132 / 108 of the time
    kernel = interference.comm_kernel("nvlink", 370e9, H100)
    assert catalog.load("interference")["ctas"]["nvlink"] == 24
    assert interference.slowdown(H100, kernel, memory_share=0.0) == pytest.approx(132 / 108)


def test_an_nvlink_5_ring_holds_the_32_sms_nccls_init_log_on_a_dgx_b200_counts():
    """NCCL 2.25.1 on an 8x DGX B200 logs "32 coll channels, ... 32 nvls channels" on every rank (NVIDIA/nccl#1646):
    a large ring (or NVLS) collective over NVLink 5 launches 32 CTAs, against 24 on an 8x H100 (NVIDIA/nccl#1367).
    Compute-bound work beside it keeps SMs - 32 of the part's SMs (B200 / B300 148, GB200 / GB300 152: efficiency.yaml
    gemm.sms); rings across nodes keep 16 CTAs (NVIDIA/nccl#689), Transformer Engine's userbuffers their num_sm."""
    for name in ("b200", "b300", "gb200", "gb300"):
        gpu = hardware.gpu(name)
        assert gpu.nvlink_generation == 5
        sms = sm_count(name)
        assert interference.ctas("nvlink", gpu) == 32
        assert interference.slowdown(gpu, interference.comm_kernel("nvlink", 0.0, gpu), 0.0) == pytest.approx(
            sms / (sms - 32))
        assert interference.ctas("network", gpu) == 16
        assert interference.ctas("userbuffers", gpu) == 16
    for name in ("h100-sxm", "h200-sxm", "a100-80gb-sxm"):
        assert interference.ctas("nvlink", hardware.gpu(name)) == 24


def test_memory_bound_work_loses_the_hbm_bandwidth_the_collective_moves():
    kernel = interference.comm_kernel("network", 50e9, H100)
    hbm = H100.hbm_bandwidth * hbm_fraction()
    assert interference.slowdown(H100, kernel, memory_share=1.0) == pytest.approx(hbm / (hbm - 3 * 50e9))
    half = interference.slowdown(H100, kernel, memory_share=0.5)
    assert half == pytest.approx((interference.slowdown(H100, kernel, 0.0) + interference.slowdown(H100, kernel, 1.0))
                                 / 2)


def test_overlap_slows_compute_only_while_the_kernel_runs():
    # kernel outlasts the slowed compute: the whole compute is slowed
    assert interference.overlapped_s(1.0, 5.0, 1.25) == pytest.approx(1.25)
    # kernel ends first: 0.5 s of wall time at 1/1.25 speed does 0.4 s of work; the other 0.6 s at full speed
    assert interference.overlapped_s(1.0, 0.5, 1.25) == pytest.approx(0.5 + 0.6)
    assert interference.overlapped_s(1.0, 0.0, 1.25) == 1.0


@pytest.fixture
def one_node(small_scenario):
    def make(**changes):
        return with_changes(small_scenario, **{"cluster__nodes": 1, "cluster__topology": "nvswitch-node", **changes})

    return make


def test_backward_buckets_started_beside_a_reduction_run_slower_while_it_lasts(one_node):
    """ZeRO-0 data parallelism over one node, one microbatch: the backward's first bucket starts with an idle
    data-parallel stream, each of the other B-1 beside the all-reduce the previous one started, slowed while it
    lasts. PyTorch's optimizer (not Megatron-Core's stack): the engine's equal buckets, one a backward part, whose
    closed form this is (Megatron-Core's own unequal buckets: tests/unit/test_mcore_buckets.py)."""
    sim = Simulation(one_node(parallelism__tp=1, parallelism__pp=1, parallelism__dp=8, parallelism__zero_stage=0,
                              training__global_batch_size=8, training__optimizer="torch_adamw"))
    assert not sim.scenario.megatron_core
    assert sim.plan.microbatches == 1
    cost = sim.plan.chunks[0]
    buckets = bucket_count(cost.grad_bytes, sim.plan.bucket_bytes, cost.layers)
    assert buckets > 1
    factor = sim.slowdowns.dp["backward"]
    assert factor > 1.1
    allreduce_s = timing.isolated_time_s(sim.fabric, "allreduce", tuple(range(8)), cost.grad_bytes / buckets)
    assert 0 < allreduce_s < cost.backward_compute_s / buckets  # each all-reduce ends during the next bucket
    summary = sim.run().summary
    # each of those buckets runs slower while the all-reduce lasts: allreduce_s of wall time does allreduce_s / factor
    expected_s = (buckets - 1) * allreduce_s * (1 - 1 / factor)
    assert summary["comm_interference_s"] == pytest.approx(expected_s, rel=1e-9)
    plain_s = cost.forward_compute_s + cost.backward_compute_s + sim.plan.optimizer_s[0]
    assert summary["compute_s"] == pytest.approx(plain_s + expected_s, rel=1e-9)
    expanded = simulate(sim.scenario, expand=True).summary
    assert expanded["step_time_s"] == pytest.approx(summary["step_time_s"], rel=1e-9)


@pytest.mark.parametrize("micro_batch_size", [1, 4])
def test_tp_comm_overlap_slows_the_compute_for_the_collectives_time(one_node, micro_batch_size):
    """Tensor parallelism alone on an NVSwitch with Transformer Engine's overlap: each block computes for
    overlapped_s(compute, TP alone, factor) and waits for the TP collectives only beyond that."""
    spec = one_node(parallelism__tp=8, parallelism__pp=1, parallelism__dp=1, parallelism__tp_comm_overlap=True,
                    training__micro_batch_size=micro_batch_size, training__global_batch_size=4 * micro_batch_size)
    sim = Simulation(spec)
    summary = sim.run().summary
    extra_s = exposed_s = 0.0
    for chunk in sim.plan.chunks:
        for phase in ("forward", "backward"):
            compute_s, alone_s = getattr(chunk, f"{phase}_compute_s"), getattr(chunk, f"{phase}_tp_comm_s")
            slowed_s = interference.overlapped_s(compute_s, alone_s, sim.slowdowns.tp[phase])
            extra_s += slowed_s - compute_s
            exposed_s += max(0.0, alone_s - slowed_s)
    extra_s *= sim.plan.microbatches
    exposed_s *= sim.plan.microbatches
    assert extra_s > 0
    assert summary["comm_interference_s"] == pytest.approx(extra_s, rel=1e-9)
    exposed_s += sequence_parallel_grads_s(sim, tuple(range(8)))   # the norms' gradients, once a step
    assert summary["exposed_comm_by_parallelism_s"]["tp"] == pytest.approx(exposed_s, rel=1e-9, abs=1e-12)
    blocking = simulate(config.from_dict({**spec.model_dump(mode="json"),
                                          "parallelism": {**spec.parallelism.model_dump(mode="json"),
                                                          "tp_comm_overlap": False}})).summary
    # overlap off: only the backward's async collectives run beside the compute (workload.async_backward)
    assert blocking["comm_interference_s"] > 0.0
    assert summary["step_time_s"] < blocking["step_time_s"]
