"""Network models behind one interface: pure, event-driven, free of SimPy (the engine drives them).

A ``TransferClass`` is a set of point-to-point transfers that start together and, by symmetry, progress at
one rate (the n sends of one ring step, or a pipeline send repeated in every data-parallel replica). The
engine and ``collectives.timing`` hand classes to a model with ``start``, ask when the next one completes
with ``next_completion_s`` and move time forward with ``advance``. Completion = bytes done + the largest
path latency.

Models: ``analytic`` (alpha-beta, no contention), ``flow`` (max-min fair sharing, ``flow``), ``chunk``
(store-and-forward chunks through per-link queues, ``store_forward``); ``make`` in the package builds one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class TransferClass:
    """Transfers ``pairs[i] = (src_gpu, dst_gpu)`` (fabric GPU indices) of ``size_bytes`` each."""

    pairs: np.ndarray
    size_bytes: float
    label: str = ""

    def __post_init__(self):
        pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        object.__setattr__(self, "pairs", pairs)
        assert self.size_bytes >= 0

    @property
    def members(self) -> int:
        return len(self.pairs)


class NetworkModel(ABC):
    """A fabric's links carrying transfer classes. Subclasses decide how transfers share the links."""

    name: str = "abstract"

    def __init__(self, fabric):
        self.fabric = fabric
        self.link_bytes = np.zeros(len(fabric.link_bytes_per_s))  # bytes carried per directed link so far

    @abstractmethod
    def start(self, transfers: TransferClass, now_s: float) -> int:
        """Begin a class of transfers at ``now_s``; returns a handle."""

    @abstractmethod
    def next_completion_s(self) -> float:
        """Time at which the next active class completes (inf when idle)."""

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
    pairs = transfers.pairs[transfers.pairs[:, 0] != transfers.pairs[:, 1]]
    if len(pairs):
        links, counts = fabric.links_of(pairs)
        latency_s = max_path_latency_s(fabric, pairs)
    else:
        links, counts, latency_s = np.zeros(0, dtype=np.int64), np.zeros(0), 0.0
    load = (np.asarray(links, dtype=np.int64), np.asarray(counts, dtype=float), latency_s)
    object.__setattr__(transfers, "_load", (routes, load))
    return load


def max_path_latency_s(fabric, pairs: np.ndarray) -> float:
    """Largest path latency over ``pairs`` (vectorised ``pair_latencies_s`` when the fabric offers it)."""
    if hasattr(fabric, "pair_latencies_s"):
        return float(np.max(fabric.pair_latencies_s(pairs)))
    return max(fabric.path_latency_s(int(src), int(dst)) for src, dst in np.unique(pairs, axis=0))
