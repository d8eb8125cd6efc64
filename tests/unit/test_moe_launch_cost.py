"""The MoE layer's zero-work launches (router, per-expert GEMMs in series, per-expert quantizes: ``moe.host_launches``)
priced by what was measured, not by the dense runs' fitted per-kernel gap (docs/calibration.md "Round 28").

Sources:
- a short kernel queued back to back takes ~3.8 us a kernel (~2.9 us of kernel; NVIDIA Technical Blog, "Getting
  Started with CUDA Graphs", 2019: efficiency.yaml ``launch_overhead_s``, 4 us);
- Kineto traces of real training (shared/traces/kineto, HolisticTraceAnalysis test data; ``python
  scripts/kineto_kernel_gaps.py TRACE``): the stream's idle before a memory-bound kernel the host had already queued,
  median 1.2 us (a100-2rank-allreduce, 634 kernels) and 3 us (a100-16rank-sendrecv's compute stream, 4,862 kernels,
  1 us resolution); the memory-bound kernels there last at least 1.3 us and 2 us (median 9.2 and 4 us);
- Yao et al. 2025 (NVIDIA/Megatron-LM docs/discussions/deepseek-v3-gb200-optimization, section 2.1.4 and the table
  of section 3): fusing the router (72 -> 31 forward kernels, TE PR 1883) took DeepSeek-V3 MXFP8 on 256 GB200
  (TP1 PP8 VPP4 EP32, MBS 1, GBS 2048, alltoall dispatcher, no CUDA graphs) from 529.55 to 540.00 TFLOP/s a GPU.
"""

from __future__ import annotations

import pytest

from simcluster.parallel.plan import shard_for
from simcluster.spec import config, hardware
from simcluster.workload import kernels, moe
from simcluster.workload.ops import Shard, _memory

# Yao et al. 2025, section 3 table: before and after "Router fusion"; section 2.1.4: router kernels 72 -> 31
YAO_TFLOPS = (529.55, 540.00)
YAO_ROUTER_FORWARD_KERNELS = (72, 31)
YAO_GPUS, YAO_GBS, YAO_SEQ, YAO_PP, YAO_VPP, YAO_DP = 256, 2048, 4096, 8, 4, 32
YAO_LAYERS_PER_RANK = 8   # --pipeline-model-parallel-layout Et|(tt|)*30L: 4 virtual stages of 2 layers a rank


def test_a_queued_launch_costs_the_stream_a_short_kernels_measured_time():
    """The stream time of a zero-work queued launch is a short kernel's back-to-back time (NVIDIA's 3.8 us, 6%),
    and lies between the traces' queued idle plus their shortest memory-bound kernel (1.2 + 1.3 us) and the
    16-rank trace's queued idle plus its median memory-bound kernel (3 + 4 us); the fitted gap (25 us) is outside
    that bracket."""
    q = kernels.launch_overhead_s()
    assert q == pytest.approx(3.8e-6, rel=0.06)
    assert (1.2 + 1.3) * 1e-6 <= q <= (3.0 + 4.0) * 1e-6
    assert not (1.2 + 1.3) * 1e-6 <= kernels.host_model().kernel_gap_s <= (3.0 + 4.0) * 1e-6


@pytest.mark.parametrize("gpu_name", ["h100-sxm", "b200", "gb200"])
def test_queued_launches_add_their_measured_time_and_their_dispatch_but_no_gap(gpu_name):
    """N queued launches beside a copy: the device side grows by N x launch_overhead_s and not by the fitted gap,
    the kernel count (what the gap and the fit scale) by none, the host side by N dispatches at the host's CPU."""
    gpu = hardware.gpu(gpu_name)
    copy = _memory("copy", 0.0, 1e9)
    queued = _memory(kernels.QUEUED_LAUNCH, 0.0, 0.0)
    host = kernels.host_model()
    alone, with_launches = (kernels.stream_time([copy] + [queued] * n, gpu, "bf16") for n in (0, 17))
    assert with_launches.kernels == alone.kernels == 1
    assert with_launches.device_bound_s(host) - alone.device_bound_s(host) == pytest.approx(
        17 * kernels.launch_overhead_s(), rel=1e-12)
    assert with_launches.host_bound_s(host) - alone.host_bound_s(host) == pytest.approx(
        17 * host.dispatch_s * kernels.host_cpu_ratio(gpu_name), rel=1e-12)


@pytest.mark.parametrize("gpu_name", ["b200", "gb200"])
def test_after_a_sync_queued_launches_then_a_long_kernel_stall_the_stream_by_the_hosts_lead(gpu_name):
    """After a host sync the host issues N queued launches then a long copy, each launch costing it d (dispatch_s
    x the host's cpu ratio, > the queued time q): the stream runs each launch as it comes (q), then waits for the
    copy's launch at (N + 1) d: idle (N + 1) d - N q, whatever the fitted gap."""
    gpu = hardware.gpu(gpu_name)
    host = kernels.host_model()
    d, q = host.dispatch_s * kernels.host_cpu_ratio(gpu_name), kernels.launch_overhead_s()
    assert d > q
    copy = _memory("copy", 0.0, 1e9)
    ops = [_memory(kernels.HOST_SYNC, 0.0, 0.0)] + [_memory(kernels.QUEUED_LAUNCH, 0.0, 0.0)] * 12 + [copy]
    assert kernels.stream_time(ops, gpu, "bf16").stall_s == pytest.approx(13 * d - 12 * q, rel=1e-9)


def test_the_layers_collectives_keep_the_gap_as_kernels():
    """The aux-loss all-reduce and the probabilities' all-to-all are NCCL kernels with a latency of their own: they
    stay kernels of the block (the fitted gap each), not queued launches."""
    spec = config.load("moezoo-qwen3-235b-256-h100-a2a").model
    shard = Shard(seq_len=4096, micro_batch=1, tp=2)
    block = moe.moe_block(spec, shard, ep=8, router=moe.Router("fused", "fp32", "aux_loss"))
    collectives = moe.layer_collectives(shard, 8, False, moe.Router("fused", "fp32", "aux_loss"))
    forward = sum(op.name == moe.COLLECTIVE_LAUNCH for op in block.forward)
    assert forward == collectives["router_forward"] + collectives["forward"] == 2
    gpu = hardware.gpu("h100-sxm")
    only = kernels.stream_time([op for op in block.forward if op.name == moe.COLLECTIVE_LAUNCH], gpu, "bf16")
    assert only.kernels == 2


def _yao_saving_per_router_launch_s() -> float:
    """Step time Yao et al.'s router fusion saved per forward router kernel it removed, per MoE layer-microbatch of
    the busiest rank: the step at each TFLOP/s (the model's FLOP count of DeepSeek-V3 at the run's batch), over the
    rank's 8 layers x 64 microbatches and the interleaved schedule's bubble (1 + (pp - 1) / (vpp x microbatches)),
    over the 41 forward kernels removed. An upper side: the backward's router kernels fused too and the fused
    kernels move fewer bytes, so each launch saved at most this."""
    spec = config.load("nemo2511-deepseek-v3-256-gb200-fp8").model
    flop = moe.model_flop_per_step(spec, YAO_SEQ, YAO_GBS)
    before, after = (flop / (YAO_GPUS * tflops * 1e12) for tflops in YAO_TFLOPS)
    microbatches = YAO_GBS // YAO_DP
    layer_microbatches = YAO_LAYERS_PER_RANK * microbatches * (1 + (YAO_PP - 1) / (YAO_VPP * microbatches))
    removed = YAO_ROUTER_FORWARD_KERNELS[0] - YAO_ROUTER_FORWARD_KERNELS[1]
    return (before - after) / layer_microbatches / removed


def test_router_fusion_bounds_what_a_router_launch_costs_on_gb200():
    """A block takes the slower of its host and device sides, so removing n launches that each cost h on the host
    and d on the device shortens it by at least n min(h, d). Yao et al.'s router fusion saved ~16 us of step a
    removed forward router kernel on 256 GB200 (an upper side, ``_yao_saving_per_router_launch_s``): the model's
    min(h, d) for a router launch must not exceed it. With the fitted gap as the device cost it would (25 us on the
    device, 37 us of Grace host); a queued launch (4 us) does not. One measured change, its launch count the
    guide's; the model's own prediction of the change (24 us a launch on Grace, its host binding) is not asserted."""
    saving = _yao_saving_per_router_launch_s()
    assert 14e-6 < saving < 17e-6   # the derivation: 0.34 s a step (of 17.4 s), 0.64 ms a layer-microbatch, 41
    scenario = config.load("nemo2511-deepseek-v3-256-gb200-fp8")
    shard = shard_for(scenario)
    router = moe.Router("fused", "fp32", "seq_aux_loss")
    gpu = hardware.gpu("gb200")
    eager, graphed = (kernels.stream_time(moe.moe_block(scenario.model, shard, ep=32, cuda_graphs=graphs,
                                                        router=router).forward, gpu, "fp8")
                      for graphs in (False, True))
    launches = moe.launch_counts(8, router=router)["router_forward"]["router"]
    assert launches == 29
    host = kernels.host_model()
    device_each = (eager.device_bound_s(host) - graphed.device_bound_s(host)) / launches
    host_each = (eager.host_bound_s(host) - graphed.host_bound_s(host)) / launches
    assert min(device_each, host_each) <= saving
    assert device_each == pytest.approx(kernels.launch_overhead_s(), rel=1e-9)
