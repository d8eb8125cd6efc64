"""NCCL's protocol choice for the data-parallel rings of a TP 8 run (one GPU of each group per node, 96 to 288
nodes), against NCCL 2.19-2.21's own tuning model written out here from its source.

src/graph/tuning.cc (ncclTopoTuneModel, NCCL 2.19-2.21, the NCCL of NeMo's 2024 containers): a ring reduce-scatter or
all-gather has nsteps = n - 1 steps, nInterSteps = nNodes - 1 of them across nodes; its latency is baseLat[Ring][p]
+ (nsteps - nInterSteps) intraLat + nInterSteps hwLat[NET][Ring][p], with baseLat Ring {LL 6.6, LL128 14.0, Simple
8.4} us and hwLat NET Ring {2.7, 4.0, 14.0} us; its bus bandwidth is the ring's, times 0.7 for LL128 when ppn =
nRanks / nNodes < 2 ("we are sending/receiving at the same GPU through the NIC, apply some bw discount"; 0.92
otherwise), and ncclTopoGetAlgoTime predicts lat + nBytes (n-1)/n / busBw. NCCL runs the fastest.
"""

from __future__ import annotations

import pytest

from simcluster.collectives import nccl

NIC_BUSBW = 47e9                       # one 400 Gb/s NIC, nccl-tests#290 (nccl.yaml measured.per_nic_busbw)
BASE_LAT = {"LL128": 14.0e-6, "Simple": 8.4e-6}
NET_STEP_LAT = {"LL128": 4.0e-6, "Simple": 14.0e-6}
LL128_FACTOR_PPN1 = 0.7


def _nccl_2_19_time(size_bytes: float, n: int, protocol: str) -> float:
    """NCCL 2.19-2.21's predicted time of a ring reduce-scatter/all-gather over n ranks on n nodes."""
    busbw = NIC_BUSBW * (LL128_FACTOR_PPN1 if protocol == "LL128" else 1.0)
    return BASE_LAT[protocol] + (n - 1) * NET_STEP_LAT[protocol] + size_bytes * (n - 1) / n / busbw


def _simulated(op: str, size_bytes: float, n: int, protocol: str) -> float:
    return nccl.estimate_s(op, "ring", protocol, size_bytes, n=n, nodes=n, local=1,
                           nvlink_bytes_per_s=450e9, network_bytes_per_s=50e9)


# the Nemotron-4 15B rows' buckets: one layer's fp32 gradients (244.3 MB) and bf16 parameters (122.1 MB), and the
# contract twins' max(40M, 1M x DP)-parameter buckets (DP 288: 1116.7 MB of gradients, 558.4 MB of parameters)
CASES = [(op, size, n) for n in (96, 192, 288) for op, size in (("reduce_scatter", 244.3e6), ("all_gather", 122.1e6))]
CASES += [("reduce_scatter", 1116.7e6, 288), ("all_gather", 558.4e6, 288)]


@pytest.mark.parametrize("op,size,n", CASES)
def test_predicted_times_are_nccl_2_19s(op, size, n):
    for protocol in ("LL128", "Simple"):
        assert _simulated(op, size, n, protocol) == pytest.approx(_nccl_2_19_time(size, n, protocol), rel=1e-9)


@pytest.mark.parametrize("op,size,n", CASES)
def test_choice_is_nccl_2_19s(op, size, n):
    expected = min(("LL128", "Simple"), key=lambda p: _nccl_2_19_time(size, n, p))
    chosen = nccl.choose(op, size, n=n, nodes=n, local=1, nvls=True, nvlink_bytes_per_s=450e9,
                         network_bytes_per_s=50e9)
    assert chosen == ("ring", expected)


def test_the_discount_decides_the_protocol_between_96_and_288_nodes():
    # the closed form's own crossover: a 244 MB fp32 bucket is Simple on 96 nodes and LL128 on 288, a 122 MB bf16
    # one LL128 from 192 nodes on; without the 0.7 (NCCL 2.23+'s 0.92) LL128 would win on 96 nodes already
    pick = {(op, n): nccl.choose(op, size, n=n, nodes=n, local=1, nvls=True, nvlink_bytes_per_s=450e9,
                                 network_bytes_per_s=50e9)[1] for op, size, n in CASES[:6]}
    assert pick == {("reduce_scatter", 96): "Simple", ("all_gather", 96): "Simple",
                    ("reduce_scatter", 192): "Simple", ("all_gather", 192): "LL128",
                    ("reduce_scatter", 288): "LL128", ("all_gather", 288): "LL128"}


# ncclTopoGetAlgoTime (NCCL 2.7 to 2.2x): `lat *= minCompCap < 80 ? 1.9 : 1.4; // Plateau effect of ring` for a
# ring/Simple allreduce across nodes once nBytes / (nChannels nRanks) >= 64; a rule of NCCL's estimate only
PLATEAU = 1.4


def _ring_estimate(op, size, n, nodes, protocol="Simple"):
    return nccl.estimate_s(op, "ring", protocol, size, n=n, nodes=nodes, local=n // nodes,
                           nvlink_bytes_per_s=450e9, network_bytes_per_s=50e9)


def test_ring_allreduce_estimate_across_nodes_carries_nccls_plateau_factor():
    n, nodes, size = 64, 8, 256e6
    # ring latency: baseLat 8.4 + intra steps 3.4 (max(hwLat NVLINK 3.4, 3 x 1 us net overhead on Intel hosts)) +
    # inter steps 14, over 2 (nodes - 1) inter-node steps: NCCL 2.23+'s count for an allreduce (2.19-2.21 count
    # 2 nNodes); the simulator spreads the same total over the steps
    steps, inter = 2 * (n - 1), 2 * (nodes - 1)
    latency = 8.4e-6 + (steps - inter) * 3.4e-6 + inter * 14.0e-6
    busbw = min(8 * 47e9, 370e9)       # eight rails of 47 GB/s, capped by NVLink's ring rate
    expected = PLATEAU * latency + 2 * (n - 1) / n * size / busbw
    assert _ring_estimate("allreduce", size, n, nodes) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("op,nodes,protocol", [("reduce_scatter", 8, "Simple"), ("allreduce", 1, "Simple"),
                                               ("allreduce", 8, "LL128")])
def test_no_plateau_factor_outside_multi_node_simple_allreduce(op, nodes, protocol):
    assert nccl.ring_plateau_factor(op, protocol, 256e6, 64, nodes, 64 // nodes) == 1.0
    assert nccl.ring_plateau_factor("allreduce", "Simple", 256e6, 64, 8, 8) == PLATEAU


def test_plateau_factor_only_from_64_bytes_a_channel_and_rank():
    # 8 channels (GPUs per node) x 64 ranks x 64 B = 32 KiB
    assert nccl.ring_plateau_factor("allreduce", "Simple", 8 * 64 * 64 - 1, 64, 8, 8) == 1.0
    assert nccl.ring_plateau_factor("allreduce", "Simple", 8 * 64 * 64, 64, 8, 8) == PLATEAU


def test_no_plateau_factor_on_amd_gpus():
    """RCCL's ncclTopoGetAlgoTime applies the ring plateau only on its non-HIP branch (AMD GPUs correct the ring's
    bandwidth by ringCorrectionFactor instead; ROCm/rccl src/graph/tuning.cc): 1 for the MI300X, 1.4 for the
    H100 and by default (NVIDIA's NCCL)."""
    from simcluster.spec import hardware

    amd, nvidia = hardware.gpu("mi300x"), hardware.gpu("h100-sxm")
    assert amd.vendor == "amd" and nvidia.vendor == "nvidia"
    args = ("allreduce", "Simple", 256e6, 64, 8, 8)
    assert nccl.ring_plateau_factor(*args, gpu=amd) == 1.0
    assert nccl.ring_plateau_factor(*args, gpu=nvidia) == PLATEAU
    assert nccl.ring_plateau_factor(*args) == PLATEAU
    # the estimate NCCL chooses by: linear in size across the 64 B threshold on AMD, a latency step on NVIDIA
    kwargs = dict(n=64, nodes=8, local=8, nvlink_bytes_per_s=450e9, network_bytes_per_s=50e9)
    threshold = 8 * 64 * 64

    def step_s(gpu):
        return (nccl.estimate_s("allreduce", "ring", "Simple", threshold, gpu=gpu, **kwargs)
                - nccl.estimate_s("allreduce", "ring", "Simple", threshold - 1, gpu=gpu, **kwargs))

    assert step_s(amd) < 1e-9 < 1e-6 < step_s(nvidia)
