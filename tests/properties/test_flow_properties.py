"""Invariants of the flow model under random traffic: capacity respected, bytes conserved, time monotone."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simcluster.fabric import topology
from simcluster.network.base import TransferClass
from simcluster.network.flow import FlowNetwork
from simcluster.spec import hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")
FABRICS = {
    "leaf-spine": topology.build("leaf-spine", gpus=32, gpus_per_node=4, gpu=H100, nic=CX7,
                                 options={"hosts_per_leaf": 8, "oversubscription": 3}),
    "rail-fat-tree": topology.build("rail-fat-tree", gpus=32, gpus_per_node=4, gpu=H100, nic=CX7,
                                    options={"radix": 8, "tiers": 3}),
    "torus": topology.build("torus", gpus=24, gpus_per_node=4, gpu=H100, nic=CX7,
                            options={"dims": [2, 3, 4]}),
}

transfer_class = st.tuples(
    st.floats(0.0, 1e-3),                                             # start time, s
    st.lists(st.tuples(st.integers(0, 23), st.integers(0, 23)), min_size=0, max_size=12),
    st.sampled_from([0.0, 1.0, 1e3, 1e6, 3.3e7, 1e9]),                # bytes per pair
)


@settings(max_examples=40, deadline=None)
@given(fabric_name=st.sampled_from(sorted(FABRICS)), classes=st.lists(transfer_class, min_size=1, max_size=6))
def test_random_traffic_respects_capacity_conserves_bytes_and_moves_forward(fabric_name, classes):
    fabric = FABRICS[fabric_name]
    net = FlowNetwork(fabric)
    pending = sorted(classes, key=lambda c: c[0])
    started: dict[int, tuple[float, TransferClass]] = {}
    done: dict[int, float] = {}
    now_s = 0.0
    while pending or net.next_completion_s() < np.inf:
        next_done_s = net.next_completion_s()
        assert next_done_s >= now_s                                   # the future never lies in the past
        if pending and pending[0][0] <= next_done_s:
            start_s, pairs, size_bytes = pending.pop(0)
            for handle in net.advance(start_s):
                done[handle] = start_s
            transfers = TransferClass(np.array(pairs, dtype=np.int64).reshape(-1, 2), size_bytes)
            started[net.start(transfers, start_s)] = (start_s, transfers)
            now_s = start_s
        else:
            for handle in net.advance(next_done_s):
                done[handle] = next_done_s
            now_s = next_done_s
        load = net.link_load_bytes_per_s()
        assert np.all(load <= fabric.link_bytes_per_s * (1 + 1e-9))   # utilisation <= 1 at every instant
    assert set(done) == set(started)                                  # every class completes, once
    expected = np.zeros(fabric.links)
    for handle, (start_s, transfers) in started.items():
        latency_s = max((fabric.path_latency_s(s, d) for s, d in transfers.pairs), default=0.0)
        assert done[handle] >= start_s + latency_s * (1 - 1e-12)      # no class beats its latency
        if transfers.members and transfers.size_bytes > 0:
            links, counts = fabric.links_of(transfers.pairs)
            expected[links] += counts * transfers.size_bytes
            if len(links):  # nor the fastest link it crosses
                fastest_s = transfers.size_bytes / fabric.link_bytes_per_s[links].min()
                assert done[handle] - start_s >= fastest_s * (1 - 1e-9)
    np.testing.assert_allclose(net.link_bytes, expected, rtol=1e-9, atol=1e-6)  # bytes conserved per link
