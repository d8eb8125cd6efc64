"""Network models on hand-built fabrics: analytic alpha-beta, store-and-forward chunks, and the factory."""

from __future__ import annotations

import numpy as np
import pytest

from simcluster import network
from simcluster.core.errors import ScenarioError
from simcluster.network.analytic import AnalyticNetwork
from simcluster.network.base import TransferClass
from simcluster.network.store_forward import StoreForwardNetwork


class StarFabric:
    """GPUs around one switch: link 2i is GPU i -> switch, link 2i+1 is switch -> GPU i."""

    def __init__(self, gpus: int, link_bytes_per_s: float, link_latency_s: float):
        self.gpus_per_node = gpus
        self.link_bytes_per_s = np.full(2 * gpus, float(link_bytes_per_s))
        self.link_latency_s = np.full(2 * gpus, float(link_latency_s))
        self.link_kind = ["nvlink"] * (2 * gpus)

    def path_links(self, src, dst, salt=0):
        return np.zeros(0, dtype=np.int64) if src == dst else np.array([2 * src, 2 * dst + 1])

    def path_latency_s(self, src, dst):
        return float(self.link_latency_s[self.path_links(src, dst)].sum())

    def links_of(self, pairs, salt=0):
        flat = np.concatenate([self.path_links(s, d) for s, d in np.asarray(pairs)])
        return np.unique(flat, return_counts=True)


class ChainFabric:
    """GPU 0 -> GPU 1 over ``hops`` links of equal capacity (store-and-forward stages)."""

    def __init__(self, hops: int, link_bytes_per_s: float):
        self.gpus_per_node = 2
        self.link_bytes_per_s = np.full(hops, float(link_bytes_per_s))
        self.link_latency_s = np.zeros(hops)
        self.link_kind = ["ib"] * hops

    def path_links(self, src, dst, salt=0):
        return np.arange(len(self.link_bytes_per_s)) if src != dst else np.zeros(0, dtype=np.int64)

    def path_latency_s(self, src, dst):
        return 0.0

    def links_of(self, pairs, salt=0):
        return np.unique(
            np.concatenate([self.path_links(s, d) for s, d in np.asarray(pairs)]), return_counts=True
        )


def run_alone(model, transfers):
    model.start(transfers, 0.0)
    end_s = model.next_completion_s()
    assert model.advance(end_s) == [0]
    return end_s


def test_analytic_class_alone_takes_latency_plus_size_over_bottleneck():
    fabric = StarFabric(4, link_bytes_per_s=100e9, link_latency_s=1e-6)
    ring = TransferClass([(0, 1), (1, 2), (2, 3), (3, 0)], 1e9)
    # each pair: 2 links of 1 us; every link carries one transfer of 1 GB at 100 GB/s
    assert run_alone(AnalyticNetwork(fabric), ring) == pytest.approx(2e-6 + 1e9 / 100e9)


def test_analytic_charges_a_class_its_own_load_on_a_shared_link():
    fabric = StarFabric(4, link_bytes_per_s=100e9, link_latency_s=0.0)
    fan_out = TransferClass([(0, 1), (0, 2), (0, 3)], 1e9)  # three transfers through GPU 0's uplink
    assert run_alone(AnalyticNetwork(fabric), fan_out) == pytest.approx(3 * 1e9 / 100e9)


def test_analytic_classes_do_not_contend():
    fabric = StarFabric(4, link_bytes_per_s=100e9, link_latency_s=0.0)
    model = AnalyticNetwork(fabric)
    model.start(TransferClass([(0, 1)], 1e9), 0.0)
    model.start(TransferClass([(0, 2)], 1e9), 0.0)  # same uplink, but the analytic model ignores contention
    assert model.next_completion_s() == pytest.approx(1e9 / 100e9)
    assert sorted(model.advance(model.next_completion_s())) == [0, 1]


def test_analytic_without_windows_times_and_counts_bytes_as_with_them():
    """A model asked for times only keeps no link windows; its times and link bytes are the windowed model's."""
    fabric = StarFabric(4, link_bytes_per_s=100e9, link_latency_s=1e-6)
    ring = TransferClass([(0, 1), (1, 2), (2, 3), (3, 0)], 1e9)
    kept, bare = AnalyticNetwork(fabric), AnalyticNetwork(fabric, windows=False)
    assert run_alone(bare, ring) == run_alone(kept, ring) == pytest.approx(2e-6 + 1e9 / 100e9)
    assert np.array_equal(bare.link_bytes, kept.link_bytes) and bare.link_bytes.sum() == 8 * 1e9
    assert bare.link_windows() is None and kept.link_windows().bytes.sum() == pytest.approx(8 * 1e9)


@pytest.mark.parametrize("hops", [1, 3, 5])
def test_chunk_store_and_forward_pipeline_on_an_idle_path(hops):
    chunk_bytes, chunks, rate = 1e6, 10, 10e9
    fabric = ChainFabric(hops, rate)
    elapsed = run_alone(
        StoreForwardNetwork(fabric, chunk_bytes=chunk_bytes), TransferClass([(0, 1)], chunks * chunk_bytes)
    )
    # K chunks through h store-and-forward stages: (K + h - 1) c / B
    assert elapsed == pytest.approx((chunks + hops - 1) * chunk_bytes / rate)


def test_chunk_fifo_link_shares_capacity_between_transfers():
    fabric = StarFabric(4, link_bytes_per_s=10e9, link_latency_s=0.0)
    model = StoreForwardNetwork(fabric, chunk_bytes=1e6)
    fan_out = TransferClass([(0, 1), (0, 2)], 20e6)  # 40 MB through GPU 0's uplink, then one chunk downstream
    assert run_alone(model, fan_out) == pytest.approx(40e6 / 10e9 + 1e6 / 10e9)


def test_chunk_look_ahead_survives_a_class_started_before_the_predicted_completion():
    fabric = StarFabric(3, link_bytes_per_s=10e9, link_latency_s=0.0)
    model = StoreForwardNetwork(fabric, chunk_bytes=1e6)
    first = model.start(TransferClass([(0, 1)], 10e6), 0.0)
    alone_s = model.next_completion_s()  # looks ahead assuming nothing else starts
    model.advance(alone_s / 2)
    second = model.start(
        TransferClass([(0, 2)], 10e6), alone_s / 2
    )  # competes for GPU 0's uplink from now on
    finished = {}
    while len(finished) < 2:
        at_s = model.next_completion_s()
        for handle in model.advance(at_s):
            finished[handle] = at_s
    # FIFO: the first class's chunks were all queued at t = 0, so it finishes as if alone; the second queues
    # behind them: the uplink is busy without a gap until 20 MB / 10 GB/s, then its last chunk goes downstream
    assert finished[first] == pytest.approx(alone_s)
    assert finished[second] == pytest.approx(20e6 / 10e9 + 1e6 / 10e9)


def test_models_count_every_byte_on_every_link_it_crosses():
    fabric = StarFabric(4, link_bytes_per_s=100e9, link_latency_s=1e-6)
    ring = TransferClass([(0, 1), (1, 2), (2, 3), (3, 0)], 5e6)
    for name in ("analytic", "chunk"):
        model = network.make(name, fabric)
        run_alone(model, ring)
        assert model.link_bytes.sum() == pytest.approx(4 * 2 * 5e6)  # 4 transfers x 2 links each


def test_make_returns_the_named_model_and_rejects_unknown_names():
    fabric = StarFabric(2, 1e9, 0.0)
    assert network.make("analytic", fabric).name == "analytic"
    assert network.make("chunk", fabric).name == "chunk"
    with pytest.raises(ScenarioError) as err:
        network.make("packet", fabric)
    assert err.value.field == "network"


def test_a_collective_timed_without_link_bytes_takes_the_time_it_takes_with_them():
    """``isolated_time_s``'s models keep neither windows nor link bytes; a collective's time (repeated ring steps
    included, whose bytes ``simulate`` multiplies) is the one of a model that keeps both."""
    from simcluster.collectives import Collective, timing
    from simcluster.fabric import topology
    from simcluster.spec import hardware

    fabric = topology.build("rail-fat-tree", gpus=32, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                            nic=hardware.nic("connectx-7"))
    for op, size in (("allreduce", 1e8), ("all_gather", 3e5), ("reduce_scatter", 4.0)):
        call = Collective(op, tuple(range(0, 32, 2)), size)
        kept = timing.run(call, fabric, "analytic")
        bare = timing.run(call, fabric, "analytic", windows=False, link_bytes=False)
        assert bare.time_s == kept.time_s > 0 and bare.steps == kept.steps > 1
        assert timing.isolated_time_s(fabric, op, call.group, size) == kept.time_s
    model = AnalyticNetwork(timing.calibrated_view(fabric, kept.algorithm, kept.protocol), link_bytes=False)
    assert model.link_bytes is None and timing.simulate(call, model) == kept.time_s
