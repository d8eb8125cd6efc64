"""Round 22: the device-side terms of the held-out Mixtral rows' MoE layer against closed forms and independent
published measurements (docs/calibration/round-22.md, "Round 22: Mixtral simulated slow"). Nothing here is fitted to a
held-out row; the rows are built as the step plan builds them (``plan.busiest_moe_block``) and only their ops are
timed (no simulation).

- Expert GEMMs. With EP = experts = 8 each rank holds one expert: Transformer Engine's GroupedLinear with one GEMM
  is a single cuBLAS GEMM of rows = tokens x top-k / experts x load, K 4096-16384, N 4096-32768, far above the ridge.
  In a short benchmark (full clock, ``sustained=False``) such GEMMs run at the large-GEMM plateau of an H100 SXM:
  798 TFLOP/s, PyTorch bf16 8192^3 (shared/reference/hardware.yaml measured_fractions; the same figure
  tests/validation/test_fp8_bf16_gemm_ratio.py uses; torch.matmul 788.7 at 4096^3 and 797.5 at 8192^3 on an H100
  SXM, zzc0721/torch-performance-test-data#79). None of the Mixtral expert GEMMs may be charged faster than
  3% above it (a faster one would be a model error: the plateau is the measured maximum) nor slower than 5% below
  it (the shapes are larger than 8192^3 in M x N, so tile and wave quantisation stay small).
- Expert-parallel all-to-all inside one node. NCCL's NVLink 4 rate outside NVLS is about 370 GB/s of bus bandwidth
  (sjeaugey, NVIDIA/nccl-tests#212: "an effective NVLink bandwidth of 370GB/s, which you can observe as BusBw when
  running non-allreduce operations"). At the rows' dispatch sizes (50 / 67 MB a rank) the model's busbw
  ((n - 1)/n S / t, nccl-tests doc/PERFORMANCE.md) must not exceed it and must be above 85% of it (latency only).
- Permutation. Megatron-Core's fused permute / unpermute are HBM copies: (1 + k) T h elements of 2 B each way
  (read the T source rows, write the k T routed copies), at most at the HBM line rate.
"""

from __future__ import annotations

import math

import pytest

from simcluster.collectives import timing
from simcluster.core.token_routing import expected_max_normal, sampling_cv
from simcluster.fabric import topology
from simcluster.parallel import plan
from simcluster.spec import config, hardware
from simcluster.workload import kernels, moe

ROWS = ("moezoo-mixtral-8x22b-128-h100", "moezoo-mixtral-8x22b-128-h100-drop", "mcore-mixtral-8x7b-64-h100")
PLATEAU_TFLOPS = 798.0          # PyTorch bf16 8192^3 on H100 SXM (shared/reference/hardware.yaml)
NVLINK4_BUSBW = 370e9           # NCCL over NVLink 4, non-NVLS collectives (NVIDIA/nccl-tests#212)
H100_HBM = 3.35e12              # H100 SXM HBM3 line rate, B/s (datasheet)


def _block(name: str):
    scenario = config.load(name)
    shard = plan.shard_for(scenario)
    return scenario, shard, plan.busiest_moe_block(scenario, shard)


def _ops(block):
    return [*block.forward, *block.backward_input, *block.backward_weight]


@pytest.mark.parametrize("name", ROWS)
def test_mixtral_expert_gemms_run_at_the_measured_large_gemm_plateau(name):
    scenario, _, block = _block(name)
    gpu = scenario.cluster.gpu
    experts = [op for op in _ops(block) if op.name.startswith("expert_") and op.kind == "gemm"]
    assert len(experts) == 6     # fc1 and fc2: forward, dgrad, wgrad; one local expert each
    for op in experts:
        compute, memory = kernels.roofline_s(op, gpu, "bf16", sustained=False)
        assert compute > memory, op.name                                    # compute-bound
        tflops = op.flop / compute / 1e12
        assert 0.95 * PLATEAU_TFLOPS <= tflops <= 1.03 * PLATEAU_TFLOPS, (op.name, tflops)
        # in training the sustained clock (efficiency.yaml clock_ratio, 0.80 on H100) is all that slows them
        sustained = kernels.roofline_s(op, gpu, "bf16", sustained=True)[0]
        assert sustained == pytest.approx(compute / kernels.clock_ratio(gpu.name), rel=1e-9)


@pytest.mark.parametrize("name", ("moezoo-mixtral-8x22b-128-h100", "mcore-mixtral-8x7b-64-h100"))
def test_mixtral_dispatch_all_to_all_runs_at_nccls_nvlink_rate(name):
    scenario, shard, _ = _block(name)
    m, p = scenario.model, scenario.parallelism
    routed = moe.routed_tokens(m, shard)                     # a rank's tokens a microbatch (sequence-parallel shard)
    size = routed * m.moe.top_k * m.hidden * 2               # the k routed copies, bf16
    assert size / 1e6 == pytest.approx({"moezoo-mixtral-8x22b-128-h100": 50.3,
                                        "mcore-mixtral-8x7b-64-h100": 67.1}[name], rel=0.01)
    fabric = topology.build("rail-fat-tree", gpus=16, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                            nic=hardware.nic("connectx-7"))
    group = tuple(range(p.ep))                               # EP 8 inside one node
    t = timing.isolated_time_s(fabric, "alltoall", group, size)
    busbw = size / t * (p.ep - 1) / p.ep
    assert 0.85 * NVLINK4_BUSBW < busbw <= NVLINK4_BUSBW
    # the plateau (1 GB): NCCL's measured rate within 1%
    big = timing.isolated_time_s(fabric, "alltoall", group, 1e9)
    assert 1e9 / big * (p.ep - 1) / p.ep == pytest.approx(NVLINK4_BUSBW, rel=0.01)


@pytest.mark.parametrize("name", ROWS)
def test_mixtral_permutation_is_its_copies_at_hbm_rate(name):
    scenario, shard, block = _block(name)
    m = scenario.model
    routed = moe.routed_tokens(m, shard)
    copies = (1 + m.moe.top_k) * routed * m.hidden * 2
    permutes = [op for op in block.forward if op.name == "permute"]
    assert len(permutes) == 1 and permutes[0].hbm_bytes == pytest.approx(copies, rel=1e-9)
    compute, memory = kernels.roofline_s(permutes[0], scenario.cluster.gpu, "bf16")
    assert memory >= copies / H100_HBM and memory <= copies / (0.85 * H100_HBM)


def test_the_dropless_rows_busiest_rank_is_the_coarse_references_spread_and_the_padded_row_has_none():
    """The drawn imbalance, closed form: 1 + hypot(CV_sys, CV_sampling) z(8) with CV_sys = sqrt(L - 1) of the
    8-expert reference (data/moe.yaml, NVIDIA/Megatron-LM#756's plateau, mean L = 1.01790) and the EP group's
    multinomial noise (T = ep x etp x tokens / tp routed tokens; 16,384 for the 8x22B, 32,768 for the 8x7B). The
    padded twin runs exactly its capacity (1.0)."""
    cv_sys = math.sqrt(sum(moe.reference_router(8)["switch_balance"]) / 6 - 1.0)
    assert cv_sys == pytest.approx(0.1338, abs=5e-4)
    for name, tokens in (("moezoo-mixtral-8x22b-128-h100", 16384), ("mcore-mixtral-8x7b-64-h100", 32768)):
        scenario, shard, _ = _block(name)
        p = scenario.parallelism
        assert moe.ep_group_tokens(scenario.model, shard, p.ep, p.etp) == pytest.approx(tokens)
        expected = 1 + math.hypot(cv_sys, sampling_cv(8, 2, tokens)) * expected_max_normal(8)
        assert moe.step_load(scenario.model, shard, p.ep, p.etp) == pytest.approx(expected, rel=1e-9)
        assert expected == pytest.approx(1.192, abs=0.002)
    scenario, shard, _ = _block("moezoo-mixtral-8x22b-128-h100-drop")
    p = scenario.parallelism
    assert moe.step_load(scenario.model, shard, p.ep, p.etp) == 1.0
