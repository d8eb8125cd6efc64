"""NCCL over NVLink per NVLink generation: the model's one-node all-reduce bus bandwidth on each GPU against the
published nccl-tests measurement of its generation (data/nccl.yaml ``measured``), and against measurements that are
NOT inputs of the model (other systems, other GPUs of the same generation).

busbw as nccl-tests reports it (doc/PERFORMANCE.md): 2(n-1)/n S / t. Sizes: nccl-tests' "8G" is 8 GiB.
Tolerance 3%: at 8 GiB the NCCL latencies the model adds are below 0.1% of the time, and the published runs
repeat to about 1% (Azure's A100 table: 230.2/230.5/231.6 GB/s at 2/4/8 GB; nccl-tests#175: 232.5 GB/s on another
A100 system). A GPU on another generation's figure is off by 6-9% (A100 on H100's ring efficiency: 246 GB/s,
B200: 738 GB/s), so each test fails if the GPU's generation stops reaching the calibration.
"""

from __future__ import annotations

import pytest

from simcluster import collectives
from simcluster.collectives import Collective
from simcluster.fabric import topology
from simcluster.spec import hardware

CX7 = hardware.nic("connectx-7")
GIB = 2**30
TOLERANCE = 0.03

# Ring all-reduce busbw, NCCL_ALGO=Ring or a GPU without NVLS, one node, large messages (the inputs, nccl.yaml):
RING_BUSBW = {
    # 8x A100-SXM4-80GB, Azure ND A100 v4, NCCL 2.18.5, 8 GB (Azure/AI-benchmarking-guide ND_A100_v4_results.md)
    "a100-80gb-sxm": (8, 231.6e9),
    # the 40GB part has the same NVLink 3 and NVSwitch 2 (A100 datasheet): the same figure
    "a100-40gb-sxm": (8, 231.6e9),
    # 8x H100 SXM, NCCL_ALGO=Ring: ~370 GB/s (sjeaugey, NVIDIA/nccl-tests#212)
    "h100-sxm": (8, 370e9),
    # 4x GB200 of one tray, NCCL 2.25.1, Ring, 8 GB (Azure/AI-benchmarking-guide ND_GB200_v6_results.md)
    "gb200": (4, 679.6e9),
}
# NVLS all-reduce busbw, NCCL's default on NVSwitch 3/4 nodes (the inputs):
NVLS_BUSBW = {
    "h100-sxm": 480e9,  # sjeaugey, NVIDIA/nccl-tests#212
    "b200": 830e9,  # "Ours is 830+", 8x B200, NCCL 2.27 defaults (pzcyyj, NVIDIA/nccl#1807)
}

# Measurements that are not inputs of the model:
# 8x A100, one node, all_reduce_perf -g 8 up to 4 GB: 232.54 GB/s (lcw2, NVIDIA/nccl-tests#175)
A100_OTHER_SYSTEM = 232.54e9
# 8x H200, NVLS: 479.98 GB/s at 8 GB, NCCL 2.20.5 (Azure ND H200 v5 results); 475 GB/s at 4 GB, NCCL 2.20.3
# (vitduck, NVIDIA/nccl-tests#272). The model has no H200 measurement: it uses H100's NVLink 4 figures.
H200_NVLS = (479.98e9, 475e9)
# NCCL's own topology model of a GPU's NVLink bandwidth (src/graph/topo.h, SMxx_NVLINK_BW x links): the most its
# ring search assumes a GPU can carry; a measured ring stays below it.
NCCL_MODEL_NVLINK = {"a100-80gb-sxm": 12 * 20.0e9, "h100-sxm": 18 * 20.6e9, "b200": 18 * 40.1e9}


def node(name: str, gpus: int = 8):
    return topology.build("nvswitch-node", gpus=gpus, gpus_per_node=gpus, gpu=hardware.gpu(name), nic=CX7)


def allreduce(name: str, gpus: int, size: float, network: str, algorithm: str = "auto"):
    """One all-reduce of ``size`` bytes on ``gpus`` GPUs ``name`` of one NVSwitch node."""
    return collectives.run(Collective("allreduce", range(gpus), size, algorithm=algorithm), node(name, gpus),
                           network)


@pytest.mark.parametrize("network", ["analytic", "flow"])
@pytest.mark.parametrize("name", sorted(RING_BUSBW))
def test_ring_allreduce_busbw_is_the_measurement_of_the_gpus_nvlink_generation(name, network):
    gpus, measured = RING_BUSBW[name]
    outcome = allreduce(name, gpus, 8 * GIB, network, algorithm="ring")
    assert outcome.busbw_bytes_per_s == pytest.approx(measured, rel=TOLERANCE)


@pytest.mark.parametrize("network", ["analytic", "flow"])
@pytest.mark.parametrize("name", sorted(NVLS_BUSBW))
def test_default_allreduce_is_nvls_at_the_measured_busbw(name, network):
    outcome = allreduce(name, 8, 8 * GIB, network)
    assert outcome.algorithm == "nvls"
    assert outcome.busbw_bytes_per_s == pytest.approx(NVLS_BUSBW[name], rel=TOLERANCE)


def test_a100_default_allreduce_is_a_ring_at_another_systems_measurement():
    """A100 has no NVLink SHARP: NCCL's default on one node is a ring, at the plateau another system measured."""
    outcome = allreduce("a100-40gb-sxm", 8, 4 * GIB, "flow")
    assert outcome.algorithm == "ring"
    assert outcome.busbw_bytes_per_s == pytest.approx(A100_OTHER_SYSTEM, rel=TOLERANCE)


def test_h200_nvls_busbw_matches_h200_measurements_it_was_not_given():
    simulated = allreduce("h200-sxm", 8, 8 * GIB, "flow").busbw_bytes_per_s
    for measured in H200_NVLS:
        assert simulated == pytest.approx(measured, rel=TOLERANCE)


def test_ring_on_8_blackwell_gpus_matches_the_4_gpu_measurement():
    """A ring's busbw does not depend on its size (365-370 GB/s from 2 to 8 H100, NVIDIA/nccl#1455): 8 B200 run at
    GB200's 4-GPU figure."""
    outcome = allreduce("b200", 8, 8 * GIB, "flow", algorithm="ring")
    assert outcome.busbw_bytes_per_s == pytest.approx(RING_BUSBW["gb200"][1], rel=TOLERANCE)


@pytest.mark.parametrize("name", sorted(NCCL_MODEL_NVLINK))
def test_ring_busbw_stays_below_nccls_own_nvlink_model(name):
    outcome = allreduce(name, 8, 8 * GIB, "flow", algorithm="ring")
    assert outcome.busbw_bytes_per_s <= NCCL_MODEL_NVLINK[name]
