"""Replay of a recorded run on a fabric: one SimPy process per (agent, stream) walking its ``ReplayOp``s.

An agent stands for the replayed ranks that run the same recorded program (``ReplayPlan.members``; one rank with
``expand``). Compute ops are timeouts of their recorded (or rescaled) duration. Communication ops the plan
re-simulates meet at a rendezvous (the k-th collective of a group on every member, a send and its receive); when
the last agent arrives the collective runs on the network through the engine's own collective driver, over the
groups of every rank the agents stand for, and every member's op ends when it completes, so an early rank's op
includes its wait, as an NCCL kernel does. Other communication ops are timeouts of their recorded duration.

Dependencies (``simcluster.replay.plan``): an op is ready when its stream is free and the ops it waits for have
ended, and starts its recorded gap after the latest of those.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import simpy

from simcluster import collectives, network
from simcluster.core.errors import ScenarioError
from simcluster.engine.drivers import CollectiveDriver, NetworkDriver
from simcluster.engine.recorder import COLUMNS
from simcluster.replay.plan import ReplayOp, ReplayPlan
from simcluster.replay.recorded import COLLECTIVE, COMPUTE

# Lanes of the engine's timeline (analysis.timeline): collectives on the data-parallel lane, point-to-point on
# the pipeline lane; the recorded CUDA stream stays in ``cuda_stream``.
EXTRA_COLUMNS = ["cuda_stream", "op_kind", "step", "index", "busy_s", "recorded_start_s", "recorded_end_s",
                 "simulated", "disagree"]
EVENT_COLUMNS = COLUMNS + EXTRA_COLUMNS


@dataclass
class _Rendezvous:
    arrived: int = 0
    done: simpy.Event | None = None


@dataclass
class ReplayResult:
    """The replayed events (one row per op, recorded times alongside) and what it cost to compute."""

    events: pd.DataFrame
    wall_time_s: float
    network_model: str


class ReplayEngine:
    """A ``ReplayPlan`` on ``fabric`` (at least ``plan.world_size`` GPUs) with the ``network_model``; ``algorithm``
    forces a collective algorithm where an op has it (else NCCL's choice)."""

    def __init__(self, plan: ReplayPlan, fabric, network_model: str = "flow", algorithm: str = "auto"):
        if fabric.gpus < plan.world_size:
            raise ScenarioError("--topology", f"the fabric has {fabric.gpus} GPUs, the replay needs "
                                              f"{plan.world_size}")
        self.plan = plan
        self.fabric = fabric
        self.network_name = network_model
        self.algorithm = algorithm
        self.env = simpy.Environment()
        # one network for all traffic, seen through NCCL's measured efficiencies (as Simulation does)
        self.model = network.make(network_model, collectives.calibrated(fabric))
        self.net = NetworkDriver(self.env, self.model)
        self.driver = CollectiveDriver(self.env, fabric, self.net)
        self._done = {rank: [self.env.event() for _ in ops] for rank, ops in plan.ops.items()}
        self._end_s: dict[tuple[int, int], float] = {}
        self._rendezvous: dict[tuple, _Rendezvous] = {}
        self._multiplicity = {rank: len(members) for rank, members in plan.members.items()}
        self.rows: list[tuple] = []

    def run(self) -> ReplayResult:
        started = time.perf_counter()
        for rank, ops in self.plan.ops.items():
            streams: dict[str, list[ReplayOp]] = {}
            for op in ops:
                streams.setdefault(op.stream, []).append(op)
            for stream_ops in streams.values():
                self.env.process(self._stream(rank, stream_ops))
        self.env.run()
        self._check_finished()
        events = pd.DataFrame.from_records(self.rows, columns=EVENT_COLUMNS)
        events = events.sort_values(["start_s", "rank", "index"], kind="stable").reset_index(drop=True)
        return ReplayResult(events, time.perf_counter() - started, self.network_name)

    def _stream(self, rank: int, ops: list[ReplayOp]):
        env = self.env
        for op in ops:
            ready_s = env.now  # the stream is free
            for index in op.waits:
                if not self._done[rank][index].triggered:
                    yield self._done[rank][index]
                ready_s = max(ready_s, self._end_s[(rank, index)])
            ready_s += op.gap_s
            if ready_s > env.now:
                yield env.timeout(ready_s - env.now)
            started_at_s = env.now
            if op.collective is None:
                yield env.timeout(op.duration_s)
            else:
                yield self._join(op)
            self._end_s[(rank, op.index)] = env.now
            self._record(op, started_at_s, env.now)
            self._done[rank][op.index].succeed()

    def _join(self, op: ReplayOp) -> simpy.Event:
        """This rank's arrival at ``op``'s rendezvous; the last member to arrive starts the communication."""
        entry = self._rendezvous.setdefault(op.match, _Rendezvous(done=self.env.event()))
        entry.arrived += 1
        if entry.arrived == op.needed:
            del self._rendezvous[op.match]
            self.env.process(self._communicate(op, entry.done))
        return entry.done

    def _communicate(self, op: ReplayOp, done: simpy.Event):
        yield from self.driver.run(op.collective, list(op.groups), op.size_bytes, self.algorithm)
        done.succeed()

    def _record(self, op: ReplayOp, start_s: float, end_s: float) -> None:
        lane = "compute" if op.kind == COMPUTE else ("dp" if op.kind == COLLECTIVE else "pp")
        if op.stream == "dp-experts":   # a simulated run's expert data-parallel stream (replay.formats.simulated)
            lane = op.stream
        self.rows.append((op.rank, lane, "compute" if op.kind == COMPUTE else "comm", op.name, -1, start_s, end_s,
                          op.size_bytes, self._multiplicity[op.rank], op.stream, op.kind, op.step, op.index, op.busy_s,
                          op.recorded_start_s, op.recorded_end_s, op.collective is not None, op.disagree))

    def _check_finished(self) -> None:
        """Every op must have run; a replay that stalls names where (inconsistent traces can deadlock)."""
        for rank, events in self._done.items():
            for index, event in enumerate(events):
                if not event.triggered:
                    op = self.plan.ops[rank][index]
                    waiting = sum(1 for e in self._rendezvous.values() if e.arrived)
                    raise ScenarioError("trace", (
                        f"the replay stalled: rank {rank} never finished op {index} ({op.kind} {op.name!r} on "
                        f"stream {op.stream}); {waiting} collective(s) wait for members that never arrive "
                        "(the ranks' traces disagree on the order of their collectives)"))


def replay(plan: ReplayPlan, fabric, network_model: str = "flow", algorithm: str = "auto") -> ReplayResult:
    """Run ``plan`` on ``fabric`` and return its events."""
    return ReplayEngine(plan, fabric, network_model, algorithm).run()


__all__ = ["EVENT_COLUMNS", "ReplayEngine", "ReplayResult", "replay"]
