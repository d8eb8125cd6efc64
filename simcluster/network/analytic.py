"""The analytic network model: alpha-beta per transfer class, no contention (the oracle of the other models)."""

from __future__ import annotations

import math

import numpy as np

from simcluster.network.base import NetworkModel, TransferClass, class_load


class AnalyticNetwork(NetworkModel):
    """Alpha-beta, no contention: each class runs alone on the fabric at its own bottleneck.

    A class of transfers of S bytes completes after max path latency + S * max_l(count_l / capacity_l), where
    count_l is how many of its own transfers cross link l (Hockney's alpha-beta model, with the class's own
    load on its busiest link as beta). Classes active at the same time do not slow each other down: this is
    the oracle the contention-aware models are checked against on an idle fabric.
    """

    name = "analytic"

    def __init__(self, fabric):
        super().__init__(fabric)
        self._capacity = np.asarray(fabric.link_bytes_per_s, dtype=float)
        self._ends: dict[int, float] = {}
        self._next_handle = 0

    def duration_s(self, transfers: TransferClass) -> float:
        """Time of ``transfers`` alone on the idle fabric."""
        links, counts, latency_s = class_load(self.fabric, transfers)
        if not len(links) or transfers.size_bytes == 0:
            return latency_s
        return latency_s + transfers.size_bytes * float(np.max(counts / self._capacity[links]))

    def start(self, transfers: TransferClass, now_s: float) -> int:
        links, counts, _ = class_load(self.fabric, transfers)
        self.link_bytes[links] += counts * transfers.size_bytes
        handle = self._next_handle
        self._next_handle += 1
        self._ends[handle] = now_s + self.duration_s(transfers)
        return handle

    def next_completion_s(self) -> float:
        return min(self._ends.values(), default=math.inf)

    def advance(self, to_s: float) -> list[int]:
        done = [handle for handle, end_s in self._ends.items() if end_s <= to_s]
        for handle in done:
            del self._ends[handle]
        return done
