"""Which NVLink measurement applies where: per NVLink generation, through every path that charges NVLink time
(the calibrated fabric, NCCL's choice, the engine's wire factors, the overlap slowdowns)."""

from __future__ import annotations

import pytest

from simcluster import collectives
from simcluster.collectives import nccl, timing
from simcluster.core import catalog
from simcluster.core.units import BYTES_PER_S, parse
from simcluster.fabric import topology
from simcluster.spec import hardware

CX7 = hardware.nic("connectx-7")


def measured(kind: str, key: str) -> float:
    entry = catalog.load("nccl")["measured"][kind][key]
    return parse(entry["value"], BYTES_PER_S) / parse(entry["line_rate"], BYTES_PER_S)


@pytest.mark.parametrize(("name", "key"), [
    ("a100-40gb-sxm", "nvlink3"), ("a100-80gb-sxm", "nvlink3"), ("h100-sxm", "nvlink4"), ("h200-sxm", "nvlink4"),
    ("b200", "nvlink5"), ("b300", "nvlink5"), ("gb200", "nvlink5"), ("gb300", "nvlink5"),
])
def test_each_gpu_takes_its_nvlink_generations_ring_efficiency(name, key):
    gpu = hardware.gpu(name)
    assert nccl.nvlink_key(gpu) == key
    assert nccl.efficiency("ring", "Simple", "nvlink", gpu) == pytest.approx(measured("nvlink_ring_busbw", key))


def test_a_gpu_without_a_measured_generation_and_no_gpu_take_the_stated_fallback():
    fallback = catalog.load("nccl")["measured"]["nvlink_fallback"]
    assert nccl.nvlink_key(hardware.gpu("mi300x")) == fallback  # Infinity Fabric: generation 0, no measurement
    assert nccl.nvlink_key(None) == fallback
    assert nccl.nvlink_key(hardware.gpu("a100-80gb-sxm"), "nvls_busbw") == fallback  # A100 has no NVLS figure
    assert nccl.efficiency("ring", "Simple", "nvlink") == nccl.efficiency("ring", "Simple", "nvlink",
                                                                           hardware.gpu("h100-sxm"))


def test_network_efficiency_does_not_depend_on_the_gpu():
    names = ("a100-80gb-sxm", "b200", "h100-sxm")
    effs = {nccl.efficiency("ring", "Simple", "network", hardware.gpu(n)) for n in names}
    assert len(effs) == 1


def test_calibrated_fabric_scales_nvlink_by_the_fabrics_gpu():
    a100 = hardware.gpu("a100-80gb-sxm")
    fabric = topology.build("nvswitch-node", gpus=8, gpus_per_node=8, gpu=a100, nic=CX7)
    view = collectives.calibrated(fabric)
    nvlink = [i for i, kind in enumerate(fabric.link_kind) if nccl.link_family(str(kind)) == "nvlink"]
    assert nvlink
    for i in nvlink:
        assert view.link_bytes_per_s[i] == pytest.approx(fabric.link_bytes_per_s[i] * 231.6 / 300)


def test_engine_wire_factor_of_nvls_uses_the_fabrics_generation():
    """The engine runs NVLS on its ring-calibrated network with bytes scaled by ring/NVLS efficiency: on B200 that
    ratio is NVLink 5's (679.6/900) / (830 n/(2(n-1)) (n+1)/n / 900), not H100's."""
    b200 = hardware.gpu("b200")
    fabric = topology.build("nvswitch-node", gpus=8, gpus_per_node=8, gpu=b200, nic=CX7)
    steps = timing.engine_schedule(fabric, "allreduce", tuple(range(8)), 2**33)
    (nvls,) = [tc for step in steps for tc in step.transfers]
    ring_eff = 679.6 / 900
    nvls_eff = 830 * 8 / 14 * 9 / 8 / 900
    assert nvls.size_bytes == pytest.approx(2**33 * 9 / 8 * ring_eff / nvls_eff)
