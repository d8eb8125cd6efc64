"""`nccl.ring_latency_s` against NCCL's tuning model written out (src/graph/tuning.cc, ncclTopoTuneModel, 2.19-2.21):
latency = baseLat + (nsteps - nInterSteps) intraLat + nInterSteps interLat, nsteps = 2(n-1) for allreduce and n-1
for reduce-scatter/all-gather, and every step a network step when each node holds one GPU of the ring."""

from __future__ import annotations

import pytest

from simcluster.collectives import nccl

US = 1e-6


@pytest.mark.parametrize("op, steps", [("reduce_scatter", 95), ("all_gather", 95), ("allreduce", 190)])
def test_one_gpu_per_node_ring_pays_the_network_latency_on_every_step(op, steps):
    base, per_step = nccl.ring_latency_s(op, 96, 96, "Simple")
    assert base == pytest.approx(8.4 * US)
    assert steps * per_step == pytest.approx(steps * 14.0 * US)


def test_two_nodes_of_four_mix_nvlink_and_network_steps():
    """8 ranks on 2 nodes: 14 allreduce steps, 2 of them cross nodes (the simulator's count: one per node boundary
    and phase), the other 12 over NVLink at 3.4 us (Simple)."""
    base, per_step = nccl.ring_latency_s("allreduce", 8, 2, "Simple")
    assert base + 14 * per_step == pytest.approx((8.4 + 12 * 3.4 + 2 * 14.0) * US)


def test_single_node_ring_has_no_network_steps():
    _, per_step = nccl.ring_latency_s("allreduce", 8, 1, "LL128")
    assert per_step == pytest.approx(1.9 * US)
