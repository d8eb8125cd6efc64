"""Network models behind one interface: pure, event-driven, free of SimPy (the engine drives them).

A ``TransferClass`` is a set of point-to-point transfers that start together and, by symmetry, progress at
one rate (the n sends of one ring step, or a pipeline send repeated in every data-parallel replica). The
engine and ``collectives.timing`` hand classes to a model with ``start``, ask when the next one completes
with ``next_completion_s`` and move time forward with ``advance``. Completion = bytes done + the largest
path latency. A class may stand for several independent transfers (``parts``); models that check merged classes
say in ``held_back`` when merging held one back (``engine.merge`` states the rule).

Models: ``analytic`` (alpha-beta, no contention), ``flow`` (max-min fair sharing, ``flow``), ``chunk``
(store-and-forward chunks through per-link queues, ``store_forward``); ``make`` in the package builds one.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

# Rates or latencies within this relative margin are equal (float rounding of sums along different paths).
SAME_RTOL = 1e-9


@dataclass(frozen=True, eq=False)
class TransferClass:
    """Transfers ``pairs[i] = (src_gpu, dst_gpu)`` (fabric GPU indices) of ``size_bytes`` each.

    ``parts[i]`` (ids 0..k-1) names the independent transfer pair i belongs to when the class stands for several:
    one part per group of a collective step run over several groups, one per replica of a collapsed agent's
    pipeline send. The pairs of one part are coupled (a ring step advances at its slowest link); different parts
    progress at one rate only because they were merged, which the network models check (``held_back``).
    None: one part.
    """

    pairs: np.ndarray
    size_bytes: float
    label: str = ""
    parts: np.ndarray | None = None

    def __post_init__(self):
        pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        object.__setattr__(self, "pairs", pairs)
        if self.parts is not None:
            parts = np.asarray(self.parts, dtype=np.int64).reshape(-1)
            assert len(parts) == len(pairs), "one part id per pair"
            object.__setattr__(self, "parts", parts)
        assert self.size_bytes >= 0

    @property
    def members(self) -> int:
        return len(self.pairs)

    @property
    def part_count(self) -> int:
        """How many independent transfers the class stands for (found once: the flow model asks at every start of a
        class, and collectives' classes are started again at every step)."""
        cached = self.__dict__.get("_part_count")
        if cached is None:
            cached = 1 if self.parts is None or not len(self.parts) else int(self.parts.max()) + 1
            object.__setattr__(self, "_part_count", cached)
        return cached

    @classmethod
    def joined(cls, classes, size_bytes: float, label: str) -> TransferClass:
        """One class of the pairs of ``classes`` (each sending ``size_bytes``), their parts kept apart: class j's
        parts are numbered after those of classes 0..j-1."""
        classes = list(classes)
        offsets = np.cumsum([0] + [c.part_count for c in classes[:-1]])
        parts = np.concatenate([np.zeros(c.members, dtype=np.int64) + offset if c.parts is None else c.parts + offset
                                for c, offset in zip(classes, offsets, strict=True)])
        return cls(np.concatenate([c.pairs for c in classes]), size_bytes, label,
                   parts if offsets[-1] + classes[-1].part_count > 1 else None)


class NetworkModel(ABC):
    """A fabric's links carrying transfer classes. Subclasses decide how transfers share the links."""

    name: str = "abstract"
    held_back: HeldBack | None = None  # what merged classes held back; None: the model does not check

    def __init__(self, fabric):
        self.fabric = fabric
        self.link_bytes = np.zeros(len(fabric.link_bytes_per_s))  # bytes carried per directed link so far

    @property
    def held_back_classes(self) -> int | None:
        """Classes that held a part back (``HeldBack``); None when the model does not check."""
        return None if self.held_back is None else self.held_back.classes

    @property
    def held_back_s(self) -> float | None:
        """The most one replica's transfers could have saved had no class held them back (``HeldBack``)."""
        return None if self.held_back is None else self.held_back.seconds

    def link_windows(self):
        """Bytes per link per time window so far (``windows.LinkWindows``); None when the model does not keep them
        (the chunk model)."""
        return getattr(self, "windows", None)

    @abstractmethod
    def start(self, transfers: TransferClass, now_s: float) -> int:
        """Begin a class of transfers at ``now_s``; returns a handle."""

    @abstractmethod
    def next_completion_s(self) -> float:
        """Time at which the next active class completes (inf when idle), or an earlier time the model asks to be
        advanced to (the chunk model's checkpoints), at which ``advance`` completes nothing."""

    @abstractmethod
    def advance(self, to_s: float) -> list[int]:
        """Move time to ``to_s`` (never past ``next_completion_s()``); returns the handles completed by then.
        """


# ---- shared helpers of the models --------------------------------------------------------------------------

def class_load(fabric, transfers: TransferClass) -> tuple[np.ndarray, np.ndarray, float]:
    """Directed links a class uses, how many of its transfers cross each, and its largest path latency.

    Cached on the class object (a ring's classes are reused for all its steps, so routing happens once).
    """
    routes = getattr(fabric, "raw", fabric)  # a calibrated view routes as its fabric does
    cached = transfers.__dict__.get("_load")
    if cached is not None and cached[0] is routes:
        return cached[1]
    pairs = transfers.pairs
    moving = pairs[:, 0] != pairs[:, 1]
    if not moving.all():   # no copy of a large class's pairs when every pair moves (the route cache keys on bytes)
        pairs = pairs[moving]
    route_set_of = getattr(fabric, "route_set_of", None)
    if len(pairs) and route_set_of is not None:
        # links, loads and latencies in one look-up of the route cache (a large pair array hashed once): the arrays
        # ``links_of`` and ``max_path_latency_s`` would read from it one after the other
        links, counts, latencies_s = route_set_of(pairs)
        latency_s = float(np.max(latencies_s))
    elif len(pairs):
        links, counts = fabric.links_of(pairs)
        latency_s = max_path_latency_s(fabric, pairs)
    else:
        links, counts, latency_s = np.zeros(0, dtype=np.int64), np.zeros(0), 0.0
    load = (np.asarray(links, dtype=np.int64), np.asarray(counts, dtype=float), latency_s)
    object.__setattr__(transfers, "_load", (routes, load))
    return load


@dataclass(frozen=True)
class PartRoutes:
    """The route of every part of a class: entry i puts ``counts[i]`` of part ``part[i]``'s pairs on ``links[i]``
    (sorted by part, then link)."""

    part: np.ndarray
    links: np.ndarray
    counts: np.ndarray
    parts: int


def part_routes(fabric, transfers: TransferClass, access: bool = False) -> PartRoutes | None:
    """Per-part routes of a class, all parts in one pass (``Fabric.links_of_parts``); cached on the class as
    ``class_load`` caches the class's route, and per fabric by pairs and parts (collectives of several sizes over
    the same groups are different classes with the same routes).

    ``access``: only the links every route takes whatever its core path (``Fabric.access_links_of_parts``: a
    direct link or the access segments), far cheaper on a sprayed core and enough to show a part bound on one of
    them; None where the fabric has no such split (the torus)."""
    routes = getattr(fabric, "raw", fabric)
    attribute = "_access_routes" if access else "_part_routes"
    cached = transfers.__dict__.get(attribute)
    if cached is not None and cached[0] is routes:
        return cached[1]
    part = np.zeros(transfers.members, dtype=np.int64) if transfers.parts is None else transfers.parts
    key = (access, transfers.pairs.tobytes(), part.tobytes())
    by_pairs = _PART_ROUTES.setdefault(routes, {})   # weak on the fabric: a collected fabric takes its entries along
    result = by_pairs.get(key, _MISSING)
    if result is _MISSING:
        moving = transfers.pairs[:, 0] != transfers.pairs[:, 1]
        if not moving.any():
            found = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
        elif access:
            of_parts = getattr(fabric, "access_links_of_parts", None)
            found = None if of_parts is None else of_parts(transfers.pairs[moving], part[moving])
        else:
            found = _links_of_parts(fabric, routes, transfers.pairs[moving], part[moving], transfers.part_count)
        result = None if found is None else PartRoutes(found[0], found[1], np.asarray(found[2], dtype=float),
                                                       transfers.part_count)
        if len(by_pairs) >= _PART_ROUTES_KEPT:
            by_pairs.clear()
            _BY_PART.pop(routes, None)
        by_pairs[key] = result
    object.__setattr__(transfers, attribute, (routes, result))
    return result


def _links_of_parts(fabric, routes, pairs: np.ndarray, part: np.ndarray, parts: int) -> tuple:
    """``fabric.links_of_parts(pairs, part)`` (part ids 0..parts-1), each part routed at most once per fabric: a
    part whose pairs an earlier class routed (``_BY_PART``, per part's pairs) takes its entries from there, and only
    the others are routed, in one pass. Data-parallel rings merged over different sets of pipeline stages share most
    of their parts (the interleaved 16k run's symmetry check routed 120 parts, 4.5 million entries, then 112 of the
    same again). A part's entries do not depend on the other parts routed with it (each part's loads are summed on
    its own: ``Router.route_set``), so they are the same either way."""
    index = _BY_PART.setdefault(routes, {})
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(parts + 1)).tolist()
    keys = [pairs[order[bounds[p]:bounds[p + 1]]].tobytes() for p in range(parts)]
    missing = [p for p in range(parts) if keys[p] and keys[p] not in index]
    if len(missing) == sum(1 for k in keys if k):   # nothing to reuse: one pass, as before
        found = fabric.links_of_parts(pairs, part)
        _index_parts(index, found, [keys[p] for p in missing], missing)
        return found
    if missing:
        renumbered = np.full(parts, -1, dtype=np.int64)
        renumbered[missing] = np.arange(len(missing))
        routed = renumbered[part] >= 0
        _index_parts(index, fabric.links_of_parts(pairs[routed], renumbered[part[routed]]),
                     [keys[p] for p in missing], list(range(len(missing))))
    pieces = [(p, index[keys[p]]) for p in range(parts) if keys[p]]
    return (np.concatenate([np.full(end - start, p, dtype=np.int64) for p, (_, start, end) in pieces]),
            np.concatenate([found[1][start:end] for _, (found, start, end) in pieces]),
            np.concatenate([np.asarray(found[2][start:end], dtype=float) for _, (found, start, end) in pieces]))


def _index_parts(index: dict, found: tuple, keys: list[bytes], ids: list[int]) -> None:
    """Remember where part ``ids[i]`` (pairs ``keys[i]``) lies in ``found`` (entries sorted by part)."""
    if len(index) + len(keys) > _PARTS_KEPT:
        index.clear()
    starts = np.searchsorted(found[0], ids).tolist()
    ends = np.searchsorted(found[0], ids, side="right").tolist()
    for key, start, end in zip(keys, starts, ends, strict=True):
        index[key] = (found, start, end)


_MISSING = object()
_PART_ROUTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PART_ROUTES_KEPT = 256  # per fabric: the distinct groups of a run's collectives and pipeline sends
# per fabric: a part's pairs -> (the routes it was routed with, where its entries lie): ``_links_of_parts``
_BY_PART: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PARTS_KEPT = 65536  # parts indexed per fabric (each entry: its pairs' bytes, a few KB for a 128-pair ring)


def latency_gaps_s(fabric, transfers: TransferClass) -> np.ndarray | None:
    """How much earlier than the class each of its parts would complete on its own by path latency alone (a class
    completes after its slowest pair's latency, a part after its own slowest pair's); None when no part would (one
    part, or equal latencies: every builtin fabric's equal-cost paths). Cached on the class."""
    cached = transfers.__dict__.get("_latency_gaps_s", False)
    if cached is not False:
        return cached
    gaps_s = None
    moving = transfers.pairs[:, 0] != transfers.pairs[:, 1]
    if transfers.part_count > 1 and moving.any():
        latency_s = np.asarray(fabric.pair_latencies_s(transfers.pairs[moving]), dtype=float)
        if np.ptp(latency_s) > SAME_RTOL * latency_s.max():
            slowest_s = np.full(transfers.part_count, latency_s.max())  # a part without links waits for nothing
            slowest_s[np.unique(transfers.parts[moving])] = 0.0
            np.maximum.at(slowest_s, transfers.parts[moving], latency_s)
            gaps_s = latency_s.max() - slowest_s
            if gaps_s.max() <= SAME_RTOL * latency_s.max():  # pairs differ, but every part's slowest is the class's
                gaps_s = None
    object.__setattr__(transfers, "_latency_gaps_s", gaps_s)
    return gaps_s


class HeldBack:
    """What merging transfers into classes cost, as a network model finds it (``engine.merge``).

    ``classes``: how many classes held at least one part back. ``seconds``: how much earlier the step could end had
    no class held a part back, estimated from above: over each interval of constant rates (flow model), the
    interval times the largest fraction of it any held-back part could have saved (classes sending at once overlap,
    and the step's critical path waits on one transfer at a time, so their savings do not add), plus what parts
    would have saved on path latency alone. Still loose: a class's consumers usually wait for its slowest part,
    which merging did not slow, so the step gains only what the faster parts' earlier completion frees for others.
    ``keys``: the (label, size) of every such class that held a part back by its rate, ``latency_keys`` of those
    that did by path latency only: what ``engine.merge.SplitKeys`` keeps apart (or merges by latency) in a run after.
    """

    def __init__(self):
        self.classes = 0
        self.seconds = 0.0
        self.keys: set[tuple[str, float]] = set()
        self.latency_keys: set[tuple[str, float]] = set()

    def add(self, saved_s: np.ndarray, new: bool = True, transfers: TransferClass | None = None,
            latency_only: bool = False) -> None:
        """A class held its parts back by ``saved_s`` (seconds per part, 0 where not held back); ``new``: the
        first time for this class; ``transfers``: the class (its label and size go to ``keys``, or to
        ``latency_keys`` when ``latency_only``: its parts' path latencies differ, its rates held none back)."""
        self.classes += new
        self.seconds += float(saved_s.max())
        if transfers is not None:
            self.name(transfers, latency_only)

    def name(self, transfers: TransferClass, latency_only: bool = False) -> None:
        """Note the key of a class found holding a part back (by rate, or by path latency only)."""
        (self.latency_keys if latency_only else self.keys).add((transfers.label, transfers.size_bytes))


def max_path_latency_s(fabric, pairs: np.ndarray) -> float:
    """Largest path latency over ``pairs`` (vectorised ``pair_latencies_s`` when the fabric offers it)."""
    if hasattr(fabric, "pair_latencies_s"):
        return float(np.max(fabric.pair_latencies_s(pairs)))
    return max(fabric.path_latency_s(int(src), int(dst)) for src, dst in np.unique(pairs, axis=0))
