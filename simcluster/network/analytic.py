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

# Sets of per-part routes whose per-part latency and seconds per byte ``fastest_part`` keeps (cleared when full): the
# distinct pipeline boundaries and collective groups of a run, a few hundred
_PER_PART_KEPT = 4096


class AnalyticNetwork(NetworkModel):
    """Alpha-beta, no contention: each class runs alone on the fabric at its own bottleneck.

    A class of transfers of S bytes completes after max path latency + S * max_l(count_l / capacity_l), where
    count_l is how many of its own transfers cross link l (Hockney's alpha-beta model, with the class's own
    load on its busiest link as beta). Classes active at the same time do not slow each other down: this is
    the oracle the contention-aware models are checked against on an idle fabric.

    A class of several parts (``TransferClass.parts``) runs at its slowest part's bottleneck; a part whose own
    bottleneck is less loaded, or whose paths are shorter, is held back: ``held_back_classes`` counts such classes
    and ``held_back_s`` sums the time their most held-back part would have saved alone.

    ``fastest_part``: a class of several parts completes when its fastest part would alone (its own bottleneck and
    path latency, with no other transfer on its links) instead of its slowest: the relaxation ``engine.simulation``'s
    ``lower_bound_step_s`` runs. No part of the exact (expanded, flow) run can complete sooner than that: max-min
    sharing never gives a transfer more than its own bottleneck, a link carries its pairs' bytes no faster than its
    capacity, and every pair then waits at least the part's quickest path latency (``_fastest_part_s``); a
    representative agent that moves when its earliest replica could moves no later than any of them.
    """

    name = "analytic"

    def __init__(self, fabric, windows: bool = True, link_bytes: bool = True, fastest_part: bool = False):
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
        self.fastest_part = fastest_part
        self._per_part: dict[int, tuple] = {}   # ``_fastest_part_s``: per-part routes -> latency, s per byte

    def duration_s(self, transfers: TransferClass) -> float:
        """Time of ``transfers`` alone on the idle fabric (``fastest_part``: of its fastest part alone)."""
        if self.fastest_part and transfers.part_count > 1:
            return self._fastest_part_s(transfers)
        links, counts, latency_s = class_load(self.fabric, transfers)
        if not len(links) or transfers.size_bytes == 0:
            return latency_s
        return latency_s + transfers.size_bytes * float(np.max(counts / self._capacity[links]))

    def _fastest_part_s(self, transfers: TransferClass) -> float:
        """The least, over the parts of ``transfers``, of a part's time alone: its quickest pair's path latency plus
        its bytes over its own most loaded link (a part whose pairs do not move: no time). The quickest pair's, not
        the slowest's: a part's pairs may be separate calls in the exact run (a replica's tensor-parallel ranks' sends),
        where the last pair over the part's busiest link ends no sooner than its bytes over that link plus its own
        latency, which may be the part's shortest; the slowest pair's latency added to the busiest link's time can
        exceed every pair's end (round 22 review: a 5.8 us pair beside two 4.6 us pairs sharing a NIC, 45.8 > 44.6 us).
        Each part's latency and seconds per byte are kept per set of per-part routes (``part_routes`` returns one
        object for the same pairs and parts: the pipeline sends and ring steps of every microbatch)."""
        routes = part_routes(self.fabric, transfers)
        cached = None if routes is None else self._per_part.get(id(routes))
        if cached is None:
            moving = transfers.pairs[:, 0] != transfers.pairs[:, 1]
            part_latency_s = np.full(transfers.part_count, np.inf)   # its quickest moving pair's path latency
            if moving.any():
                np.minimum.at(part_latency_s, transfers.parts[moving],
                              np.asarray(self.fabric.pair_latencies_s(transfers.pairs[moving]), dtype=float))
            part_latency_s[np.isinf(part_latency_s)] = 0.0   # a part none of whose pairs moves
            busiest = np.zeros(transfers.part_count)   # seconds per byte on the part's own most loaded link
            if routes is not None and len(routes.links):
                np.maximum.at(busiest, routes.part, routes.counts / self._capacity[routes.links])
            cached = (routes, part_latency_s, busiest)
            if routes is not None:
                if len(self._per_part) >= _PER_PART_KEPT:
                    self._per_part.clear()
                self._per_part[id(routes)] = cached   # the entry keeps ``routes`` alive, so its id stays unique
        return float((cached[1] + transfers.size_bytes * cached[2]).min())

    def start(self, transfers: TransferClass, now_s: float) -> int:
        if self.fastest_part and transfers.part_count > 1:   # a bound's run: only the time (its parts' routes)
            handle = self._next_handle
            self._next_handle += 1
            self._ends[handle] = now_s + self._fastest_part_s(transfers)
            return handle
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
            latency_only = saved_s is None and gaps_s is not None
            if gaps_s is not None:
                saved_s = gaps_s if saved_s is None else saved_s + gaps_s
            if saved_s is not None:
                self.held_back.add(saved_s, transfers=transfers, latency_only=latency_only)
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
