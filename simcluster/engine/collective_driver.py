"""Collectives driven through the network as SimPy processes: shared by the training engine and the replay."""

from __future__ import annotations

import dataclasses

import simpy

from simcluster import collectives
from simcluster.collectives import nccl as calibration
from simcluster.collectives.algorithms import Step
from simcluster.engine.drivers import NetworkDriver
from simcluster.network.base import TransferClass, max_path_latency_s


def engine_schedule(fabric, op: str, group, size_bytes: float) -> list[Step]:
    """The steps the engine runs for a collective: NCCL's automatic choice, except that NVLS runs as a ring.

    The engine has one network for all traffic, seen through the links' measured efficiencies (ring, Simple
    protocol). A protocol or algorithm that carries less payload per wire byte (LL: an 8-byte flag per 8 bytes;
    LL128: 120 of 128; trees: NCCL's 0.92 cap) puts proportionally more bytes on the wire: the transfers grow by
    that factor, so on an idle fabric the engine's collective takes what ``collectives.run`` gives. NVLS's
    in-switch reduction would need its own link efficiency (a known simplification, docs/architecture.md).
    """
    steps = collectives.schedule(collectives.Collective(op=op, group=group, size_bytes=size_bytes), fabric)
    if steps.algorithm == "nvls":
        steps = collectives.schedule(collectives.Collective(op=op, group=group, size_bytes=size_bytes,
                                                            algorithm="ring"), fabric)
    payload = (calibration.efficiency(steps.algorithm, steps.protocol, "network")
               / calibration.efficiency("ring", "Simple", "network"))
    if payload == 1.0:
        return list(steps)
    return [dataclasses.replace(step, transfers=tuple(
        TransferClass(tc.pairs, tc.size_bytes / payload, tc.label) for tc in step.transfers)) for step in steps]


class CollectiveDriver:
    """Runs collectives' steps on a ``NetworkDriver``; schedules and class latencies are cached."""

    def __init__(self, env: simpy.Environment, fabric, net: NetworkDriver):
        self.env, self.fabric, self.net = env, fabric, net
        self._schedules: dict = {}
        self._latency_s: dict[int, float] = {}

    def run(self, op: str, groups: list[tuple[int, ...]], size_bytes: float):
        """Drive a collective's steps through the network, all ``groups`` at once (identical schedules).

        A step repeated k times (the 2(n-1) steps of a ring) runs once, then as one transfer of the remaining
        (k-1) steps' bytes plus their software and path latencies: one event instead of k, and identical to k
        separate steps while the rates do not change.
        """
        key = (op, tuple(groups), round(size_bytes))
        if key not in self._schedules:
            self._schedules[key] = collectives.merge([engine_schedule(self.fabric, op, g, size_bytes)
                                                      for g in groups])
        for step in self._schedules[key]:
            if step.overhead_s > 0:
                yield self.env.timeout(step.overhead_s)
            if step.transfers:
                yield self.env.all_of([self.net.transfer(tc) for tc in step.transfers])
            if step.repeat > 1:
                rest = step.repeat - 1
                latency_s = max((self._class_latency_s(tc) for tc in step.transfers), default=0.0)
                yield self.env.timeout(rest * step.overhead_s + (rest - 1) * latency_s)
                if step.transfers:
                    yield self.env.all_of([self.net.transfer(TransferClass(tc.pairs, rest * tc.size_bytes, tc.label))
                                           for tc in step.transfers])

    def _class_latency_s(self, transfers: TransferClass) -> float:
        """Largest path latency among a class's pairs (what a network model adds at completion)."""
        key = id(transfers)  # classes live in the cached schedules, so their ids stay valid
        if key not in self._latency_s:
            self._latency_s[key] = max_path_latency_s(self.fabric, transfers.pairs)
        return self._latency_s[key]
