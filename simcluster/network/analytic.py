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
from simcluster.network.link_classes import LinkClasses
from simcluster.network.windows import GatheredWindows, LinkWindows, gathered

# Classes (by pairs and parts) whose per-part bottleneck a model keeps (cleared when full): the distinct pipeline
# boundaries and collective groups of a run, a few dozen (31 in the default scenario at 16,384 and at 131,072 GPUs);
# each entry is a parts-long array and its key the class's pairs and parts (3 MB for 131,072 pairs), so a bound as
# ``network.base``'s route caches keep
_PER_PART_KEPT = 256
# Most pairs routed at once when a class's per-part bottlenecks are found: the whole routes are made a chunk of parts at
# a time and reduced to each part's busiest link (on a sprayed core a pair's route spans every spine and core switch,
# so the class's routes grow as parts x fabric size: 1.7 GB for the 16,384-GPU default scenario's 31 classes)
_ROUTED_PAIRS = 4096
# Distinct routes (a class's link array) registered in the link classes before they are all forgotten (the classes
# stay, and so the counters kept on them): each pins its link arrays, so the bound keeps an expanded run's thousands
# of small routes from holding memory; the default scenario's run has 41 at 131,072 GPUs
_ROUTES_KEPT = 512


class AnalyticNetwork(NetworkModel):
    """Alpha-beta, no contention: each class runs alone on the fabric at its own bottleneck.

    A class of transfers of S bytes completes after max path latency + S * max_l(count_l / capacity_l), where
    count_l is how many of its own transfers cross link l (Hockney's alpha-beta model, with the class's own
    load on its busiest link as beta). Classes active at the same time do not slow each other down: this is
    the oracle the contention-aware models are checked against on an idle fabric.

    The bytes each link carried and its bytes per time window are counted per link class (``LinkClasses``: links
    that every registered route crosses alike, with one count): every link of a class gets the same additions in
    the same order, so the class's counter holds each of its links' value exactly, and a start costs a few classes
    instead of the class's links (the 131,072-GPU default scenario's data-parallel rings cross 1.6 million links:
    53 million link entries over a step's 561 starts, and 32 windows x 1.6 million links widened ten times).

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
        self._capacity = np.asarray(fabric.link_bytes_per_s, dtype=float)
        # the counters per link class (``LinkClasses``), none for a model that keeps neither
        self._classes = LinkClasses(self._capacity) if windows or link_bytes else None
        self._class_bytes = np.zeros(16) if link_bytes else None
        self._class_windows = LinkWindows(16) if windows else None
        # link bytes per link class until someone sets ``link_bytes`` (``timing.simulate`` advances them by a step's
        # repeats), per link from then on
        self._by_class = link_bytes
        self._link_bytes = None
        self._route_of: dict[int, int] = {}   # id() of a route's link array -> its number in the link classes
        self._route_links: dict[int, np.ndarray] = {}   # number -> the array (alive while its id() is a key)
        self._next_route = 0
        self._ends: dict[int, float] = {}
        self._next_handle = 0
        self.held_back = HeldBack()
        self.fastest_part = fastest_part
        self._busiest: dict[tuple, np.ndarray] = {}   # a class's pairs and parts -> ``_part_busiest``
        self._latency: dict[tuple, np.ndarray] = {}   # the same -> ``_fastest_part_s``'s per-part latency
        self._access: dict[tuple, float | None] = {}   # the same -> ``_settled_on_access``'s least part load

    @property
    def link_bytes(self) -> np.ndarray | None:
        """Bytes carried per directed link so far (None: the model does not count them)."""
        if self._by_class:
            return gathered(self._class_bytes, self._classes.class_of)
        return self._link_bytes

    @link_bytes.setter
    def link_bytes(self, value: np.ndarray | None):
        self._link_bytes = value
        self._by_class = False

    def link_windows(self) -> GatheredWindows | None:
        """Bytes per link per time window so far (``windows.GatheredWindows``: the link classes' windows read per
        link); None when the model keeps none (``windows=False``)."""
        if self._class_windows is None:
            return None
        return GatheredWindows(self._class_windows, self._classes.class_of)

    def duration_s(self, transfers: TransferClass) -> float:
        """Time of ``transfers`` alone on the idle fabric (``fastest_part``: of its fastest part alone)."""
        if self.fastest_part and transfers.part_count > 1:
            return self._fastest_part_s(transfers)
        links, counts, latency_s = class_load(self.fabric, transfers)
        return _duration_s(transfers, latency_s, float(np.max(counts / self._capacity[links])) if len(links) else None)

    def _fastest_part_s(self, transfers: TransferClass) -> float:
        """The least, over the parts of ``transfers``, of a part's time alone: its quickest pair's path latency plus
        its bytes over its own most loaded link (a part whose pairs do not move: no time). The quickest pair's, not
        the slowest's: a part's pairs may be separate calls in the exact run (a replica's tensor-parallel ranks' sends),
        where the last pair over the part's busiest link ends no sooner than its bytes over that link plus its own
        latency, which may be the part's shortest; the slowest pair's latency added to the busiest link's time can
        exceed every pair's end (round 22 review: a 5.8 us pair beside two 4.6 us pairs sharing a NIC, 45.8 > 44.6 us).
        Each part's latency and seconds per byte are kept by the class's pairs and parts (the pipeline sends and ring
        steps of every microbatch are new classes over the same pairs), never its routes (``_part_busiest``)."""
        key = _class_key(transfers)
        part_latency_s = self._latency.get(key)
        if part_latency_s is None:
            moving = transfers.pairs[:, 0] != transfers.pairs[:, 1]
            part_latency_s = np.full(transfers.part_count, np.inf)   # its quickest moving pair's path latency
            if moving.any():
                np.minimum.at(part_latency_s, transfers.parts[moving],
                              np.asarray(self.fabric.pair_latencies_s(transfers.pairs[moving]), dtype=float))
            part_latency_s[np.isinf(part_latency_s)] = 0.0   # a part none of whose pairs moves
            _keep(self._latency, key, part_latency_s)
        busiest = np.maximum(self._part_busiest(transfers), 0.0)   # a part without links: no sending time
        return float((part_latency_s + transfers.size_bytes * busiest).min())

    def _part_busiest(self, transfers: TransferClass) -> np.ndarray:
        """Seconds per byte on each part's own most loaded link (-1 for a part without links), kept per model by the
        class's pairs and parts (only this parts-long array: the routes are made a chunk of parts at a time,
        ``_ROUTED_PAIRS``, and dropped). A part's routes do not depend on the parts routed with it
        (``network.base._links_of_parts``), so the chunks give each part the entries one pass over all would."""
        key = _class_key(transfers)
        busiest = self._busiest.get(key)
        if busiest is not None:
            return busiest
        busiest = np.full(transfers.part_count, -1.0)
        moving = transfers.pairs[:, 0] != transfers.pairs[:, 1]
        pairs, part = transfers.pairs[moving], transfers.parts[moving]
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(transfers.part_count + 1))
        first = 0
        while first < transfers.part_count:
            # parts first..last-1: at least one, then as many as keep the chunk within ``_ROUTED_PAIRS`` pairs
            last = max(first + 1, int(np.searchsorted(bounds, bounds[first] + _ROUTED_PAIRS, side="right")) - 1)
            last = min(last, transfers.part_count)
            chosen = order[bounds[first]:bounds[last]]
            if len(chosen):
                chosen = np.sort(chosen)   # the pairs in class order, as one pass over the class routes them
                found_part, links, counts = self.fabric.links_of_parts(pairs[chosen], part[chosen] - first)
                if len(links):
                    np.maximum.at(busiest[first:last], found_part,
                                  np.asarray(counts, dtype=float) / self._capacity[links])
            first = last
        _keep(self._busiest, key, busiest)
        return busiest

    def start(self, transfers: TransferClass, now_s: float) -> int:
        if self.fastest_part and transfers.part_count > 1:   # a bound's run: only the time (its parts' routes)
            handle = self._next_handle
            self._next_handle += 1
            self._ends[handle] = now_s + self._fastest_part_s(transfers)
            return handle
        links, counts, latency_s = class_load(self.fabric, transfers)
        if self._link_bytes is not None:   # counted per link (``link_bytes`` was set)
            self._link_bytes[links] += counts * transfers.size_bytes
        if self._classes is not None and len(links):   # the class's links as link classes (a few)
            known, known_counts = self._classes.route(self._route(links, counts))
            capacity = self._classes.class_capacity[known]
        else:
            known, known_counts, capacity = links, counts, self._capacity[links]
        if self._by_class:
            self._class_bytes[known] += known_counts * transfers.size_bytes
        # seconds per byte on the class's busiest link (the same value whether read per link or per link class)
        slowest = float(np.max(known_counts / capacity)) if len(links) else None
        handle = self._next_handle
        self._next_handle += 1
        self._ends[handle] = now_s + _duration_s(transfers, latency_s, slowest)
        sending_s = self._ends[handle] - now_s - latency_s
        if sending_s > 0 and self._class_windows is not None:  # the bytes at a constant rate over the sending time
            self._class_windows.add(now_s, now_s + sending_s, known, known_counts * transfers.size_bytes / sending_s)
        if transfers.part_count > 1:
            saved_s = self._bytes_saved_s(transfers, slowest)
            gaps_s = latency_gaps_s(self.fabric, transfers)
            latency_only = saved_s is None and gaps_s is not None
            if gaps_s is not None:
                saved_s = gaps_s if saved_s is None else saved_s + gaps_s
            if saved_s is not None:
                self.held_back.add(saved_s, transfers=transfers, latency_only=latency_only)
        return handle

    def _route(self, links: np.ndarray, counts: np.ndarray) -> int:
        """The number of the route ``links`` (a class's link array; classes over the same pairs share it, routes are
        cached) in the link classes, registered on first sight: a class split by it starts with its parent's
        counters. Past ``_ROUTES_KEPT`` routes all are forgotten first (their classes stay: the partition only gets
        finer, and each class's counters stay right for its links)."""
        route = self._route_of.get(id(links))
        if route is not None:
            return route
        classes = self._classes
        if len(self._route_links) >= _ROUTES_KEPT:
            for known in self._route_links:
                classes.remove(known)
            self._route_of.clear()
            self._route_links.clear()
        route = self._route_of[id(links)] = self._next_route
        self._next_route += 1
        self._route_links[route] = links
        before = len(classes.links)
        classes.add(route, links, counts)
        if len(classes.links) > before:
            columns = len(classes.class_capacity)   # grown by doubling with the classes
            if self._class_bytes is not None and len(self._class_bytes) < columns:
                self._class_bytes = np.concatenate((self._class_bytes, np.zeros(columns - len(self._class_bytes))))
            if self._class_windows is not None and self._class_windows.bytes.shape[1] < columns:
                self._class_windows.extend(columns - self._class_windows.bytes.shape[1])
            new, parent = classes.split_since(before)
            if self._class_bytes is not None:
                self._class_bytes[new] = self._class_bytes[parent]
            if self._class_windows is not None:
                self._class_windows.bytes[:, new] = self._class_windows.bytes[:, parent]
        return route

    def _bytes_saved_s(self, transfers: TransferClass, slowest: float | None) -> np.ndarray | None:
        """Sending time each part would save alone, its own bottleneck less loaded than the class's (``slowest``
        seconds per byte; None: the class crosses no link); None when no part's is."""
        if slowest is None or transfers.size_bytes == 0:
            return None
        if self._settled_on_access(transfers, slowest):
            return None
        worst = self._part_busiest(transfers).copy()
        worst[worst < 0] = slowest   # a part without links waits for the class
        if worst.min() >= slowest * (1 - SAME_RTOL):
            return None
        return transfers.size_bytes * (slowest - worst)

    def _settled_on_access(self, transfers: TransferClass, slowest: float) -> bool:
        """Whether every part already loads one of the links its pairs take whatever their core paths (a direct link
        or the access segments: ``part_routes(access=True)``, linear in the pairs) as much as the class's busiest
        link, so that no part would save anything alone and its whole routes need not be made (a part's own
        bottleneck is at least that link's load and at most the class's). The least part's load is kept per model by
        the class's pairs and parts (the pipeline sends and ring steps of every microbatch are new classes over the
        same pairs)."""
        key = _class_key(transfers)
        least = self._access.get(key, _UNKNOWN)
        if least is _UNKNOWN:
            routes = part_routes(self.fabric, transfers, access=True)
            least = None
            if routes is not None:
                lower = np.full(routes.parts, -1.0)
                if len(routes.links):
                    np.maximum.at(lower, routes.part, routes.counts / self._capacity[routes.links])
                least = float(lower.min())
            _keep(self._access, key, least)
        return least is not None and least >= slowest * (1 - SAME_RTOL)

    def next_completion_s(self) -> float:
        return min(self._ends.values(), default=math.inf)

    def advance(self, to_s: float) -> list[int]:
        done = [handle for handle, end_s in self._ends.items() if end_s <= to_s]
        for handle in done:
            del self._ends[handle]
        return done


_UNKNOWN = object()


def _duration_s(transfers: TransferClass, latency_s: float, slowest: float | None) -> float:
    """A class's time alone: its path latency, plus its bytes at ``slowest`` seconds per byte (its busiest link;
    None: it crosses no link)."""
    if slowest is None or transfers.size_bytes == 0:
        return latency_s
    return latency_s + transfers.size_bytes * slowest


def _class_key(transfers: TransferClass) -> tuple[bytes, bytes | None]:
    """A class's pairs and parts (what its per-part routes depend on), as bytes; kept on the class."""
    key = transfers.__dict__.get("_pairs_parts_key")
    if key is None:
        key = (transfers.pairs.tobytes(), None if transfers.parts is None else transfers.parts.tobytes())
        object.__setattr__(transfers, "_pairs_parts_key", key)
    return key


def _keep(cache: dict, key: tuple, value) -> None:
    """``cache[key] = value``, the cache cleared first when it holds ``_PER_PART_KEPT`` entries."""
    if len(cache) >= _PER_PART_KEPT:
        cache.clear()
    cache[key] = value
