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

from dataclasses import dataclass, field, replace

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
