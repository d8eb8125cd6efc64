"""Replay programs: a ``RecordedRun`` becomes one program of ``ReplayOp``s per replayed rank.

Here is everything about the replay that can be decided without a clock (the SimPy side is ``engine/replay.py``):
- what each recorded op becomes: compute kept as a timeout of its recorded duration (or of its rescaled kernel
  time plus its recorded launch gaps when the GPU changes, see ``rescale.busy_rescaled``), communication
  re-simulated on the fabric when the trace says what moved (collective type, bytes, group), else kept at its
  recorded duration;
- the dependencies (``RecordedRun``'s replay rule): an op starts at the latest of (end of the previous op on its
  stream + the idle gap recorded between them) and (end of each op it waits for + the lag recorded after it);
- how collectives are matched across ranks: the k-th collective of a group on every member (NCCL's ordering
  rule); a send with the receive of its peer by their order between the two ranks;
- ``--scale-dp K``: the recorded ranks repeated K times (weak scaling), collectives spanning the recorded world
  growing to span all replicas.

Every decision taken for missing data is a sentence in ``ReplayPlan.assumptions``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from simcluster.core.errors import ScenarioError
from simcluster.replay.recorded import COLLECTIVE, COMPUTE, RECV, SEND, RecordedOp, RecordedRun

# simcluster.collectives op for each recorded collective name that can be re-simulated.
COLLECTIVE_OPS = {"allreduce": "allreduce", "allgather": "all_gather", "reduce_scatter": "reduce_scatter",
                  "alltoall": "alltoall", "broadcast": "broadcast", "reduce": "reduce", "barrier": "allreduce"}
# c10d's NCCL barrier is an allreduce of a one-element tensor (PyTorch ProcessGroupNCCL::barrier).
BARRIER_BYTES = 4.0


@dataclass
class ReplayOp:
    """One op of one replayed rank. ``collective`` set: re-simulated on the fabric over ``group`` (fabric GPU
    indices, = replayed ranks), rendezvous ``match`` shared by every member; else a timeout of ``duration_s``."""

    rank: int
    index: int
    stream: str
    kind: str
    name: str
    step: int | None
    recorded_start_s: float
    recorded_end_s: float
    duration_s: float
    busy_s: float
    gap_s: float
    waits: tuple[tuple[int, float], ...] = ()
    size_bytes: float = 0.0
    collective: str | None = None
    group: tuple[int, ...] = ()
    match: tuple | None = None

    @property
    def is_communication(self) -> bool:
        return self.kind != COMPUTE


@dataclass
class ReplayPlan:
    """Programs of every replayed rank (ops in recorded start order), and the sentences of what was assumed."""

    ops: dict[int, list[ReplayOp]]
    world_size: int
    recorded_world_size: int
    assumptions: list[str] = field(default_factory=list)

    def op_count(self) -> int:
        return sum(len(ops) for ops in self.ops.values())


def build_plan(run: RecordedRun, scale_dp: int = 1,
               busy_s: dict[tuple[int, int], float] | None = None) -> ReplayPlan:
    """Replay programs of ``run`` (``scale_dp`` times its world), compute kernel time from ``busy_s`` when the
    GPU changes ({(recorded rank, op index): seconds}, see ``rescale.busy_rescaled``)."""
    if scale_dp < 1:
        raise ScenarioError("--scale-dp", f"expected an integer >= 1, got {scale_dp}")
    base_world = run.world_size
    world = base_world * scale_dp
    notes: Counter = Counter()
    programs = {rank: _program(run, rank, scale_dp, busy_s, notes) for rank in range(world)}
    plan = ReplayPlan(programs, world, base_world)
    _match(plan, notes)
    plan.assumptions = [f"{note} ({count} ops over all replayed ranks)" for note, count in notes.items()]
    if scale_dp > 1:
        plan.assumptions.insert(0, (
            f"--scale-dp {scale_dp}: the {base_world} recorded ranks are repeated {scale_dp} times ({world} "
            f"ranks; replayed rank r behaves like recorded rank r mod {base_world}); weak scaling: every rank "
            "keeps its recorded work and message sizes; collectives over the whole recorded world grow to span "
            "all replicas (data-parallel gradients), smaller groups and point-to-point stay inside each replica"))
    return plan


def _program(run: RecordedRun, replay_rank: int, scale_dp: int, busy_s: dict[tuple[int, int], float] | None,
             notes: Counter) -> list[ReplayOp]:
    """The ops of one replayed rank: those of recorded rank ``replay_rank`` mod the recorded world, each with the
    idle gap and waits that put it back where it was recorded, its communication planned."""
    base_world = run.world_size
    source, replica = replay_rank % base_world, replay_rank // base_world
    recorded = run.ops_of(source)
    owner = source if source in run.ranks else run.mirrored[source]
    ops: list[ReplayOp] = []
    last_on_stream: dict[object, int] = {}
    for index, op in enumerate(recorded):
        previous = last_on_stream.get(op.stream)
        last_on_stream[op.stream] = index
        previous_end_s = 0.0 if previous is None else recorded[previous].ended_at_s
        waits = tuple((j, max(0.0, op.started_at_s - recorded[j].ended_at_s)) for j in op.waits_for)
        duration_s, busy = _times_s(op, busy_s, (owner, index))
        ops.append(ReplayOp(rank=replay_rank, index=index, stream=str(op.stream), kind=op.kind, name=op.name,
                            step=op.step, recorded_start_s=op.started_at_s, recorded_end_s=op.ended_at_s,
                            duration_s=duration_s, busy_s=busy, gap_s=max(0.0, op.started_at_s - previous_end_s),
                            waits=waits, size_bytes=float(op.size_bytes or 0.0)))
        if op.is_communication:
            _plan_communication(ops[-1], op, source, replica, base_world, scale_dp, notes)
    return ops


def _times_s(op: RecordedOp, busy_s: dict[tuple[int, int], float] | None,
             key: tuple[int, int]) -> tuple[float, float]:
    """(duration, kernel time) of a replayed op: as recorded, or for compute on another GPU its rescaled kernel
    time ``busy_s[key]`` plus the launch gaps recorded inside it (CPU time, which a GPU change does not move)."""
    if busy_s is None or op.kind != COMPUTE:
        return op.duration_s, op.kernel_s
    rescaled_s = busy_s.get(key, op.kernel_s)
    return max(0.0, op.duration_s - op.kernel_s) + rescaled_s, rescaled_s


def _plan_communication(target: ReplayOp, op: RecordedOp, source: int, replica: int, base_world: int,
                        scale_dp: int, notes: Counter) -> None:
    """Decide whether a communication op is re-simulated, over which group, with which rendezvous."""
    shift = replica * base_world
    if op.size_bytes is None and op.name != "barrier":
        notes["communication of unknown size kept at its recorded duration"] += 1
        return
    if op.kind == COLLECTIVE:
        if op.name not in COLLECTIVE_OPS:
            notes[f"{op.name} collectives (not modelled on the fabric) kept at their recorded duration"] += 1
            return
        group = tuple(op.group)
        if not group:
            group = _unknown_group(source, op.group_size or base_world, base_world)
            notes["process group known by size only: taken as the block of consecutive ranks holding the "
                  "rank"] += 1
        if set(group) == set(range(base_world)) and scale_dp > 1:
            group = tuple(range(base_world * scale_dp))
        else:
            group = tuple(g + shift for g in group)
        target.collective = COLLECTIVE_OPS[op.name]
        target.group = group
        target.size_bytes = BARRIER_BYTES if op.name == "barrier" else float(op.size_bytes)
        target.match = ("collective", group)
        return
    if op.peer is None:
        notes[f"{op.kind} without a known peer kept at its recorded duration"] += 1
        return
    me, peer = source + shift, op.peer + shift
    target.collective = "sendrecv"
    if op.kind == RECV:
        target.group, target.match = (peer, me), ("p2p", peer, me)
    elif op.kind == SEND:
        target.group, target.match = (me, peer), ("p2p", me, peer)
    else:  # an NCCL SendRecv kernel: both ranks run one, each names the other
        pair = (min(me, peer), max(me, peer))
        target.group, target.match = pair, ("sendrecv", *pair)
    target.size_bytes = float(op.size_bytes)


def _unknown_group(rank: int, group_size: int, world: int) -> tuple[int, ...]:
    """Members of a group known by size only: the block of consecutive ranks holding ``rank``."""
    size = min(max(group_size, 1), world)
    base = rank // size * size
    return tuple(r for r in range(base, base + size) if r < world)


def _match(plan: ReplayPlan, notes: Counter) -> None:
    """Number each rank's rendezvous by order (k-th collective of a group, k-th send between two ranks), keep
    those every member reaches, and give members of one rendezvous one size (the largest)."""
    members: dict[tuple, list[ReplayOp]] = defaultdict(list)
    for ops in plan.ops.values():
        counts: Counter = Counter()
        for op in ops:
            if op.match is not None:
                op.match = (*op.match, counts[op.match])
                counts[op.match[:-1]] += 1
                members[op.match].append(op)
    for key, ops in members.items():
        needed = len(ops[0].group) if key[0] == "collective" else 2
        if len(ops) < needed:
            notes["communication some member never reaches in the trace (unmatched at the end of the "
                  "profile) kept at its recorded duration"] += len(ops)
            for op in ops:
                op.collective, op.match = None, None
            continue
        if len({(op.collective, op.size_bytes) for op in ops}) > 1:
            notes["members disagree on a collective's type or size (matched by order): the largest size "
                  "is used"] += len(ops)
            size_bytes = max(op.size_bytes for op in ops)
            for op in ops:
                op.size_bytes = size_bytes
                op.collective = ops[0].collective


__all__ = ["BARRIER_BYTES", "COLLECTIVE_OPS", "ReplayOp", "ReplayPlan", "build_plan"]
