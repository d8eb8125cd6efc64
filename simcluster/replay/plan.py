"""Replay programs: a ``RecordedRun`` becomes one program of ``ReplayOp``s per replay agent.

Here is everything about the replay that can be decided without a clock (the SimPy side is ``engine/replay.py``):
- what each recorded op becomes: compute kept as a timeout of its recorded duration (or of its rescaled kernel
  time plus its recorded launch gaps when the GPU changes, see ``rescale.busy_rescaled``), communication
  re-simulated on the fabric when the trace says what moved (collective type, bytes, group), else kept at its
  recorded duration;
- the dependencies (``recorded``'s replay rule): an op is ready when its stream is free and every op it waits for
  has ended, and starts ``gap_s`` after the latest of those; ``gap_s`` is measured the same way on the recording
  (recorded start minus the latest recorded end among the stream's previous op and the ops waited for), so a
  wait on another stream never turns into a fixed gap. Traces without timestamps have no gaps;
- how collectives are matched across ranks: the k-th collective of a group on every member (NCCL's ordering
  rule); a send with the receive of its peer by their order between the two ranks;
- ``--scale-dp K``: the recorded ranks repeated K times (weak scaling), collectives spanning the recorded world
  growing to span all replicas;
- symmetry: the replayed ranks that run the same recorded program (recorded ranks whose ops, times, sizes and
  groups are identical, the ranks mirroring them and their ``--scale-dp`` replicas) are one agent standing for
  all of them, as ``simulate`` collapses data-parallel replicas: each of its collectives runs over every
  member's group at once (``ReplayOp.groups``), so the network carries every rank's traffic while the plan and
  the events grow with the distinct programs, not the replayed ranks. The collapse is exact when every
  member's k-th collective of a group is the k-th of every other member of that group (checked: ``_Matcher``);
  when a trace breaks that, the plan falls back to one agent per rank and says so.

Every decision taken for missing data is a sentence in ``ReplayPlan.assumptions``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from simcluster.core.errors import ScenarioError
from simcluster.replay.recorded import COLLECTIVE, COMPUTE, RECV, SEND, RecordedOp, RecordedRun

# simcluster.collectives op for each recorded collective name that can be re-simulated.
COLLECTIVE_OPS = {"allreduce": "allreduce", "allgather": "all_gather", "reduce_scatter": "reduce_scatter",
                  "alltoall": "alltoall", "broadcast": "broadcast", "reduce": "reduce", "barrier": "allreduce"}
# Collectives over the whole recorded world that --scale-dp grows to span every replica: those of data
# parallelism (gradients, parameters, the step's barrier and norms). An all-to-all (expert or embedding
# exchange) or a broadcast stays inside its replica.
GROWS_WITH_DP = frozenset({"allreduce", "reduce_scatter", "allgather", "barrier", "reduce"})
# c10d's NCCL barrier is an allreduce of a one-element tensor (PyTorch ProcessGroupNCCL::barrier).
BARRIER_BYTES = 4.0

Groups = tuple[tuple[int, ...], ...]

UNKNOWN_GROUP = "process group known by size only: taken as the block of consecutive ranks holding the rank"
MIRRORED_GROUP = ("process group of a mirrored rank not in the trace (the recorded rank's does not hold it): the "
                  "block of consecutive ranks of the recorded group's size holding the rank")


@dataclass(slots=True, eq=False)
class ReplayOp:
    """One op of one replay agent. ``collective`` set: re-simulated on the fabric over ``groups`` (fabric GPU
    indices = replayed ranks; one group per member rank, shared by reference between ops), at the rendezvous
    ``match`` that ``needed`` arrivals (agents, and their role for point-to-point) complete; else a timeout of
    ``duration_s``. It starts ``gap_s`` after its stream is free and the ops ``waits`` (indices in the agent's
    program) have ended."""

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
    waits: tuple[int, ...] = ()
    size_bytes: float = 0.0
    collective: str | None = None
    groups: Groups = ()
    match: tuple | None = None
    needed: int = 0
    role: str = ""
    disagree: bool = False  # its members recorded another type or size (matched by order; the largest is used)

    @property
    def is_communication(self) -> bool:
        return self.kind != COMPUTE


@dataclass
class ReplayPlan:
    """Programs of every replay agent (ops in recorded start order), keyed by the agent's representative rank
    (its lowest); ``members`` lists the replayed ranks each agent stands for; the sentences of what was assumed."""

    ops: dict[int, list[ReplayOp]]
    world_size: int
    recorded_world_size: int
    members: dict[int, tuple[int, ...]]
    assumptions: list[str] = field(default_factory=list)

    def multiplicity(self, rank: int) -> int:
        return len(self.members[rank])

    @property
    def agents(self) -> int:
        return len(self.ops)

    def op_count(self) -> int:
        """Ops of every replayed rank (an agent's ops count once per member)."""
        return sum(len(ops) * len(self.members[rank]) for rank, ops in self.ops.items())


class _Asymmetric(Exception):
    """The ranks of one agent would not meet at the same collectives: one agent per rank instead."""


def build_plan(run: RecordedRun, scale_dp: int = 1, busy_s: dict[tuple[int, int], float] | None = None,
               expand: bool = False) -> ReplayPlan:
    """Replay programs of ``run`` (``scale_dp`` times its world), compute kernel time from ``busy_s`` when the
    GPU changes ({(recorded rank, op index): seconds}, see ``rescale.busy_rescaled``). Ranks running the same
    recorded program are one agent unless ``expand`` (or unless the trace is not symmetric enough for that)."""
    if scale_dp < 1:
        raise ScenarioError("--scale-dp", f"expected an integer >= 1, got {scale_dp}")
    if not expand:
        try:
            return _build(run, scale_dp, busy_s, expand=False)
        except _Asymmetric as why:
            plan = _build(run, scale_dp, busy_s, expand=True)
            plan.assumptions.append(f"ranks not collapsed ({why}): one replay agent per rank")
            return plan
    return _build(run, scale_dp, busy_s, expand=True)


def _build(run: RecordedRun, scale_dp: int, busy_s: dict[tuple[int, int], float] | None,
           expand: bool) -> ReplayPlan:
    base_world = run.world_size
    world = base_world * scale_dp
    alike = {} if expand else _alike(run, busy_s)
    owner_of = [s if s in run.ranks else run.mirrored[s] for s in range(base_world)]
    owner_of = [alike.get(owner, owner) for owner in owner_of]
    members: dict[int, list[int]] = defaultdict(list)
    owner_rank: dict[int, int] = {}  # owner (recorded rank) -> its agent, when collapsed
    for r in range(world):
        owner = owner_of[r % base_world]
        rep = r if expand else owner_rank.setdefault(owner, r)
        members[rep].append(r)
    agent_of = [0] * world
    for rep, ranks in members.items():
        for r in ranks:
            agent_of[r] = rep
    notes: Counter = Counter()
    templates = {owner: _template(run, owner, busy_s) for owner in set(owner_of)}
    groups = _Groups(base_world, scale_dp, notes)
    matcher = _Matcher(agent_of)
    programs: dict[int, list[ReplayOp]] = {}
    for rep, ranks in members.items():
        owner = owner_of[rep % base_world]
        mine = tuple(ranks)
        program = []
        for op, replay_op in zip(run.ranks[owner], templates[owner], strict=True):
            target = _copy(replay_op, rep)
            if op.is_communication:
                _plan_communication(target, op, mine, groups, len(mine), notes)
                matcher.add(target)
            program.append(target)
        programs[rep] = program
    plan = ReplayPlan(programs, world, base_world, {rep: tuple(ranks) for rep, ranks in members.items()})
    matcher.finish(plan, notes, collapsed=not expand)
    plan.assumptions = [f"{note} ({count} ops over all replayed ranks)" for note, count in notes.items()]
    if scale_dp > 1:
        plan.assumptions.insert(0, (
            f"--scale-dp {scale_dp}: the {base_world} recorded ranks are repeated {scale_dp} times ({world} "
            f"ranks; replayed rank r behaves like recorded rank r mod {base_world}); weak scaling: every rank "
            "keeps its recorded work and message sizes; all-reduce, reduce-scatter, all-gather, reduce and barrier "
            "over the whole recorded world grow to span all replicas (data-parallel gradients and parameters); "
            "all-to-all, broadcast, smaller groups and point-to-point stay inside each replica"))
    if not expand and plan.agents < world:
        plan.assumptions.append(f"{world} ranks replayed as {plan.agents} agent(s), one per recorded program "
                                "(ranks mirroring a recorded rank, and its replicas, run the same ops)")
    return plan


def _alike(run: RecordedRun, busy_s: dict[tuple[int, int], float] | None) -> dict[int, int]:
    """Recorded rank -> the lowest recorded rank with the very same program (ops, times, sizes, groups and
    peers as recorded; rescaled kernel times), whose agent it joins."""
    first: dict[tuple, int] = {}
    out = {}
    by_id: dict[int, int] = {}  # a group object -> the number of its content (hashed once per object)
    by_content: dict[tuple[int, ...], int] = {}

    def group_key(group: tuple[int, ...]) -> int:
        if id(group) not in by_id:
            by_id[id(group)] = by_content.setdefault(group, len(by_content))
        return by_id[id(group)]

    for rank in sorted(run.ranks):
        ops = run.ranks[rank]
        key = tuple((op.stream, op.kind, op.name, op.started_at_s, op.duration_s, op.size_bytes, group_key(op.group),
                     op.group_size, op.peer, op.step, op.waits_for, op.busy_s,
                     None if busy_s is None else busy_s.get((rank, i))) for i, op in enumerate(ops))
        out[rank] = first.setdefault(key, rank)
    return out


def _template(run: RecordedRun, owner: int, busy_s: dict[tuple[int, int], float] | None) -> list[ReplayOp]:
    """The ops of recorded rank ``owner`` with their durations, waits and gaps (the replay rule), before any
    communication is planned; every agent running this program copies them."""
    recorded = run.ranks[owner]
    ops: list[ReplayOp] = []
    stream_free_s: dict[object, float] = {}
    for index, op in enumerate(recorded):
        ready_s = max([stream_free_s.get(op.stream, 0.0), *(recorded[j].ended_at_s for j in op.waits_for)])
        stream_free_s[op.stream] = op.ended_at_s
        duration_s, busy = _times_s(op, busy_s, (owner, index))
        ops.append(ReplayOp(rank=owner, index=index, stream=str(op.stream), kind=op.kind, name=op.name,
                            step=op.step, recorded_start_s=op.started_at_s, recorded_end_s=op.ended_at_s,
                            duration_s=duration_s, busy_s=busy,
                            gap_s=max(0.0, op.started_at_s - ready_s) if run.timed else 0.0,
                            waits=tuple(op.waits_for), size_bytes=float(op.size_bytes or 0.0)))
    return ops


def _copy(op: ReplayOp, rank: int) -> ReplayOp:
    return ReplayOp(rank, op.index, op.stream, op.kind, op.name, op.step, op.recorded_start_s, op.recorded_end_s,
                    op.duration_s, op.busy_s, op.gap_s, op.waits, op.size_bytes)


def _times_s(op: RecordedOp, busy_s: dict[tuple[int, int], float] | None,
             key: tuple[int, int]) -> tuple[float, float]:
    """(duration, kernel time) of a replayed op: as recorded, or for compute on another GPU its rescaled kernel
    time ``busy_s[key]`` plus the launch gaps recorded inside it (CPU time, which a GPU change does not move)."""
    if busy_s is None or op.kind != COMPUTE:
        return op.duration_s, op.kernel_s
    rescaled_s = busy_s.get(key, op.kernel_s)
    return max(0.0, op.duration_s - op.kernel_s) + rescaled_s, rescaled_s


class _Groups:
    """The group (or point-to-point pair) of each replayed rank for a recorded op, and the agent's set of them,
    computed once per (agent, kind of op) and shared by every op that uses it. Equal groups are one object
    (memos by identity, then content), so that building a set of N ranks' groups costs O(N), not O(N^2)."""

    def __init__(self, base_world: int, scale_dp: int, notes: Counter):
        self.base_world, self.scale_dp, self.notes = base_world, scale_dp, notes
        self._cache: dict[tuple, tuple[str, Groups, str | None]] = {}
        self._interned: dict[Groups, Groups] = {}
        self._memo: dict[tuple, tuple[int, ...]] = {}  # (what, ...) -> one shared group object
        self._pairs: dict[tuple[int, int], tuple[int, int]] = {}  # point-to-point pairs, one object each
        self._world = tuple(range(base_world * scale_dp))
        self._whole = frozenset(range(base_world))

    def of(self, op: RecordedOp, ranks: tuple[int, ...]) -> tuple[str, Groups, str | None]:
        """(role, groups, note) of ``op`` run by every rank of ``ranks``: role 'collective', 'send', 'recv' or
        'sendrecv'; one group or pair per rank, duplicates dropped, in rank order; the note says what was
        assumed about the groups (None: they are in the trace)."""
        key = (ranks[0], op.kind, op.name, id(op.group), op.group_size, op.peer)
        if key not in self._cache:
            notes: set[str] = set()
            if op.kind == COLLECTIVE:
                members = frozenset(op.group)
                grows = (self.scale_dp > 1 and op.name in GROWS_WITH_DP and len(op.group) == self.base_world
                         and members == self._whole)
                per_rank = [self._collective(op, members, grows, ranks[i], notes)
                            for i in self._distinct_collective_ranks(op, ranks, grows)]
            else:
                per_rank = [self._pair(op, r) for r in ranks]
            unique = tuple({id(g): g for g in per_rank}.values())  # equal groups are one object
            groups = self._interned.setdefault(unique, unique)  # one object per distinct set: shared by reference
            self._cache[key] = self._role(op), groups, min(notes, default=None)
        return self._cache[key]

    def _distinct_collective_ranks(self, op: RecordedOp, ranks: tuple[int, ...], grows: bool) -> list[int]:
        """Positions in ``ranks`` of the first rank of each distinct group ``_collective`` gives them, in order:
        a rank's group depends only on its replica (shift) and, when its recorded rank is not in the recorded
        group, on the block of consecutive ranks holding it, so the groups are built once per distinct pair."""
        if grows:
            return [0]
        at = np.asarray(ranks, dtype=np.int64)
        source = at % self.base_world
        inside = np.isin(source, np.fromiter(op.group, dtype=np.int64, count=len(op.group))) if op.group else \
            np.zeros(len(at), dtype=bool)
        size = min(max(len(op.group) if op.group else (op.group_size or self.base_world), 1), self.base_world)
        keys = np.stack([at - source, np.where(inside, -1, source // size)], axis=1)
        return sorted(np.unique(keys, axis=0, return_index=True)[1].tolist())

    def _role(self, op: RecordedOp) -> str:
        return {COLLECTIVE: "collective", SEND: "send", RECV: "recv"}.get(op.kind, "sendrecv")

    def _shared(self, key: tuple, make) -> tuple[int, ...]:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def _collective(self, op: RecordedOp, members: frozenset, grows: bool, rank: int,
                    notes: set[str]) -> tuple[int, ...]:
        if grows:
            return self._world
        source, shift = rank % self.base_world, rank // self.base_world * self.base_world
        if not op.group or source not in members:
            # group known by size only, or a mirrored rank whose own group the trace does not hold
            size = min(max(len(op.group) if op.group else (op.group_size or self.base_world), 1), self.base_world)
            notes.add(MIRRORED_GROUP if op.group else UNKNOWN_GROUP)
            return self._shared(("block", source // size, size, shift), lambda: tuple(
                g + shift for g in _unknown_group(source, size, self.base_world)))
        if shift == 0:
            return op.group
        return self._shared(("shifted", id(op.group), shift), lambda: tuple(g + shift for g in op.group))

    def _pair(self, op: RecordedOp, rank: int) -> tuple[int, int]:
        me, peer = rank, op.peer + rank // self.base_world * self.base_world
        # a receive is (sender, me); an NCCL SendRecv kernel runs on both ranks, each naming the other: (low, high)
        pair = (peer, me) if op.kind == RECV else (me, peer) if op.kind == SEND else (min(me, peer), max(me, peer))
        return self._pairs.setdefault(pair, pair)  # one object per pair


def _plan_communication(target: ReplayOp, op: RecordedOp, ranks: tuple[int, ...], groups: _Groups,
                        multiplicity: int, notes: Counter) -> None:
    """Decide whether a communication op is re-simulated, over which groups, with which rendezvous."""
    if op.size_bytes is None and op.name != "barrier":
        notes["communication of unknown size kept at its recorded duration"] += multiplicity
        return
    if op.kind == COLLECTIVE:
        if op.name not in COLLECTIVE_OPS:
            notes[f"{op.name} collectives (not modelled on the fabric) kept at their recorded duration"] += \
                multiplicity
            return
        target.collective = COLLECTIVE_OPS[op.name]
        target.size_bytes = BARRIER_BYTES if op.name == "barrier" else float(op.size_bytes)
    elif op.peer is None:
        notes[f"{op.kind} without a known peer kept at its recorded duration"] += multiplicity
        return
    else:
        target.collective = "sendrecv"
        target.size_bytes = float(op.size_bytes)
    target.role, target.groups, note = groups.of(op, ranks)
    if note is not None:
        notes[note] += multiplicity
    target.match = ("collective" if target.role == "collective" else
                    "sendrecv" if target.role == "sendrecv" else "p2p", target.groups)


def _unknown_group(rank: int, group_size: int, world: int) -> tuple[int, ...]:
    """Members of a group known by size only: the block of consecutive ranks holding ``rank``."""
    size = min(max(group_size, 1), world)
    base = rank // size * size
    return tuple(r for r in range(base, base + size) if r < world)


class _Matcher:
    """Rendezvous by order: an agent's k-th op over a set of groups meets the k-th of every agent with a member
    in them. Checks that this is the rank-by-rank rule (the k-th collective of a group on every member), which
    it is when an agent's sets of groups never share a group unless equal, and the groups of one set are
    disjoint: each member then has exactly one group in the set, at the same positions as its agent."""

    def __init__(self, agent_of: list[int]):
        self.agent_of = agent_of
        self.arrivals: dict[tuple, list[ReplayOp]] = defaultdict(list)
        self._counts: dict[int, Counter] = defaultdict(Counter)
        self._owner: dict[tuple[int, str, tuple], Groups] = {}
        self._checked: set[Groups] = set()
        self._needed: dict[tuple, frozenset] = {}

    def add(self, op: ReplayOp) -> None:
        if op.match is None:
            return
        if len(op.groups) > 1:
            self._check(op)
        counts = self._counts[op.rank]
        k = counts[op.match, op.role]  # per role: an agent may both send and receive over one set of pairs
        counts[op.match, op.role] += 1
        op.match = (*op.match, k)
        self.arrivals[op.match].append(op)

    def _check(self, op: ReplayOp) -> None:
        kind = op.match[0]
        if op.groups not in self._checked:
            self._checked.add(op.groups)
            if kind == "collective" and sum(map(len, op.groups)) != len({r for g in op.groups for r in g}):
                raise _Asymmetric("the groups of one agent's collective overlap")
        for group in op.groups:
            seen = self._owner.setdefault((op.rank, kind, group), op.groups)
            if seen is not op.groups:
                raise _Asymmetric("an agent's ranks meet a group at different collectives")

    def _needed_by(self, kind: str, groups: Groups) -> frozenset:
        """(agent, role) arrivals a rendezvous over ``groups`` waits for."""
        key = (kind, groups)
        if key not in self._needed:
            agent = self.agent_of
            if kind == "p2p":
                needed = {(agent[a], "send") for a, _ in groups} | {(agent[b], "recv") for _, b in groups}
            else:
                role = "collective" if kind == "collective" else "sendrecv"
                needed = {(agent[r], role) for g in groups for r in g}
            self._needed[key] = frozenset(needed)
        return self._needed[key]

    def finish(self, plan: ReplayPlan, notes: Counter, collapsed: bool) -> None:
        """Keep the rendezvous every member reaches, give its arrivals one size (the largest) and the count of
        arrivals to wait for; the others keep their recorded duration."""
        for key, ops in self.arrivals.items():
            needed = self._needed_by(key[0], key[1])
            arrived = [(op.rank, op.role) for op in ops]
            weight = sum(plan.multiplicity(op.rank) for op in ops)
            if len(set(arrived)) != len(arrived) or set(arrived) != needed:
                if collapsed and len(key[1]) > 1:
                    raise _Asymmetric("a collective some of an agent's ranks never reach")
                notes["communication some member never reaches in the trace (unmatched at the end of the "
                      "profile) kept at its recorded duration"] += weight
                for op in ops:
                    op.collective, op.match, op.groups = None, None, ()
                continue
            if len({(op.collective, op.size_bytes) for op in ops}) > 1:
                notes["members disagree on a collective's type or size (matched by order): the largest size "
                      "is used"] += weight
                size_bytes = max(op.size_bytes for op in ops)
                for op in ops:
                    op.size_bytes = size_bytes
                    op.collective = ops[0].collective
                    op.disagree = True
            for op in ops:
                op.needed = len(needed)


__all__ = ["BARRIER_BYTES", "COLLECTIVE_OPS", "ReplayOp", "ReplayPlan", "build_plan"]
