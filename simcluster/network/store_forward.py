"""The store-and-forward network model (``--network chunk``): chunks through per-link FIFO queues, a pure event
loop.

Every transfer is cut into chunks of ``chunk_bytes`` (NCCL moves data in buffer slices of this order: 512 KiB
for the Simple protocol, data/nccl.yaml). A chunk crosses its path link by link; a link sends one chunk at a
time, in order of arrival, at its full capacity, and a chunk enters the next link only once it has been
received whole (store and forward). A class completes when its last chunk arrives, plus its largest path
latency (the same latency convention as the other models, so the three agree on an idle fabric).

This is the slow, detailed model used to cross-check ``flow``: it counts one event per chunk per hop, so keep
it to fabrics of about a thousand GPUs. On an idle path of h hops of equal capacity B, K chunks of c bytes
take (K + h - 1) c / B: the store-and-forward pipeline costs (h - 1) c / B more than the fluid S / B.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from simcluster.core import catalog
from simcluster.core.units import BYTES, parse
from simcluster.network.base import NetworkModel, TransferClass, class_load

# Equal-cost paths a pair's chunks rotate over under adaptive routing.
_SPRAY_SALTS = 8


def default_chunk_bytes() -> float:
    """NCCL's Simple-protocol slice (data/nccl.yaml ``chunk.bytes``)."""
    return parse(catalog.load("nccl")["chunk"]["bytes"], BYTES)


class _State:
    """Everything the event loop mutates, so that a look-ahead can run on a copy."""

    def __init__(self, links: int):
        self.heap: list[tuple] = []  # (arrival_at_s, seq, handle, route, hop, chunk_bytes)
        self.free_at_s = [0.0] * links  # when each link finishes the chunk it is sending
        self.chunks_left: dict[int, int] = {}  # per class still sending
        self.last_arrival_s: dict[int, float] = {}
        self.done_at_s: dict[int, float] = {}  # classes whose last chunk arrived -> completion time
        self.seq = 0

    def copy(self) -> _State:
        other = _State.__new__(_State)
        other.heap = list(self.heap)
        other.free_at_s = list(self.free_at_s)
        other.chunks_left = dict(self.chunks_left)
        other.last_arrival_s = dict(self.last_arrival_s)
        other.done_at_s = dict(self.done_at_s)
        other.seq = self.seq
        return other


class StoreForwardNetwork(NetworkModel):
    """Chunks of ``chunk_bytes`` through per-link FIFO queues, store and forward."""

    name = "chunk"

    def __init__(self, fabric, chunk_bytes: float | None = None, max_chunks: int | None = None):
        """``max_chunks``: cut no transfer into more chunks than this (larger chunks for large transfers), which
        bounds the events of multi-gigabyte transfers at a store-and-forward cost of (hops - 1) / max_chunks."""
        super().__init__(fabric)
        self.chunk_bytes = float(chunk_bytes) if chunk_bytes else default_chunk_bytes()
        self.max_chunks = max_chunks
        assert self.chunk_bytes > 0
        self.now_s = 0.0
        self.events = 0  # chunk-hop events processed (for benchmarks)
        self._seconds_per_byte = (1.0 / np.asarray(fabric.link_bytes_per_s, dtype=float)).tolist()
        self._paths: dict[int, list[list[int]]] = {}
        self._latency_s: dict[int, float] = {}
        self._state = _State(len(fabric.link_bytes_per_s))
        self._lookahead: tuple[_State, float, int] | None = None
        self._finished: list[int] = []
        self._next_handle = 0

    # ---- the NetworkModel interface ------------------------------------------------------------------------
    def start(self, transfers: TransferClass, now_s: float) -> int:
        """Cut every transfer into chunks queued at its first link at ``now_s`` (round robin over pairs)."""
        if now_s > self.now_s:
            self._finished.extend(self.advance(now_s))
        self._lookahead = None
        handle = self._next_handle
        self._next_handle += 1
        links, counts, latency_s = class_load(self.fabric, transfers)
        self.link_bytes[links] += counts * transfers.size_bytes
        self._latency_s[handle] = latency_s
        # under adaptive routing successive chunks of a pair take different equal-cost paths (per-chunk spraying,
        # the packet-level counterpart of the flow model's fluid split); under ECMP a pair keeps one path per hashed
        # flow (``flows_per_pair``), its chunks taking the flows in turn
        salts = (_SPRAY_SALTS if getattr(self.fabric, "routing", "ecmp") == "adaptive"
                 else getattr(self.fabric, "flows_per_pair", 1))
        paths = [[self.fabric.path_links(int(s), int(d), salt).tolist() for salt in range(salts)]
                 for s, d in transfers.pairs if s != d]
        paths = [p for p in paths if p[0]]
        state = self._state
        if not paths or transfers.size_bytes <= 0:
            state.done_at_s[handle] = now_s + latency_s
            return handle
        self._paths[handle] = [path for per_pair in paths for path in per_pair]
        chunk_bytes = self.chunk_bytes
        if self.max_chunks:
            chunk_bytes = max(chunk_bytes, transfers.size_bytes / self.max_chunks)
        full, rest = divmod(transfers.size_bytes, chunk_bytes)
        sizes = [chunk_bytes] * int(full) + ([rest] if rest > 1e-9 * chunk_bytes else [])
        state.chunks_left[handle] = len(sizes) * len(paths)
        state.last_arrival_s[handle] = now_s
        for index, size in enumerate(sizes):
            for pair in range(len(paths)):
                route = pair * salts + index % salts
                heapq.heappush(state.heap, (now_s, state.seq, handle, route, 0, size))
                state.seq += 1
        return handle

    def next_completion_s(self) -> float:
        """Earliest completion: run the event loop on a copy until the first class completes."""
        if self._finished:
            return self.now_s
        if self._lookahead is None:
            state = self._state.copy()
            events = self._run(state, math.inf)
            first_s = min(state.done_at_s.values(), default=math.inf)
            self._lookahead = (state, first_s, events)
        return self._lookahead[1]

    def advance(self, to_s: float) -> list[int]:
        """Move to ``to_s`` (adopting the look-ahead when it stopped exactly there); returns completions."""
        if self._lookahead is not None and self._lookahead[1] == to_s:
            self._state, _, events = self._lookahead
            self.events += events
        else:
            self.events += self._run(self._state, to_s)
        self._lookahead = None
        self.now_s = max(self.now_s, to_s)
        state = self._state
        done = sorted((t, h) for h, t in state.done_at_s.items() if t <= to_s)
        for _, handle in done:
            del state.done_at_s[handle]
            self._paths.pop(handle, None)
            self._latency_s.pop(handle, None)
        finished, self._finished = self._finished + [h for _, h in done], []
        return finished

    # ---- the event loop ------------------------------------------------------------------------------------
    def _run(self, state: _State, until_s: float) -> int:
        """Process chunk arrivals in time order up to ``until_s`` (inf: until the first class completes)."""
        heap, free_at_s, spb = state.heap, state.free_at_s, self._seconds_per_byte
        events = 0
        # classes completing only add to done_at_s here, so the horizon is found once and lowered as they complete
        horizon_s = min(until_s, min(state.done_at_s.values(), default=math.inf))
        while heap:
            if heap[0][0] > horizon_s:
                break
            arrival_s, _, handle, route, hop, size = heapq.heappop(heap)
            path = self._paths[handle][route]
            link = path[hop]
            sent_s = max(arrival_s, free_at_s[link]) + size * spb[link]
            free_at_s[link] = sent_s
            events += 1
            if hop + 1 < len(path):
                heapq.heappush(heap, (sent_s, state.seq, handle, route, hop + 1, size))
                state.seq += 1
                continue
            state.last_arrival_s[handle] = max(state.last_arrival_s[handle], sent_s)
            state.chunks_left[handle] -= 1
            if state.chunks_left[handle] == 0:
                del state.chunks_left[handle]
                done_s = state.done_at_s[handle] = state.last_arrival_s.pop(handle) + self._latency_s[handle]
                horizon_s = min(horizon_s, done_s)
        return events
