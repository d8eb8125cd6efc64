"""GPU agents: one SimPy process per GPU, or per symmetry class of GPUs (a pipeline stage's data-parallel and
tensor-parallel replicas, which are exactly symmetric absent stragglers or faults).

An agent runs its pipeline stage's schedule on a compute stream; pipeline sends and data-parallel collectives run on
communication streams, so overlap follows from the dependencies rather than from hand-set ratios. What the ZeRO
stage and the overlap options change (when gradients are reduced, when parameters are gathered) is left to the
agent's two data-parallel strategies (``engine.data_parallel``), so the step itself reads as the schedule it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from simcluster.engine.data_parallel import GradientReduction, ParameterGathering, portion
from simcluster.engine.record import Tally
from simcluster.parallel import ep_overlap, param_gather_overlap
from simcluster.parallel.plan import GRAD_NORM_BYTES
from simcluster.parallel.schedules import (
    batches_next_receive,
    interleaved_blocking_sends,
    receive_posts,
    warmup_forwards,
)
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
    rank: int = field(init=False)          # ranks[0]: read on every event of the agent, so kept, not a property
    multiplicity: int = field(init=False)  # len(ranks)
    computing: tuple = field(init=False, default=("forward", 0.0, 0.0))  # (phase, start, end), launch_order

    def __post_init__(self):
        self.rank, self.multiplicity = self.ranks[0], len(self.ranks)

    def chunks(self) -> list[int]:
        """The model chunks this agent's stage holds, in order (read from the plan at each use: tests edit it)."""
        return sorted({w.chunk for w in self.sim.plan.orders[self.stage]})

    # ---- one training step ------------------------------------------------------------------------------------
    def step(self, step_index: int):
        """The stage's schedule, then the gradient reductions still pending, the step's last collectives
        (tied embedding, gradient norm), the optimizer and the parameters."""
        self.parameters.start_step(self)
        if self.sim.variability is not None:  # the barrier that ended the last step: no replica behind
            self.sim.variability.start_step(self)
        plan = self.sim.plan
        tail_s = plan.optimizer_tail_s[self.stage] if plan.optimizer_tail_s else 0.0
        if plan.optimizer_tail_s:  # the previous step's optimizer after its first chunk's update, under that chunk's
            # gathers: what of it the last step's barrier did not hold (param_gather_overlap.visible_tails_s), then
            # train_step's model-parallel reductions before the schedule starts
            visible_s = param_gather_overlap.visible_tails_s(plan.optimizer_s, plan.optimizer_tail_s)[self.stage]
            yield from self._optimizer(visible_s, "optimizer tail")
            self.tally.optimizer_s += tail_s - visible_s   # run during that barrier: busy, not on this step's clock
            yield from self.sim.model_parallel_sync(self, step_index)
        self.parameters.start_schedule(self)
        reductions = []
        order = self.sim.plan.orders[self.stage]
        warmup = self._warmup()
        blocking, posts = self._interleaved_exchanges(order, warmup)
        for index, work in enumerate(order):
            yield from self.parameters.before_use(self, work)
            then = self._batched_receive(step_index, order, index, warmup, blocking)
            early = [key for j in posts.get(index, ()) if (key := self._receive_key(step_index, order[j]))
                     ] if posts else ()
            if work.phase == "forward":
                yield from self._forward(step_index, work, then, index in blocking, early)
            else:
                reductions += yield from self._backward(step_index, work, then, index in blocking, early)
        reductions += yield from self.gradients.after_backward(self)
        if self.stage == self.sim.plan.layout.pp - 1 and self.sim.plan.deferred_wgrads:
            yield from self._deferred_wgrads()
        yield from self.wait_data_parallel(reductions)
        yield from self._finalize_gradients()
        yield from self._optimizer(self.sim.plan.optimizer_s[self.stage] - tail_s)
        yield from self.parameters.after_optimizer(self)

    def _forward(self, step_index: int, work, then=None, blocking: bool = False, early=()):
        """One microbatch through one chunk: its activations in, its compute, its activations out (``then``: the
        receive batched with the send; ``blocking``: an interleaved blocking exchange; ``early``: receives posted
        once the compute is done, ``schedules.receive_posts``)."""
        key = self._receive_key(step_index, work)
        if key is not None:
            yield from self._receive(key)
        yield from self.parameters.forward(self, work)
        self._post(early)
        if work.chunk < self.sim.plan.chunk_count - 1:
            yield from self._send(("forward", step_index, work.microbatch, work.chunk + 1), work.chunk + 1, then,
                                  blocking)

    def _backward(self, step_index: int, work, then=None, blocking: bool = False, early=()):
        """One microbatch back through one chunk; returns the gradient reductions it started."""
        key = self._receive_key(step_index, work)
        if key is not None:
            yield from self._receive(key)
        reductions = yield from self.gradients.backward(self, work)
        self._post(early)
        if work.chunk > 0:
            yield from self._send(("backward", step_index, work.microbatch, work.chunk - 1), work.chunk - 1, then,
                                  blocking)
        return reductions

    def _post(self, keys) -> None:
        """Post the receives ``keys`` (a blocking sender of one may start: ``Simulation.post_receive``)."""
        for key in keys:
            self.sim.post_receive(self, key)

    def _receive_key(self, step_index: int, work):
        """The message ``work`` waits for (None: the first chunk's forward, the last chunk's backward)."""
        if work.phase == "forward":
            return ("forward", step_index, work.microbatch, work.chunk) if work.chunk > 0 else None
        last = work.chunk == self.sim.plan.chunk_count - 1
        return None if last else ("backward", step_index, work.microbatch, work.chunk)

    def _warmup(self) -> int:
        """The stage's warm-up forwards (``schedules.warmup_forwards``), whose sends go alone."""
        plan = self.sim.plan
        p = plan.scenario.parallelism
        return warmup_forwards(p.schedule, plan.layout.pp, self.stage, plan.microbatches, p.virtual_stages)

    def _interleaved_exchanges(self, order, warmup: int) -> tuple[frozenset[int], dict]:
        """An interleaved order's blocking exchanges (``schedules.interleaved_blocking_sends``) and, with any, when
        each receive is posted (``schedules.receive_posts``): none without (``StepPlan.p2p_interleaved_blocking``)."""
        warm_up, flush = self.sim.plan.p2p_interleaved_blocking
        if not (warm_up or flush):
            return frozenset(), {}
        return interleaved_blocking_sends(order, warmup, warm_up, flush), receive_posts(order, warmup)

    def _batched_receive(self, step_index: int, order, index: int, warmup: int, blocking=frozenset()):
        """With blocking sends, the receive of ``order[index + 1]`` when Megatron batches it with the send after
        ``order[index]`` (``schedules.batches_next_receive``; ``warmup``: the order's warm-up forwards; ``blocking``:
        an interleaved order's blocking exchanges, each batched with the next block's receive); else None."""
        if index in blocking:
            return self._receive_key(step_index, order[index + 1]) if index + 1 < len(order) else None
        if not self.sim.plan.p2p_blocking:
            return None
        if not batches_next_receive(order, index, warmup):
            return None
        return self._receive_key(step_index, order[index + 1])

    def _deferred_wgrads(self):
        """The last stage's pipeline flush with defer_embedding_wgrad (``memory.deferred_output_wgrads``): the deferred
        output-layer wgrad GEMMs back to back, after the remaining gradient reductions were launched and before
        finalize_model_grads waits for them (Megatron-Core finish_embedding_wgrad_compute). With sequence
        parallelism each GEMM's input is all-gathered over the TP group first: the first gather alone, each next one
        while the previous GEMM runs (drain_embedding_wgrad_compute's double buffer); the wait is exposed TP
        communication."""
        sim, env, plan = self.sim, self.sim.env, self.sim.plan
        gathers = (("all_gather", 1),)
        gathered = None
        if plan.deferred_gather_bytes:
            gathered = sim.tensor_parallel(self, gathers, plan.deferred_gather_bytes, "deferred wgrad gather m0")
        for microbatch in range(plan.deferred_wgrads):
            if gathered is not None:
                waited_at_s = env.now
                if not gathered.triggered:
                    yield gathered
                self.tally.tp_comm_s += env.now - waited_at_s
                if env.now > waited_at_s:
                    sim.recorder.compute(self, "tp", "tp comm deferred wgrad gather", microbatch, waited_at_s, env.now)
                gathered = None
                if microbatch + 1 < plan.deferred_wgrads:
                    gathered = sim.tensor_parallel(self, gathers, plan.deferred_gather_bytes,
                                                   f"deferred wgrad gather m{microbatch + 1}")
            gemm_s = plan.deferred_wgrad_s
            if sim.variability is not None:  # per-GPU speed, stragglers, a jitter draw per GEMM (engine.variability)
                gemm_s = sim.variability.block_s(self, gemm_s, plan.deferred_wgrad_clock_s)
            compute_s = overlapped_s(gemm_s, sim.data_parallel_busy_s(self), sim.slowdowns.dp["backward"])
            started_at_s = env.now
            yield env.timeout(compute_s)
            self.tally.compute_s += compute_s
            self.tally.interference_s += compute_s - gemm_s
            sim.recorder.compute(self, "compute", "deferred wgrad", microbatch, started_at_s, env.now)

    def _finalize_gradients(self):
        """Megatron's collectives between the gradient reduction and the update, all on the critical path: with
        sequence parallelism each TP group all-reduces the gradients of the parameters its ranks hold whole (norms,
        router, MLA's down-projections: finalize_model_grads, parallel.sequence_parallel_grads; tensor-parallel
        communication), the first and last stage all-reduce the tied word-embedding gradient (finalize_model_grads;
        pipeline communication), then clipping all-reduces the gradient norm (optimizer.step -> clip_grad_norm: one fp32
        over the model-parallel group, or over every rank with the distributed optimizer; counted as data-parallel
        communication, the gradient synchronisation it completes). Waiting for the last member to arrive is bubble;
        from then on, communication."""
        plan = self.sim.plan
        if plan.sequence_parallel_grad_bytes and plan.sequence_parallel_grad_bytes[self.stage] > 0:
            yield from self._step_collective("sequence parallel", plan.sequence_parallel_grad_bytes[self.stage],
                                             "tp_comm_s")
        if plan.embedding_grad_bytes > 0 and self.stage in (0, plan.layout.pp - 1):
            yield from self._step_collective("embedding", plan.embedding_grad_bytes, "p2p_wait_s")
        if plan.grad_norm_axes:
            yield from self._step_collective("grad norm", GRAD_NORM_BYTES, "dp_wait_s")

    def _step_collective(self, kind: str, size_bytes: float, tally_field: str):
        env = self.sim.env
        arrived_at_s = env.now
        started_at_s = yield self.sim.step_collective(self, kind, size_bytes)
        exposed_s = env.now - max(arrived_at_s, started_at_s)
        setattr(self.tally, tally_field, getattr(self.tally, tally_field) + exposed_s)

    def _optimizer(self, optimizer_s: float, name: str = "optimizer"):
        """``optimizer_s`` of the optimizer step on the compute stream (split in two with
        ``overlap_param_gather_with_optimizer_step``: the tail after the first chunk's update runs at the step's
        start, ``GatherDuringForward``)."""
        env = self.sim.env
        if self.sim.variability is not None:  # per-GPU speed and stragglers (engine.variability)
            optimizer_s *= self.sim.variability.speed_of(self)
        started_at_s = env.now
        yield env.timeout(optimizer_s)
        self.tally.optimizer_s += optimizer_s
        self.sim.recorder.compute(self, "compute", name, -1, started_at_s, env.now)

    # ---- the streams ------------------------------------------------------------------------------------------
    def wait_data_parallel(self, events):
        """Block the compute stream on data-parallel collectives; the wait is exposed communication."""
        pending = [event for event in events if not event.triggered]
        if pending:
            started_at_s = self.sim.env.now
            yield self.sim.env.all_of(pending)
            self.tally.dp_wait_s += self.sim.env.now - started_at_s

    def compute(self, phase: str, work, part: int | None = None, parts=1):
        """One block: part ``part`` of ``parts`` of a (chunk, microbatch, phase), fused into one timeout of compute,
        then its tensor-parallel collectives on the network. ``parts``: a count of equal parts, or
        ``data_parallel.Cuts`` (parts as long as their units, a layer's collectives with its layer).

        With context parallelism the key/value exchange runs on the network during the block's attention, and
        the block waits for whichever ends last. The TP collectives are blocking, as Megatron issues them between
        the GEMMs, and so are the MoE layers' dispatch and combine all-to-alls (after them, over the EP groups);
        with ``tp_comm_overlap`` the TP collectives run under the compute, which waits for whichever ends last, and
        with ``ep_overlap`` the all-to-alls do (only what outlasts the compute is exposed).
        Communication kernels beside the compute slow it (``engine.overlap``, ``interference.overlapped_s``): a
        block that starts while the data-parallel stream is busy runs slower while the queued collectives last at
        their time alone on the fabric (an estimate: the state at the block's start decides, and a collective
        started during the block does not slow it); the overlapped TP collectives slow it for their time alone.
        """
        sim = self.sim
        env = sim.env
        # a backward whose output-layer wgrad is deferred to the flush (memory.deferred_output_wgrads) is its own block
        deferred = (phase == "backward" and work.microbatch < sim.plan.deferred_wgrads
                    and work.chunk == sim.plan.chunk_count - 1)
        key = (work.chunk, phase, part, parts, deferred) if deferred else (work.chunk, phase, part, parts)
        block = sim.blocks.get(key)
        if block is None:
            block = sim.blocks[key] = _Block.of(sim.plan.chunks[work.chunk], work.chunk, phase, part, parts, deferred)
        cost, alone_s, name, calls, ep_calls, blocking_calls, clock_s, span, per_layer = block
        if phase == "forward" and work.microbatch == 0 and not part and cost.first_forward_s > 0:
            yield from self._first_forward(work, cost.first_forward_s)
        if sim.variability is not None:  # per-GPU speed, stragglers, jitter (engine.variability)
            alone_s = sim.variability.block_s(self, alone_s, clock_s)
        compute_s = overlapped_s(alone_s, sim.data_parallel_busy_s(self), sim.slowdowns.dp[phase])
        compute_s = overlapped_s(compute_s, sim.pipeline_busy_s(self), sim.slowdowns.pp[phase])  # async p2p kernels
        started_at_s = env.now
        ep_done = partner = None
        if ep_calls and sim.plan.ep_overlap is not None:  # merged with another microbatch's work (parallel.ep_overlap)
            partner = sim.plan.ep_overlap.partners[self.stage].get((phase, work.chunk, work.microbatch))
            if partner is not None:  # steady state: the all-to-alls start with the compute
                ep_done = sim.expert_parallel(self, ep_calls, cost.ep_bytes, f"{name} m{work.microbatch}")
                ep_ended = [started_at_s]  # when they end (their time on the network, contention counted)
                if ep_done.callbacks is not None:
                    ep_done.callbacks.append(lambda _event, box=ep_ended: box.__setitem__(0, env.now))
        tp_done = None
        # Transformer Engine's overlap, or (overlap off) the backward's async collectives: they start with the compute
        if calls and (sim.scenario.parallelism.tp_comm_overlap or (phase == "backward" and cost.tp_async_backward)):
            tp_done = sim.tensor_parallel(self, calls, cost.tp_bytes, f"{name} m{work.microbatch}",
                                          op_bytes=cost.tp_op_bytes)
            compute_s = overlapped_s(compute_s, getattr(cost, f"{phase}_tp_comm_s") / per_layer,
                                     sim.slowdowns.tp[phase])
        self.computing = (phase, started_at_s, started_at_s + compute_s)
        if cost.cp_exchange.get(phase):
            cp_s = yield from self._context_parallel(phase, work, compute_s, span, per_layer, name)
        else:  # no key/value exchange: the compute alone (one generator less per block)
            yield env.timeout(compute_s)
            cp_s = 0.0
        # the exposed TP wait is measured from this instant: subtracting the durations from env.now instead leaves
        # float noise (a few 1e-16 s, either sign), which was recorded as zero-length "tp comm" events
        tp_started_at_s = env.now
        if phase == "backward" and cost.tp_async_exposed_s > 0:  # async collectives outlasting their GEMMs
            yield env.timeout(cost.tp_async_exposed_s / per_layer)
        if calls:
            if tp_done is None:
                yield from sim.tensor_parallel_blocking(self, calls, cost.tp_bytes, f"{name} m{work.microbatch}",
                                                        op_bytes=cost.tp_op_bytes)
            elif not tp_done.triggered:
                yield tp_done
        if blocking_calls:  # async TP's unfused collectives, Megatron's synchronous backward ones: after the compute
            yield from sim.tensor_parallel_blocking(self, blocking_calls, cost.tp_bytes, f"{name} m{work.microbatch}",
                                                    op_bytes=cost.tp_op_bytes)
        tp_comm_s = env.now - tp_started_at_s
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
        if ep_calls:
            overlapped = (partner, started_at_s, compute_s, ep_ended) if ep_done is not None else None
            yield from self._expert_parallel(phase, work, span, name, ep_calls, ep_done, overlapped)

    def _first_forward(self, work, duration_s: float):
        """A chunk's work on a step's first microbatch only, before its forward (``ChunkCost.first_forward_s``:
        Transformer Engine's fp8 weight quantize), on the compute stream, slowed like the rank's other kernels."""
        if self.sim.variability is not None:  # per-GPU speed and stragglers (engine.variability)
            duration_s *= self.sim.variability.speed_of(self)
        started_at_s = self.sim.env.now
        yield self.sim.env.timeout(duration_s)
        self.tally.compute_s += duration_s
        self.sim.recorder.compute(self, "compute", f"fp8 weight quantize c{work.chunk}", work.microbatch,
                                  started_at_s, started_at_s + duration_s)

    def _expert_parallel(self, phase: str, work, span: tuple[int, int, int], name: str, calls, done,
                         overlapped=None):
        """The block's token dispatch and combine all-to-alls (``calls``), then its expert-TP collectives: blocking,
        as Megatron-Core's alltoall dispatcher runs them; the wait is exposed expert-parallel communication.

        ``done`` when already started with the compute (``ep_overlap``, a block merged with ``overlapped`` =
        (partner chunk, the block's start, its compute time)): each all-to-all hides under one sub-stage of the
        partner only, and its kernels slow the compute while they run beside it (``parallel.ep_overlap``): the block
        lasts its slowed compute plus the exposed all-to-all time, and no less than the all-to-alls on the network."""
        sim, env = self.sim, self.sim.env
        cost = sim.plan.chunks[work.chunk]
        label = f"{name} m{work.microbatch}"
        started_at_s = env.now
        if done is None:
            done = sim.expert_parallel(self, calls, cost.ep_bytes, label)
        if not done.triggered:
            yield done
        if overlapped is not None:
            slowed_s = yield from self._merged_all_to_alls(phase, calls, overlapped, started_at_s)
            self.tally.compute_s += slowed_s
            self.tally.interference_s += slowed_s
            started_at_s += slowed_s  # the rest of the wait is exposed communication
        etp_calls = share(cost.etp_collectives.get(phase, ()), *span)
        if etp_calls:
            etp_done = sim.expert_parallel(self, etp_calls, cost.etp_bytes, label, axis="etp")
            if not etp_done.triggered:
                yield etp_done
        self.tally.ep_comm_s += env.now - started_at_s
        if env.now > started_at_s:
            sim.recorder.compute(self, "ep", f"ep comm {name}", work.microbatch, started_at_s, env.now)

    def _merged_all_to_alls(self, phase: str, calls, overlapped, waited_at_s: float):
        """After a merged block's all-to-alls ended: wait until the compute's slowdown by their kernels and their
        exposed time (``parallel.ep_overlap.exposed_s``) have passed since the block's compute and TP collectives
        ended (``waited_at_s``); returns the slowdown (seconds)."""
        sim, env = self.sim, self.sim.env
        overlap = sim.plan.ep_overlap
        partner, block_started_at_s, compute_s, ended = overlapped
        other = "backward" if phase == "forward" else "forward"
        attention_s, mlp_s = sim.plan.chunks[partner].ep_substages[other]
        count = sum(n for _, n in calls)
        a2a_s = ended[0] - block_started_at_s  # from their launch with the compute to their end
        exposed_s = ep_overlap.exposed_s(a2a_s, count, count // overlap.calls_per_layer[phase],
                                         sim.plan.chunks[partner].moe_layers, attention_s, mlp_s)
        slowed_s = overlapped_s(compute_s, max(0.0, a2a_s - exposed_s), overlap.slowdown[phase]) - compute_s
        ends_at_s = waited_at_s + slowed_s + exposed_s
        if ends_at_s > env.now:
            yield env.timeout(ends_at_s - env.now)
        return min(slowed_s, env.now - waited_at_s)

    def _context_parallel(self, phase: str, work, compute_s: float, span: tuple[int, int, int], per_layer: float,
                          name: str):
        """The block's compute, its key/value exchange hidden behind the attention where it is shorter; returns the
        exposed exchange (seconds past the compute). ``span``: the block's layers lo..hi of n, ``per_layer`` = n /
        (hi - lo) (``_Block``)."""
        sim, env = self.sim, self.sim.env
        exchange = sim.plan.chunks[work.chunk].cp_exchange.get(phase)
        steps = share((("ring", exchange[1]),), *span) if exchange else ()
        if not steps:
            yield env.timeout(compute_s)
            return 0.0
        attention_s = min(exchange[0] / per_layer, compute_s)  # a faster-than-median GPU shortens it too
        yield env.timeout(compute_s - attention_s)
        done = sim.context_parallel(self, steps[0][1], exchange[2], f"{name} m{work.microbatch}")
        yield env.timeout(attention_s)
        if done.triggered:  # hidden: no wait (measured, not subtracted, so no float noise)
            return 0.0
        computed_at_s = env.now
        yield done
        return env.now - computed_at_s

    def _send(self, key, chunk: int, then, blocking: bool = False):
        """Send ``key`` to the stage holding ``chunk``. Asynchronous sends let the sender go on. A blocking send
        (``parallelism.p2p``, or ``blocking``: an interleaved warm-up or cool-down exchange) posts the receive
        ``then`` batched with it, starts once its receiver has posted the matching receive (an NCCL send completes
        only into a posted receive) and holds the sender until it arrives: the wait for the receiver is bubble, the
        time on the wire exposed pipeline communication."""
        sim, env = self.sim, self.sim.env
        if not (sim.plan.p2p_blocking or blocking) or sim.plan.stage_of(chunk) == self.stage:
            sim.send(self, key, chunk)
            return
        if then is not None:
            message = sim.post_receive(self, then)
            # DeepSpeed: the gradient's and the activation's transfers in series (parallel.deepspeed_pipeline)
            if sim.plan.p2p_sequential and then[0] == "backward" and not message.arrived.triggered:
                waited_at_s = env.now
                yield message.arrived
                sent_at_s = env.now if message.sent_at_s is None else message.sent_at_s
                self.tally.p2p_wait_s += env.now - max(waited_at_s, sent_at_s)
        ready = sim.receiver_ready(self, key, chunk)
        if not ready.triggered:
            yield ready
        started_at_s = env.now
        done = sim.send(self, key, chunk, overlapped=False)  # the sender waits: no compute beside its kernel
        if not done.triggered:
            yield done
        self.tally.p2p_wait_s += env.now - started_at_s

    def _receive(self, key):
        """Wait for a pipeline message; the wait counts as communication once the message is on the wire. A
        scattered message (no sequence parallelism) is then all-gathered over the TP group, also counted as
        pipeline communication."""
        sim, env = self.sim, self.sim.env
        posts = sim.plan.p2p_blocking or any(sim.plan.p2p_interleaved_blocking)
        message = sim.post_receive(self, key) if posts else sim.inbox(self, key)
        if not message.arrived.triggered:
            started_at_s = env.now
            yield message.arrived
            sent_at_s = message.sent_at_s if message.sent_at_s is not None else env.now
            self.tally.p2p_wait_s += env.now - max(started_at_s, sent_at_s)
        sim.received(self, key)
        if sim.plan.p2p_gather_bytes > 0:
            yield from self._gather(key)

    def _gather(self, key):
        """Megatron's scatter/gather of pipeline messages: the pieces sent by the TP ranks are all-gathered over
        the receiver's TP group (``Simulation.tensor_parallel``, on the network)."""
        sim, env = self.sim, self.sim.env
        phase, _step, microbatch, chunk = key
        started_at_s = env.now
        done = sim.tensor_parallel(self, (("all_gather", 1),), sim.plan.p2p_gather_bytes, f"pp gather {key}",
                                   tag="pp gather")
        if not done.triggered:
            yield done
        self.tally.p2p_wait_s += env.now - started_at_s
        sim.recorder.transfer(self, "pp", f"gather {phase} c{chunk}", microbatch, started_at_s, env.now,
                              sim.plan.p2p_gather_bytes)


class _Block(NamedTuple):
    """What a block's every run reads from the plan (``Agent.compute``; made once per simulation and block)."""

    cost: object
    alone_s: float
    name: str
    calls: tuple
    ep_calls: tuple
    blocking_calls: tuple  # TP collectives that stay blocking under tp_comm_overlap (ChunkCost.tp_blocking)
    clock_s: float  # of alone_s, the part the SM clock sets (ChunkCost.forward_clock_s; engine.variability)
    span: tuple[int, int, int]  # the block's layers lo..hi of the chunk's n, whose per-layer work it runs
    per_layer: float  # n / (hi - lo): what the chunk's per-layer times (TP, ring attention) are divided by

    @classmethod
    def of(cls, cost, chunk: int, phase: str, part: int | None, parts, deferred: bool = False) -> _Block:
        compute_s = cost.deferred_backward_compute_s if deferred else getattr(cost, f"{phase}_compute_s")
        clock_s = cost.deferred_backward_clock_s if deferred else getattr(cost, f"{phase}_clock_s")
        alone_s, lo, hi, n = portion(cost, phase, part, parts, deferred)
        # the SM clock's part in proportion (equal parts: exactly its share)
        clock_s = clock_s / parts if isinstance(parts, int) else clock_s * alone_s / compute_s if compute_s else 0.0
        return cls(cost, alone_s,
                   f"{phase} c{chunk}" + (f" b{part}" if part is not None else ""),
                   share(cost.tp_collectives.get(phase, ()), lo, hi, n),
                   share(cost.ep_collectives.get(phase, ()), lo, hi, n),
                   share(cost.tp_blocking.get(phase, ()), lo, hi, n), clock_s, (lo, hi, n),
                   n / (hi - lo) if hi > lo else float("inf"))


def share(calls: tuple[tuple[str, int], ...], lo: int, hi: int, n: int) -> tuple[tuple[str, int], ...]:
    """Layers lo..hi of n's share of a block's collectives ((op, count)): whole layers' collectives, the counts
    spread as evenly as integers allow."""
    if n == 1 and (lo, hi) == (0, 1):
        return tuple(call for call in calls if call[1] > 0)
    out = []
    for op, count in calls:
        mine = count * hi // n - count * lo // n
        if mine > 0:
            out.append((op, mine))
    return tuple(out)
