"""Network models behind one interface: pure, event-driven, free of SimPy (the engine drives them).

A ``TransferClass`` is a set of point-to-point transfers that start together and, by symmetry, progress at one
rate (the n sends of one ring step, or a pipeline send repeated in every data-parallel replica). The engine and
``collectives.simulate`` hand classes to a model with ``start``, ask when the next one completes with
``next_completion_s`` and move time forward with ``advance``. Completion = bytes done + the largest path latency.

Models: ``analytic`` (alpha-beta, no contention), ``flow`` (max-min fair sharing, ``flow.py``), ``chunk``
(store-and-forward chunks through per-link queues, ``chunk.py``).
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
        """Move time to ``to_s`` (never past ``next_completion_s()``); returns the handles completed by then."""
