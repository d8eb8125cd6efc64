"""Link classes (``network.link_classes``) and the flow model solved over them: the partition is the coarsest one
under which every route crosses a class alike, and rates, loads and counters equal a per-link progressive filling."""

from __future__ import annotations

import numpy as np
import pytest

from simcluster.fabric import topology
from simcluster.network.base import TransferClass
from simcluster.network.flow import FlowNetwork
from simcluster.network.link_classes import LinkClasses
from simcluster.spec import hardware

GIB = 2.0**30


def _fabric(name="leaf-spine", gpus=64, **options):
    return topology.build(name, gpus=gpus, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                          nic=hardware.nic("connectx-7"), options=options)


def _random_routes(rng, links: int, routes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(routes):
        ids = rng.choice(links, size=rng.integers(1, links // 2), replace=False)
        out.append((ids, rng.choice([1.0, 2.0, 0.5], size=len(ids))))
    return out


def _signatures(capacity, routes, links) -> dict[int, tuple]:
    """Per routed link: its capacity and the count each route puts on it (0 where it does not cross it)."""
    table = np.zeros((len(capacity), len(routes)))
    for column, (ids, counts) in enumerate(routes):
        table[ids, column] = counts
    return {link: (capacity[link], *table[link]) for link in links}


def test_classes_are_the_coarsest_partition_every_route_crosses_alike():
    rng = np.random.default_rng(3)
    capacity = rng.choice([50e9, 100e9], size=60)
    routes = _random_routes(rng, 60, 6)
    classes = LinkClasses(capacity)
    for route, (ids, counts) in enumerate(routes):
        classes.add(route, ids, counts)
    routed = np.unique(np.concatenate([ids for ids, _ in routes]))
    signature = _signatures(capacity, routes, routed)
    members = [links for links in classes.links if len(links)]
    # a partition of the routed links ...
    assert sorted(np.concatenate(members).tolist()) == routed.tolist()
    assert set(np.flatnonzero(classes.class_of >= 0).tolist()) == set(routed.tolist())
    # ... whose classes hold links of one signature, one class per signature (the coarsest such partition)
    assert all(len({signature[link] for link in links.tolist()}) == 1 for links in members)
    assert len(members) == len(set(signature.values()))
    # each route as (class, count) entries: its links and counts exactly
    for route, (ids, counts) in enumerate(routes):
        known, per_class = classes.route(route)
        rebuilt = {link: count for c, count in zip(known.tolist(), per_class.tolist(), strict=True)
                   for link in classes.links[c].tolist()}
        assert rebuilt == dict(zip(ids.tolist(), counts.tolist(), strict=True))


def test_a_class_split_later_is_found_again_in_the_classes_split_from_it():
    capacity = np.full(10, 1e9)
    classes = LinkClasses(capacity)
    classes.add(1, np.arange(8), np.ones(8))
    classes.add(5, np.array([0]), np.ones(1))          # link 0 leaves the class before the solve below
    first = classes.class_of[1]
    before = len(classes.links)                        # a solve made now holds links 1-7 in class ``first``
    classes.add(2, np.array([2, 3, 9]), np.ones(3))   # splits links 2 and 3 off that class
    classes.add(3, np.array([3]), np.full(1, 2.0))     # and link 3 off those
    now = classes.descendants(first, before)
    assert sorted(np.concatenate([classes.links[c] for c in now]).tolist()) == list(range(1, 8))
    assert len(now) == 3 and classes.splits == 3
    classes.add(4, np.array([9]), np.ones(1))
    assert classes.overlap(1, 3) and classes.overlap(3, 2) and not classes.overlap(1, 4)
    assert not classes.unsplit_since(np.array([first]), 0)


def _water_filling(capacity, routes):
    """Max-min fair per-member rate of each route by progressive filling over every link (the reference)."""
    rate = np.zeros(len(routes))
    frozen = np.zeros(len(routes), dtype=bool)
    load = np.zeros(len(capacity))
    while not frozen.all():
        open_count = np.zeros(len(capacity))
        for r, (ids, counts) in enumerate(routes):
            if not frozen[r]:
                open_count[ids] += counts
        used = open_count > 0
        fill = np.min((capacity[used] - load[used]) / open_count[used])
        saturated = used & ((capacity - load) / np.where(used, open_count, 1) <= fill * (1 + 1e-9))
        for r, (ids, counts) in enumerate(routes):
            if not frozen[r] and saturated[ids].any():
                rate[r], frozen[r] = fill, True
                load[ids] += counts * fill
    return rate


def test_rates_loads_and_counters_equal_a_per_link_progressive_filling():
    # a 4:1 hash-ECMP leaf-spine (unequal loads, so rates differ between classes), classes starting one after another
    # so that later routes split the classes of earlier ones while bytes are in flight
    fabric = _fabric(oversubscription=4, routing="ecmp")
    rng = np.random.default_rng(11)
    net = FlowNetwork(fabric)
    started = []
    for step in range(6):
        src = rng.choice(64, size=8, replace=False)
        pairs = np.stack([src, (src + rng.integers(8, 56, size=8)) % 64], axis=1)
        transfers = TransferClass(pairs, GIB / (step + 1))
        net.advance(step * 1e-3)
        started.append((net.start(transfers, step * 1e-3), transfers))
    rates = net.class_rates_bytes_per_s()
    sending = [(h, t) for h, t in started if h in rates]
    assert len(sending) >= 2
    routes = [fabric.links_of(t.pairs) for _, t in sending]
    expected = _water_filling(fabric.link_bytes_per_s, routes)
    assert [rates[h] for h, _ in sending] == pytest.approx(expected.tolist(), rel=1e-9)
    load = np.zeros(len(fabric.link_bytes_per_s))
    for (ids, counts), rate in zip(routes, expected, strict=True):
        load[ids] += counts * rate
    assert net.link_load_bytes_per_s() == pytest.approx(load, rel=1e-9, abs=1e-3)
    # run to the end: the windows hold every byte the links carried, and a link is busy no longer than the run
    while net.next_completion_s() < np.inf:
        net.advance(net.next_completion_s())
    windows = net.link_windows()
    assert windows.bytes.sum(axis=0) == pytest.approx(net.link_bytes, rel=1e-9, abs=1e-3)
    assert np.all(net.link_busy_s <= net.now_s * (1 + 1e-12))
    assert np.all((net.link_busy_s > 0) == (net.link_bytes > 0))


def test_per_part_routes_by_class_follow_the_classes_split_after_them():
    # a merged class of four parts (ring steps of four groups) read by class, then routes that split its classes: the
    # updated reading equals one made from scratch, and both equal the per-link truth (per part, per class now, the
    # most pairs the part puts on one link of the class)
    from simcluster.network.base import part_routes

    fabric = _fabric(oversubscription=4, routing="ecmp")
    net = FlowNetwork(fabric)
    groups = np.arange(4)[:, None] + 8 * np.arange(8)   # four rings, one GPU per node each: all cross the network
    pairs = np.concatenate([np.stack([g, np.roll(g, -1)], axis=1) for g in groups])
    merged = TransferClass(pairs, GIB, parts=np.repeat(np.arange(4), 8))
    net.start(merged, 0.0)
    routes = part_routes(fabric, merged)
    before = net._by_class(routes)
    splits = net._classes.splits
    for src in (0, 9, 18):   # single sends over some of the same links, with other counts
        net.start(TransferClass([[src, src + 40], [src + 1, src + 41]], GIB), 0.0)
    assert net._classes.splits > splits and not net._classes.unsplit_since(np.unique(before[1]), splits)
    updated = net._by_class(routes)
    fresh = net._class_rows(routes, None, net._classes.class_of[routes.links])

    def rows(part, known, most):
        return sorted(zip(part.tolist(), known.tolist(), most.tolist(), strict=True))

    truth = {}
    for part, link, count in zip(routes.part.tolist(), routes.links.tolist(), routes.counts.tolist(), strict=True):
        key = (part, int(net._classes.class_of[link]))
        truth[key] = max(truth.get(key, 0.0), count)
    assert rows(*updated[:3]) == rows(*fresh) == sorted((p, c, m) for (p, c), m in truth.items())
    # a second round of splits, of classes made by the first: read again from the entries' classes kept since
    splits = net._classes.splits
    for src in (40, 49):
        net.start(TransferClass([[src, src - 40]], GIB), 0.0)
    assert net._classes.splits > splits
    again = net._by_class(routes)
    truth = {}
    for part, link, count in zip(routes.part.tolist(), routes.links.tolist(), routes.counts.tolist(), strict=True):
        key = (part, int(net._classes.class_of[link]))
        truth[key] = max(truth.get(key, 0.0), count)
    assert rows(*again[:3]) == sorted((p, c, m) for (p, c), m in truth.items())
    assert np.all(np.diff(updated[0]) >= 0)   # sorted by part


def test_window_bytes_and_busy_time_per_class_equal_per_link_sums_exactly(monkeypatch):
    """Kept per class, the windows' bytes and the busy time are the per-link sums to the last bit: a shadow adds each
    spread to every link of the classes, in the same order, and must agree exactly, across classes split mid-run."""
    from simcluster.network import windows as link_windows

    fabric = _fabric(oversubscription=4, routing="ecmp")
    shadow = link_windows.LinkWindows(len(fabric.link_bytes_per_s))
    original = FlowNetwork._spread_windows

    def spread_both(self):
        by_class = self._class_windows
        shadow._widen_until(by_class.width_s * link_windows.WINDOWS)   # the classes' windows widen first
        for (_component, window), (solved, seconds) in self._window_pending.items():
            classes, index = self._class_columns(solved)
            for known, value in zip(classes.tolist(), (solved[2] * seconds)[index].tolist(), strict=True):
                shadow.add_bytes(window, self._classes.links[known], value)
        original(self)

    monkeypatch.setattr(FlowNetwork, "_spread_windows", spread_both)
    rng = np.random.default_rng(5)
    net = FlowNetwork(fabric)
    for step in range(12):
        src = rng.choice(64, size=6, replace=False)
        net.advance(step * 2e-4)
        net.start(TransferClass(np.stack([src, (src + rng.integers(8, 56, size=6)) % 64], axis=1), GIB / 64),
                  step * 2e-4)
    while net.next_completion_s() < np.inf:
        net.advance(net.next_completion_s())
    assert net._classes.splits > 0
    windows = net.link_windows()
    assert windows.width_s == shadow.width_s
    assert np.array_equal(windows.bytes, shadow.bytes)
    shadow.end_s = windows.end_s   # the busiest windows, found per class and gathered, are the per-link ones
    capacity = fabric.link_bytes_per_s
    assert np.array_equal(windows.peak_utilisation(capacity), shadow.peak_utilisation(capacity))


@pytest.mark.parametrize("end_windows", [0.0, 0.5, 3.0, 7.05, 20.99, 31.02, 32.0])
def test_windows_gathered_from_classes_equal_a_per_link_table(end_windows):
    """``GatheredWindows`` (the flow model's windows, one column per link class) reads per link as a per-link table
    would, bit for bit: bytes, and the busiest windows (a short last window folded into the one before: 7.05, 31.02)."""
    from simcluster.network import windows as link_windows

    rng = np.random.default_rng(11)
    by_class = link_windows.LinkWindows(5)
    by_class.bytes[:] = rng.random(by_class.bytes.shape) * 1e9
    by_class.bytes[int(np.ceil(end_windows)):] = 0.0   # nothing after the run's end
    by_class.width_s, by_class.end_s = 2e-3, end_windows * 2e-3
    class_of = rng.integers(-1, 5, size=40)
    gathered = link_windows.GatheredWindows(by_class, class_of)
    table = link_windows.LinkWindows(len(class_of))
    for link, known in enumerate(class_of.tolist()):
        if known >= 0:
            table.bytes[:, link] = by_class.bytes[:, known]
    table.width_s, table.end_s = by_class.width_s, by_class.end_s
    capacity = rng.random(len(class_of)) * 1e11 + 1e9
    assert np.array_equal(gathered.bytes, table.bytes)
    assert np.array_equal(gathered.peak_utilisation(capacity), table.peak_utilisation(capacity))
    by_class.bytes[:] = 0.0   # a snapshot: what the model adds later is not read
    assert np.array_equal(gathered.bytes, table.bytes)


def test_grouping_equals_the_three_key_sort():
    """``link_classes._grouped`` (one coded key, the fast path, or the three-key sort past 16 distinct values) orders
    and groups links exactly as ``np.lexsort((capacity, counts, class))``."""
    from simcluster.network.link_classes import _grouped

    rng = np.random.default_rng(2)
    for counts_from, capacities_from in (([1.0, 0.25, 0.015625], [5e10, 4.5e11]), (rng.random(40), [1.0, 2.0]),
                                         ([1.0, 3.0], rng.random(30))):
        current = rng.integers(-1, 50, 20_000)
        counts = rng.choice(counts_from, len(current))
        capacity = rng.choice(capacities_from, len(current))
        order, change = _grouped(current, counts, capacity)
        want = np.lexsort((capacity, counts, current))
        assert np.array_equal(order, want)
        columns = (current[want], counts[want], capacity[want])
        assert np.array_equal(change, np.flatnonzero(np.logical_or.reduce([c[1:] != c[:-1] for c in columns])) + 1)
