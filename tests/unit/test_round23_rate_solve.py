"""Round 23: the flow model's rate solve against independent truth, and the components of a new route set found from
the last set's (``FlowNetwork._regroup``) equal to those grouped from scratch.

Independent truth: the max-min fair allocation of Bertsekas & Gallager (Data Networks, 2nd ed., section 6.5.2), by
progressive filling over the raw links in exact rational arithmetic (no link classes, no components, no caches), and
its characterisation: feasible (no link over capacity) and every flow crosses a saturated link on which no flow is
faster (its bottleneck).
"""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

from simcluster.fabric import topology
from simcluster.network import flow
from simcluster.network.base import TransferClass
from simcluster.network.flow import FlowNetwork
from simcluster.spec import hardware

GIB = 2.0**30


def _max_min_fair(capacity: list[int], flows: list[dict[int, int]]) -> list[Fraction]:
    """Progressive filling over raw links, exact: raise every unfrozen flow's rate together until a link is full,
    freeze the flows crossing it, repeat. ``flows[i]``: link -> pairs the flow puts on it."""
    rate = [Fraction(0)] * len(flows)
    frozen = [False] * len(flows)
    while not all(frozen):
        best = None
        for link, cap in enumerate(capacity):
            weight = sum(f.get(link, 0) for i, f in enumerate(flows) if not frozen[i])
            if weight:
                used = sum(f.get(link, 0) * rate[i] for i, f in enumerate(flows) if frozen[i])
                level = (cap - used) / weight
                best = level if best is None else min(best, level)
        full = set()
        for link, cap in enumerate(capacity):
            weight = sum(f.get(link, 0) for i, f in enumerate(flows) if not frozen[i])
            used = sum(f.get(link, 0) * rate[i] for i, f in enumerate(flows) if frozen[i])
            if weight and (cap - used) / weight == best:
                full.add(link)
        for i, f in enumerate(flows):
            if not frozen[i]:
                rate[i] = best
                if full & f.keys():
                    frozen[i] = True
    return rate


def _network(capacity: list[int]) -> FlowNetwork:
    return FlowNetwork(SimpleNamespace(link_bytes_per_s=np.asarray(capacity, dtype=float)))


def _add_route(net: FlowNetwork, links: list[int], counts: list[int]) -> int:
    """Register a route as ``FlowNetwork.start`` does (its identity is its link array's); returns it."""
    ids = np.asarray(links, dtype=np.int64)
    route = id(ids)
    net._route_bytes[route] = [ids, np.asarray(counts, dtype=float), 0.0]
    net._register(route, ids, np.asarray(counts, dtype=float))
    return route


def _random_routes(rng, links: int, routes: int) -> list[dict[int, int]]:
    drawn = []
    for _ in range(routes):
        ids = rng.choice(links, size=int(rng.integers(1, 5)), replace=False).tolist()
        drawn.append({link: int(rng.integers(1, 4)) for link in ids})
    return drawn


@pytest.mark.parametrize("seed", range(40))
def test_rates_are_the_exact_max_min_fair_allocation_and_every_flow_has_a_bottleneck(seed):
    rng = np.random.default_rng(2300 + seed)
    capacity = [int(c) for c in rng.choice([100, 200, 400], size=int(rng.integers(4, 14)))]
    drawn = _random_routes(rng, len(capacity), int(rng.integers(2, 12)))
    net = _network(capacity)
    routes = [_add_route(net, list(r), list(r.values())) for r in drawn]
    chosen = rng.choice(len(routes), size=int(rng.integers(1, 2 * len(routes) + 1))).tolist()   # a route may repeat
    key = tuple(sorted(routes[i] for i in chosen))
    by_route = dict(zip(routes, drawn, strict=True))
    flows = [by_route[route] for route in key]
    expected = _max_min_fair(capacity, flows)
    got = net._solve(key)[0]
    for route, flow_rate in zip(key, expected, strict=True):
        assert got[route] == pytest.approx(float(flow_rate), rel=1e-12)
    # conservation and the bottleneck property, read on the raw links
    load = np.zeros(len(capacity))
    for route in key:
        for link, count in by_route[route].items():
            load[link] += count * got[route]
    assert (load <= np.asarray(capacity) * (1 + 1e-12)).all()
    for route in key:
        fastest = {link: max(got[r] for r in key if link in by_route[r]) for link in by_route[route]}
        assert any(load[link] >= capacity[link] * (1 - 1e-9) and got[route] >= fastest[link] * (1 - 1e-12)
                   for link in by_route[route]), "a flow without a bottleneck could go faster"


def _from_scratch(net: FlowNetwork, key: tuple[int, ...]) -> list[tuple[int, ...]]:
    groups = net._components(key)
    return [key] if len(groups) == 1 else [tuple(key[i] for i in group) for group in groups]


@pytest.mark.parametrize("entries", [1024, 3])
@pytest.mark.parametrize("seed", range(6))
def test_components_regrouped_from_the_last_set_equal_those_grouped_from_scratch(seed, entries, monkeypatch):
    """Sets that change by a route or a few (a class starts, classes end, the look-ahead drops the classes that end),
    routes registered between solves (classes split under the last set's components), sets revisited (a cache hit
    becomes the next set's start), multisets: the components ``_solve`` finds from the last set are those grouped
    from scratch, in the same order, and the rates are a fresh model's; also with a component cache of three entries
    (solves evicted in the middle of a set's look-ups)."""
    monkeypatch.setattr(flow, "_COMPONENT_CACHE_ENTRIES", entries)
    rng = np.random.default_rng(23 + seed)
    capacity = [int(c) for c in rng.choice([100, 200], size=24)]
    net = _network(capacity)
    registered: list[int] = []
    drawn: list[dict[int, int]] = []
    key: list[int] = []
    seen: list[tuple[int, ...]] = []
    joined = 0
    found = []
    inner = net._regroup

    def counted(key):
        got = inner(key)
        if got is not None:
            found.append(key)
        return got

    net._regroup = counted
    for _event in range(300):
        action = rng.random()
        if action < 0.25 or not registered:   # a new route (may split the classes of routes already sending)
            route_links = _random_routes(rng, len(capacity), 1)[0]
            registered.append(_add_route(net, list(route_links), list(route_links.values())))
            drawn.append(route_links)
            key.append(registered[-1])
        elif action < 0.5 and key:   # classes end
            for _ in range(int(rng.integers(1, 4))):
                if key:
                    key.pop(int(rng.integers(len(key))))
        elif action < 0.6 and seen:   # a set seen before
            key = list(seen[int(rng.integers(len(seen)))])
        else:   # a class starts on a known route
            key.append(registered[int(rng.integers(len(registered)))])
        if not key:
            continue
        current = tuple(sorted(key))
        solved = net._solve(current)
        assert list(solved[4]) == _from_scratch(net, current)
        # the maps the solve returns are those of its components, each the solve of its part
        assert [set(component[0]) for component in solved[2]] == [set(part) for part in solved[4]]
        assert solved[3].keys() == set(current)
        assert all(solved[3][route] is component for component in solved[2] for route in component[0])
        assert solved[0] == {route: rate for component in solved[2] for route, rate in component[0].items()}
        assert solved[1] == all(component[5] for component in solved[2])
        joined += any(len(set(part)) > 1 for part in solved[4])
        fresh = _network(capacity)
        index = {route: _add_route(fresh, list(links), list(links.values()))
                 for route, links in zip(registered, drawn, strict=True)}
        again = fresh._solve(tuple(sorted(index[r] for r in current)))[0]   # another key order: float sums may
        assert again == pytest.approx({index[r]: v for r, v in solved[0].items()}, rel=1e-12)   # add otherwise
        seen.append(current)
    assert len(found) > 100 and joined > 50
    assert (net._evictions > 100) == (entries < 10)


def test_routes_sending_at_once_beyond_the_bound_do_not_clear_the_caches_at_every_start(monkeypatch):
    """An expanded hash-ECMP run on 3,072 GPUs sends ~560 classes at once, more than ``_ROUTES_KEPT`` (512): the
    routes forgotten are the idle ones, so with that many sending, forgetting (which clears every solve cache) waits
    until as many are idle as sending, instead of coming at every start; idle routes are still forgotten."""
    fabric = topology.build("rail-fat-tree", gpus=64, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                            nic=hardware.nic("connectx-7"), options={})
    net = FlowNetwork(fabric)
    prunes = []
    inner = net._prune
    monkeypatch.setattr(net, "_prune", lambda: prunes.append(len(net._route_bytes)) or inner())
    pairs = [[a, b] for a in range(64) for b in range(64) if a != b]
    for pair in pairs[:600]:   # 600 distinct routes, all sending
        net.start(TransferClass([pair], GIB), 0.0)
    assert prunes == []
    while net._sending:   # all finish: idle
        net.advance(net.next_completion_s())
    for pair in pairs[600:1200]:
        net.start(TransferClass([pair], GIB), net.now_s)
    assert prunes == [600] and len(net._route_bytes) == 600   # the 600 idle ones went at once; the new ones stay
