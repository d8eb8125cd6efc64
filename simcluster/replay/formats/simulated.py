"""simcluster's own simulated runs as recorded runs: the events table of ``simulate`` -> ``RecordedRun``.

What for: a round trip. A simulated step exported as a trace (``write_chakra`` of the result) and replayed on the
fabric it was simulated on must give the simulated step back, and replayed on another fabric what simulating on
that fabric gives (tests/unit/test_replay_roundtrip.py). That checks the replay's dependency rule and its
re-simulation of communication against the engine, which knows the true dependencies.

How the events become ops (one program per GPU; the engine's rows of a collapsed agent stand for every rank of
its pipeline stage, ``group`` > 1):
- ``compute`` rows: compute ops;
- ``dp`` rows: collectives over the rank's data-parallel group (dp x cp), the op read from the name the engine
  gives them (``grad reduce_scatter c0b3``, ``param all_gather``), of the row's bytes; those named ``expert ...``
  (routed-expert parameters) over the rank's expert data-parallel group instead (``layout.expert_groups``, of the
  run's ``ep`` and ``etp``). A run whose expert group has its own stream (Megatron-FSDP MoE,
  ``engine.data_parallel.communicator_streams``) records those on ``dp-experts`` rows: that stream is kept;
- ``pp`` rows (``send forward to c1``): a send on the sender and a receive on the stage holding the chunk; the
  receive is posted when the receiver's previous receive ended (as a batched irecv is posted ahead), so it waits
  for its sender inside the op, as an NCCL kernel does;
- the step's last collectives: ``embedding allreduce`` (``pp`` row) over the first and last stage's ranks,
  ``grad norm allreduce`` (``dp`` row) over the ranks differing on ``grad_norm_axes`` (``plan.grad_norm_axes``);
  ``gather ...`` (``pp`` row: a scattered pipeline message all-gathered) over the receiver's TP group;
- ``tp`` and ``cp`` rows: the time blocked on tensor-parallel collectives and the context-parallel exchange;
  the engine does not record their bytes, so they are communication of unknown size, kept at their duration.

Dependencies are the engine's (``engine/agents.py``, ``engine/data_parallel.py``): a gradient collective waits
for the backward part that made its bucket; other data-parallel collectives, sends and blocking collectives for
the compute op issued just before them; the optimizer for the step's last gradient collective on each
data-parallel stream (each stream runs in order, so that is all of them); a forward part for its parameter bucket's
gathers; a forward or backward for the message it receives; any op for an op of another stream that ended the
instant it started.
One step: the run must be simulated with ``training.steps: 1``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pandas as pd

from simcluster.core.errors import ScenarioError
from simcluster.parallel.layout import Layout, expert_groups
from simcluster.replay.recorded import COLLECTIVE, COMPUTE, RECV, SEND, RecordedOp, RecordedRun, RecordedStep

_DP_NAME = re.compile(r"^(?:expert )?(?:grad|param|zero3) (reduce_scatter|allreduce|all_gather)")
DP_STREAMS = ("dp", "dp-experts")  # the dense group's stream and the expert group's own, where it has one
_RECORDED_NAME = {"reduce_scatter": "reduce_scatter", "allreduce": "allreduce", "all_gather": "allgather"}
_SEND = re.compile(r"^send (forward|backward) to c(\d+)$")
_BLOCK = re.compile(r"^(forward|backward) c(\d+)(?: b(\d+))?$")
_BUCKET = re.compile(r"c(\d+)b(\d+)$")
SAME_INSTANT_S = 1e-12  # the engine's times are exact: ends and starts that coincide are one instant


def from_simulation(events: pd.DataFrame, layout: Layout, gpu_name: str | None = None,
                    source: str = "simulation",
                    grad_norm_axes: tuple[str, ...] = ("tp", "cp", "pp", "dp"), ep: int = 1, etp: int = 1
                    ) -> RecordedRun:
    """The ``RecordedRun`` of one simulated step (``Result.events``) of a run with ``layout``; ``grad_norm_axes``:
    the run's ``plan.grad_norm_axes`` (``parallel.plan.grad_norm_axes`` of its parallelism; default: ZeRO >= 1);
    ``ep``, ``etp``: its expert (tensor) parallel sizes, which lay out the expert data-parallel groups."""
    if events.empty:
        raise ScenarioError("events", "the simulation recorded no events")
    world = layout.world_size
    stage_of_rank = np.array([layout.coords(r)["pp"] for r in range(world)])
    rows: dict[int, list[tuple]] = defaultdict(list)  # representative rank -> (start, end, stream, name, mb, bytes)
    for row in events.itertuples(index=False):
        if row.stream in ("tp", "cp") and getattr(layout, row.stream) == 1:
            continue  # float noise of a block's time (no such communication without tp or cp)
        rows[int(row.rank)].append((row.start_s, row.end_s, row.stream, row.name, int(row.microbatch),
                                    float(row.bytes), int(row.group)))
    stage_rep = {int(stage_of_rank[rep]): rep for rep in rows}
    expanded = all(r[6] == 1 for rs in rows.values() for r in rs)
    ranks: dict[int, list[RecordedOp]] = {}
    for rank in range(world):
        rep = rank if expanded else stage_rep[int(stage_of_rank[rank])]
        receives = [(row[0], row[1], "pp-recv", row[3].replace("send", "recv", 1), *row[4:])
                    for sender in rows for row in rows[sender]
                    if _SEND.match(row[3]) and _destination(row, layout, sender, rep, stage_of_rank)]
        ranks[rank] = _program(rank, rows[rep] + receives, layout, grad_norm_axes, (ep, etp))
    end_s = float(events["end_s"].max())
    steps = [RecordedStep(0, rank, 0.0, end_s) for rank in ranks]
    return RecordedRun(ranks=ranks, world_size=world, gpu_name=gpu_name, steps=steps, source=source,
                       assumptions=["exported from a simcluster simulation (one step): tensor-parallel and "
                                    "context-parallel communication has no recorded size"])


def _destination(row: tuple, layout: Layout, sender: int, rep: int, stage_of_rank: np.ndarray) -> bool:
    """Whether the send ``row`` of agent ``sender`` goes to agent ``rep``'s stage."""
    chunk = int(_SEND.match(row[3]).group(2))
    return chunk % layout.pp == int(stage_of_rank[rep]) and sender != rep


def _program(rank: int, rows: list[tuple], layout: Layout, grad_norm_axes: tuple[str, ...],
             expert_parallel: tuple[int, int] = (1, 1)) -> list[RecordedOp]:
    """One rank's ops (its agent's rows with its own groups and peers) in start order, with their waits;
    ``expert_parallel``: the run's (ep, etp)."""
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    _post_receives_early(rows)
    rows.sort(key=lambda r: (r[0], r[1]))
    dp_group = tuple(int(r) for r in _dp_group(layout, rank))
    expert_dp_group = None  # made on the first expert collective
    ops: list[RecordedOp] = []
    for start_s, end_s, stream, name, _microbatch, size, _group in rows:
        kind, op_name, group, peer, size_bytes = COMPUTE, name, (), None, 0.0
        if name in _STEP_COLLECTIVES:
            kind, op_name, size_bytes = COLLECTIVE, "allreduce", size
            group = _step_group(layout, rank, name, grad_norm_axes)
        elif name.startswith("gather "):
            kind, op_name, size_bytes = COLLECTIVE, "allgather", size
            group = tuple(int(r) for r in layout.group(rank, "tp"))
        elif stream in DP_STREAMS:
            if name.startswith("expert ") and expert_dp_group is None:
                expert_dp_group = _expert_dp_group(layout, rank, *expert_parallel)
            kind, op_name, size_bytes = COLLECTIVE, _RECORDED_NAME[_DP_NAME.match(name).group(1)], size
            group = expert_dp_group if name.startswith("expert ") else dp_group
        elif stream == "pp":
            chunk = int(_SEND.match(name).group(2))
            kind, peer, size_bytes, op_name = SEND, int(layout.moved([rank], "pp", chunk % layout.pp)[0]), size, name
        elif stream == "pp-recv":
            chunk = int(re.search(r"c(\d+)$", name).group(1))
            phase = name.split()[1]
            source_stage = (chunk - 1 if phase == "forward" else chunk + 1) % layout.pp
            kind, peer, size_bytes = RECV, int(layout.moved([rank], "pp", source_stage)[0]), size
        elif stream in ("tp", "cp"):
            kind, op_name, size_bytes = COLLECTIVE, "allreduce", None
            group = tuple(int(r) for r in layout.group(rank, stream))
        ops.append(RecordedOp(rank=rank, stream=stream, kind=kind, name=op_name, started_at_s=start_s,
                              duration_s=max(0.0, end_s - start_s), size_bytes=size_bytes, group=group,
                              group_size=len(group) or None, peer=peer, step=0))
    names = [r[3] for r in rows]
    microbatches = [r[4] for r in rows]
    return [_with_waits(i, op, ops, names, microbatches) for i, op in enumerate(ops)]


_STEP_COLLECTIVES = ("embedding allreduce", "grad norm allreduce")


def _step_group(layout: Layout, rank: int, name: str, grad_norm_axes: tuple[str, ...]) -> tuple[int, ...]:
    """The group of one of the step's last collectives (``Simulation.step_collective``) holding ``rank``."""
    if name == "embedding allreduce":
        return int(layout.moved([rank], "pp", 0)[0]), int(layout.moved([rank], "pp", layout.pp - 1)[0])
    ranks = np.asarray([rank], dtype=np.int64)
    for axis in grad_norm_axes:
        ranks = np.unique(np.concatenate([layout.moved(ranks, axis, v) for v in range(getattr(layout, axis))]))
    return tuple(int(r) for r in ranks)


def _post_receives_early(rows: list[tuple]) -> None:
    """A receive starts when the previous one ended (posted ahead, it waits for its sender inside the op)."""
    free_s = 0.0
    for i, row in enumerate(rows):
        if row[2] == "pp-recv":
            rows[i] = (min(free_s, row[0]), *row[1:])
            free_s = row[1]


def _dp_group(layout: Layout, rank: int) -> list[int]:
    """The ranks holding the same parameters as ``rank``: its data- and context-parallel peers, in order."""
    return sorted({int(m) for d in layout.group(rank, "dp") for m in layout.group(d, "cp")})


def _expert_dp_group(layout: Layout, rank: int, ep: int, etp: int) -> tuple[int, ...]:
    """The ranks holding the same routed-expert shard as ``rank`` (Megatron-Core's expert data-parallel group,
    ``layout.expert_groups``), in order."""
    stage = layout.coords(rank)["pp"]
    return next(group for group in expert_groups(layout, stage, ep, etp, "edp") if rank in group)


def _with_waits(i: int, op: RecordedOp, ops: list[RecordedOp], names: list[str], microbatches: list[int]):
    """``op`` with the ops of other streams it waits for (see the module docstring)."""
    waits: set[int] = set()
    before = range(i - 1, -1, -1)
    other = [j for j in before if ops[j].stream != op.stream]
    waits.update(j for j in other if abs(ops[j].ended_at_s - op.started_at_s) <= SAME_INSTANT_S)
    compute_before = [j for j in other if ops[j].kind == COMPUTE and ops[j].ended_at_s <= op.started_at_s +
                      SAME_INSTANT_S]
    name = names[i]
    dense_name = name.removeprefix("expert ")   # an expert collective waits as its dense twin does
    if op.stream in DP_STREAMS and (bucket := _BUCKET.search(name)) and dense_name.startswith("grad"):
        made_by = f"backward c{bucket.group(1)} b{bucket.group(2)}"
        waits.update(next(([j] for j in before if names[j] == made_by), []))
    elif op.kind != COMPUTE and op.kind != RECV and compute_before:
        waits.add(compute_before[0])
    if op.kind == COMPUTE and name == "optimizer":   # the last gradient collective of each data-parallel stream
        for stream in DP_STREAMS:
            waits.update(next(([j] for j in before if ops[j].stream == stream
                               and names[j].removeprefix("expert ").startswith("grad ")), []))
    if op.kind == COMPUTE and (block := _BLOCK.match(name)):
        phase, chunk, part = block.group(1), block.group(2), block.group(3)
        if phase == "forward" and part is not None:
            for gather in (f"param all_gather c{chunk}b{part}", f"expert param all_gather c{chunk}b{part}"):
                waits.update(next(([j] for j in before if names[j] == gather), []))
        message = f"recv {phase} to c{chunk}"
        waits.update(next(([j] for j in before if names[j] == message and microbatches[j] == microbatches[i]), []))
    return replace(op, waits_for=tuple(sorted(waits)))


__all__ = ["from_simulation"]
