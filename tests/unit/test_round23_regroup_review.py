"""Round 23 review: the components ``FlowNetwork._regroup`` finds from the last route set are those of an independent
grouping over the raw links, under the adversarial sequences the regrouping's proof has to survive: routes that split
the classes of routes already sending, routes that end and come back, multiplicities that change, jumps too large to
regroup (the fallback), sets revisited from the cache, component solves evicted in the middle of a set's look-ups,
the whole-set cache cleared at its bounds (sets, routes held), and forgetting (``_prune``) followed by a route id
reused for other links. And end to end: a flow network that regroups gives the same completions, link bytes, busy
times and window bytes, to the last bit, as one that groups every set from scratch (within one process: route ids
order the sums, docs/calibration/round-23.md "Round 23: review of the incremental regrouping").

Independent truth: two routes are in one component when they share a link, directly or through other routes of the
set (a breadth-first search over the raw link sets; no link classes, no caches), ordered by their first route.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from simcluster.fabric import topology
from simcluster.network import flow
from simcluster.network.base import TransferClass
from simcluster.network.flow import FlowNetwork, _Sending
from simcluster.spec import hardware


def _truth(key: tuple[int, ...], links_of: dict[int, set[int]]) -> list[tuple[int, ...]]:
    """The components of the multiset ``key`` by shared raw links (breadth-first), each sorted, ordered by first."""
    left, found = sorted(set(key)), []
    while left:
        seen, frontier = {left[0]}, [left[0]]
        while frontier:
            route = frontier.pop()
            for other in left:
                if other not in seen and links_of[route] & links_of[other]:
                    seen.add(other)
                    frontier.append(other)
        found.append(tuple(sorted(route for route in key if route in seen)))
        left = [route for route in left if route not in seen]
    return sorted(found)


class _Model:
    """A flow network over ``capacity`` whose routes get chosen ids (so a second network can share them, and an id can
    be reused after ``_prune`` as a recycled ``id()`` would be)."""

    def __init__(self, capacity: list[int]):
        self.net = FlowNetwork(SimpleNamespace(link_bytes_per_s=np.asarray(capacity, dtype=float)))
        self.links_of: dict[int, set[int]] = {}
        self.arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, route: int, links: dict[int, int]) -> None:
        ids, counts = np.asarray(list(links), dtype=np.int64), np.asarray(list(links.values()), dtype=float)
        self.net._route_bytes[route] = [ids, counts, 0.0]
        self.net._register(route, ids, counts)
        self.links_of[route] = set(links)
        self.arrays[route] = (ids, counts)

    def prune(self, sending: tuple[int, ...]) -> None:
        """Forget every route not in ``sending`` (``_prune`` reads the sending classes' routes)."""
        self.net._sending = {}
        for i, route in enumerate(sorted(set(sending))):
            entry = _Sending(*self.arrays[route], 1.0, 0.0)
            entry.route = route
            self.net._sending[i] = entry
        self.net._prune()
        self.net._sending = {}
        for route in [r for r in self.links_of if r not in set(sending)]:
            del self.links_of[route], self.arrays[route]


def _draw_links(rng, links: int) -> dict[int, int]:
    ids = rng.choice(links, size=int(rng.integers(1, 4)), replace=False).tolist()
    return {link: int(rng.integers(1, 3)) for link in ids}


@pytest.mark.parametrize("seed", range(8))
def test_regrouping_equals_independent_components_under_adversarial_sequences(seed, monkeypatch):
    monkeypatch.setattr(flow, "_COMPONENT_CACHE_ENTRIES", 4)   # evictions mid look-up
    monkeypatch.setattr(flow, "_RATE_CACHE_ENTRIES", 6)        # whole-set cache cleared at its bounds
    monkeypatch.setattr(flow, "_RATE_CACHE_ROUTES", 40 if seed % 2 else 10**6)
    rng = np.random.default_rng(2323 + seed)
    capacity = [int(c) for c in rng.choice([100, 200], size=30)]
    model = _Model(capacity)
    next_id, key, ended, seen = 10, [], [], []
    regrouped = fallbacks = prunes = reused = 0
    inner = model.net._regroup

    def counting(current):
        nonlocal regrouped, fallbacks
        got = inner(current)
        regrouped += got is not None
        fallbacks += got is None and model.net._near is not None
        return got

    model.net._regroup = counting
    for _event in range(400):
        action = rng.random()
        if action < 0.2 or not model.links_of:   # a new route: may split the classes under the last set
            model.add(next_id, _draw_links(rng, len(capacity)))
            key.append(next_id)
            next_id += 1
        elif action < 0.4 and key:   # one to three classes end (a route may stay with a lower multiplicity)
            for _ in range(int(rng.integers(1, 4))):
                if key:
                    ended.append(key.pop(int(rng.integers(len(key)))))
        elif action < 0.5 and ended:   # a route that ended comes back
            back = ended.pop(int(rng.integers(len(ended))))
            if back in model.links_of:
                key.append(back)
        elif action < 0.55 and seen:   # a set seen before (a cache hit becomes the next set's start)
            key = [route for route in seen[int(rng.integers(len(seen)))] if route in model.links_of]
        elif action < 0.6:   # a jump: many routes at once (beyond ``_REGROUP_MOST``: grouped from scratch)
            key.extend(rng.choice(sorted(model.links_of), size=12).tolist())
        elif action < 0.65 and key:   # forget the idle routes, then reuse a forgotten id for other links
            gone = sorted(set(model.links_of) - set(key))
            model.prune(tuple(key))
            prunes += 1
            seen = []
            if gone:
                model.add(gone[0], _draw_links(rng, len(capacity)))
                key.append(gone[0])
                reused += 1
        else:   # a class starts on a known route (a multiplicity may rise)
            key.append(int(rng.choice(sorted(model.links_of))))
        if not key:
            continue
        current = tuple(sorted(key))
        solved = model.net._solve(current)
        assert list(solved[4]) == _truth(current, model.links_of)
        assert [tuple(sorted(component[0])) for component in solved[2]] == [tuple(sorted(set(p))) for p in solved[4]]
        assert all(solved[3][route] is component for component in solved[2] for route in component[0])
        assert solved[3].keys() == set(current)
        assert solved[0] == {route: rate for component in solved[2] for route, rate in component[0].items()}
        # a fresh network over the same routes (same ids, so the same key order) gives the same rates to the bit
        fresh = _Model(capacity)
        for route in sorted(model.links_of):
            fresh.add(route, dict(zip(*(a.tolist() for a in model.arrays[route]), strict=True)))
        assert fresh.net._solve(current)[0] == solved[0]
        held = sum(len(kept) for kept in model.net._rates_cache)   # the routes the kept sets hold, bounded
        assert model.net._rates_cached_routes == held and held <= max(flow._RATE_CACHE_ROUTES, len(current))
        seen.append(current)
    assert regrouped > 150 and fallbacks > 5 and prunes > 5 and reused > 3
    assert model.net._evictions > 50


def _drive(net: FlowNetwork, seed: int, classes: list[TransferClass]) -> list:
    """A seeded sequence of starts (classes reused, so routes recur; one to three pairs, so routes overlap) and
    advances; returns every completion with its time and the link counters at the end."""
    rng = np.random.default_rng(seed)
    handles, log = {}, []
    for _event in range(500):
        if rng.random() < 0.55 or not (net._sending or net._done_at_s):
            transfer = classes[int(rng.integers(len(classes)))]
            handles[net.start(transfer, net.now_s)] = len(handles)
        else:
            to_s = net.next_completion_s()
            log.extend((to_s, handles[h]) for h in net.advance(to_s))
    while net._sending or net._done_at_s:
        to_s = net.next_completion_s()
        log.extend((to_s, handles[h]) for h in net.advance(to_s))
    windows = net.link_windows()
    return log, net.link_bytes.tolist(), net.link_busy_s.tolist(), np.asarray(windows.bytes).tolist()


@pytest.mark.parametrize(("seed", "salt"), [(0, 0), (1, 1), (2, 7)])
def test_a_regrouping_network_matches_one_grouping_from_scratch_to_the_last_bit(seed, salt, monkeypatch):
    """Completions, link bytes, busy times and window bytes identical (==) with ``_regroup`` on and off, with forgetting
    (a bound of 16 routes), evictions (4 component solves) and the whole-set cache cleared (8 sets) along the way."""
    monkeypatch.setattr(flow, "_ROUTES_KEPT", 16)
    monkeypatch.setattr(flow, "_COMPONENT_CACHE_ENTRIES", 4)
    monkeypatch.setattr(flow, "_RATE_CACHE_ENTRIES", 8)
    fabric = topology.build("rail-fat-tree", gpus=64, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                            nic=hardware.nic("connectx-7"), options={})
    # both networks get the same route arrays (class_load caches them on the class; the salted routing memoised), so
    # the same route ids and key orders: the sums then add in one order, and any difference is the grouping's
    routed, links_of = {}, fabric.links_of
    monkeypatch.setattr(fabric, "links_of", lambda pairs, salt=0: routed.setdefault((pairs.tobytes(), salt),
                                                                                  links_of(pairs, salt)))
    rng = np.random.default_rng(seed)
    classes = [TransferClass(rng.integers(0, 64, size=(int(rng.integers(1, 4)), 2)),
                             float(rng.integers(1, 9)) * 2**20) for _ in range(120)]
    regrouping = FlowNetwork(fabric, salt=salt)
    calls = []
    inner = regrouping._regroup
    regrouping._regroup = lambda key: calls.append(inner(key)) or calls[-1]
    prunes = []
    forget = regrouping._prune
    regrouping._prune = lambda: prunes.append(1) or forget()
    scratch = FlowNetwork(fabric, salt=salt)
    scratch._regroup = lambda key: None
    assert _drive(regrouping, seed, classes) == _drive(scratch, seed, classes)
    assert sum(call is not None for call in calls) > 100 and len(prunes) > 3 and regrouping._evictions > 20
