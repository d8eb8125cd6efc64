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

import bisect
import heapq
import math

import numpy as np

from simcluster.core import catalog, limits, units
from simcluster.core.errors import ScenarioError
from simcluster.core.units import BYTES, parse
from simcluster.network.base import NetworkModel, TransferClass, class_load

# Equal-cost paths a pair's chunks rotate over under adaptive routing.
_SPRAY_SALTS = 8
# Chunk-hop events a look-ahead runs before it may stop short of the first completion at a checkpoint
# (``next_completion_s``): a class started before the completion undoes the look-ahead's events after its start, and
# these bound what is undone and run again (round 27: the look-ahead ran to the first completion, so a class started
# while long transfers were in flight re-ran all of them; an MoE or long-context step starts thousands).
_LOOKAHEAD_EVENTS = 512
# A checkpoint lies in a gap between chunk arrivals of at least this relative width (of max(1 s, time)), midway, so that
# the event loop's rounding of times (TIME_EPS_S = 1e-12 relative, engine/drivers.py) cannot put a chunk on the other
# side of it: the chunks processed before a class started near it are the same as without the checkpoint.
_CHECKPOINT_GAP = 1e-9
# Memory one queued chunk holds (its heap entry, a 6-tuple with its own sequence number, and the heap's slot): 422
# bytes measured (resident memory over the peak heap length, baseline taken off: `collective --network chunk
# --algorithm tree --min-bytes 1G --max-bytes 1G` on 128 and 256 GPUs, 0.65 and 1.33 million chunks queued at once),
# rounded up. Every chunk of a class is queued when it starts, so the queue's length is known before it is allocated:
# one class too many is refused against the memory limit (``limits.memory_limit_bytes``; round 34: that collective
# on 4,096 GPUs reached 9 GB and on 1,024 GPUs at 8 GiB 12.7 GB, unbounded, before its 100 s timeout).
QUEUED_CHUNK_BYTES = 512


def default_chunk_bytes() -> float:
    """NCCL's Simple-protocol slice (data/nccl.yaml ``chunk.bytes``)."""
    return parse(catalog.load("nccl")["chunk"]["bytes"], BYTES)


def cost_note() -> str:
    """The CLI's one line on what a chunk run costs (measured in round 27, docs/performance.md)."""
    return ("--network chunk (a cross-check) runs one event per 512 KiB chunk per link it crosses, about a million a "
            "second of CPU: an MoE or long-context step is tens to hundreds of millions, minutes (Llama 3 8B 64K on "
            "32 GPUs: 98 million, about 2 min; Mixtral 8x22B on 256 GPUs: over 15 min); the default flow model "
            "takes seconds")


class _State:
    """Everything the event loop mutates (a look-ahead runs on it and is rolled back, ``_rollback``)."""

    def __init__(self, links: int):
        self.heap: list[tuple] = []  # (arrival_at_s, seq, handle, route, hop, chunk_bytes)
        self.free_at_s = [0.0] * links  # when each link finishes the chunk it is sending
        self.chunks_left: dict[int, int] = {}  # per class still sending
        self.last_arrival_s: dict[int, float] = {}
        self.done_at_s: dict[int, float] = {}  # classes whose last chunk arrived -> completion time
        self.seq = 0


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
        self._paths_of_pair: dict[tuple[int, int], list[list[int]]] = {}   # (src, dst) -> links of each salted path
        self._latency_s: dict[int, float] = {}
        self._state = _State(len(fabric.link_bytes_per_s))
        self._lookahead: tuple[list, float] | None = None   # (its log, its first completion)
        self._finished: list[int] = []
        self._next_handle = 0
        self._memory_limit_bytes = limits.memory_limit_bytes()

    # ---- the NetworkModel interface ------------------------------------------------------------------------
    def start(self, transfers: TransferClass, now_s: float) -> int:
        """Cut every transfer into chunks queued at its first link at ``now_s`` (round robin over pairs)."""
        if now_s > self.now_s:
            self._finished.extend(self.advance(now_s))
        elif self._lookahead is not None:   # the look-ahead ran past now: back to the state it started from
            self._rollback(-math.inf)
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
        paths = [self._pair_paths(s, d, salts) for s, d in transfers.pairs.tolist() if s != d]
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
        chunks = int(full) + (rest > 1e-9 * chunk_bytes)
        self._check_queue(len(state.heap) + chunks * len(paths))
        sizes = [chunk_bytes] * int(full) + ([rest] if rest > 1e-9 * chunk_bytes else [])
        state.chunks_left[handle] = len(sizes) * len(paths)
        state.last_arrival_s[handle] = now_s
        for index, size in enumerate(sizes):
            for pair in range(len(paths)):
                route = pair * salts + index % salts
                heapq.heappush(state.heap, (now_s, state.seq, handle, route, 0, size))
                state.seq += 1
        return handle

    def _check_queue(self, queued: int) -> None:
        """Refuse a class whose chunks would take the queue past the memory limit (``QUEUED_CHUNK_BYTES`` each),
        before they are made."""
        needed = queued * QUEUED_CHUNK_BYTES
        if needed > self._memory_limit_bytes:
            chunk = units.fmt(self.chunk_bytes, BYTES, 3)
            raise ScenarioError("network", f"chunk: {queued:,} chunks of {chunk} queued at once need about "
                                f"{units.fmt(needed, BYTES, 3)} of memory ({QUEUED_CHUNK_BYTES} B each), above the "
                                f"{units.fmt(self._memory_limit_bytes, BYTES, 3)} limit: use the "
                                f"flow model (the default), fewer GPUs or smaller messages (or set "
                                f"{limits.MEMORY_LIMIT_ENV} on a larger machine)")

    def _pair_paths(self, src: int, dst: int, salts: int) -> list[list[int]]:
        """The links of each of a pair's ``salts`` paths, kept per pair: an MoE or long-context step starts tens of
        thousands of classes over the same pairs (round 27: routing them again was a fifth of the chunk model's
        time)."""
        key = (src, dst)
        paths = self._paths_of_pair.get(key)
        if paths is None:
            paths = self._paths_of_pair[key] = [self.fabric.path_links(src, dst, salt).tolist()
                                                for salt in range(salts)]
        return paths

    def next_completion_s(self) -> float:
        """Earliest completion, or a checkpoint before it: run the event loop, logged, until the first class completes
        (the look-ahead), or after ``_LOOKAHEAD_EVENTS`` events until the next chunk arrives a gap later
        (``_CHECKPOINT_GAP``): then the time midway into the gap, at which ``advance`` completes nothing (the base
        class's contract allows it: callers advance to the time returned and ask again)."""
        if self._finished:
            return self.now_s
        if self._lookahead is None:
            log: list[tuple] = []
            self._run(self._state, math.inf, log)
            first_s = min(self._state.done_at_s.values(), default=math.inf)
            heap = self._state.heap
            if heap and log and heap[0][0] < first_s:   # stopped at a checkpoint: midway into the gap it found
                first_s = 0.5 * (log[-1][0][0] + heap[0][0])
            self._lookahead = (log, first_s)
        return self._lookahead[1]

    def advance(self, to_s: float) -> list[int]:
        """Move to ``to_s``; returns completions. A look-ahead ran the state to its first completion: kept whole when
        ``to_s`` is at or past it, else rolled back to the events at or before ``to_s`` (exactly the state a run from
        where it started to ``to_s`` reaches: chunks are processed in the same order, that of the heap)."""
        if self._lookahead is None:
            self.events += self._run(self._state, to_s)
        elif to_s < self._lookahead[1]:
            self._rollback(to_s)
        else:
            self.events += len(self._lookahead[0])
            self._lookahead = None
            self.events += self._run(self._state, to_s)
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
    def _run(self, state: _State, until_s: float, log: list | None = None) -> int:
        """Process chunk arrivals in time order up to ``until_s`` (inf: until the first class completes). With
        ``log`` (a look-ahead) it may stop at a checkpoint (``next_completion_s``), and each event appends what
        ``_rollback`` needs to undo it: (the heap entry, its link's previous free time, the sequence number before it,
        its class's previous last arrival or None)."""
        heap, free_at_s, spb = state.heap, state.free_at_s, self._seconds_per_byte
        record = log.append if log is not None else None
        budget = _LOOKAHEAD_EVENTS if log is not None else math.inf
        events = 0
        arrival_s = -math.inf
        # classes completing only add to done_at_s here, so the horizon is found once and lowered as they complete
        horizon_s = min(until_s, min(state.done_at_s.values(), default=math.inf))
        while heap:
            if heap[0][0] > horizon_s:
                break
            if events >= budget and heap[0][0] > arrival_s + _CHECKPOINT_GAP * max(1.0, arrival_s):
                break   # a look-ahead's checkpoint (``next_completion_s``)
            entry = heapq.heappop(heap)
            arrival_s, _, handle, route, hop, size = entry
            path = self._paths[handle][route]
            link = path[hop]
            free_s = free_at_s[link]
            sent_s = (arrival_s if arrival_s >= free_s else free_s) + size * spb[link]   # max() without its call
            free_at_s[link] = sent_s
            events += 1
            if hop + 1 < len(path):
                if record is not None:
                    record((entry, free_s, state.seq, None))
                heapq.heappush(heap, (sent_s, state.seq, handle, route, hop + 1, size))
                state.seq += 1
                continue
            last_s = state.last_arrival_s[handle]
            if record is not None:
                record((entry, free_s, state.seq, last_s))
            if sent_s > last_s:
                state.last_arrival_s[handle] = sent_s
            state.chunks_left[handle] -= 1
            if state.chunks_left[handle] == 0:
                del state.chunks_left[handle]
                done_s = state.done_at_s[handle] = state.last_arrival_s.pop(handle) + self._latency_s[handle]
                horizon_s = min(horizon_s, done_s)
        return events

    def _rollback(self, to_s: float) -> None:
        """Undo the look-ahead's events after ``to_s`` (-inf: all of them), newest first, and drop the look-ahead.
        Its events came off the heap in time order, so those kept are a prefix of its log; entries pushed before the
        first undone event have sequence numbers below the one it saw, those the undone events pushed at or above."""
        log = self._lookahead[0]
        self._lookahead = None
        kept = bisect.bisect_right(log, to_s, key=lambda record: record[0][0])
        self.events += kept
        if kept == len(log):
            return
        state, undone = self._state, log[kept:]
        seq0 = undone[0][2]
        for entry, free_s, _seq, last_s in reversed(undone):
            handle = entry[2]
            state.free_at_s[self._paths[handle][entry[3]][entry[4]]] = free_s
            if last_s is None:
                continue
            if handle in state.chunks_left:
                state.chunks_left[handle] += 1
            else:   # this event completed the class
                del state.done_at_s[handle]
                state.chunks_left[handle] = 1
            state.last_arrival_s[handle] = last_s
        # the heap as it was: its entries from before the first undone event, whether still there or popped since
        state.heap = [item for item in state.heap if item[1] < seq0] + [record[0] for record in undone
                                                                        if record[0][1] < seq0]
        heapq.heapify(state.heap)
        state.seq = seq0
