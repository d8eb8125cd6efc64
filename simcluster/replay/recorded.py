"""What a recorded training run is, once imported: per-rank operations on streams, with their dependencies.

Pure data (no SimPy): the Kineto and Chakra importers produce a ``RecordedRun``; the replay turns it into
engine programs. All times are SI seconds on one time axis per run, whose origin (0 s) is the earliest GPU
operation or step boundary over all imported ranks.

Dependencies are kept the way the GPU enforces them:
- stream order: on one rank, the operations of one stream run one after the other, in list order;
- cross-stream waits: ``RecordedOp.waits_for`` lists operations on other streams of the same rank that this
  one waited for (CUDA events: a collective waiting for its gradients, the optimizer for the collective);
- collectives: the k-th collective of a process group on every member rank is the same collective (NCCL's
  ordering rule), so a replay matches them by order.

Replay rule (``replay/plan.py``), which separates what the trace says about the host from waits on the GPU:
an operation is ready when its stream is free (the previous op on the stream has ended) and every op it waits
for has ended; it starts ``gap`` after the latest of those. The gap is measured on the recording from the
latest of the same constraints (never from the op's recorded start alone, and never from the previous op of
the stream when a cross-stream wait came later): it is the launch latency and host time the trace shows between
the op becoming ready on the GPU and starting. So unchanged durations reproduce the recording exactly, and a
faster (slower) op moves everything that waited for it earlier (later). Traces without recorded start times
(``RecordedRun.timed`` False: Chakra files as ASTRA-sim's generators write them) have no gaps at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from simcluster.core import inputs
from simcluster.core.errors import ScenarioError, shown

# Operation kinds.
COMPUTE = "compute"
COLLECTIVE = "collective"
SEND = "send"
RECV = "recv"
SENDRECV = "sendrecv"  # an NCCL SendRecv kernel whose direction and peer the trace does not say
OP_KINDS = (COMPUTE, COLLECTIVE, SEND, RECV, SENDRECV)
COMMUNICATION_KINDS = (COLLECTIVE, SEND, RECV, SENDRECV)

# Collective names used throughout simcluster (the Chakra CollectiveCommType enum, spelled in lower case).
COLLECTIVE_NAMES = ("allreduce", "reduce", "allgather", "gather", "scatter", "broadcast", "alltoall",
                    "reduce_scatter", "barrier")
UNKNOWN_COLLECTIVE = "unknown"


@dataclass(frozen=True)
class RecordedOp:
    """One operation of one rank: a compute segment, a collective or a point-to-point transfer.

    ``size_bytes`` follows the nccl-tests convention (the whole buffer: the gathered output of an allgather,
    the input of a reduce-scatter, the data this rank sends in an alltoall); ``None`` when the trace does not
    say. A compute segment merges consecutive kernels of one stream: ``duration_s`` spans from the first
    kernel's start to the last one's end (launch gaps included), ``busy_s`` sums the kernels' own durations.
    """

    rank: int
    stream: int | str
    kind: str
    name: str
    started_at_s: float
    duration_s: float
    size_bytes: float | None = 0.0
    group: tuple[int, ...] = ()          # global ranks of the process group, when known
    group_size: int | None = None        # members of the process group, when known (even if who is not)
    peer: int | None = None              # the other rank of a send or recv, when known
    step: int | None = None              # iteration (ProfilerStep#N) it was launched in
    waits_for: tuple[int, ...] = ()      # indices in the rank's op list of ops on other streams it waited for
    kernels: int = 1                     # GPU kernels merged into this op
    busy_s: float | None = None          # sum of the kernels' durations (None: same as duration_s)

    def __post_init__(self) -> None:
        assert self.kind in OP_KINDS, self.kind
        assert self.duration_s >= 0.0, self.duration_s

    @property
    def ended_at_s(self) -> float:
        return self.started_at_s + self.duration_s

    @property
    def kernel_s(self) -> float:
        """GPU time spent in kernels (``busy_s``, or the whole duration for a single op)."""
        return self.duration_s if self.busy_s is None else self.busy_s

    @property
    def is_communication(self) -> bool:
        return self.kind in COMMUNICATION_KINDS


@dataclass(frozen=True)
class RecordedStep:
    """One iteration on one rank, from its ProfilerStep#N annotation (CPU side, as the profiler shows it)."""

    step: int
    rank: int
    started_at_s: float
    duration_s: float

    @property
    def ended_at_s(self) -> float:
        return self.started_at_s + self.duration_s


@dataclass
class RecordedRun:
    """An imported run: ops per recorded rank in start order, step boundaries, and what had to be assumed.

    ``ranks`` holds only the ranks present in the trace; ``mirrored`` maps each missing rank of the world to
    the recorded rank assumed to behave like it (``ops_of`` gives the mirrored ops).
    """

    ranks: dict[int, list[RecordedOp]]
    world_size: int
    gpu_name: str | None = None
    steps: list[RecordedStep] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    source: str = ""
    mirrored: dict[int, int] = field(default_factory=dict)
    timed: bool = True  # False: start times were synthesised (no recorded timestamps), so there are no gaps

    def ops_of(self, rank: int) -> list[RecordedOp]:
        """The ops of ``rank``: recorded, or copied from the rank it is assumed to mirror."""
        if rank in self.ranks:
            return self.ranks[rank]
        if rank not in self.mirrored:
            raise KeyError(f"rank {rank} is neither recorded nor mirrored (world size {self.world_size})")
        return [replace(op, rank=rank) for op in self.ranks[self.mirrored[rank]]]

    def step_numbers(self) -> list[int]:
        return sorted({s.step for s in self.steps})

    def step_time_s(self, step: int | None = None) -> float:
        """Recorded time of ``step``: the slowest recorded rank's duration of it, since a synchronous step
        ends when its last rank does. Without ``step``: the mean over all recorded steps."""
        if not self.steps:
            raise ValueError("the trace has no step annotations (ProfilerStep#N)")
        if step is None:
            numbers = self.step_numbers()
            return sum(self.step_time_s(n) for n in numbers) / len(numbers)
        durations = [s.duration_s for s in self.steps if s.step == step]
        if not durations:
            raise ValueError(f"no step {step} in the trace (steps: {self.step_numbers()})")
        return max(durations)

    def op_count(self) -> int:
        return sum(len(ops) for ops in self.ranks.values())


# The largest world a replay accepts: the largest scale simcluster is built for (131,072 GPUs, the performance
# targets of benchmarks/engine.py), far above any profiled job; a world size beyond it in a trace is an error, not a
# request to allocate per-rank state for it.
MAX_WORLD_SIZE = 131_072
# The longest recorded span a replay accepts: profiler traces cover a few steps (seconds to minutes); a day of
# trace is a corrupt timestamp, not a step.
MAX_TRACE_SPAN_S = 86_400.0
# The largest trace file (after gzip) a reader accepts: real Kineto traces of a few steps are tens of MB (the
# bundled 16-rank A100 ones 1-6 MB); parsing JSON takes several times its size, so the limit keeps a file or a
# decompression bomb from taking the machine's memory (a refused bomb peaks near 0.6 GB).
MAX_TRACE_BYTES = 256 * 1024 * 1024


def read_trace_bytes(path) -> bytes:
    """The bytes of a trace file, refused in one line when unreadable or above MAX_TRACE_BYTES."""
    try:
        size = inputs.input_size(path, str(path))  # a regular file or a pipe (`<(zcat t.json.gz)`), by its mode
        if size is None or size <= MAX_TRACE_BYTES:
            data = inputs.read_at_most(path, MAX_TRACE_BYTES + 1, str(path), pipe=size is None)  # it may grow
            if len(data) <= MAX_TRACE_BYTES:
                return data
        raise ScenarioError(str(path), f"larger than {MAX_TRACE_BYTES // 2**20} MiB, the largest trace file "
                                       "the readers accept (profile fewer steps)")
    except OSError as err:
        raise ScenarioError(str(path), f"cannot read the trace: {err.strerror or err}") from None


def check_world_size(world_size, source: str) -> int:
    """``world_size`` if it is a whole number of ranks in 1..MAX_WORLD_SIZE, else one ScenarioError naming
    ``source``."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or not 1 <= world_size <= MAX_WORLD_SIZE:
        raise ScenarioError(source, f"world size {shown(world_size)} outside 1..{MAX_WORLD_SIZE:,} (the largest world "
                                    "simcluster replays)")
    return world_size


def check_times(run: RecordedRun, source: str) -> None:
    """Every op's start and duration finite, durations >= 0, and the whole recording within MAX_TRACE_SPAN_S."""
    starts = [op.started_at_s for ops in run.ranks.values() for op in ops]
    ends = [op.started_at_s + op.duration_s for ops in run.ranks.values() for op in ops]
    if not starts:
        return
    if not all(math.isfinite(t) for t in (*starts, *ends)) or any(e < s for s, e in zip(starts, ends, strict=True)):
        raise ScenarioError(source, "an op has a non-finite start or a negative duration")
    span_s = max(ends) - min(starts)
    if span_s > MAX_TRACE_SPAN_S:
        raise ScenarioError(source, f"the ops span {span_s:.3g} s, above the {MAX_TRACE_SPAN_S:.0f} s (one day) a "
                                    "profiler trace of a few steps can cover: a corrupt timestamp?")


def check_ranks(run: RecordedRun, source: str) -> None:
    """Every recorded communication op's process group and peer name ranks of the world: whole numbers in
    0..world_size - 1, a group holding each rank once and holding the op's own rank (a rank launches collectives
    only on groups it belongs to), a peer other than the op's rank. A trace naming rank 5 in a world of 2 (or -1,
    or rank 1 twice) is corrupt or hand-edited; the replay indexed its agents by those ranks, an IndexError
    traceback (round 36), or replayed a transfer to rank -1 as if it were the last rank."""
    def is_rank(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < run.world_size

    for rank, ops in sorted(run.ranks.items()):
        for op in ops:
            if op.kind not in COMMUNICATION_KINDS:
                continue
            where = f"rank {rank}'s {op.kind} {shown(op.name, 60)}"
            if op.group:
                if not all(is_rank(r) for r in op.group):
                    raise ScenarioError(source, f"{where}: process group {shown(list(op.group))} names a rank "
                                                f"outside the world's 0..{run.world_size - 1}")
                if len(set(op.group)) != len(op.group):
                    raise ScenarioError(source, f"{where}: process group {shown(list(op.group))} lists a rank twice")
                if rank not in op.group:
                    raise ScenarioError(source, f"{where}: process group {shown(list(op.group))} does not hold the "
                                                f"rank that ran it ({rank})")
            if op.peer is not None and (not is_rank(op.peer) or op.peer == rank):
                raise ScenarioError(source, f"{where}: peer rank {shown(op.peer)} is not another rank of the "
                                            f"world's 0..{run.world_size - 1}")


def mirror_missing_ranks(present: list[int], world_size: int) -> dict[int, int]:
    """Missing rank -> recorded rank it is assumed to mirror: rank r mirrors the (r mod k)-th of the k
    recorded ranks, so a sample of consecutive ranks (one pipeline stage each, say) repeats over the world."""
    ordered = sorted(present)
    return {r: ordered[r % len(ordered)] for r in range(world_size) if r not in present}


def describe_ranges(numbers: list[int]) -> str:
    """'2..127' style text for a sorted list of ints (used in assumption messages)."""
    if not numbers:
        return ""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}..{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


def describe_files(paths) -> str:
    """The file names of a trace, all of them when few, else the first two, the last and how many."""
    names = [str(p).replace("\\", "/").rsplit("/", 1)[-1] for p in paths]
    return ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]}, ..., {names[-1]} ({len(names)} files)"


def summarize_notes(notes_by_rank: dict[int, dict[str, int]], unit: str) -> list[str]:
    """One assumption line per distinct note: the ranks it applies to and how many ``unit`` it concerns."""
    ranks_of: dict[str, list[int]] = {}
    totals: dict[str, int] = {}
    for rank, notes in sorted(notes_by_rank.items()):
        for note, count in notes.items():
            ranks_of.setdefault(note, []).append(rank)
            totals[note] = totals.get(note, 0) + count
    lines = []
    for note, ranks in ranks_of.items():
        label = f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {describe_ranges(ranks)}"
        lines.append(f"{label}: {note} ({totals[note]} {unit})")
    return lines
