"""The flow model's look-ahead stops once no class still sending can complete earlier (round 30): a class that
ends sending at ``t`` completes no sooner than ``t`` plus the least latency of the classes sending, so after the first
completion found the smaller sets of routes need no rate solve. The truth here is each class alone on an idle fabric
(its own closed-form time, ``test_flow``'s checks of it against S / B + latency), against which the general look-ahead
(forced, as ``test_flow`` forces it) must give the same first completion, and the stop must have saved the solves."""

from __future__ import annotations

import random

import numpy as np
import pytest

from simcluster.fabric import topology
from simcluster.network.base import TransferClass
from simcluster.network.flow import FlowNetwork
from simcluster.spec import hardware

GIB = 2.0**30


def _fabric():
    return topology.build("rail-fat-tree", gpus=32, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                          nic=hardware.nic("connectx-7"), options={})


def _alone_s(fabric, transfers: TransferClass) -> float:
    """The class's completion alone on an idle fabric (the closed-form path: one class shares no link)."""
    net = FlowNetwork(fabric)
    net.start(transfers, 0.0)
    return net.next_completion_s()


def _look_ahead(monkeypatch, fabric, classes: list[TransferClass]) -> tuple[float, int]:
    """The first completion of ``classes`` started together, through the general look-ahead, and how many send ends
    it solved for."""
    original, calls = FlowNetwork._solve, []

    def never_disjoint(self, key):   # force the general look-ahead through successive send ends
        solved = original(self, key)
        return (solved[0], False, *solved[2:])

    send_end = FlowNetwork._next_send_end

    def counted(self, now_s, remaining):
        calls.append(len(remaining))
        return send_end(self, now_s, remaining)

    monkeypatch.setattr(FlowNetwork, "_solve", never_disjoint)
    monkeypatch.setattr(FlowNetwork, "_next_send_end", counted)
    net = FlowNetwork(fabric)
    for transfers in classes:
        net.start(transfers, 0.0)
    first_s = net.next_completion_s()
    monkeypatch.undo()
    return first_s, len(calls)


def test_the_look_ahead_stops_when_the_first_class_to_end_has_the_least_latency(monkeypatch):
    fabric = _fabric()
    nvlink = TransferClass([[0, 1]], GIB / 64)            # inside a node: the least latency, ends first
    rails = [TransferClass([[2 + i, 10 + i]], GIB / (4 + i)) for i in range(3)]   # over InfiniBand
    alone = [_alone_s(fabric, c) for c in (nvlink, *rails)]
    assert alone[0] == min(alone)
    first_s, solves = _look_ahead(monkeypatch, fabric, [nvlink, *rails])
    assert first_s == pytest.approx(alone[0], rel=1e-12)
    assert solves == 1   # the other three classes' rates were not solved again


def test_the_look_ahead_goes_on_while_a_later_end_can_still_complete_first(monkeypatch):
    # the InfiniBand class ends sending first but its latency is longer than the NVLink class's, which ends sending
    # halfway between the two latencies' difference: the NVLink class completes first, found only by a second end
    fabric = _fabric()
    rail = TransferClass([[2, 10]], 1e3)
    rail_s = _alone_s(fabric, rail)
    nvlink_rate_s = _alone_s(fabric, TransferClass([[0, 1]], GIB)) - _alone_s(fabric, TransferClass([[0, 1]], 0.5))
    nvlink_latency_s = _alone_s(fabric, TransferClass([[0, 1]], 0.5))
    rail_latency_s = _alone_s(fabric, TransferClass([[2, 10]], 0.5))
    assert nvlink_latency_s < rail_latency_s
    rail_send_s = rail_s - rail_latency_s
    nvlink_send_s = rail_send_s + (rail_latency_s - nvlink_latency_s) / 2
    nvlink = TransferClass([[0, 1]], nvlink_send_s / nvlink_rate_s * (GIB - 0.5))
    nvlink_s = _alone_s(fabric, nvlink)
    assert rail_send_s < nvlink_s - nvlink_latency_s and nvlink_s < rail_s
    first_s, solves = _look_ahead(monkeypatch, fabric, [rail, nvlink])
    assert first_s == pytest.approx(nvlink_s, rel=1e-9)
    assert solves == 2


def test_each_completion_the_look_ahead_predicts_is_where_advance_completes_a_class(monkeypatch):
    """Round 30 review: randomized small fabrics (fixed seed) with classes started at random and equal instants, equal
    and zero sizes, GPU-to-itself pairs and shared links (max-min re-solves as classes end), through the general
    look-ahead (forced). The truth is ``advance``'s own event loop, which carries bytes and re-solves rates at every
    send end without the look-ahead: at each predicted completion it must complete a class, and nothing 1e-6 earlier.
    A stop taken too early predicts a later completion than the true first one; this catches it (checked: with the
    most latency in place of the least it fails)."""
    rng = random.Random(30)
    original = FlowNetwork._solve
    monkeypatch.setattr(FlowNetwork, "_solve", lambda self, key: (lambda s: (s[0], False, *s[2:]))(original(self, key)))
    fabrics = [_fabric(), topology.build("leaf-spine", gpus=32, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                                         nic=hardware.nic("connectx-7"), options={"oversubscription": 2.0})]
    predicted = 0
    for _ in range(150):
        net, start_s, plan = FlowNetwork(rng.choice(fabrics)), 0.0, []
        for _ in range(rng.randint(2, 8)):
            start_s += rng.choice([0.0, 0.0, 1e-6, rng.random() * 1e-3])   # a third start with the previous one
            pairs = [[rng.randrange(32), rng.randrange(32)] for _ in range(rng.randint(1, 3))]
            plan.append((start_s, TransferClass(pairs, rng.choice([0.0, 1.0, 2.0**20, 3e6, rng.random() * 2**26]))))
        while plan or net.next_completion_s() < np.inf:
            next_s = net.next_completion_s()
            if plan and plan[0][0] <= next_s:
                at_s, transfers = plan.pop(0)
                net.advance(at_s)
                net.start(transfers, at_s)
                continue
            predicted += 1
            if next_s * (1 - 1e-6) > net.now_s:
                assert net.advance(next_s * (1 - 1e-6)) == []
            assert net.advance(next_s) != []
    assert predicted > 500
