"""The ``flow`` network model: transfer classes share link capacity max-min fairly.

Each active ``TransferClass`` is routed once (``Fabric.links_of``: the links its pairs cross and how many
pairs cross each). All members of a class progress at one rate, so a class is one variable of the rate
allocation: link l carries sum over classes c of count[c, l] * rate[c] bytes/s. Rates are the max-min fair
allocation found by progressive filling (Bertsekas & Gallager, Data Networks, 2nd ed., section 6.5.2): raise
every unfrozen class's rate together until a link saturates, freeze the classes crossing it, repeat. A class
is thereby held to the rate of its most constrained member, and the capacity its other members leave unused
goes to the other classes. Rates are recomputed only when a class starts or finishes sending; between those
events every rate is constant, so the model advances from event to event in closed form. Routes that share no
link, directly or through other routes, form separate components whose rates do not affect each other; each
component is solved and cached on its own, so a class starting or ending re-solves (and re-checks, below) only its
component. Solves run over link classes (``link_classes``: links of one capacity on which every route puts the same
count fill alike), a few per route however many links it sprays over, with the same sums as per link; the per-link
counters (busy time, bytes per time window) are kept per class and written to the links when read.

Merged classes (``TransferClass.parts``, ``engine.merge``): a class that stands for several independent transfers
gives them one rate, its most constrained part's. On every rate solution the model checks that no part is held back
(``_held_back``: each part crosses a saturated link on which no class is faster) and tallies, in ``held_back``, the
classes that fail and the time their held-back parts could have saved.

Latency phase (the simplest correct choice): a class occupies its links from its start until its bytes are
sent, then completes after the largest path latency among its pairs, during which it no longer loads the
links. On an idle fabric a class of S bytes per pair whose bottleneck gives each pair B bytes/s completes
after S / B + max latency, the alpha-beta cost of one transfer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from simcluster.network import windows as link_windows
from simcluster.network.base import (
    HeldBack,
    NetworkModel,
    PartRoutes,
    TransferClass,
    class_load,
    latency_gaps_s,
    part_routes,
)
from simcluster.network.link_classes import LinkClasses

# Classes whose finishing times agree to this relative precision finish together (floating-point slack).
_SAME_TIME_RTOL = 1e-12
# How far the model's clock may lead the event loop's. The loop (engine/drivers.py ``_settle``) takes a completion
# within TIME_EPS_S = 1e-12 of max(1 s, now) as now and advances the model to that completion, and ``advance`` carries
# to a send end up to _SAME_TIME_RTOL past its target: the loop may then start (or advance to) a time up to the sum
# of the two, times max(1 s, clock), behind the clock (6.2e-13 s at 0.53 s in mcore-mixtral-8x7b-64-h100 at seq_len
# 16, round 19's fuzzing); such a start is taken as now. Doubled for the rounding of the comparisons; anything further
# behind is an ordering bug. tests/unit/test_flow_clock.py ties it to the loop's constant (a layer above this one).
_CLOCK_LEAD = 2 * (1e-12 + _SAME_TIME_RTOL)
# Links within this relative margin of the lowest fill level saturate in the same progressive-filling round.
_SATURATION_RTOL = 1e-9
# Solved rate sets kept. An entry is small (a rate per route and the component solves it shares with the component
# cache below), and it is dropped when one of its components is evicted from there, so the component cache bounds
# what the entries hold. A ring collective reuses one route set for all its steps, but pipelines of many stages and
# expert-parallel all-to-alls revisit thousands of route sets: with 256 entries (cleared when full) the held-out
# moezoo-qwen3-235b-256-h100-a2a run solved 548k route sets for 15k distinct ones (45 s of CPU); with 8,192 it
# solves each about once (30 s), with the same rates (a cache hit returns what the solve would). Pipelines of many
# stages and virtual stages revisit more: the held-out narayanan2021-t2-529.6b-2240-a100 run (pp 35, 3 virtual stages)
# has 23,750 distinct sets and, at 8,192 entries, solved 89k (65k of them seen before, evicted by the clear); 32,768
# keep them all (round 30). Small sets (a few routes each) cost ~1 KB an entry: ~35 MB when full.
_RATE_CACHE_ENTRIES = 32768
# ... and routes the kept sets hold: a set's two maps, key, solves and parts cost ~90 bytes a route (CPython 3.12
# getsizeof: 75 for the maps and key). Bound at 256 routes a set on average, ~0.2 GB: the count alone would let 8,192
# sets of ~2,240 routes (an expanded hash-ECMP run on 12,288 GPUs, where ``_prune_due`` no longer clears the caches
# at every start) hold ~1.7 GB. Binds only where the sets kept average more than 256 routes (the 768-GPU MegaScale
# ECMP run: 123 a set at its fullest; round 23 review), so the rates of other runs are found in the same order.
_RATE_CACHE_ROUTES = 8192 * 256   # (the bound of round 23, when 8,192 sets were kept; not raised with them)
# Per-part routes of merged classes read by link class (``_by_class``): each holds 4 bytes per route entry (18 MB
# for the 4.5 million entries of the interleaved 16,384-GPU run's data-parallel ring), so few are kept.
_PART_CLASSES_KEPT = 256
# Solved components (sets of routes linked by shared links) kept: they recur far more often than whole route sets
# (a stage's tensor-parallel block, a pipeline boundary), and one entry holds one component's arrays (a few entries
# per route: by link class). 16,384 instead gives the same results with 7% fewer solves and no less CPU (ZeRO-3 with
# pp on 1,024 GPUs: most solves are of sets of routes not seen before). Round 33: 8,192, not 1,024. An expert-parallel
# pipeline cycles through more than 1,024: the held-out nemo2604-qwen3-235b-256-h100-fp8 has 2,929 distinct components
# and solved them 76,934 times at 1,024 (evicting one also drops the whole route sets that hold it), 2,929 times at
# 8,192: 32 -> 13 s of CPU, the same results, 15 MB more peak memory. The entry bound below still bounds the memory.
_COMPONENT_CACHE_ENTRIES = 8192
# (route, link class) entries the solve caches may hold: a bound for fabrics whose routes share no classes (hash
# ECMP on a large fabric splits classes down to single links), about 60 bytes each, so about 0.5 GB
_CACHED_ROUTE_ENTRIES = 8_000_000
# Routes a new route set may differ by from the last one solved for its components to be found from that one's
# (``_regroup``; or a quarter of the set's routes, when more): beyond, grouping from scratch costs no more.
_REGROUP_MOST = 8
# Distinct routes remembered before the idle ones are forgotten (each pins its link arrays), provided at least as many
# are idle as sending (``_prune_due``): forgetting clears every solve cache, so with more routes sending than this (an
# expanded hash-ECMP run on 3,072 GPUs sends ~560 classes at once) it would clear them at every start (round 23). Up
# to 256 routes sending, the rule is the bound alone, as before. Routes kept: at most max(this, 2 x routes sending) + 1.
_ROUTES_KEPT = 512
# (component, window) entries of link-window bytes kept before they are spread: each pins a component solve (small,
# by link class); the bound also sets which seconds are summed before they multiply a load, so it stays what it was
# when the solves held per-link arrays (256 then took GPT-3 175B on 16,384 GPUs from 0.85 to 1.2 GiB): another bound
# would move the windows' bytes in their last digits.
# Pending per component, not per route set: a large component (a data-parallel ring) stays the same while small
# ones (pipeline sends) come and go around it, so it is spread once per window rather than once per route set.
# The link classes' busy time is pending in the same entries (``_spread_windows``), so it is bounded by this too.
_WINDOW_PENDING_KEPT = 64
# A link is saturated (can bind a class) when its spare capacity is below this fraction of it: progressive filling
# fills a link to within _SATURATION_RTOL, plus float slack.
_SATURATED_RTOL = 1e-6


def _not_behind(time_s: float, clock_s: float) -> bool:
    """``time_s`` is now or later on the model's clock, up to the lead it may have over the event loop's."""
    return time_s >= clock_s - _CLOCK_LEAD * max(1.0, clock_s)


@dataclass(eq=False)
class _Sending:
    """A class still sending bytes: its route (links, pairs crossing each) and the bytes left per member."""

    links: np.ndarray
    counts: np.ndarray
    remaining_bytes: float
    latency_s: float
    merged: TransferClass | None = None  # the class, when it stands for several parts (checked for exactness)
    # its route's number (``FlowNetwork._route_of``): classes routed over the same pairs share the route arrays
    # (routes are cached), hence the number; read on every rate solve and carry of every class
    route: int = field(init=False)
    carried: list = field(init=False)   # its route's entry of ``FlowNetwork._route_bytes`` (kept while it sends)
    # a merged class's last (component solve, ``_held_back`` entry for it), read by ``_carry`` at every carry: the same
    # entry as the solve's cache gives, without the look-up while the component's solve stays the same object
    check: tuple | None = field(default=None, init=False)


class FlowNetwork(NetworkModel):
    """Max-min fair sharing of link bandwidth between transfer classes (the default network model).

    Per-step work is kept to a few dictionary operations so that a ring collective can run one event per step
    on 16k GPUs: routes are cached per class, rates per set of routes, and the per-link byte and busy-time
    counters are accumulated per route and spread over the links only when read.
    """

    name = "flow"

    def __init__(self, fabric, salt: int = 0, windows: bool = True):
        """``salt``: hash-ECMP salt of the routes (0: the fabric's cached routes). ``windows``: keep the bytes per link
        per time window and each link's busy time (a run's link peaks, ``link_busy_s``); False for a run whose step
        time alone is read (``validate``): nothing the rates, completions or symmetry check use is kept there, so the
        times are the same floats, and ``link_windows()`` is None as for the chunk model (round 29: 10-16% of the
        held-out set's CPU was spent on windows nobody read)."""
        self._windows = windows
        self._route_bytes: dict[int, list] = {}     # route -> [links, counts, bytes/member not yet spread]
        # id() of a route's link array -> its route number, given in the order routes are first seen: routes are
        # ordered by number in every key, component and sum, so the order is the run's, not the allocator's (with
        # ``id()`` as the route, link figures differed between processes in their last digits; round 24). An entry
        # lives exactly as long as the route's entry of _route_bytes, which keeps the array (and so its id) alive.
        self._route_of: dict[int, int] = {}
        self._next_route = 0
        self._link_busy_s = np.zeros(len(fabric.link_bytes_per_s))
        self._classes = LinkClasses(fabric.link_bytes_per_s)   # the routes' links in classes solved alike
        # the time and window bytes counters are kept per link class (every link of a class gets the same additions in
        # the same order, so it holds the per-link value exactly) and written to the links when read
        self._class_busy_s = np.zeros(0)
        self._class_windows = link_windows.LinkWindows(0)
        super().__init__(fabric)
        self.salt = salt
        self.now_s = 0.0
        self.rate_solves = 0
        self._sending: dict[int, _Sending] = {}
        self._sending_key: tuple[int, ...] | None = None   # _route_key of all of _sending, until it changes
        self._done_at_s: dict[int, float] = {}   # classes in their latency phase -> completion time
        self._rates_cache: dict[tuple[int, ...], tuple] = {}
        self._rates_cached_routes = 0   # routes held by the keys of _rates_cache
        self._component_cache: dict[tuple[int, ...], tuple] = {}   # solves of sets of routes linked by shared links
        self._cached_entries = 0   # route entries (link, route) held by the component cache
        # component -> the route sets of _rates_cache that hold it (dict keys: an ordered set). A set dropped when one
        # of its components is evicted leaves its other components' entries too: kept there, they grew by one for
        # every set solved while evictions kept the cache from filling (round 30 review)
        self._rates_of: dict[tuple[int, ...], dict[tuple[int, ...], None]] = {}
        self._evictions = 0   # component solves evicted so far
        self._near: tuple | None = None   # (route set, its solve, its index or None): ``_regroup`` starts from it
        self._next_completion_s: float | None = None
        self._next_handle = 0
        self._finished: list[int] = []           # completed during an implicit advance in start()
        # exactness of merged classes (module docstring, ``_held_back``)
        self.held_back = HeldBack()
        self._parted: set[int] = set()            # sending classes of several parts
        self._part_classes: dict[int, tuple] = {}  # part routes -> their entries by link class (``_by_class``)
        self._held: set[int] = set()              # ... of which found holding a part back
        # bytes per link class per time window (``windows``), spread lazily: (component, window) -> [its solve, s]
        self._window_pending: dict[tuple, list] = {}
        self._spreads = 0   # times _window_pending was spread and cleared

    # ---- per-link counters, spread lazily ----------------------------------------------------------------
    @property
    def link_bytes(self) -> np.ndarray:
        """Bytes carried per directed link so far."""
        for route in self._route_bytes.values():
            if route[2]:
                self._link_bytes[route[0]] += route[1] * route[2]   # link ids are unique within a route
                route[2] = 0.0
        return self._link_bytes

    @link_bytes.setter
    def link_bytes(self, value: np.ndarray):
        self._link_bytes = value

    @property
    def link_busy_s(self) -> np.ndarray:
        """Time each link has carried any traffic so far (kept with the windows: an error without them)."""
        assert self._windows, "a flow model without windows keeps no busy time"
        self._spread_windows()   # busy time is pending with the window bytes (``_spread_windows``)
        for known, links in enumerate(self._classes.links):
            if len(links):
                self._link_busy_s[links] = self._class_busy_s[known]
        return self._link_busy_s

    def link_windows(self) -> link_windows.GatheredWindows:
        """Bytes per link per time window so far (``windows.GatheredWindows``: the windows of the link classes, read
        per link); None when the model keeps none (``windows=False``)."""
        if not self._windows:
            return None
        self._spread_windows()
        return link_windows.GatheredWindows(self._class_windows, self._classes.class_of)

    def _spread_windows(self) -> None:
        """Add the pending seconds of each (component, window) to its link classes: bytes to the window, and the
        seconds to the busy time of the classes carrying traffic. Busy time rides on the window entries (bounded by
        ``_WINDOW_PENDING_KEPT``) rather than on entries of its own per route set, which grew with the distinct route
        sets a run carried until a prune (round 24)."""
        busy_s, splits = self._class_busy_s, self._classes.splits
        for (_component, window), (solved, seconds) in self._window_pending.items():
            spread = solved[6].get("spread")
            if spread is None or spread[0] != splits:
                # per solve, while no class splits: its classes now, the load on each, those carrying traffic (the
                # mask and its gather were two of the four array operations an entry cost: round 25)
                classes, index = self._class_columns(solved)
                loads = solved[2][index]
                spread = solved[6]["spread"] = (splits, classes, loads, classes[loads > 0])
            self._class_windows.add_bytes(window, spread[1], spread[2] * seconds)
            busy_s[spread[3]] += seconds   # disjoint classes: a solve's classes are distinct
        self._window_pending.clear()
        self._spreads += 1   # the entries ``_window_carry`` remembered are gone

    def _class_columns(self, solved: tuple) -> tuple[np.ndarray, np.ndarray]:
        """The link classes that now hold the links of the classes of the solve ``solved`` (``LinkClasses.descendants``)
        and, for each, the index of its class in the solve; computed again after a class was split."""
        classes = self._classes
        cached = solved[6].get("columns")
        if cached is None or cached[0] != classes.splits:
            since = solved[6]["classes"]   # how many classes there were when the solve was made
            found = [classes.descendants(known, since) for known in solved[1].tolist()]
            cached = solved[6]["columns"] = (classes.splits, np.concatenate(found),
                                             np.repeat(np.arange(len(found)), [len(f) for f in found]))
        return cached[1], cached[2]

    def _window_carry(self, solved: tuple, until_s: float) -> None:
        """The links of ``solved`` carried its loads from now to ``until_s``: pending per (component, window)."""
        windows = self._class_windows
        if until_s > link_windows.WINDOWS * windows.width_s:
            self._spread_windows()
            windows._widen_until(until_s)
        if until_s > windows.end_s:   # max(end_s, until_s), as ``max`` picks it
            windows.end_s = until_s
        width_s = windows.width_s
        now_s = self.now_s
        first = int(now_s // width_s)
        last = min(int(until_s // width_s), link_windows.WINDOWS - 1)
        all_pending = self._window_pending
        for window in range(first, last + 1):
            # min(until_s, window end) - max(now_s, window start), as ``min`` and ``max`` pick them
            end_s = (window + 1) * width_s
            if not end_s < until_s:
                end_s = until_s
            start_s = window * width_s
            if not start_s > now_s:
                start_s = now_s
            seconds = end_s - start_s
            if seconds > 0:
                memo = solved[7]   # [spreads, window, the entries of its components] of this set's last carry
                if memo[0] == self._spreads and memo[1] == window:   # the same entries, none spread since
                    for pending in memo[2]:
                        pending[1] += seconds
                    continue
                spreads, entries = self._spreads, []
                if not solved[6]:   # (id of a component's solve, the solve), made on a set's first carry
                    solved[6].extend((id(component), component) for component in solved[2])
                for known, component in solved[6]:
                    pending = all_pending.get((known, window))
                    if pending is None:
                        if len(all_pending) >= _WINDOW_PENDING_KEPT:  # each pins a solve's link arrays
                            self._spread_windows()
                        pending = all_pending[(known, window)] = [component, 0.0]
                    pending[1] += seconds
                    entries.append(pending)
                if spreads == self._spreads:
                    memo[:] = [spreads, window, entries]

    # ---- the NetworkModel interface ------------------------------------------------------------------
    def start(self, transfers: TransferClass, now_s: float) -> int:
        """Route the class and let it compete for bandwidth from ``now_s`` (rates are re-solved lazily)."""
        assert _not_behind(now_s, self.now_s), "a class cannot start in the past"
        if now_s > self.now_s:  # classes completing meanwhile are reported by the next advance()
            self._finished.extend(self.advance(now_s))
        handle = self._next_handle
        self._next_handle += 1
        if self.salt == 0:
            links, counts, latency_s = class_load(self.fabric, transfers)    # cached on the class
        elif transfers.members:
            links, counts = self.fabric.links_of(transfers.pairs, self.salt)
            latency_s = float(self.fabric.pair_latencies_s(transfers.pairs, self.salt).max())
        else:
            links, counts, latency_s = np.zeros(0, dtype=np.int64), np.zeros(0), 0.0
        if self._prune_due():
            self._prune()
        parted = transfers.part_count > 1
        if parted and (gaps_s := latency_gaps_s(self.fabric, transfers)) is not None:
            self._hold(handle, gaps_s, transfers, latency_only=True)
        if transfers.size_bytes > 0 and len(links):
            sending = _Sending(links, counts, float(transfers.size_bytes), latency_s, transfers if parted else None)
            self._sending[handle] = sending
            self._sending_key = None
            if parted:
                self._parted.add(handle)
            route = self._route_of.get(id(links))
            if route is None:
                route = self._route_of[id(links)] = self._next_route
                self._next_route += 1
                self._route_bytes[route] = [links, np.asarray(counts, dtype=float), 0.0]
                self._register(route, links, counts)
            sending.route = route
            sending.carried = self._route_bytes[route]   # pruned only once no class sends on it
        else:  # nothing to send, or every pair is a GPU to itself: only the latency remains
            self._done_at_s[handle] = self.now_s + latency_s
            self._held.discard(handle)
        self._next_completion_s = None
        return handle

    def next_completion_s(self) -> float:
        """Earliest completion, looking ahead through the rate changes of classes that finish sending
        first."""
        if self._finished:
            return self.now_s
        if self._next_completion_s is None:
            now_s = self.now_s
            if self._sending:
                solved = self._solve(self._route_key(self._sending))
                if solved[1]:
                    # routes share no link: a class's rate does not change when others finish, so each one
                    # completes at its own closed-form time (most pipeline send/recv sets are of this kind)
                    rate_of_route = solved[0]
                    self._next_completion_s = float(min(
                        min([now_s + c.remaining_bytes / rate_of_route[c.route] + c.latency_s
                             for c in self._sending.values()]),
                        min(self._done_at_s.values(), default=np.inf)))
                    return self._next_completion_s
            remaining = {h: c.remaining_bytes for h, c in self._sending.items()}
            done_at_s = dict(self._done_at_s)
            # no class still sending can complete before ``now_s + least_latency_s``: every later end is at or after
            # now_s, and float addition rounds monotonically; once that is no earlier than the first completion
            # found, no further step of the look-ahead can lower it (the same float, without solving the rates of
            # the smaller sets of routes that remain: round 30)
            least_latency_s = min([c.latency_s for c in self._sending.values()], default=0.0)
            while True:
                first_done_s = min(done_at_s.values(), default=np.inf)
                if not remaining or now_s + least_latency_s >= first_done_s:
                    break
                end_s, ending, rates = self._next_send_end(now_s, remaining)
                if first_done_s <= end_s:
                    break
                for h in remaining:
                    # never below zero: end_s - now_s carries the rounding of the absolute times, and a class a
                    # rounding error from ending would be left with a negative rest that never ends (a hang)
                    remaining[h] = max(0.0, remaining[h] - rates[h] * (end_s - now_s))
                for h in ending:
                    del remaining[h]
                    done_at_s[h] = end_s + self._sending[h].latency_s
                now_s = end_s
            self._next_completion_s = float(first_done_s)
        return self._next_completion_s

    def advance(self, to_s: float) -> list[int]:
        """Move to ``to_s``, carrying bytes at the current rates; returns the classes completed by then."""
        assert _not_behind(to_s, self.now_s), "time never runs backwards"
        horizon_s = to_s + _SAME_TIME_RTOL * abs(to_s)
        sending = self._sending
        while sending:
            solved = self._solve(self._sending_key or self._route_key(sending))
            end_s, ending = self._next_send_end_all(solved)
            if end_s > horizon_s:  # ``solved``: the rates of every sending class, carried to ``to_s`` below
                break
            self._carry(end_s, solved, ending)
            for h in ending:
                self._done_at_s[h] = end_s + sending.pop(h).latency_s
                self._sending_key = None
                self._parted.discard(h)
                self._held.discard(h)
        if sending and to_s > self.now_s:  # the loop broke: ``solved`` holds the rates of the classes still sending
            self._carry(to_s, solved, ())
        self.now_s = max(self.now_s, to_s)
        done_at_s = self._done_at_s
        finished = sorted((t, h) for h, t in done_at_s.items() if t <= horizon_s) if done_at_s else ()
        for _, h in finished:
            del done_at_s[h]
        self._next_completion_s = None
        done, self._finished = self._finished + [h for _, h in finished], []
        return done

    def _register(self, route: int, links: np.ndarray, counts: np.ndarray) -> None:
        """Add a route to the link classes; a class split from another starts with its counters."""
        classes = self._classes
        before = len(classes.links)
        classes.add(route, links, counts)
        if len(classes.links) > before:
            columns = len(self._class_busy_s)
            if len(classes.links) > columns:   # room for as many classes again: growing costs O(classes) overall
                grow = max(len(classes.links) - columns, columns)
                self._class_windows.extend(grow)
                self._class_busy_s = np.concatenate((self._class_busy_s, np.zeros(grow)))
            new, parent = classes.split_since(before)
            self._class_windows.bytes[:, new] = self._class_windows.bytes[:, parent]
            self._class_busy_s[new] = self._class_busy_s[parent]

    # ---- introspection -------------------------------------------------------------------------------
    def link_load_bytes_per_s(self) -> np.ndarray:
        """Current bytes/s on every link (zero where idle)."""
        load = np.zeros(len(self.fabric.link_bytes_per_s))
        if self._sending:
            for component in self._solve(self._route_key(self._sending))[2]:
                classes, index = self._class_columns(component)
                for known, class_load in zip(classes.tolist(), component[2][index].tolist(), strict=True):
                    load[self._classes.links[known]] = class_load
        return load

    def class_rates_bytes_per_s(self) -> dict[int, float]:
        """Current per-member rate of every class still sending."""
        return self._rates(self._sending) if self._sending else {}

    def utilisation(self, elapsed_s: float) -> np.ndarray:
        """Mean utilisation of each link over ``elapsed_s``: bytes carried / (capacity * elapsed)."""
        if elapsed_s <= 0:
            return np.zeros_like(self._link_bytes)
        return self.link_bytes / (self.fabric.link_bytes_per_s * elapsed_s)

    # ---- internals -----------------------------------------------------------------------------------
    def _prune_due(self) -> bool:
        """Whether to forget the idle routes: more than ``_ROUTES_KEPT`` known, and at least as many idle as sending
        (forgetting clears every solve cache, so it must not come at every start when more than that are sending)."""
        known = len(self._route_bytes)
        return known > _ROUTES_KEPT and known > 2 * len({c.route for c in self._sending.values()})

    def _prune(self):
        """Spread the pending counters, then forget the routes of classes no longer sending.

        Every cache keyed by route is cleared together: route numbers are never reused, so entries naming a forgotten
        route would only hold memory.
        """
        self.link_bytes  # noqa: B018 (a property that spreads the pending bytes)
        self._spread_windows()
        active = {c.route for c in self._sending.values()}
        for route in [r for r in self._route_bytes if r not in active]:
            self._route_of.pop(id(self._route_bytes.pop(route)[0]), None)   # (tests may register routes directly)
            self._classes.remove(route)   # its classes stay (they hold the per-class counters)
        self._rates_cache.clear()
        self._rates_cached_routes = 0
        self._component_cache.clear()
        self._rates_of.clear()
        self._near = None
        self._cached_entries = 0

    def _route_key(self, handles) -> tuple[int, ...]:
        """The multiset of routes of ``handles`` (sending classes), sorted."""
        if len(handles) == len(self._sending):   # all of them: handles are always among the sending classes
            if self._sending_key is None:
                self._sending_key = tuple(sorted(c.route for c in self._sending.values()))
            return self._sending_key
        return tuple(sorted(self._sending[h].route for h in handles))

    def _rates(self, handles) -> dict[int, float]:
        """Per-member rate of each sending class in ``handles`` (solved once per set of routes)."""
        rate_of_route = self._solve(self._route_key(handles))[0]
        return {h: rate_of_route[self._sending[h].route] for h in handles}

    def _next_send_end(self, now_s: float, remaining: dict[int, float]):
        """When the next class(es) finish sending at the rates of the set ``remaining``, and which ones."""
        rates = self._rates(remaining)
        left_s = {h: remaining[h] / rates[h] for h in remaining}
        soonest_s = min(left_s.values())
        ending = [h for h, s in left_s.items() if s <= soonest_s * (1 + _SAME_TIME_RTOL)]
        return now_s + soonest_s, ending, rates

    def _next_send_end_all(self, solved: tuple) -> tuple[float, list[int]]:
        """``_next_send_end`` for every sending class at its bytes left (what ``advance`` asks at each step), at the
        rates of ``solved`` (``_solve`` of every sending class's route): the same quotients, minimum and order,
        without the dictionaries of bytes left, of times left and of rates."""
        rate_of_route = solved[0]
        sending = self._sending
        left_s = [c.remaining_bytes / rate_of_route[c.route] for c in sending.values()]
        soonest_s = min(left_s)
        bound_s = soonest_s * (1 + _SAME_TIME_RTOL)
        return self.now_s + soonest_s, [h for h, s in zip(sending, left_s, strict=True) if s <= bound_s]

    def _carry(self, until_s: float, solved: tuple, ending):
        """Send at the constant rates of ``solved`` (``_solve`` of every sending class's route) from now to
        ``until_s``; classes in ``ending`` send exactly their rest."""
        dt_s = until_s - self.now_s
        rate_of_route = solved[0]
        for h, c in self._sending.items():
            if ending and h in ending:
                sent = c.remaining_bytes
            else:   # min(remaining, rate * dt) as ``min`` picks it: the first unless the second is smaller
                sent = rate_of_route[c.route] * dt_s
                if not sent < c.remaining_bytes:
                    sent = c.remaining_bytes
            c.remaining_bytes -= sent
            c.carried[2] += sent
        if dt_s > 0:
            if self._windows:
                self._window_carry(solved, until_s)   # window bytes and busy time
            if self._parted:
                # classes sending at once overlap in time: the step's critical path, waiting on one of them at a
                # time, can gain at most the largest saving of the interval, not their sum
                of_route, worst = solved[3], 0.0
                for h in self._parted:
                    sending = self._sending[h]
                    component = of_route[sending.route]
                    memo = sending.check
                    if memo is not None and memo[0] is component:
                        check = memo[1]
                    else:
                        check = component[6].get(id(sending.merged))   # ``_held_back``'s cache, read here
                        if check is None:
                            self._held_back(component, sending)
                            check = component[6][id(sending.merged)]
                        sending.check = (component, check)
                    if check[1] is not None:
                        worst = max(worst, check[2])
                        if h not in self._held:   # a class already held adds nothing more (``HeldBack.add``)
                            self._hold(h, np.zeros(1), sending.merged)
                        else:   # but one held by latency at its start is named as held by rate too
                            self.held_back.name(sending.merged)
                self.held_back.seconds += dt_s * worst
        self.now_s = until_s

    # ---- exactness of merged classes ---------------------------------------------------------------------
    def _hold(self, handle: int, saved_s: np.ndarray, transfers: TransferClass, latency_only: bool = False) -> None:
        """Class ``handle`` (``transfers``) held its parts back by ``saved_s`` (seconds per part; ``latency_only``:
        by their path latencies, ``HeldBack.add``)."""
        self.held_back.add(saved_s, new=handle not in self._held, transfers=transfers, latency_only=latency_only)
        self._held.add(handle)

    def _held_back(self, solved: tuple, sending: _Sending) -> np.ndarray | None:
        """Fraction of the time a merged class spends sending at the current rates that each of its parts could
        save on its own: 1 - class rate / the best rate the part could reach; None when the merge is exact.

        Max-min fairness (Bertsekas & Gallager, Data Networks, 2nd ed., section 6.5.2): an allocation is max-min
        fair exactly when every flow crosses a saturated link on which no flow is faster. Give each part of a
        class the class's rate: the link loads are unchanged, so the split allocation equals the merged one if
        and only if every part crosses such a link (saturated, with no class faster than this one on it); a part
        that does not could go faster on its own. It could take at most its links' spare capacity plus what
        faster classes carry there, which bounds its best rate. Cached per solve and class; a class alone on its
        links gets the same answer in every solve, so it is cached on the class.
        """
        checks = solved[6]
        cached = checks.get(id(sending.merged))
        if cached is not None:
            return cached[1]
        saturated, max_rate, shared, all_binding, segments = self._link_state(solved)
        if all_binding[sending.route]:  # every link of the class binds it, so every part crosses one
            checks[id(sending.merged)] = (sending.merged, None, 0.0)
            return None
        if not shared[solved[7][1][segments[sending.route]]].any():
            saving = self._held_back_alone(sending)
        else:
            rate = solved[0][sending.route]
            binding = saturated & (max_rate <= rate * (1 + _SATURATED_RTOL))   # per link class
            saving = None
            index = self._class_index(solved)   # link class (now) -> the index of its class in the solve
            # parts bound on their access links need no more
            routes = None if self._bound_on_access(sending, binding, index) else part_routes(self.fabric,
                                                                                            sending.merged)
            if routes is not None:
                # look at all its links, by class (each part's own bottleneck first was the shortcut when this read
                # every link entry; by class the whole check costs about as little)
                owner, local, counts, rates, capacity, load = solved[7]
                faster = rates[owner] > rate * (1 + _SATURATED_RTOL)
                room = np.maximum(capacity - load, 0.0) + np.bincount(
                    local[faster], weights=counts[faster] * rates[owner][faster], minlength=len(capacity))
                saving = self._part_savings(routes, rate, binding, room, index)
        # the entry keeps the class alive (ids stay unique); with the largest saving, which ``_carry`` reads
        checks[id(sending.merged)] = (sending.merged, saving, None if saving is None else float(saving.max()))
        return saving

    def _bound_on_access(self, sending: _Sending, binding: np.ndarray, index: np.ndarray) -> bool:
        """Whether every part of a merged class crosses a ``binding`` link (by the index ``index`` gives its class)
        among the links its pairs take whatever their core paths (``part_routes(access=True)``: the GPUs' access
        segments): enough to prove the merge exact without routing every part through the core. False when that
        does not settle it (a part bound only in the core, a part without such links, a fabric without them)."""
        routes = part_routes(self.fabric, sending.merged, access=True)
        if routes is None:
            return False
        part, known, _counts, _starts = self._by_class(routes)
        bound = np.zeros(routes.parts, dtype=bool)
        bound[part[binding[index[known]]]] = True
        return bool(bound.all())

    def _by_class(self, routes: PartRoutes) -> tuple:
        """Per-part routes by link class: (part, class, the most pairs the part puts on one link of the class) once per
        part and class, sorted by part, and where each part's entries start. What the symmetry check reads of a
        part's links is the same for all links of a class (a binding flag, spare capacity / pairs: least for the
        most pairs), so a 112-part data-parallel ring's 4.2 million link entries come down to a few per part. When
        later routes split some of those classes, only the entries now in the classes split are read again (a
        pipeline send's route splits a few access classes of a data-parallel ring's thousands)."""
        classes = self._classes
        cached = self._part_classes.get(id(routes))
        if cached is not None and classes.unsplit_since(cached[3], cached[1]):
            return cached[2]
        if cached is None:
            if len(self._part_classes) >= _PART_CLASSES_KEPT:
                self._part_classes.clear()
            # each entry's class, kept: an entry is in a class split since exactly when the class it was in then
            # was split (links only move into new classes), so the entries to read again are found from this
            # table, not by gathering every entry's class again (4.5 million entries, at each split)
            of_entry = classes.class_of[routes.links].astype(np.int32)   # 4 bytes an entry: kept
            part, known, most = self._class_rows(routes, None, of_entry)
        else:
            part, known, most, _starts = cached[2]
            of_entry = cached[5]
            stale = np.zeros(len(classes.links), dtype=bool)
            stale[cached[3][classes.split_at[cached[3]] > cached[1]]] = True
            stale[cached[4]:] = True   # the classes made since: split from those (the routes' links are in no other)
            entries = np.flatnonzero(stale[of_entry])
            of_entry[entries] = classes.class_of[routes.links[entries]]
            redone = self._class_rows(routes, entries, of_entry[entries])
            kept = ~stale[known]
            part, known, most = (np.concatenate((old[kept], new)) for old, new in zip((part, known, most), redone,
                                                                                    strict=True))
            order = np.argsort(part, kind="stable")   # a part's entries in any order: its reductions are exact
            part, known, most = part[order], known[order], most[order]
        starts = np.flatnonzero(np.diff(part, prepend=-1))
        cached = self._part_classes[id(routes)] = (routes, classes.splits, (part, known, most, starts),
                                                   np.unique(known), len(classes.links), of_entry)
        return cached[2]

    def _class_rows(self, routes: PartRoutes, entries: np.ndarray | None, of_entry: np.ndarray) -> tuple:
        """(part, class, most pairs on one link of the class) once per part and class of the entries ``entries`` of
        ``routes`` (all: None), sorted by part; ``of_entry``: the class of each of those entries."""
        parts, counts = ((routes.part, routes.counts) if entries is None else
                         (routes.part[entries], routes.counts[entries]))
        used = np.flatnonzero(np.bincount(of_entry, minlength=len(self._classes.links)))
        slot = np.zeros(len(self._classes.links), dtype=np.int64)
        slot[used] = np.arange(len(used))
        # one slot per (part, class), in part order: scatter, no sort of the entries (ufunc.at is fast on numpy 2)
        key = parts * len(used) + slot[of_entry]
        slots = routes.parts * len(used)
        if slots <= max(4 * len(key), 2**20):
            present = np.flatnonzero(np.bincount(key, minlength=slots))
            most = np.zeros(slots)
            np.maximum.at(most, key, counts)
            most = most[present]
        else:   # too many parts x classes for a dense table: sort the entries
            order = np.argsort(key, kind="stable")
            first = np.flatnonzero(np.diff(key[order], prepend=-1))
            present = key[order][first]
            most = np.maximum.reduceat(counts[order], first)
        part, known = np.divmod(present, max(len(used), 1))
        return part, used[known], most

    def _held_back_alone(self, sending: _Sending) -> np.ndarray | None:
        """``_held_back`` for a class no other crosses a link of: every part runs at the class's own bottleneck."""
        capacity = self.fabric.link_bytes_per_s
        cached = sending.merged.__dict__.get("_alone")
        if cached is not None and cached[0] is capacity:
            return cached[1]
        per_member = capacity[sending.links] / sending.counts
        rate = per_member.min()
        binding = per_member <= rate * (1 + _SATURATED_RTOL)
        saving = None
        if not binding.all():
            # the same per link class of the route (one capacity and count per class), for the per-part look-ups
            known, counts = self._classes.route(sending.route)
            capacity_of = self._classes.class_capacity[known]
            index = np.full(len(self._classes.links), -1, dtype=np.int64)
            index[known] = np.arange(len(known))
            binding = capacity_of / counts <= rate * (1 + _SATURATED_RTOL)
            if not self._bound_on_access(sending, binding, index):
                room = capacity_of - counts * rate
                saving = self._part_savings(part_routes(self.fabric, sending.merged), rate, binding, room, index)
        object.__setattr__(sending.merged, "_alone", (capacity, saving))  # per calibration of the links
        return saving

    def _part_savings(self, routes: PartRoutes, rate: float, binding: np.ndarray, room: np.ndarray,
                      index: np.ndarray) -> np.ndarray | None:
        """Per part, 1 - ``rate`` / its best rate, 0 for a part that crosses a ``binding`` link; None when all do.
        ``binding`` and ``room`` (bytes/s a part could add per pair) are by the index ``index`` gives a link class."""
        bound = np.ones(routes.parts, dtype=bool)   # a part without links waits for nothing
        best = np.full(routes.parts, np.inf)
        if len(routes.links):   # entries are sorted by part: segmented reductions (np.minimum.at is an order slower)
            part, known, most, starts = self._by_class(routes)
            at = index[known]
            owner = part[starts]
            bound[owner] = np.logical_or.reduceat(binding[at], starts)
            if bound.all():
                return None
            # rate + room / pairs is least for the most pairs on a link of the class: the per-link minimum exactly
            best[owner] = np.minimum.reduceat(rate + room[at] / most, starts)
        saving = np.where(bound, 0.0, 1.0 - rate / best)
        return saving if saving.max() > _SATURATED_RTOL else None

    def _class_index(self, solved: tuple) -> np.ndarray:
        """Per link class now, the index in the solve ``solved`` of the class its links were in there (-1: not in the
        solve): through ``_class_columns``, without a pass over the solve's links."""
        cached = solved[6].get("index")
        if cached is None or cached[0] != self._classes.splits or len(cached[1]) < len(self._classes.links):
            classes, index = self._class_columns(solved)
            lookup = np.full(len(self._classes.links), -1, dtype=np.int64)
            lookup[classes] = index
            cached = solved[6]["index"] = (self._classes.splits, lookup)
        return cached[1]

    def _link_state(self, solved: tuple) -> tuple:
        """(per link class of a solve: which are saturated, the fastest class rate on each, which carry several
        classes; route -> whether every link of the route binds it; route -> its entries in the solve); computed once
        per solve."""
        state = solved[6].get("links")
        if state is None:
            owner, local, _counts, rates, capacity, load = solved[7]
            shared = np.bincount(local, minlength=len(capacity)) > 1
            saturated = capacity - load <= _SATURATED_RTOL * capacity
            on = saturated[local]                                 # only saturated links can bind
            lengths = np.array(solved[3])   # entries are grouped by route, in key order
            ends = np.cumsum(lengths)
            starts = ends - lengths
            # the fastest class on each saturated link: routes written slowest first, so the fastest one stays (a
            # few routes per component; np.maximum.at over the entries is an order slower)
            max_rate = np.zeros(len(capacity))
            for route in np.argsort(rates, kind="stable").tolist():   # every route has entries: starts[route]
                segment = slice(starts[route], ends[route])
                max_rate[local[segment][on[segment]]] = rates[route]
            binds = np.zeros(len(owner), dtype=bool)
            at = np.flatnonzero(on)   # entries on saturated links: the others do not bind
            binds[at] = max_rate[local[at]] <= rates[owner[at]] * (1 + _SATURATED_RTOL)
            routes = list(solved[4])
            all_binding = dict(zip(routes, np.logical_and.reduceat(binds, starts).tolist(), strict=True))
            segments = {route: slice(start, end) for route, start, end in zip(routes, starts.tolist(), ends.tolist(),
                                                                                strict=True)}
            state = solved[6]["links"] = (saturated, max_rate, shared, all_binding, segments)
        return state

    def _solve(self, key: tuple[int, ...]) -> tuple:
        """Max-min fair per-member rate of each route in ``key``, solved per component (``_components``).

        Returns (rate per route, whether the routes share no link, the solves of the components
        (``_solve_component``), route -> the solve of its component, which ``_held_back`` reads, the components' routes,
        whether no solve was evicted during its look-ups (each of its solves is then the cached one while it is
        cached), (id, solve) of each component as ``_window_carry`` keys them (filled by it when first carried), and
        ``_window_carry``'s memo of their pending entries). Routes that share no
        link, directly or through other routes, do not affect each other's rates (progressive filling raises and
        freezes each component's routes on its own links only), so each component is solved, and cached, on its
        own: when a class starts or ends, only its component is solved again, and the symmetry check of a class
        whose component did not change is answered from that component's cache (``_held_back``). Cached per
        multiset of routes (route numbers, never reused).
        """
        cached = self._rates_cache.get(key)
        if cached is not None:
            if self._near is None or self._near[1] is not cached:
                self._near = (key, cached, None)   # the next new set is grouped from this one (``_regroup``)
            return cached
        regrouped = self._regroup(key)
        if regrouped is None:
            components = self._components(key)
            parts = [key] if len(components) == 1 else [tuple(key[i] for i in members) for members in components]
            index = None
        else:
            parts, index, touched, new = regrouped
        cache, evictions = self._component_cache, self._evictions
        solved = []
        for part in parts:   # ``_solve_component``'s look-up inline: nearly every part is cached (one per route)
            found = cache.pop(part, None)
            if found is None:
                found = self._solve_component(part)
            else:
                cache[part] = found   # most recently used last
            solved.append(found)
        if len(solved) == 1:
            rate_of_route, of_route = solved[0][0], dict.fromkeys(key, solved[0])
        elif regrouped is not None and evictions == self._evictions and self._near[1][5]:
            # the last set's maps, less the components grouped again, plus the new ones: every other component is the
            # same solve, provided none was evicted since the last set's look-ups (evicting one drops every cached set
            # holding it; the last set solved is ``_near`` until the next one) nor during them (its entry 5)
            near = self._near[1]
            rate_of_route, of_route = dict(near[0]), dict(near[3])
            for part in touched:
                for route in part:
                    rate_of_route.pop(route, None)
                    of_route.pop(route, None)
            for part in new:
                component = cache[part]
                rate_of_route.update(component[0])
                of_route.update(dict.fromkeys(component[0], component))
        else:
            rate_of_route, of_route = {}, {}
            for part in solved:
                rate_of_route.update(part[0])
                of_route.update(dict.fromkeys(part[0], part))
        result = (rate_of_route, all(part[5] for part in solved), tuple(solved), of_route, parts,
                  evictions == self._evictions, [], [-1, -1, None])
        if (len(self._rates_cache) >= _RATE_CACHE_ENTRIES
                or self._rates_cached_routes + len(key) > _RATE_CACHE_ROUTES):
            self._rates_cache.clear()
            self._rates_cached_routes = 0
            self._rates_of.clear()
        self._rates_cache[key] = result
        self._rates_cached_routes += len(key)
        for part in parts:   # so that evicting a component solve lets this entry (which holds it) go too
            self._rates_of.setdefault(part, {})[key] = None
        self._near = (key, result, index)
        return result

    def _regroup(self, key: tuple[int, ...]) -> tuple[list, tuple, list, list] | None:
        """The components of ``key`` (as ``_components`` groups them: tuples of routes in key order, ordered by their
        first route) found from those of the last route set solved or looked up (``_near``), which differs from it by
        a few routes: a class starting or ending changes one route, the look-ahead of ``next_completion_s`` drops the
        classes that end. Only the components the changed routes touch are grouped again (``_components`` over those
        routes). Why the rest are components of ``key`` as they were: components depend only on which routes share a
        link (a route's links never change under its number: numbers are never reused, and tests that reuse one do so
        only after ``_prune``, which drops ``_near``), and at every moment two routes share a link exactly when they
        cross a common link class
        (``LinkClasses``: a split refines the classes but keeps that), so the scan of a changed route's classes finds
        every route it shares a link with. A component of the last set none of whose routes changed stays connected;
        a route of ``key`` outside it that shares a link with it is either unchanged (then it was in it already) or
        changed and still sending (then the scan touched it); routes that ended only disconnect, and their components
        were touched. Checked against an independent grouping over the raw links under splits, evictions, cache
        clears, prunes and recycled ids (tests/unit/test_round23_regroup_review.py). O(changed routes'
        neighbours) instead of O(every route) per new set (the expanded hash-ECMP runs send hundreds of classes at
        once, nearly all their own component). None when there is no last set or too much changed: group from
        scratch. Returns (the components, (route -> multiplicity in ``key``, route -> its component) for the next
        set, the components of the last set grouped again and the new ones)."""
        near = self._near
        if near is None:
            return None
        near_key, near_result, index = near
        if index is None:
            near_mult = Counter(near_key)
            part_of: dict[int, tuple] = {}
            for part in near_result[4]:
                part_of.update(dict.fromkeys(part, part))
        else:
            near_mult, part_of = index
        mult = Counter(key)
        changed = {route for route, _n in mult.items() ^ near_mult.items()}
        if len(changed) > max(_REGROUP_MOST, len(mult) // 4):
            return None
        classes = self._classes
        touched: dict[int, tuple] = {}   # id of a component of the last set -> it, when a changed route touches it
        for route in changed:
            part = part_of.get(route)
            if part is not None:
                touched[id(part)] = part
            if route in mult:   # still (or newly) sending: the components it shares a class with join it
                for known in classes.classes_of(route):
                    for other in classes.routes_on(known):
                        part = part_of.get(other)
                        if part is not None:
                            touched[id(part)] = part
        regroup = {route for route in changed if route in mult}
        for part in touched.values():
            regroup.update(route for route in part if route in mult)
        sub = tuple(sorted([route for route in regroup for _ in range(mult[route])]))
        new = [tuple(sub[i] for i in members) for members in self._components(sub)] if sub else []
        # first routes are distinct (a route is in one component): tuples order by their first route
        parts = sorted([part for part in near_result[4] if id(part) not in touched] + new)
        if index is not None:
            part_of = dict(part_of)
        for part in touched.values():
            for route in part:
                part_of.pop(route, None)
        for part in new:
            part_of.update(dict.fromkeys(part, part))
        return parts, (mult, part_of), list(touched.values()), new

    def _components(self, key: tuple[int, ...]) -> list[list[int]]:
        """The routes of ``key`` grouped into components: two routes are in one when they share a link, directly or
        through other routes of ``key``. Routes share a link exactly when they cross a common link class (every route
        crosses a class with all of its links or none, ``LinkClasses.overlap``), so each route is joined to the first
        route of ``key`` seen on each of its classes: one pass over the routes' class entries (union-find), instead of
        a look-up per pair of routes (an expanded run on hash ECMP sends hundreds of classes at once, each its own
        component: the pairs were 95% of the 768-GPU MegaScale run's CPU). Components come in the order of their
        first route, each route's indices ascending (the order the pairwise pass gave)."""
        parent = list(range(len(key)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        first_on: dict[int, int] = {}   # link class -> the first route of ``key`` crossing it
        classes_of = self._classes.classes_of
        for i, route in enumerate(key):
            for known in classes_of(route):
                j = first_on.setdefault(known, i)
                if j != i:
                    a, b = root(i), root(j)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
        groups: dict[int, list[int]] = {}
        for i in range(len(key)):
            groups.setdefault(root(i), []).append(i)
        return list(groups.values())

    def _solve_component(self, key: tuple[int, ...]) -> tuple:
        """Max-min fair per-member rate of each route in ``key`` (one component) by progressive filling
        (vectorised), over link classes (``link_classes``): links of one capacity on which every route puts the same
        count fill alike, so one entry per (route, class) stands for all of them.

        Returns (rate per route, the link ids of each class, bytes/s on each link of each class, the entries of each
        route, the routes (``key``), whether the routes share no link, a dict for what ``_held_back`` derives from the
        solve, and the arrays it derives it from: (route of each entry, its class's index, its count, rate per route,
        capacity per class, load per class)). Identical routes get identical rates (symmetry), so the result is
        cached per multiset of routes.

        Every sum adds, per class, the same terms in the same order as per link over the routes' link entries (the
        routes in key order, one count each), so the rates and loads are those of the per-link solve to the last bit.
        """
        cached = self._component_cache.pop(key, None)
        if cached is not None:
            self._component_cache[key] = cached   # most recently used last: eviction takes the oldest first
            return cached
        self.rate_solves += 1
        classes = self._classes
        routes = [classes.route(route) for route in key]
        lengths = [len(r[0]) for r in routes]
        owner = np.repeat(np.arange(len(routes)), lengths)
        counts = np.concatenate([r[1] for r in routes])
        ids = np.concatenate([r[0] for r in routes])
        class_ids, local = np.unique(ids, return_inverse=True)
        capacity = classes.class_capacity[class_ids]
        rate = np.zeros(len(routes))
        frozen = np.zeros(len(routes), dtype=bool)
        fixed_load = np.zeros(len(class_ids))
        disjoint = len(class_ids) == len(local)
        if disjoint:
            # routes share no link: each runs alone at its own bottleneck, which is what progressive filling
            # would give (most re-solves in pipeline-parallel runs are of this kind)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            rate = np.minimum.reduceat(capacity[local] / counts, starts)
            frozen[:] = True
        # the entries of routes not yet frozen, in their order (so every sum below adds the same terms in the same
        # order as over masks of all entries); a round drops the routes it freezes, and the last round skips the
        # load of the routes it froze, which nothing reads (most solves finish in one round)
        open_owner, open_local, open_counts = owner, local, counts
        while not frozen.all():
            open_count = np.bincount(open_local, weights=open_counts, minlength=len(class_ids))
            used = np.flatnonzero(open_count > 0)
            level = np.maximum(capacity[used] - fixed_load[used], 0.0) / open_count[used]
            fill = level.min()
            saturated = np.zeros(len(class_ids), dtype=bool)
            saturated[used[level <= fill * (1 + _SATURATION_RTOL)]] = True
            # routes crossing a saturated link freeze at this level (boolean masks: no sorting)
            newly = np.bincount(open_owner[saturated[open_local]], minlength=len(routes)) > 0
            rate[newly] = fill
            frozen |= newly
            if frozen.all():
                break
            entry = newly[open_owner]
            fixed_load += np.bincount(open_local[entry], weights=open_counts[entry] * fill, minlength=len(class_ids))
            kept = ~entry
            open_owner, open_local, open_counts = open_owner[kept], open_local[kept], open_counts[kept]
        link_load = np.bincount(local, weights=counts * rate[owner], minlength=len(class_ids))
        rate_of_route = {route: float(r) for route, r in zip(key, rate, strict=True)}
        result = (rate_of_route, class_ids, link_load, lengths, key,
                  disjoint, {"classes": len(classes.links)}, (owner, local, counts, rate, capacity, link_load))
        while self._component_cache and (len(self._component_cache) >= _COMPONENT_CACHE_ENTRIES
                                         or self._cached_entries + len(owner) > _CACHED_ROUTE_ENTRIES):
            # bounded by the route entries held, not only by count: a sprayed data-parallel class at 16k GPUs has
            # ~10^5 entries, so a few hundred such solves would hold gigabytes. The least recently used solve goes
            # first (a pipelined ZeRO-3 step comes back to the same sets of routes microbatch after microbatch;
            # clearing the whole cache at the bound lost them all), and whole-set solves that hold it go with it.
            evicted, old = next(iter(self._component_cache.items()))
            del self._component_cache[evicted]
            self._evictions += 1
            self._cached_entries -= len(old[7][0])
            for whole in self._rates_of.pop(evicted, ()):
                dropped = self._rates_cache.pop(whole, None)
                if dropped is not None:
                    self._rates_cached_routes -= len(whole)
                    for part in dropped[4]:   # its other components no longer hold it
                        holders = self._rates_of.get(part)
                        if holders is not None:
                            holders.pop(whole, None)
                            if not holders:
                                del self._rates_of[part]
        self._component_cache[key] = result
        self._cached_entries += len(owner)
        return result
