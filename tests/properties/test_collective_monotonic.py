"""A larger message never completes sooner: collective time is non-decreasing in size, whatever `auto` picks."""

import pytest

from simcluster import collectives
from simcluster.fabric import topology
from simcluster.spec import hardware


@pytest.mark.parametrize("gpus", [8, 64, 256])
def test_auto_allreduce_time_never_falls_as_messages_grow(gpus):
    fabric = topology.build("rail-fat-tree", gpus=gpus, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                            nic=hardware.nic("connectx-7"))
    sizes = [2**k for k in range(10, 29, 2)]  # 1 KiB .. 256 MiB
    times = [collectives.run(collectives.Collective("allreduce", tuple(range(gpus)), size), fabric, "flow",
                             gpu=hardware.gpu("h100-sxm")).time_s for size in sizes]
    assert all(later >= earlier * (1 - 1e-9) for earlier, later in zip(times, times[1:], strict=False))
