"""A Simple ring step's latency runs behind its second slice (NVIDIA/nccl src/include/collectives.h: SlicePerChunk =
REDUCESCATTER_CHUNKSTEPS / REDUCESCATTER_SLICESTEPS = 4 / 2; prims_simple.h genericOp posts each slice before
writing the next).

The chain, written out independently of the code: every rank's step j needs slice k of its predecessor's step
j-1, which arrives one hop latency L after it left. The first step takes L + c (c: the step's transfer alone);
each later one max(c, L + c/2), where a chunk's first slice is max(half of it, 32 KiB) (genericOp's floor
sliceSize/32). LL128 sends a step as one piece through the proxy: L + c every step.
Ring reduce-scatter of one group with one GPU per node (TP 8 fills the nodes), NDR 400 Gb/s NICs at 47 GB/s for
Simple (nccl-tests#290), NCCL's Ring/Simple latencies 8.4 us + 14 us per network step (tuning.cc).
"""

from __future__ import annotations

import pytest

from simcluster import collectives
from simcluster.collectives import Collective, timing
from simcluster.fabric import topology
from simcluster.spec import hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")
BASE_S, STEP_S = 8.4e-6, 14.0e-6
NIC_BUSBW = 47e9
# what a one-GPU-per-node LL128 ring pays when it runs (NCCL 2.23+'s model: 120/128 of busBw whatever ppn, the Tree
# row's 8.5 us a network step; nccl.yaml protocols, "WHAT THE RUN PAYS"); NCCL 2.18-2.21 chose it by 0.7 and 4.0 us
LL128_BASE_S, LL128_STEP_S, LL128_PPN1_BUSBW = 14.0e-6, 8.5e-6, 0.92 * 47e9
BUCKET = 244_286_976   # one Nemotron-4 15B layer's fp32 gradients at TP 8


def _reduce_scatter_s(ranks: int, size: float, protocol: str) -> tuple[float, float]:
    """(time, the ring's longest inter-node path latency)."""
    fabric = topology.build("rail-fat-tree", gpus=8 * ranks, gpus_per_node=8, gpu=H100, nic=CX7)
    group = list(range(0, 8 * ranks, 8))   # local rank 0 of every node: one rail
    call = Collective("reduce_scatter", group, size, algorithm="ring", protocol=protocol)
    path_s = max(fabric.path_latency_s(a, b) for a, b in zip(group, group[1:] + group[:1], strict=True))
    return collectives.run(call, fabric, "analytic", gpu=H100).time_s, path_s


def _sliced_s(ranks: int, size: float) -> float:
    c = size / ranks / NIC_BUSBW
    return BASE_S + (STEP_S + c) + (ranks - 2) * max(c, STEP_S + c / 2)


@pytest.mark.parametrize("ranks", [16, 96, 192])
def test_simple_ring_step_takes_the_slower_of_its_transfer_and_latency_plus_half_of_it(ranks):
    """96 ranks: c = 53 us, half of it covers the 14 us; 192: c = 27 us, 0.5 us of it shows; 16: c = 325 us."""
    assert _reduce_scatter_s(ranks, BUCKET, "Simple")[0] == pytest.approx(_sliced_s(ranks, BUCKET), rel=1e-3)


def test_steps_of_one_minimum_slice_hide_nothing():
    """1 MB over 96 ranks at one GPU per node: a 10.4 kB chunk, below genericOp's 32 KiB slice floor (sliceSize/32 of
    1 MiB), goes as one slice, so each step costs L + c, as on LL128."""
    size = 1e6
    c = size / 96 / NIC_BUSBW
    assert _reduce_scatter_s(96, size, "Simple")[0] == pytest.approx(BASE_S + 95 * (STEP_S + c), rel=1e-3)


def test_steps_between_one_and_two_minimum_slices_send_a_32_kib_slice_first():
    """48 KiB chunks a channel: slices of 32 KiB and 16 KiB, so a step waits L plus 2/3 of its transfer, not half of
    it. A step's bytes are split over the ring's NCCL channels (4 for one H100 a node on one 400 Gb/s port, round 35:
    interference.network_ring_channels), so the step carries 4 chunks of 48 KiB."""
    channels = 4
    chunk = 48 * 1024
    size = 96 * channels * chunk
    c = channels * chunk / NIC_BUSBW
    expected = BASE_S + (STEP_S + c) + 94 * max(c, STEP_S + c * (32 * 1024) / chunk)
    assert _reduce_scatter_s(96, size, "Simple")[0] == pytest.approx(expected, rel=1e-4)


def test_ll128_ring_pays_latency_and_transfer_on_every_step():
    """One slice per chunk: nothing hidden (0.92 of busBw and 8.5 us a step at one GPU per node, NCCL 2.23+)."""
    c = BUCKET / 288 / LL128_PPN1_BUSBW
    elapsed, path_s = _reduce_scatter_s(288, BUCKET, "LL128")
    # NCCL's latency includes the hardware's path latency (4.1-4.7 us here): the larger of the two
    assert elapsed == pytest.approx(LL128_BASE_S + 287 * (max(LL128_STEP_S, path_s) + c), rel=1e-3)


def _engine_s(fabric, run) -> tuple[float, list]:
    """Seconds the engine's collective driver takes for ``run(driver)`` alone on ``fabric``, and its programs."""
    import simpy

    from simcluster import network
    from simcluster.engine.drivers import CollectiveDriver, NetworkDriver

    env = simpy.Environment()
    driver = CollectiveDriver(env, fabric, NetworkDriver(env, network.make("flow", collectives.calibrated(fabric))))
    env.process(run(driver))
    env.run()
    return env.now, list(driver._programs.values())


def test_engine_sends_the_first_step_alone_and_hides_part_of_the_later_latencies():
    """192 ranks, one GPU per node: c = 27 us, so only c/2 = 13.5 us of each later step's 14 us hides (L > c/2):
    the engine's program sends the first repeat on its own, then the other 190 after their remaining latency, and
    takes what the chain takes, BASE + (L + c) + 190 max(c, L + c/2)."""
    ranks = 192
    fabric = topology.build("rail-fat-tree", gpus=8 * ranks, gpus_per_node=8, gpu=H100, nic=CX7)
    group = tuple(range(0, 8 * ranks, 8))
    elapsed, (program,) = _engine_s(fabric, lambda d: d.run("reduce_scatter", [group], BUCKET, algorithm="ring"))
    sends = [action for action in program if isinstance(action, timing.Send)]
    assert len(sends) == 2 and sends[1].transfers[0].size_bytes == pytest.approx((ranks - 2) * BUCKET / ranks)
    assert elapsed == pytest.approx(_sliced_s(ranks, BUCKET), rel=1e-3)


NVLINK_BUSBW = 370e9            # H100 NVLink ring/Simple busbw, 8 GPUs (sjeaugey, NVIDIA/nccl-tests#212)
NVLINK_STEP_S = 3.4e-6          # NCCL tuning.cc hwLat[NVLINK], Ring/Simple


def test_a_fused_tensor_parallel_block_takes_each_ring_s_chain_time():
    """A TP block's 2 all-gathers and 2 reduce-scatters of 32 MiB on one H100 node (Simple: below ~16 MiB NCCL
    picks LL128, which hides nothing), fused into one transfer: each collective of k = 7 steps costs
    BASE + k (L + c) - (k - 1) h, c = 4 MiB / 370 GB/s = 11.3 us, h = min(L, c/2) = L = 3.4 us (512 KiB a channel,
    8 channels: two even slices)."""
    size, n = 32 * 2**20, 8
    fabric = topology.build("nvswitch-node", gpus=n, gpus_per_node=n, gpu=H100, nic=CX7)
    calls = (("all_gather", 2), ("reduce_scatter", 2))
    elapsed, _ = _engine_s(fabric, lambda d: d.run_block(calls, [tuple(range(n))], size, "tp", algorithm="ring"))
    c, k = size / n / NVLINK_BUSBW, n - 1
    hidden = min(NVLINK_STEP_S, c / 2)
    assert elapsed == pytest.approx(4 * (BASE_S + k * (NVLINK_STEP_S + c) - (k - 1) * hidden), rel=1e-3)
