"""The analytic network model: alpha-beta per transfer class, no contention (the oracle of the other models)."""

from __future__ import annotations

import math

import numpy as np

from simcluster.network.base import (
    SAME_RTOL,
    HeldBack,
    NetworkModel,
    TransferClass,
    class_load,
    latency_gaps_s,
    part_routes,
)
from simcluster.network.windows import LinkWindows


class AnalyticNetwork(NetworkModel):
    """Alpha-beta, no contention: each class runs alone on the fabric at its own bottleneck.

    A class of transfers of S bytes completes after max path latency + S * max_l(count_l / capacity_l), where
    count_l is how many of its own transfers cross link l (Hockney's alpha-beta model, with the class's own
    load on its busiest link as beta). Classes active at the same time do not slow each other down: this is
    the oracle the contention-aware models are checked against on an idle fabric.

    A class of several parts (``TransferClass.parts``) runs at its slowest part's bottleneck; a part whose own
    bottleneck is less loaded, or whose paths are shorter, is held back: ``held_back_classes`` counts such classes
    and ``held_back_s`` sums the time their most held-back part would have saved alone.
    """

    name = "analytic"

    def __init__(self, fabric, windows: bool = True, link_bytes: bool = True):
        """``windows``: keep bytes per link per time window (a run's link peaks); False for a model that times a
        collective alone, whose windows nobody reads (at 131,072 GPUs they would take 0.4 GB each). ``link_bytes``:
        count the bytes each link carried (False: ``link_bytes`` is None, for the same models: a pass over 1.6 million
        links per step repeated)."""
        super().__init__(fabric)
        if not link_bytes:
            self.link_bytes = None
        self._capacity = np.asarray(fabric.link_bytes_per_s, dtype=float)
        self._ends: dict[int, float] = {}
        self._next_handle = 0
        self.held_back = HeldBack()
        self.windows = LinkWindows(len(fabric.link_bytes_per_s)) if windows else None

    def duration_s(self, transfers: TransferClass) -> float:
        """Time of ``transfers`` alone on the idle fabric."""
        links, counts, latency_s = class_load(self.fabric, transfers)
        if not len(links) or transfers.size_bytes == 0:
            return latency_s
        return latency_s + transfers.size_bytes * float(np.max(counts / self._capacity[links]))

    def start(self, transfers: TransferClass, now_s: float) -> int:
        links, counts, latency_s = class_load(self.fabric, transfers)
        if self.link_bytes is not None:
            self.link_bytes[links] += counts * transfers.size_bytes
        handle = self._next_handle
        self._next_handle += 1
        self._ends[handle] = now_s + self.duration_s(transfers)
        sending_s = self._ends[handle] - now_s - latency_s
        if sending_s > 0 and self.windows is not None:  # the bytes at a constant rate over the sending time, alone
            self.windows.add(now_s, now_s + sending_s, links, counts * transfers.size_bytes / sending_s)
        if transfers.part_count > 1:
            saved_s = self._bytes_saved_s(transfers, links, counts)
            gaps_s = latency_gaps_s(self.fabric, transfers)
            if gaps_s is not None:
                saved_s = gaps_s if saved_s is None else saved_s + gaps_s
            if saved_s is not None:
                self.held_back.add(saved_s)
        return handle

    def _bytes_saved_s(self, transfers: TransferClass, links: np.ndarray, counts: np.ndarray) -> np.ndarray | None:
        """Sending time each part would save alone, its own bottleneck less loaded than the class's; None when no
        part's is."""
        if not len(links) or transfers.size_bytes == 0:
            return None
        routes = part_routes(self.fabric, transfers)
        slowest = float(np.max(counts / self._capacity[links]))
        worst = np.full(routes.parts, slowest)   # a part without links waits for the class
        worst[np.unique(routes.part)] = 0.0
        np.maximum.at(worst, routes.part, routes.counts / self._capacity[routes.links])
        if worst.min() >= slowest * (1 - SAME_RTOL):
            return None
        return transfers.size_bytes * (slowest - worst)

    def next_completion_s(self) -> float:
        return min(self._ends.values(), default=math.inf)

    def advance(self, to_s: float) -> list[int]:
        done = [handle for handle, end_s in self._ends.items() if end_s <= to_s]
        for handle in done:
            del self._ends[handle]
        return done
