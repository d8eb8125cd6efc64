"""GPU agents: one SimPy process per GPU, or per symmetry class of GPUs (a pipeline stage's data-parallel and
tensor-parallel replicas, which are exactly symmetric absent stragglers or faults).

An agent runs its pipeline stage's schedule on a compute stream; pipeline sends and data-parallel collectives run on
communication streams, so overlap follows from the dependencies rather than from hand-set ratios. What the ZeRO
stage and the overlap options change (when gradients are reduced, when parameters are gathered) is left to the
agent's two data-parallel strategies (``engine.data_parallel``), so the step itself reads as the schedule it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simcluster.engine.data_parallel import GradientReduction, ParameterGathering
from simcluster.engine.record import Tally
from simcluster.workload.interference import overlapped_s


@dataclass(eq=False)
class Agent:
    """A pipeline stage's ranks (collapsed) or one rank (expanded). ``ranks[0]`` is the representative."""

    sim: object
    stage: int
    ranks: list[int]
    gradients: GradientReduction
    parameters: ParameterGathering
    tally: Tally = field(default_factory=Tally)

    @property
    def rank(self) -> int:
        return self.ranks[0]

    @property
    def multiplicity(self) -> int:
        return len(self.ranks)

    def chunks(self) -> list[int]:
        """The model chunks this agent's stage holds, in order (read from the plan at each use: tests edit it)."""
        return sorted({w.chunk for w in self.sim.plan.orders[self.stage]})

    # ---- one training step ------------------------------------------------------------------------------------
    def step(self, step_index: int):
        """The stage's schedule, then the gradient reductions still pending, the optimizer and the parameters."""
        self.parameters.start_step(self)
        reductions = []
        for work in self.sim.plan.orders[self.stage]:
            yield from self.parameters.before_use(self, work)
            if work.phase == "forward":
                yield from self._forward(step_index, work)
            else:
                reductions += yield from self._backward(step_index, work)
        reductions += self.gradients.after_backward(self)
        yield from self.wait_data_parallel(reductions)
        yield from self._optimizer()
        yield from self.parameters.after_optimizer(self)

    def _forward(self, step_index: int, work):
        """One microbatch through one chunk: its activations in, its compute, its activations out."""
        if work.chunk > 0:
            yield from self._receive(("forward", step_index, work.microbatch, work.chunk))
        yield from self.parameters.forward(self, work)
        if work.chunk < self.sim.plan.chunk_count - 1:
            self.sim.send(self, ("forward", step_index, work.microbatch, work.chunk + 1), work.chunk + 1)

    def _backward(self, step_index: int, work):
        """One microbatch back through one chunk; returns the gradient reductions it started."""
        if work.chunk < self.sim.plan.chunk_count - 1:
            yield from self._receive(("backward", step_index, work.microbatch, work.chunk))
        reductions = yield from self.gradients.backward(self, work)
        if work.chunk > 0:
            self.sim.send(self, ("backward", step_index, work.microbatch, work.chunk - 1), work.chunk - 1)
        return reductions

    def _optimizer(self):
        env, optimizer_s = self.sim.env, self.sim.plan.optimizer_s[self.stage]
        started_at_s = env.now
        yield env.timeout(optimizer_s)
        self.tally.optimizer_s += optimizer_s
        self.sim.recorder.compute(self, "compute", "optimizer", -1, started_at_s, env.now)

    # ---- the streams ------------------------------------------------------------------------------------------
    def wait_data_parallel(self, events):
        """Block the compute stream on data-parallel collectives; the wait is exposed communication."""
        pending = [event for event in events if not event.triggered]
        if pending:
            started_at_s = self.sim.env.now
            yield self.sim.env.all_of(pending)
            self.tally.dp_wait_s += self.sim.env.now - started_at_s

    def compute(self, phase: str, work, part: int | None = None, parts: int = 1):
        """One block: part ``part`` of ``parts`` of a (chunk, microbatch, phase), fused into one timeout of compute,
        then its tensor-parallel collectives on the network.

        With context parallelism the key/value exchange runs on the network during the block's attention, and
        the block waits for whichever ends last. The TP collectives are blocking, as Megatron issues them between
        the GEMMs; with ``tp_comm_overlap`` they run under the compute, which waits for whichever ends last.
        Communication kernels beside the compute slow it (``engine.overlap``, ``interference.overlapped_s``): a
        block that starts while the data-parallel stream is busy runs slower while the queued collectives last at
        their time alone on the fabric (an estimate: the state at the block's start decides, and a collective
        started during the block does not slow it); the overlapped TP collectives slow it for their time alone.
        """
        sim = self.sim
        env, cost = sim.env, sim.plan.chunks[work.chunk]
        alone_s = getattr(cost, f"{phase}_compute_s") / parts
        compute_s = overlapped_s(alone_s, sim.data_parallel_busy_s(self), sim.slowdowns.dp[phase])
        name = f"{phase} c{work.chunk}" + (f" b{part}" if part is not None else "")
        started_at_s = env.now
        calls = share(cost.tp_collectives.get(phase, ()), part or 0, parts)
        tp_done = None
        if calls and sim.scenario.parallelism.tp_comm_overlap:  # Transformer Engine: they start with the compute
            tp_done = sim.tensor_parallel(self, calls, cost.tp_bytes, f"{name} m{work.microbatch}")
            compute_s = overlapped_s(compute_s, getattr(cost, f"{phase}_tp_comm_s") / parts, sim.slowdowns.tp[phase])
        cp_s = yield from self._context_parallel(phase, work, compute_s, part or 0, parts, name)
        if calls:
            if tp_done is None:
                tp_done = sim.tensor_parallel(self, calls, cost.tp_bytes, f"{name} m{work.microbatch}")
            if not tp_done.triggered:
                yield tp_done
        tp_comm_s = env.now - started_at_s - compute_s - cp_s
        tp_started_at_s = started_at_s + compute_s + cp_s
        self.tally.compute_s += compute_s
        self.tally.interference_s += compute_s - alone_s
        self.tally.cp_comm_s += cp_s
        self.tally.tp_comm_s += tp_comm_s
        sim.recorder.compute(self, "compute", name, work.microbatch, started_at_s, started_at_s + compute_s)
        if cp_s > 0:
            sim.recorder.compute(self, "cp", f"cp comm {name}", work.microbatch, started_at_s + compute_s,
                                 tp_started_at_s)
        if tp_comm_s > 0:
            sim.recorder.compute(self, "tp", f"tp comm {name}", work.microbatch, tp_started_at_s, env.now)

    def _context_parallel(self, phase: str, work, compute_s: float, part: int, parts: int, name: str):
        """The block's compute, its key/value exchange hidden behind the attention where it is shorter; returns the
        exposed exchange (seconds past the compute)."""
        sim, env = self.sim, self.sim.env
        exchange = sim.plan.chunks[work.chunk].cp_exchange.get(phase)
        steps = share((("ring", exchange[1]),), part, parts) if exchange else ()
        if not steps:
            yield env.timeout(compute_s)
            return 0.0
        started_at_s = env.now
        attention_s = exchange[0] / parts
        yield env.timeout(compute_s - attention_s)
        done = sim.context_parallel(self, steps[0][1], exchange[2], f"{name} m{work.microbatch}")
        yield env.timeout(attention_s)
        if not done.triggered:
            yield done
        return env.now - started_at_s - compute_s

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


def share(calls: tuple[tuple[str, int], ...], part: int, parts: int) -> tuple[tuple[str, int], ...]:
    """Part ``part`` of ``parts`` of a block's collectives ((op, count)): whole layers' collectives, the counts
    spread as evenly as integers allow."""
    if parts == 1:
        return tuple(call for call in calls if call[1] > 0)
    out = []
    for op, count in calls:
        mine = count * (part + 1) // parts - count * part // parts
        if mine > 0:
            out.append((op, mine))
    return tuple(out)
