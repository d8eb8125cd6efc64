"""GPU agents: one SimPy process per GPU, or per symmetry class of GPUs (a pipeline stage's data-parallel and
tensor-parallel replicas, which are exactly symmetric absent stragglers or faults).

An agent runs its pipeline stage's schedule on a compute stream; pipeline sends and data-parallel collectives run on
communication streams, so overlap follows from the dependencies rather than from hand-set ratios.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simcluster.engine.record import Tally
from simcluster.parallel.plan import bucket_count


@dataclass(eq=False)
class Agent:
    """A pipeline stage's ranks (collapsed) or one rank (expanded). ``ranks[0]`` is the representative."""

    sim: object
    stage: int
    ranks: list[int]
    tally: Tally = field(default_factory=Tally)

    @property
    def rank(self) -> int:
        return self.ranks[0]

    @property
    def multiplicity(self) -> int:
        return len(self.ranks)

    # ---- one training step ------------------------------------------------------------------------------------
    def step(self, step_index: int):
        sim, plan = self.sim, self.sim.plan
        env, last_chunk = sim.env, plan.chunk_count - 1
        options = sim.scenario.parallelism
        data_parallel = sim.dp_size > 1
        gathered: dict[int, list] = {}
        if data_parallel and plan.param_gather and options.overlap_param_gather:
            # Megatron-Core overlap_param_gather: the parameters updated by the previous step are gathered bucket by
            # bucket while this step's forward runs; each part of a chunk's first forward waits for its own bucket
            for chunk in sorted({w.chunk for w in plan.orders[self.stage]}):
                cost = plan.chunks[chunk]
                buckets = bucket_count(cost.param_bytes, plan.bucket_bytes, cost.layers)
                gathered[chunk] = [
                    sim.data_parallel(self, "all_gather", cost.param_bytes / buckets, f"param all_gather c{chunk}b{b}")
                    for b in range(buckets)]
        dp_pending = []
        for work in plan.orders[self.stage]:
            cost = plan.chunks[work.chunk]
            if data_parallel and options.zero_stage == 3:
                # ZeRO-3: the chunk's parameters are gathered before each use (not prefetched: conservative)
                yield from self._wait_data_parallel([sim.data_parallel(
                    self, "all_gather", cost.param_bytes, f"zero3 all_gather c{work.chunk}")])
            if work.phase == "forward" and work.chunk in gathered:
                if work.chunk > 0:
                    yield from self._receive(("forward", step_index, work.microbatch, work.chunk))
                parts = gathered.pop(work.chunk)
                for bucket, event in enumerate(parts):
                    yield from self._wait_data_parallel([event])
                    yield from self._compute("forward", work, cost.forward_compute_s / len(parts),
                                             cost.forward_tp_comm_s / len(parts), part=bucket)
                if work.chunk < last_chunk:
                    sim.send(self, ("forward", step_index, work.microbatch, work.chunk + 1), work.chunk + 1)
                continue
            if work.phase == "forward":
                if work.chunk > 0:
                    yield from self._receive(("forward", step_index, work.microbatch, work.chunk))
                yield from self._compute("forward", work, cost.forward_compute_s, cost.forward_tp_comm_s)
                if work.chunk < last_chunk:
                    sim.send(self, ("forward", step_index, work.microbatch, work.chunk + 1), work.chunk + 1)
                continue
            if work.chunk < last_chunk:
                yield from self._receive(("backward", step_index, work.microbatch, work.chunk))
            # gradients are reduced on the chunk's last microbatch, when they are final (PyTorch DDP, Megatron-Core
            # overlap_grad_reduce); ZeRO-2/3 keep only a gradient shard, so they reduce-scatter every microbatch
            final = work.microbatch == plan.microbatches - 1 or options.zero_stage >= 2
            if final and data_parallel and options.overlap_grad_reduce:
                # bucket by bucket, while the rest of the backward runs
                buckets = bucket_count(cost.grad_bytes, plan.bucket_bytes, cost.layers)
                for bucket in range(buckets):
                    yield from self._compute("backward", work, cost.backward_compute_s / buckets,
                                             cost.backward_tp_comm_s / buckets, part=bucket)
                    dp_pending.append(sim.data_parallel(self, plan.dp_grad_op, cost.grad_bytes / buckets,
                                                        f"grad {plan.dp_grad_op} c{work.chunk}b{bucket}"))
            else:
                yield from self._compute("backward", work, cost.backward_compute_s, cost.backward_tp_comm_s)
            if work.chunk > 0:
                sim.send(self, ("backward", step_index, work.microbatch, work.chunk - 1), work.chunk - 1)
        if data_parallel and not options.overlap_grad_reduce:
            # one reduction of each chunk's gradient buffer after the whole backward (Megatron-LM's 2021 DDP)
            for chunk in sorted({w.chunk for w in plan.orders[self.stage]}, reverse=True):
                dp_pending.append(sim.data_parallel(self, plan.dp_grad_op, plan.chunks[chunk].grad_bytes,
                                                    f"grad {plan.dp_grad_op} c{chunk}"))
        yield from self._wait_data_parallel(dp_pending)
        started_at_s = env.now
        yield env.timeout(plan.optimizer_s[self.stage])
        self.tally.optimizer_s += plan.optimizer_s[self.stage]
        sim.recorder.compute(self, "compute", "optimizer", -1, started_at_s, env.now)
        if data_parallel and plan.param_gather and not options.overlap_param_gather:
            param_bytes = sum(c.param_bytes for c in plan.chunks if c.stage == self.stage)
            yield from self._wait_data_parallel([sim.data_parallel(self, "all_gather", param_bytes,
                                                                   "param all_gather")])

    def _wait_data_parallel(self, events):
        """Block the compute stream on data-parallel collectives; the wait is exposed communication."""
        pending = [event for event in events if not event.triggered]
        if pending:
            started_at_s = self.sim.env.now
            yield self.sim.env.all_of(pending)
            self.tally.dp_wait_s += self.sim.env.now - started_at_s

    def _compute(self, phase: str, work, compute_s: float, tp_comm_s: float, part: int | None = None):
        """One fused timeout for a (chunk, microbatch, phase) block: compute, then its tensor-parallel collectives."""
        env = self.sim.env
        started_at_s = env.now
        yield env.timeout(compute_s + tp_comm_s)
        self.tally.compute_s += compute_s
        self.tally.tp_comm_s += tp_comm_s
        name = f"{phase} c{work.chunk}" + (f" b{part}" if part is not None else "")
        self.sim.recorder.compute(self, "compute", name, work.microbatch, started_at_s, started_at_s + compute_s)
        if tp_comm_s > 0:
            self.sim.recorder.compute(self, "tp", f"tp comm {name}", work.microbatch, started_at_s + compute_s,
                                      env.now)

    def _receive(self, key):
        """Wait for a pipeline message; the wait counts as communication once the message is on the wire."""
        env = self.sim.env
        message = self.sim.inbox(self, key)
        if message.arrived.triggered:
            return
        started_at_s = env.now
        yield message.arrived
        sent_at_s = message.sent_at_s if message.sent_at_s is not None else env.now
        on_wire_s = env.now - max(started_at_s, sent_at_s)
        self.tally.p2p_wait_s += on_wire_s
