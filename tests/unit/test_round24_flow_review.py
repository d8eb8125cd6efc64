"""Round 24 review of the bounded, reproducible flow model: adversarial checks of busy-time conservation, route
numbers and the bound on the pending window entries.

The truth is independent of the flow model's bookkeeping: a link is busy exactly while at least one class routed over
it is sending (every sending class gets a positive max-min rate), so its busy time is the measure of the union of the
sending intervals of the classes crossing it, and its bytes are the sum over those classes of size x pairs on it. The
sending interval of a class runs from its start to its completion less its path latency (``class_load``), both
observed from outside; the completion is reported at most ``_SAME_TIME_RTOL`` late, hence the tolerances below.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simcluster.network import flow
from simcluster.network import windows as link_windows
from simcluster.network.base import TransferClass, class_load
from simcluster.network.flow import FlowNetwork

sys.path.insert(0, str(Path(__file__).parent))
from test_round24_flow_reproducible import rail_fabric  # noqa: E402

_ROOT = Path(__file__).resolve().parents[2]


def _union_s(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -np.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _adversarial(fabric, seed: int, events: int, salt: int = 0, check_every: int = 37):
    """Seeded starts (of recurring classes, fresh classes with the same pairs, zero-byte and GPU-to-itself classes),
    advances to completions and to arbitrary times, and mid-run reads of the counters; checks after every event
    that the pending entries stay bounded and the route numbers are consistent, and at reads that busy time and bytes
    equal the brute-force truth so far. Returns the network and its brute-force (busy, bytes)."""
    rng = np.random.default_rng(seed)
    pool = [rng.integers(0, 64, size=(int(rng.integers(1, 6)), 2)) for _ in range(120)]
    recurring = [TransferClass(pairs, float(rng.integers(1, 9)) * 2**20) for pairs in pool[:40]]
    net = FlowNetwork(fabric, salt=salt)
    started: dict[int, tuple] = {}       # handle -> (start time, links, counts, size, latency)
    ended: dict[int, float] = {}         # handle -> end of its sending
    numbers_seen: set[int] = set()
    highest = -1

    def truth(now_s: float):
        busy = [[] for _ in range(len(fabric.link_bytes_per_s))]
        carried = np.zeros(len(fabric.link_bytes_per_s))
        unknown = np.zeros(len(fabric.link_bytes_per_s), dtype=bool)
        for h, (t0, links, counts, size, _lat) in started.items():
            if h not in ended and h not in net._sending:   # in its latency phase: its end is known at completion
                unknown[links] = True
            t1 = ended.get(h, now_s)
            for link in links.tolist():
                busy[link].append((t0, min(t1, now_s)))
            if h in ended:
                np.add.at(carried, links, counts * size)
        return np.array([_union_s(b) for b in busy]), carried, unknown

    def compare(now_s: float, final: bool):
        want_busy, want_bytes, unknown = truth(now_s)
        got_busy = net.link_busy_s.copy()
        assert not final or not unknown.any()
        np.testing.assert_allclose(got_busy[~unknown], want_busy[~unknown], rtol=0, atol=1e-9 * max(now_s, 1e-12))
        if final:
            np.testing.assert_allclose(net.link_bytes, want_bytes, rtol=1e-12, atol=1e-6)

    def record_done(to_s: float, done: list[int]):
        for h in done:
            if h in started:
                ended[h] = max(started[h][0], to_s - started[h][4])

    for event in range(events):
        draw = rng.random()
        if draw < 0.5 or not (net._sending or net._done_at_s):
            kind = rng.random()
            if kind < 0.5:
                transfer = recurring[int(rng.integers(len(recurring)))]
            elif kind < 0.9:   # a new class object: a new link array, so a new route number
                transfer = TransferClass(pool[int(rng.integers(len(pool)))], float(rng.integers(1, 9)) * 2**20)
            elif kind < 0.95:
                transfer = TransferClass(pool[0], 0.0)
            else:
                gpu = int(rng.integers(64))
                transfer = TransferClass(np.array([[gpu, gpu]]), 2.0**20)
            handle = net.start(transfer, net.now_s)
            if handle in net._sending:
                c = net._sending[handle]
                started[handle] = (net.now_s, np.asarray(c.links), np.asarray(c.counts, dtype=float),
                                   transfer.size_bytes, c.latency_s)
                if c.route not in numbers_seen:
                    assert c.route > highest, "a route number was reused"
                    highest = c.route
                    numbers_seen.add(c.route)
                if salt == 0:
                    links, counts, latency = class_load(fabric, transfer)
                    assert np.array_equal(links, c.links) and latency == c.latency_s
        elif draw < 0.85:
            to_s = net.next_completion_s()
            record_done(to_s, net.advance(to_s))
        else:   # an arbitrary time up to the next completion (so completions are observed when they happen)
            to_s = min(net.now_s + float(rng.exponential(2e-4)), net.next_completion_s())
            record_done(to_s, net.advance(to_s))
        # invariants after every event
        assert len(net._window_pending) <= flow._WINDOW_PENDING_KEPT
        assert len(net._route_of) == len(net._route_bytes)
        for key, number in net._route_of.items():
            assert id(net._route_bytes[number][0]) == key
        for c in net._sending.values():
            assert net._route_bytes[c.route] is c.carried
        if event % check_every == check_every - 1:
            compare(net.now_s, final=False)
    while net._sending or net._done_at_s:
        to_s = net.next_completion_s()
        record_done(to_s, net.advance(to_s))
    compare(net.now_s, final=True)
    return net


@pytest.mark.parametrize("seed, routes_kept, pending_kept, salt", [
    (11, 512, 64, 0),     # the defaults: no prune
    (12, 6, 64, 0),       # prunes every few starts: routes forgotten and numbered anew
    (13, 6, 1, 0),        # and every new (component, window) spreads the others
    (14, 4, 2, 1),        # hash ECMP salt: fractional loads, a fresh link array at every start
])
def test_busy_time_and_bytes_equal_the_brute_force_truth(monkeypatch, seed, routes_kept, pending_kept, salt):
    monkeypatch.setattr(flow, "_ROUTES_KEPT", routes_kept)
    monkeypatch.setattr(flow, "_WINDOW_PENDING_KEPT", pending_kept)
    fabric = rail_fabric()
    net = _adversarial(fabric, seed, events=700, salt=salt)
    assert net.now_s > 0 and net.link_busy_s.max() > 0
    assert net._class_windows.width_s > link_windows.FIRST_WIDTH_S   # the run outlasted the first windows (widened)
    if routes_kept < 512:
        assert net._next_route > len(net._route_bytes)   # routes were forgotten (pruned) and new numbers given


def test_busy_time_crossing_many_windows_and_a_widening():
    """One class alone sending far past the windows' initial span (the windows widen): its links are busy exactly its
    sending time, which is the sum of the per-window pieces."""
    fabric = rail_fabric()
    net = FlowNetwork(fabric)
    transfer = TransferClass(np.array([[0, 9], [1, 17], [2, 40]]), 64.0 * 2**30)
    net.start(transfer, 0.0)
    rate = net.class_rates_bytes_per_s()[0]
    for k in range(1, 50):   # reads in the middle must not count anything twice
        net.advance(k * 0.01)
        assert np.allclose(net.link_busy_s[net.link_busy_s > 0], k * 0.01, rtol=1e-12)
    net.advance(net.next_completion_s())
    busy = net.link_busy_s[net.link_bytes > 0]
    assert np.allclose(busy, transfer.size_bytes / rate, rtol=1e-12)
    assert net.now_s > 0.49 and net._class_windows.width_s > 8 * link_windows.FIRST_WIDTH_S


_SALTED = """
import json, sys
sys.path.insert(0, sys.argv[1])
from simcluster.network import flow
from simcluster.network import windows as link_windows
from test_round24_flow_reproducible import drive, rail_fabric
flow._ROUTES_KEPT = 8
flow._WINDOW_PENDING_KEPT = 3
fabric = rail_fabric()
print(json.dumps(drive(fabric, events=900, net=flow.FlowNetwork(fabric, salt=5))))
"""


def test_a_salted_run_with_prunes_gives_the_same_bits_in_two_processes():
    """The hash-ECMP (salted) flow model with frequent prunes and spreads, in two processes of other hash seeds and
    heap layouts: completions, bytes, busy times and peaks equal by ``repr``."""
    from test_round24_flow_reproducible import _FRAGMENT
    outs = []
    for seed in (3, 4):
        env = dict(os.environ, PYTHONHASHSEED=str(seed), HEAP=str(seed),
                   PYTHONPATH=os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run([sys.executable, "-c", _FRAGMENT + _SALTED, str(Path(__file__).parent)], env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        outs.append(done.stdout)
    assert outs[0] == outs[1] and '"busy"' in outs[0]
