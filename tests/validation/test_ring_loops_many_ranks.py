"""Round 24 (issue 15): what NCCL's device code does with Nemotron-4 15B's data-parallel buckets at 96-288 ranks of
one GPU per node, and that the simulator charges that chain (docs/calibration/round-24.md, "Round 24: all-gathers at
many data-parallel ranks").

NCCL 2.18-2.21 source (NVIDIA/nccl; V = read):
- `src/collectives/device/all_gather.h` runRing (V): the buffer moves in loops of `loopSize = nChannels x chunkSize`
  elements of each rank's share; one loop is `send`, n-2 `directRecvCopySend`, one `directRecv`, each step waiting
  for the previous rank's previous step of the same loop, and the next loop starts after the last step of this one.
  Loops do not overlap: K loops pay K(n-1) step latencies. reduce_scatter.h is the same with recvReduceSend.
- chunkSize (V): `Proto::calcBytePerStep() x (Simple ? ALLGATHER_CHUNKSTEPS : 1)`. LL128: the step buffer
  DEFAULT_LL128_BUFFSIZE / NCCL_STEPS = 120 x 640 x 8 B (src/init.cc, V) of which 15 of every 16 words carry data:
  576,000 B. Simple: 4 MiB / NCCL_STEPS x 4 = 2 MiB, cut into 2 slices (nccl.yaml `protocols.Simple`).
- LL128 over the network is store-and-forward per step (V): `prims_ll128.h` GenericOp posts the step's tail once,
  after the whole step (`barrier(); postSend()`), and `src/transport/net.cc` sendProxyProgress sends a slot only once
  `*recvTail > base + transmitted` (LL alone skips that wait). The receiving GPU polls each 128-B line's flag, so its
  copy overlaps the arrival, and the next send waits for the whole step: a step costs L + c, nothing hidden.
- Channels: two at one GPU per node on H100 + NDR (one 48 GB/s ring found, duplicated; round 18).

So each bucket of the three rows is ONE loop of its chosen protocol (the LL128 ones) or a loop whose chunk hides the
step latency behind its second slice (the Simple ones), and the simulator's one chain of n-1 steps is NCCL's chain.
"""

from __future__ import annotations

import math

import pytest
from scripts_loader import load_script

from simcluster import collectives
from simcluster.collectives import Collective
from simcluster.fabric import topology
from simcluster.parallel.mcore_buckets import MCORE_EARLY_2024_BUCKET, megatron_core_buckets
from simcluster.spec import hardware
from tests.unit.test_nccl_one_gpu_per_node_choice import _nccl_2_19_time

dp_ring_scaling = load_script("dp_ring_scaling")

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")
NIC_BUSBW = 47e9                      # NDR 400 Gb/s, nccl-tests#290 (nccl.yaml measured.per_nic_busbw)
CHANNELS = 2                          # ncclTopoDupChannels at one GPU per node, H100 + NDR (round 18)
CHUNK_DATA_BYTES = {"LL128": 120 * 640 * 8 * 15 // 16, "Simple": 4 * 2**20 // 8 * 4}   # 576,000 B; 2 MiB
SIMPLE_NET_STEP_S = 14.0e-6           # hwLat NET Simple (Ring and Tree rows alike)
LL128_BASE_S, LL128_RUN_STEP_S, LL128_RUN_FRACTION = 14.0e-6, 8.5e-6, 0.92   # test_dp_rings_many_nodes.py's
H, FFN, KV, VOCAB, LAYERS, TP = 6144, 24576, 1024, 256_000, 32, 8              # arXiv 2402.16819, Table 1


def _buckets(dp: int) -> list[int]:
    """Distinct bucket sizes (elements) of Megatron-Core's early-2024 walk at this data-parallel size."""
    tensors = dp_ring_scaling.gpt_param_tensors(H, FFN, KV, VOCAB, LAYERS, TP)
    return sorted({size for _, size in megatron_core_buckets(tensors, MCORE_EARLY_2024_BUCKET, dp)})


def _run(op: str, ranks: int, size: float):
    fabric = topology.build("rail-fat-tree", gpus=8 * ranks, gpus_per_node=8, gpu=H100, nic=CX7)
    group = list(range(0, 8 * ranks, 8))
    path_s = max(fabric.path_latency_s(a, b) for a, b in zip(group, group[1:] + group[:1], strict=True))
    return collectives.run(Collective(op, group, int(size), algorithm="ring"), fabric, "analytic", gpu=H100), path_s


CASES = [(op, width, dp) for dp in (96, 192, 288) for op, width in (("all_gather", 2), ("reduce_scatter", 4))]


@pytest.mark.parametrize(("op", "width", "dp"), CASES)
def test_each_bucket_is_one_loop_or_hides_its_latency_in_every_loop(op, width, dp):
    """NCCL's loop count K = ceil(share per rank and channel / chunk): K = 1 for every LL128 bucket (one chain of n-1
    unsliced steps, as simulated), and a Simple bucket of K > 1 loops has full 2 MiB chunks whose second slice
    (half a chunk's transfer on a channel's half of the NIC) is longer than the 14 us step latency, so its K(n-1)
    sliced steps cost the n-1 of the simulator's chain."""
    for elements in _buckets(dp):
        outcome, _ = _run(op, dp, elements * width)
        per_channel = elements * width / dp / CHANNELS
        loops = math.ceil(per_channel / CHUNK_DATA_BYTES[outcome.protocol])
        if outcome.protocol == "LL128":
            assert loops == 1, (elements, per_channel)
        else:
            assert outcome.protocol == "Simple"
            half_chunk_s = CHUNK_DATA_BYTES["Simple"] / 2 / (NIC_BUSBW / CHANNELS)
            assert loops == 1 or half_chunk_s > SIMPLE_NET_STEP_S, (elements, loops)


@pytest.mark.parametrize("dp", [96, 192, 288])
def test_a_layer_bucket_all_gather_is_the_unpipelined_chain_nccls_models_price(dp):
    """The 48.78M-element layer bucket's bf16 all-gather (97.6 MB; 33 such at 96 ranks counting the 44.1M/42.5M ones):
    NCCL 2.19's choice LL128, simulated as 14 us + (n-1)(max(8.5 us, path) + c / 0.92), the chain above. That is
    1.49 / 1.88 / 2.28 times its bandwidth time at 96 / 192 / 288 ranks, and 0.92 / 1.04 / 1.14 times NCCL 2.19's
    own estimate of it (0.7 of busBw, 4.0 us a step; 3.33 / 3.73 / 4.12 ms): the ~1.5x the round-23 review found at
    96 ranks is what NCCL's own tuning models price, not a departure from them."""
    size = 48_783_360 * 2
    outcome, path_s = _run("all_gather", dp, size)
    c = size / dp / (LL128_RUN_FRACTION * NIC_BUSBW)
    expected = LL128_BASE_S + (dp - 1) * (max(LL128_RUN_STEP_S, path_s) + c)
    assert outcome.protocol == "LL128"
    assert outcome.time_s == pytest.approx(expected, rel=1e-3)
    bandwidth_s = size * (dp - 1) / dp / NIC_BUSBW
    assert outcome.time_s / bandwidth_s == pytest.approx({96: 1.49, 192: 1.88, 288: 2.28}[dp], abs=0.02)
    nccl_2_19 = _nccl_2_19_time(size, dp, "LL128")
    assert outcome.time_s / nccl_2_19 == pytest.approx({96: 0.92, 192: 1.04, 288: 1.14}[dp], abs=0.02)
