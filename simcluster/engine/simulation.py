"""The training-step simulation: SimPy environment, agents, network and recorder, owned by one object."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import itertools
import time

import numpy as np
import simpy

from simcluster import network
from simcluster.collectives import deepep, timing
from simcluster.core import catalog
from simcluster.engine import data_parallel, variability
from simcluster.engine.agents import Agent
from simcluster.engine.aligned_reduction import aligned
from simcluster.engine.drivers import CollectiveDriver, Groups, NetworkDriver
from simcluster.engine.merge import (
    LOWER_BOUND_ABOVE,
    NO_MERGE,
    SPLIT_PASSES,
    SYMMETRIC,
    MergePolicy,
    NoMerge,
    SameLabelAndSize,
    SplitKeys,
    default_policy,
)
from simcluster.engine.overlap import Slowdowns, launch_delays, slowdowns
from simcluster.engine.record import AgentTally, FabricLinks, RunRecord, SymmetryCheck
from simcluster.engine.recorder import Recorder
from simcluster.engine.results import Result, summarize
from simcluster.fabric import bom, topology
from simcluster.network.base import TransferClass
from simcluster.parallel import layout as layout_mod
from simcluster.parallel import memory
from simcluster.parallel.plan import plan as step_plan
from simcluster.spec.config import Scenario
from simcluster.workload import moe
from simcluster.workload.ops import recompute_mode, shard_for


@dataclasses.dataclass(eq=False)
class Message:
    """A pipeline message to an agent: fires ``arrived`` when on the receiver; ``sent_at_s`` when put on the wire;
    ``posted`` (blocking sends only) fires when the receiver has posted its receive."""

    arrived: simpy.Event
    sent_at_s: float | None = None
    posted: simpy.Event | None = None


class Simulation:
    """One scenario on one fabric with one network model.

    ``expand=False`` (default) collapses each pipeline stage's data-, context- and tensor-parallel replicas into one
    representative agent; the network still carries every replica's traffic, so contention is exact. ``expand=True``
    runs one agent per GPU; both give the same step time on a symmetric fabric. ``merge`` decides which transfers
    of one instant the network solves as one class (``engine.merge``; default: ``SYMMETRIC`` collapsed, checked by
    the network model and reported in the summary's ``symmetry``; ``NO_MERGE`` expanded, the reference).
    ``shared_network`` (``engine.jobs.JobNetwork``): run as one of several jobs, in their environment and on their
    one network (its merge policy then applies); ``fabric`` is then the job's placed view of the shared fabric.
    ``link_windows=False``: the network model keeps no bytes per link per time window (``make_network``), for a
    caller that reads the step and not the links' peaks (``validate``): the same times, no peak utilisation.
    """

    def __init__(self, scenario: Scenario, network_model: str | None = None, expand: bool = False, fabric=None,
                 check_memory: bool = True, merge: MergePolicy | None = None, shared_network=None,
                 link_windows: bool = True):
        # as it runs: a defaulted deferral of the output layer's wgrad that would not fit is off (memory.py)
        scenario = self.scenario = memory.with_fitting_deferral(scenario)
        # a layout that does not fit fails before anything is built
        self.memory = memory.check_fits(scenario) if check_memory else memory.per_gpu_memory(scenario)
        self.network_name = network_model or scenario.network
        self.fabric = fabric or topology.from_scenario(scenario)
        # the fabric's prices, checked before the run (a typo in economics.fabric_prices fails now, not at the end)
        self.fabric_prices = bom.costs(scenario.economics.fabric_prices, scenario.economics.fabric_lifetime_years)
        self.plan = step_plan(scenario, functools.partial(timing.isolated_time_s, self.fabric))
        layout = self.plan.layout
        ranks = np.arange(layout.world_size, dtype=np.int64)
        self._stage_of = (ranks - layout.moved(ranks, "pp", 0)) // int(layout.moved(0, "pp", 1))   # each rank's pp
        if shared_network is not None:  # one of several jobs on one fabric (engine.jobs): their traffic shares it
            self.env, self.model, self.net = shared_network.env, shared_network.model, shared_network
        else:
            self.env = simpy.Environment()
            # one network for all traffic, seen through NCCL's measured efficiencies (ring, Simple protocol)
            self.model = make_network(self.network_name, self.fabric, link_windows)
            policy = merge or default_policy(expand)
            if isinstance(policy, SameLabelAndSize):   # merges by stage, and by path latency as the model reads it
                policy = policy.bind(self.model.fabric, self._stage_of)
            self.net = NetworkDriver(self.env, self.model, policy)
        self.recorder = Recorder()
        self.expand = expand
        self.dp_size = layout.dp * layout.cp
        # the simulation's one random generator (Mesa style); variability draws from it (None: every GPU alike)
        self.rng = np.random.default_rng(scenario.variability.seed if scenario.variability else 0)
        self.variability = variability.of(scenario, layout, self.rng, expand)
        # DeepEP's routing (copies per node/GPU), with the sampling noise of the tokens an EP group routes, and its
        # kernels' measured rates, intranode SM-bound and internode on the NIC (collectives/deepep.py; the flex
        # dispatcher's: NCCL's otherwise)
        m, p = scenario.model, scenario.parallelism
        flex = p.moe_dispatcher == "flex"
        self._ep_routing = (moe.token_routing(m.moe, moe.ep_group_tokens(m, shard_for(scenario), p.ep, p.etp),
                                              deepep.intranode_ratio(scenario.cluster.gpu) if flex else 0.0,
                                              deepep.internode_ratio(scenario.cluster.nic) if flex else 0.0)
                            if m.moe is not None else None)
        self.collective_driver = CollectiveDriver(self.env, self.fabric, self.net,
                                                  self.variability and self.variability.latency_noise)
        if expand:
            self.agents = [self._agent(layout.coords(r)["pp"], [r]) for r in range(layout.world_size)]
            self._agent_of_rank = {agent.rank: agent for agent in self.agents}
        else:
            self.agents = [self._agent(s, np.flatnonzero(self._stage_of == s).tolist()) for s in range(layout.pp)]
            self._agent_of_rank = {r: agent for agent in self.agents for r in agent.ranks}
        self._messages: dict = {}
        # (step, dp, cp) -> the arrival events of a model-parallel group's agents (model_parallel_sync)
        self._model_parallel_syncs: dict = {}
        # a rank's data-parallel streams (engine.data_parallel.communicator_streams): one per rank, keyed by the rank,
        # or with ``_dp_stream_per_group`` a second one, keyed (rank, "experts"), for its expert data-parallel group
        self._dp_streams: dict = {}
        self._dp_busy_until: dict = {}  # when each data-parallel stream empties, at isolated times
        self._dp_stream_per_group = data_parallel.communicator_streams(self.scenario)
        self._last_reduction: dict = {}  # rank -> (stream key, completion event) of its last reduction
        self._rendezvous: dict = {}
        self._pairs: dict = {}
        self._p2p_busy_until: dict = {}  # rank -> when its asynchronous pipeline kernels leave the wire (isolated)
        self._p2p_alone_s: dict = {}  # (rank, stage) -> a send's time alone on the wire, 0 when not charged
        self._groups_cache: dict = {}

    def _agent(self, stage: int, ranks: list[int]) -> Agent:
        gradients, parameters = data_parallel.strategies(self.scenario.parallelism, self.plan, self.dp_size > 1)
        # pipelined: when each stage starts its chunks' reductions, as Megatron's schedules align them
        return Agent(self, stage, ranks, aligned(gradients, self.scenario, self.plan, stage), parameters)

    # ---- pipeline messages ------------------------------------------------------------------------------------
    def inbox(self, agent: Agent, key) -> Message:
        full_key = (agent.rank, key)
        if full_key not in self._messages:
            self._messages[full_key] = Message(self.env.event())
        return self._messages[full_key]

    def send(self, agent: Agent, key, chunk: int, overlapped: bool | None = None) -> simpy.Event:
        """Send the activation (or its gradient) of ``key`` from ``agent`` to the stage holding ``chunk``; returns
        the event of its arrival. ``overlapped``: whether both ends compute while it is on the wire (its kernels
        then slow that compute, ``_p2p_beside_compute``); unset, whether the plan's sends are asynchronous."""
        plan = self.plan
        dst_stage = plan.stage_of(chunk)
        transfers, receiver = self._peer_sends(agent, dst_stage, plan.p2p_bytes)
        message = self.inbox(receiver, key)
        message.sent_at_s = self.env.now
        if dst_stage == agent.stage:
            fire(message.arrived)
            return message.arrived
        started_at_s = self.env.now
        if overlapped is None:
            overlapped = not plan.p2p_blocking
        if overlapped:  # its kernels run beside both ends' compute while it is on the wire
            self._p2p_beside_compute(agent, receiver, dst_stage)
        done = self.net.transfer(transfers)
        done.callbacks.append(lambda _event: self._delivered(agent, message, key, started_at_s))
        return done

    def _p2p_beside_compute(self, sender: Agent, receiver: Agent, stage: int) -> None:
        """An asynchronous pipeline send from ``sender`` to ``stage`` holds NCCL's p2p kernel on the sender and on
        the receiver (interference.yaml ``ctas.p2p_network``): each end's compute is slowed while it is on the wire
        (``pipeline_busy_s``), for its time alone there (an estimate, as for the data-parallel stream), after any
        earlier exchange still on it (kernels at once each hold their SMs: their times add). Charged across nodes
        only: a peer on the same node is not (no sourced count of NVLink p2p CTAs)."""
        key = (sender.rank, stage)
        alone_s = self._p2p_alone_s.get(key)
        if alone_s is None:
            peer = int(self.plan.layout.moved(sender.rank, "pp", stage))
            per_node = self.scenario.cluster.gpus_per_node
            alone_s = 0.0
            if sender.rank // per_node != peer // per_node:  # one time alone a boundary's cross-node pairs
                boundary = ("across", sender.stage, stage)
                if boundary not in self._p2p_alone_s:
                    self._p2p_alone_s[boundary] = timing.isolated_time_s(
                        self.fabric, "sendrecv_ring", (sender.rank, peer), self.plan.p2p_bytes)
                alone_s = self._p2p_alone_s[boundary]
            self._p2p_alone_s[key] = alone_s
        if alone_s > 0:
            now = self.env.now
            for end in (sender, receiver):
                self._p2p_busy_until[end.rank] = max(self._p2p_busy_until.get(end.rank, 0.0), now) + alone_s

    def pipeline_busy_s(self, agent: Agent) -> float:
        """How much longer asynchronous pipeline exchanges to or from another node hold their kernels on ``agent``
        (``_p2p_beside_compute``); 0 when none is on the wire."""
        return max(0.0, self._p2p_busy_until.get(agent.rank, 0.0) - self.env.now)

    def received(self, agent: Agent, key) -> None:
        """``agent`` has taken message ``key`` from its inbox (sent and arrived): forget it (an expanded run keeps
        a message per GPU and microbatch otherwise)."""
        del self._messages[(agent.rank, key)]

    def post_receive(self, agent: Agent, key) -> Message:
        """``agent`` posts its receive of ``key``: a blocking sender of it may start (``receiver_ready``); returns
        the message."""
        message = self.inbox(agent, key)
        if message.posted is None:  # no sender waits for it: posted already, without an event on the queue
            message.posted = self._already_posted
        elif not message.posted.triggered:
            message.posted.succeed()
        return message

    @functools.cached_property
    def _already_posted(self) -> simpy.Event:
        """A processed event: what ``receiver_ready`` returns for a receive posted before its sender asked (the
        sender tests ``triggered`` and goes on, as it would once the event had been processed)."""
        event = self.env.event()
        event._ok, event._value, event.callbacks = True, None, None
        return event

    def receiver_ready(self, agent: Agent, key, chunk: int) -> simpy.Event:
        """The event of the receiver of ``key`` (the stage holding ``chunk``) posting its receive: an NCCL send
        larger than its buffers completes only into a posted receive."""
        _transfers, receiver = self._peer_sends(agent, self.plan.stage_of(chunk), self.plan.p2p_bytes)
        message = self.inbox(receiver, key)
        if message.posted is None:
            message.posted = self.env.event()
        return message.posted

    def _peer_sends(self, agent: Agent, stage: int, size_bytes: float) -> tuple[TransferClass, Agent]:
        """The pipeline send of every rank ``agent`` stands for to the same rank moved to ``stage``: one part per
        rank (each replica's send is its own transfer). The label names the stage boundary, so only the same
        boundary's sends in other replicas can merge into one class. Cached with the receiving agent (of the first
        rank's send): the network routes a class once."""
        key = (agent.rank, stage, size_bytes)
        if key not in self._pairs:
            ranks = np.asarray(agent.ranks, dtype=np.int64)
            pairs = np.stack([ranks, self.plan.layout.moved(ranks, "pp", stage)], axis=1)
            self._pairs[key] = (TransferClass(pairs, size_bytes, label=f"pp {agent.stage}->{stage}",
                                              parts=np.arange(len(pairs)) if len(pairs) > 1 else None),
                                self._agent_of_rank[int(pairs[0, 1])])
        return self._pairs[key]

    def _groups(self, agent: Agent, axes: tuple[str, ...]) -> list[tuple[int, ...]]:
        """The groups along ``axes`` of ``agent``'s ranks (each rank with the peers that differ from it only on
        those axes), sorted; cached. ("dp", "cp"): the ranks holding the same parameters; ("tp",): a TP group."""
        key = (agent.rank, axes)
        if key not in self._groups_cache:
            if agent.multiplicity == 1:  # expanded: looked up in every rank's groups; one list per group, shared
                bases, members = self._every_group(axes)
                row = int(np.searchsorted(members[:, 0], bases[agent.rank]))
                shared = ("group", axes, row)
                if shared not in self._groups_cache:
                    self._groups_cache[shared] = Groups([tuple(members[row].tolist())])
                self._groups_cache[key] = self._groups_cache[shared]
            else:
                bases = self._bases(np.asarray(agent.ranks, dtype=np.int64), axes)
                self._groups_cache[key] = Groups(sorted(map(tuple, self._members(np.unique(bases), axes).tolist())))
        return self._groups_cache[key]

    def _every_group(self, axes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Every rank's group base (``_bases``) and every group's members (rows sorted by base, which is each
        row's first member); made once per ``axes``: an expanded run's agents look theirs up (building each
        agent's group alone costs a numpy call per member, O(N^2) in all at 16k GPUs)."""
        key = ("every group", axes)
        if key not in self._groups_cache:
            bases = self._bases(np.arange(self.plan.layout.world_size, dtype=np.int64), axes)
            self._groups_cache[key] = bases, self._members(np.unique(bases), axes)
        return self._groups_cache[key]

    def _bases(self, ranks: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        """Each rank's group named by its first member: the rank with ``axes`` moved to 0."""
        for axis in axes:
            ranks = self.plan.layout.moved(ranks, axis, 0)
        return ranks

    def _members(self, bases: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        """Row ``i``: the group of ``bases[i]``, members in the order of ``axes``' coordinates (the first axis's
        slowest). A member is its base with ``axes`` moved to 0 plus, per axis, its coordinate times the axis's
        stride (``Layout.stride``): one sum of two arrays, not a ``Layout.moved`` per member and axis (32,896 calls
        at 131,072 GPUs)."""
        layout = self.plan.layout
        assert len(set(axes)) == len(axes), axes   # an axis twice would add its offsets twice
        offsets = np.zeros(1, dtype=np.int64)
        for axis in axes:   # the last axis's coordinate varies fastest, as in ``itertools.product``
            offsets = (offsets[:, None] + layout.stride(axis) * np.arange(getattr(layout, axis), dtype=np.int64)
                       ).reshape(-1)
        return self._bases(np.asarray(bases, dtype=np.int64), axes)[:, None] + offsets[None, :]

    def _delivered(self, agent: Agent, message: Message, key, started_at_s: float) -> None:
        fire(message.arrived)
        phase, _step, microbatch, chunk = key
        self.recorder.transfer(agent, "pp", f"send {phase} to c{chunk}", microbatch, started_at_s, self.env.now,
                               self.plan.p2p_bytes)

    @functools.cached_property
    def blocks(self) -> dict:
        """What each compute block reads from the plan, by (chunk, phase, part, parts) (``Agent.compute``), and each
        gradient-scaling kernel's time by ("grad scale", bytes) (``data_parallel.scale_bucket``)."""
        return {}

    # ---- data-parallel collectives ----------------------------------------------------------------------------
    @functools.cached_property
    def slowdowns(self) -> Slowdowns:
        """How much compute slows beside this run's communication kernels (``engine.overlap``)."""
        return slowdowns(self.scenario, self.plan.layout)

    @functools.cached_property
    def launch_delays(self) -> dict | None:
        """Per phase, the mean wait of a data-parallel kernel launched during compute behind a resident persistent
        GEMM (first in its queue, after a collective kernel); None when ``launch_order`` does not apply."""
        return launch_delays(self.scenario)

    def data_parallel_busy_s(self, agent: Agent) -> float:
        """How much longer ``agent``'s data-parallel stream stays busy (its kernels hold SMs): the collectives
        queued on it, each for its time alone on the fabric (an estimate: contention and late peers make them
        longer); 0 when it is idle. With a second stream (``_dp_stream_per_group``) the two queues add: kernels
        running at once each hold their SMs, and the compute loses the sum of what each alone takes from it."""
        keys = (agent.rank, (agent.rank, "experts")) if self._dp_stream_per_group else (agent.rank,)
        busy_s = 0.0
        for key in keys:  # two streams at once hold both kernels' SMs: their times add (interference.overlapped_s)
            last = self._dp_streams.get(key)
            if last is not None and not last.triggered:
                busy_s += max(0.0, self._dp_busy_until[key] - self.env.now)
        return busy_s

    def data_parallel(self, agent: Agent, op: str, size_bytes: float, name: str, experts: bool = False
                      ) -> simpy.Event:
        """Queue a collective over the data-parallel groups of ``agent``'s ranks on its data-parallel stream
        (``experts``: over its expert data-parallel groups, which hold routed-expert parameters, instead).

        The collective starts when every member rank has reached it and finished its previous one on the same
        stream (NCCL runs a communicator's collectives in order, whatever CUDA stream each is issued on); it returns
        the event of its completion. The dense and expert groups share one stream, in issue order, unless the stack
        runs them on communicators of their own (``_dp_stream_per_group``: then the expert group's collectives
        queue on a second stream, and the two run at once, sharing the links through the network model).
        """
        done = self.env.event()
        key = (agent.rank, "experts") if experts and self._dp_stream_per_group else agent.rank
        previous = self._dp_streams.get(key)
        self._dp_streams[key] = done
        if self._dp_stream_per_group and op != "all_gather":  # the reductions also queue on one CUDA stream
            previous = self._after_reduction(agent, key, previous, done)
        groups = self._data_parallel_groups(agent, experts)
        alone_s = timing.isolated_time_s(self.fabric, op, groups[0], size_bytes)
        self._dp_busy_until[key] = max(self._dp_busy_until.get(key, 0.0), self.env.now) + alone_s
        if previous is not None and not previous.triggered:
            self.env.process(self._join_collective(agent, op, size_bytes, name, previous, done, experts))
        else:
            self._join(agent, groups, name, done, self._run_collective, op, size_bytes, name, experts)
        return done

    def _after_reduction(self, agent: Agent, stream, previous: simpy.Event | None, done: simpy.Event
                         ) -> simpy.Event | None:
        """What a reduction on ``stream`` waits for when it also queues behind the rank's previous reduction,
        whichever group that one ran over (Megatron-FSDP waits for every reduce-scatter on its ``rs_stream``
        before issuing the next from it): the event of both, or the one still pending. A previous reduction on the
        same stream is already behind ``previous``."""
        last_stream, last = self._last_reduction.get(agent.rank, (None, None))
        self._last_reduction[agent.rank] = (stream, done)
        if last_stream == stream:
            return previous
        pending = [event for event in (previous, last) if event is not None and not event.triggered]
        if len(pending) < 2:
            return pending[0] if pending else None
        return self.env.all_of(pending)

    def _data_parallel_groups(self, agent: Agent, experts: bool):
        """The groups reducing and gathering ``agent``'s parameters: dp x cp (the ranks holding the same dense
        parameters), or with ``experts`` the expert data-parallel groups (Megatron-Core's ``expt_dp_group``)."""
        return self._expert_groups(agent, "edp") if experts else self._groups(agent, ("dp", "cp"))

    def _join_collective(self, agent, op, size_bytes, name, previous, done, experts=False):
        yield previous
        groups = self._data_parallel_groups(agent, experts)
        waiting = self._arrive(agent, groups, name, done)
        if waiting is not None:
            yield from self._run_collective(waiting, agent, groups, op, size_bytes, name, experts, True)

    def _run_collective(self, waiting, agent, groups, op, size_bytes, name, experts=False, after_collective=False):
        if self.launch_delays is not None:  # behind the persistent GEMM the rank is running (workload.launch_order)
            phase, since_s, until_s = agent.computing  # a block starting now was issued after the collective
            wait_s = min(self.launch_delays[phase][after_collective], until_s - self.env.now)
            if since_s < self.env.now and wait_s > 0:  # no block in flight, or no wait: no event
                yield self.env.timeout(wait_s)
        started_at_s = self.env.now
        yield from self.collective_driver.run(op, groups, size_bytes)
        # the expert group's own stream (``_dp_stream_per_group``) is its own lane of the trace and timeline
        stream = "dp-experts" if experts and self._dp_stream_per_group else "dp"
        self.recorder.transfer(agent, stream, name, -1, started_at_s, self.env.now, size_bytes)
        for event in waiting:
            event.succeed()

    def _join(self, agent: Agent, groups, name: str, done: simpy.Event, run, *args) -> None:
        """Count ``agent``'s ranks in at the rendezvous of ``name`` now (``_arrive``); the last member to arrive
        starts the process ``run(waiting, agent, groups, *args)``, which runs the collective and fires ``waiting``.

        The same events in the same order as a process per member that arrives when it starts (members arrive in
        the order they call, and the last one's process starts where it would have): the others' processes, which
        would only count themselves in and end, are not made (an expanded run's TP groups: most of its events)."""
        waiting = self._arrive(agent, groups, name, done)
        if waiting is not None:
            self.env.process(run(waiting, agent, groups, *args))

    def _arrive(self, agent: Agent, groups, name: str, done: simpy.Event) -> list[simpy.Event] | None:
        """Count ``agent``'s ranks in at the rendezvous of collective ``name`` over ``groups``. When every member
        rank is in, the rendezvous closes and returns the members' completion events (the caller runs the
        collective, then fires them); before that, None."""
        key = (groups[0], name)
        entry = self._rendezvous.get(key)
        if entry is None:  # [member ranks still to arrive, the arrived members' completion events]
            entry = self._rendezvous[key] = [groups.members if isinstance(groups, Groups) else
                                             sum(len(g) for g in groups), []]
        entry[0] -= agent.multiplicity
        entry[1].append(done)
        if entry[0] > 0:
            return None
        del self._rendezvous[key]
        return entry[1]

    # ---- tensor-parallel collectives --------------------------------------------------------------------------
    def tensor_parallel(self, agent: Agent, calls: tuple[tuple[str, int], ...], size_bytes: float,
                        name: str, tag: str = "tp", op_bytes: dict[str, float] | None = None) -> simpy.Event:
        """Run a block's tensor-parallel collectives ((op, count) of ``size_bytes`` each, in order; ``op_bytes``:
        the ops whose collectives move another size, as fp8 all-gathers) over the TP groups of ``agent``'s ranks on
        the network, once every member rank has reached them; returns the event of their completion. The TP ranks
        of a collapsed agent are all its own, so they start at once. ``tag`` labels the transfers (the merge policy
        keeps differently labelled traffic apart)."""
        done = self.env.event()
        self._join(agent, self._groups(agent, ("tp",)), name, done, self._run_tensor_parallel, calls, size_bytes, tag,
                   op_bytes or {})
        return done

    def tensor_parallel_blocking(self, agent: Agent, calls: tuple[tuple[str, int], ...], size_bytes: float,
                                 name: str, tag: str = "tp", op_bytes: dict[str, float] | None = None):
        """``tensor_parallel`` for a caller that waits for the collectives at once (``yield from``). When ``agent`` is
        the last member rank to arrive, the collectives run in its own process rather than in one of their own
        (round 25: saves that process's start and end events, ~8% of a pipelined run's), with every event where the
        process's would be: the collectives start now, where the process would start them (its start is queued
        urgent, so it runs right after this turn, whose event, the compute's timeout, resumes only this process),
        and the caller resumes when its completion event, fired last, is processed."""
        done = self.env.event()
        groups = self._groups(agent, ("tp",))
        waiting = self._arrive(agent, groups, name, done)
        if waiting is None:   # others still to arrive: the last one runs the collectives and fires ``done``
            yield done
            return
        waiting.pop()   # ``done``, appended last
        yield from self._run_tensor_parallel(waiting, agent, groups, calls, size_bytes, tag, op_bytes or {})
        done.succeed()   # queued where ``fire`` would queue it for a waiter
        yield done

    def _run_tensor_parallel(self, waiting, agent, groups, calls, size_bytes, tag, op_bytes):
        # consecutive calls of one size run as one block (all of them unless some op moves another size)
        for size, run in itertools.groupby(calls, key=lambda call: op_bytes.get(call[0], size_bytes)):
            yield from self.collective_driver.run_block(tuple(run), groups, size, tag=tag)
        for event in waiting:
            fire(event)

    # ---- expert-parallel all-to-alls ---------------------------------------------------------------------------
    def expert_parallel(self, agent: Agent, calls: tuple[tuple[str, int], ...], size_bytes: float,
                        name: str, axis: str = "ep") -> simpy.Event:
        """Run a block's token dispatch and combine all-to-alls ((op, count) of ``size_bytes`` each) over the EP
        groups of ``agent``'s ranks on the network (``parallelism.ep_alltoall`` picks the algorithm), or with
        ``axis="etp"`` its expert-TP collectives over the ETP groups, once every member rank has reached them;
        returns the event of their completion."""
        done = self.env.event()
        self._join(agent, self._expert_groups(agent, axis), f"{axis} {name}", done, self._run_expert_parallel, calls,
                   size_bytes, axis)
        return done

    def _run_expert_parallel(self, waiting, agent, groups, calls, size_bytes, axis):
        algorithm = self.scenario.parallelism.ep_alltoall if axis == "ep" else "auto"
        routing = self._ep_routing if axis == "ep" else None  # DeepEP: a copy per node/GPU
        yield from self.collective_driver.run_block(calls, groups, size_bytes, tag=axis, algorithm=algorithm,
                                                    routing=routing)
        for event in waiting:
            fire(event)

    def _expert_groups(self, agent: Agent, axis: str = "ep") -> list[tuple[int, ...]]:
        """The EP (or ETP, or expert-DP) groups holding ``agent``'s ranks (``layout.expert_groups``), sorted;
        cached."""
        key = (agent.rank, axis)
        if key not in self._groups_cache:
            stage_key = ("expert groups", agent.stage, axis)  # made once per stage (a pass over every rank)
            if stage_key not in self._groups_cache:
                p = self.scenario.parallelism
                groups = layout_mod.expert_groups(self.plan.layout, agent.stage, p.ep, p.etp, axis)
                self._groups_cache[stage_key] = groups, {r: Groups([g]) for g in groups for r in g}
            groups, of_rank = self._groups_cache[stage_key]
            if agent.multiplicity == 1:  # expanded: the rank's own group, one list per group, shared
                self._groups_cache[key] = of_rank[agent.rank]
            else:
                mine = set(agent.ranks)
                self._groups_cache[key] = Groups(sorted(g for g in groups if mine.intersection(g)))
        return self._groups_cache[key]

    # ---- context-parallel exchange ----------------------------------------------------------------------------
    def context_parallel(self, agent: Agent, steps: int, size_bytes: float, name: str) -> simpy.Event:
        """Ring attention's key/value exchange of a block: ``steps`` ring steps in which every rank of the CP groups
        of ``agent``'s ranks passes ``size_bytes`` to its neighbour, on the network, once every member has reached
        it; returns the event of its completion."""
        done = self.env.event()
        self._join(agent, self._groups(agent, ("cp",)), name, done, self._run_context_parallel, steps, size_bytes)
        return done

    def _run_context_parallel(self, waiting, agent, groups, steps, size_bytes):
        yield from self.collective_driver.run_ring_exchange(groups, size_bytes, steps, tag="cp")
        for event in waiting:
            fire(event)

    # ---- the step's last collectives --------------------------------------------------------------------------
    def step_collective(self, agent: Agent, kind: str, size_bytes: float) -> simpy.Event:
        """All-reduce ``size_bytes`` over the ``kind`` groups of ``agent``'s ranks on the network, once every
        member rank has arrived; the event's value is when the collective started (its last member arrived).

        ``embedding``: the first and last pipeline stage of every (tp, cp, dp) coordinate (Megatron's embedding
        group); ``grad norm``: the ranks differing only on the plan's ``grad_norm_axes``; ``sequence parallel``: the
        TP group (``plan.sequence_parallel_grad_bytes``).
        """
        done = self.env.event()
        groups = self._step_groups(agent, kind)
        if len(groups[0]) < 2:
            done.succeed(self.env.now)
            return done
        self._join(agent, groups, f"{kind} allreduce", done, self._run_step_collective, kind, size_bytes)
        return done

    def _run_step_collective(self, waiting, agent, groups, kind, size_bytes):
        started_at_s = self.env.now
        yield from self.collective_driver.run("allreduce", groups, size_bytes)
        stream = {"embedding": "pp", "sequence parallel": "tp"}.get(kind, "dp")
        self.recorder.transfer(agent, stream, f"{kind} allreduce", -1, started_at_s, self.env.now, size_bytes)
        for event in waiting:
            event.succeed(started_at_s)

    def _step_groups(self, agent: Agent, kind: str) -> list[tuple[int, ...]]:
        """The groups of ``step_collective``, members in rank order (ring neighbours on NVLink first); cached."""
        layout = self.plan.layout
        whole = kind == "grad norm" and len(self.plan.grad_norm_axes) == len(layout.order)
        key = ("every rank",) if whole else (agent.rank, kind)  # one shared group (expanded: 16k agents use it)
        if key not in self._groups_cache:
            if kind == "embedding":
                ranks = np.asarray(agent.ranks, dtype=np.int64)
                ends = zip(layout.moved(ranks, "pp", 0).tolist(), layout.moved(ranks, "pp", layout.pp - 1).tolist(),
                           strict=True)
                groups = sorted(set(ends))
            elif kind == "sequence parallel":
                groups = sorted(tuple(sorted(group)) for group in self._groups(agent, ("tp",)))
            elif whole:  # every rank: one group
                groups = [tuple(range(layout.world_size))]
            else:
                groups = sorted(tuple(sorted(group)) for group in self._groups(agent, self.plan.grad_norm_axes))
            self._groups_cache[key] = Groups(groups)
        return self._groups_cache[key]

    def model_parallel_sync(self, agent, step_index: int):
        """``train_step``'s reductions over the model-parallel group after ``optimizer.step()`` (Megatron-LM and
        Megatron-Bridge ``logical_and_across_model_parallel_group`` / ``reduce_max_stat_across_model_parallel_group``:
        an all-reduce and ``.item()`` each), where the step's own barrier does not stand for them (the optimizer tail
        of ``overlap_param_gather_with_optimizer_step``, parallel/param_gather_overlap.py): ``agent`` goes on once
        every agent of its group (the tensor- and pipeline-parallel ranks of its data- and context-parallel
        coordinates) has arrived. The reductions' own time is not charged (as at the step's end)."""
        def group(rank: int) -> tuple[int, int]:
            coords = self.plan.layout.coords(rank)
            return coords["dp"], coords["cp"]

        key = (step_index, *group(agent.rank))
        arrived = self._model_parallel_syncs.get(key)
        if arrived is None:
            arrived = self._model_parallel_syncs[key] = {other.rank: self.env.event() for other in self.agents
                                                         if group(other.rank) == key[1:]}
        arrived[agent.rank].succeed()
        yield self.env.all_of(list(arrived.values()))

    # ---- run --------------------------------------------------------------------------------------------------
    def run(self, steps: int | None = None, on_step=None) -> Result:
        """Simulate ``steps`` optimizer steps; ``on_step(i)`` is called after each (for progress bars).

        Before the optimizer, the gradient-norm all-reduce of clipping (Megatron-LM clip_grad_norm) runs on the
        network over every rank holding gradients (the whole job with the distributed optimizer), synchronising
        them. Steps still end with a barrier over all ranks: no rank starts step i+1 before every rank has finished
        step i (stages whose optimizer or parameter gathering ends earlier wait; in Megatron they would start the
        next step's first forward).
        """
        steps = steps or self.scenario.training.steps
        assert self.env.now == 0, "a Simulation runs once (step indices key its messages)"
        started = time.perf_counter()
        with _no_cycle_collection():  # the record too: its per-link tables made 11 passes at 131k GPUs (0.06 s)
            for index in range(steps):
                processes = [self.env.process(agent.step(index)) for agent in self.agents]
                self.env.run(until=self.env.all_of(processes))
                if on_step is not None:
                    on_step(index)
            return summarize(self.record(steps, time.perf_counter() - started))

    def _lower_bound_end_s(self, steps: int) -> float | None:
        """Where a collapsed flow run held replicas back by more than ``LOWER_BOUND_ABOVE`` of the run: the end of
        ``steps`` the exact run cannot beat (``lower_bound_step_s``); None elsewhere (exact or nearly, expanded,
        another model, several jobs, variability)."""
        if (self.expand or self.network_name != "flow" or type(self.net) is not NetworkDriver
                or self.scenario.variability or not self.model.held_back_classes
                or self.model.held_back_s <= LOWER_BOUND_ABOVE * self.env.now):
            return None
        return lower_bound_step_s(self.scenario, steps, self.fabric) * steps

    def record(self, steps: int, wall_time_s: float) -> RunRecord:
        """What the run measured, as plain data for ``results.summarize``."""
        t, m, layout = self.scenario.training, self.scenario.model, self.plan.layout
        windows = self.model.link_windows()
        return RunRecord(
            scenario=self.scenario, steps=steps, microbatches=self.plan.microbatches,
            layout={"tp": layout.tp, "cp": layout.cp, "pp": layout.pp, "dp": layout.dp,
                    "ep": self.scenario.parallelism.ep, "etp": self.scenario.parallelism.etp},
            agents=tuple(AgentTally(dataclasses.replace(agent.tally), agent.multiplicity) for agent in self.agents),
            events=self.recorder.table(), link_bytes=self.model.link_bytes.copy(), fabric=FabricLinks.of(self.fabric),
            network_model=self.network_name, end_s=self.env.now, wall_time_s=wall_time_s, memory=self.memory,
            symmetry=SymmetryCheck(collapsed=not self.expand,
                                   held_back_classes=getattr(self.model, "held_back_classes", None),
                                   held_back_s=getattr(self.model, "held_back_s", None),
                                   lower_bound_end_s=self._lower_bound_end_s(steps),
                                   merge=merge_name(getattr(self.net, "merge", None))),
            model_flop_per_step=moe.model_flop_per_step(m, t.seq_len, t.global_batch_size),
            hardware_flop_per_step=moe.hardware_flop_per_step(m, t.seq_len, t.global_batch_size,
                                                              recompute_mode(t.activation_recompute,
                                                                             t.recompute_modules),
                                                              t.recompute_modules),
            variability=self.variability.describe(self.plan, not self.expand) if self.variability else None,
            bottleneck_by_parallelism=bottlenecks(self.fabric, layout, self.scenario.parallelism),
            link_peak_utilisation=None if windows is None else windows.peak_utilisation(self.fabric.link_bytes_per_s),
            peak_window_s=None if windows is None else windows.width_s,
            fabric_bill=bom.bill(self.fabric, self.fabric_prices),
        )


def make_network(name: str, fabric, link_windows: bool = True):
    """The engine's network model ``name`` on ``fabric``, seen through NCCL's measured efficiencies (ring, Simple):
    the fabric's one calibrated view (``timing.calibrated_view``), which the plan's collectives timed alone made
    already (a second view scaled every link's capacity again: 0.2 s at 131,072 GPUs); models only read it.
    ``link_windows=False``: the analytic and flow models keep no link windows (the chunk model keeps none anyway)."""
    options = {} if link_windows or name == "chunk" else {"windows": False}
    if name == "chunk":  # bound the chunk events of multi-gigabyte gradient transfers
        options["max_chunks"] = catalog.load("engine")["chunk_model"]["max_chunks_per_transfer"]
    return network.make(name, timing.calibrated_view(fabric), **options)


def bottlenecks(fabric, layout, parallelism=None) -> dict[str, str | None]:
    """The tier that bounds each parallelism's traffic: its ring step over all its groups at once (pipeline: every
    stage's send to the next) on the idle fabric (``Fabric.bottleneck_tier``); None for an axis of size 1. Expert
    parallelism: its all-to-all, every member of each expert-parallel group of the first stage sending to every
    other at once (the stages' groups are alike)."""
    out: dict[str, str | None] = {}
    for axis in ("tp", "cp", "pp", "dp"):
        out[axis] = (fabric.bottleneck_tier(layout.ring_pairs(axis, wrap=axis != "pp"))
                     if getattr(layout, axis) > 1 else None)
    out["ep"] = None
    if parallelism is not None and parallelism.ep > 1:
        groups = layout_mod.expert_groups(layout, 0, parallelism.ep, parallelism.etp)
        pairs = np.array([(a, b) for group in groups for a, b in itertools.permutations(group, 2)], dtype=np.int64)
        out["ep"] = fabric.bottleneck_tier(pairs)
    return out


def fire(event: simpy.Event) -> None:
    """Succeed ``event``, which its waiters test with ``triggered`` before they yield it (a message's arrival, a
    block's TP, EP or CP collectives). With no process waiting on it yet, it is marked processed at once instead of
    going through SimPy's queue: its turn there would run no callbacks, and a later look sees it triggered and
    goes on, as it does now (the same results: an expanded 16,384-GPU run scheduled ~30% fewer events). An event
    already triggered is refused, as ``succeed`` refuses it."""
    if event._value is not simpy.events.PENDING:
        raise RuntimeError(f"{event} has already been triggered")
    if event.callbacks:
        event.succeed()
    else:
        event._ok, event._value, event.callbacks = True, None, None


@contextlib.contextmanager
def _no_cycle_collection():
    """Python's cycle collector paused while the events run, restored after. A run allocates millions of short-lived
    objects (events, generators, records) while holding millions of live ones, so the collector's passes over the
    live ones were 25-30% of an expanded run (2,048 GPUs: 7.1-7.7 s of CPU with it, 5.2-5.5 s without, the same
    step time), and found nearly nothing to free (30 objects in 9 full passes): what a run drops, reference counting
    frees. Results cannot depend on it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def lower_bound_step_s(scenario, steps: int, fabric=None) -> float:
    """A step time the exact run (``--expand``: one agent per GPU, every transfer its own class, the flow model)
    cannot beat: the collapsed run again with the analytic model's ``fastest_part`` relaxation, in which every
    transfer class completes when its fastest part would alone on the fabric (``network.analytic``). Max-min sharing
    never gives a transfer more than its own bottleneck, so no part of the exact run completes sooner than alone
    (with its quickest pair's latency: ``AnalyticNetwork._fastest_part_s``), and a representative that moves when its
    earliest replica could moves no later than any replica; the bound holds as far as the engine is monotone (a
    transfer ending sooner never makes any event later: the step's schedule is a fixed program per GPU, and
    communication beside compute only slows it; a rank whose own pair of a part ends first waits for the part's
    other ranks at its next tensor-parallel collective). Known exception, off by default: ``launch_order``
    (interference.yaml), whose wait is skipped for a collective issued at the instant a block starts. Checked
    against the expanded reference on adversarial ECMP cases (tests/unit/test_round22_collapse.py). Not a bound for
    a run with ``variability`` (draws per agent differ between collapsed and expanded runs) or several jobs."""
    sim = Simulation(scenario, "analytic", fabric=fabric, check_memory=False, link_windows=False)   # the step only
    sim.model.fastest_part = True
    return float(sim.run(steps).summary["step_time_s"])


def merge_name(policy: MergePolicy | None) -> str | None:
    """The summary's name of a merge policy (``symmetry.merge``): ``none`` (``NO_MERGE``, the reference),
    ``label-and-size`` (``SYMMETRIC``), ``split`` (``SplitKeys``), else the policy's class name; None: no policy."""
    if policy is None:
        return None
    for kind, name in ((NoMerge, "none"), (SplitKeys, "split"), (SameLabelAndSize, "label-and-size")):
        if isinstance(policy, kind):
            return name
    return type(policy).__name__


def run_expanded(build, steps: int | None = None, on_step=None) -> Result:
    """An expanded run (one agent per GPU) as fast as merging allows and exact: first with the calls of one instant
    merged (``SYMMETRIC``), which the network model checks; when the check does not prove every merge exact, again
    with the keys of the classes found holding a part back unmerged (``SplitKeys``, up to ``SPLIT_PASSES`` times,
    each adding the keys its pass flags), and when none is proven exact (or the model does not check) with every
    call its own class (``NO_MERGE``), the reference (at once where the model does not check: no merged pass could
    stand). ``build(merge)`` returns the ``Simulation`` to run (a Simulation runs once). The result's
    ``symmetry.passes`` names the policies of the passes run, in order (the last one stood: ``symmetry.merge``)."""
    split, by_latency = frozenset(), frozenset()
    passes = []
    for _pass in range(1 + SPLIT_PASSES):
        simulation = build(SplitKeys(split, by_latency) if split or by_latency else SYMMETRIC)
        if simulation.model.held_back is None:   # a model that does not check (chunk): a merged pass cannot stand
            del simulation
            break
        result = simulation.run(steps, on_step)
        passes.append(result.summary["symmetry"]["merge"])
        if result.summary["symmetry"]["exact"] is True:
            result.summary["symmetry"]["passes"] = passes
            return result
        held = simulation.model.held_back
        del simulation, result   # before the next pass is built: one pass's events and routes in memory at a time
        if held.keys <= split and held.latency_keys <= split | by_latency:   # nothing new
            break
        split = split | held.keys
        by_latency = (by_latency | held.latency_keys) - split
    result = build(NO_MERGE).run(steps, on_step)
    result.summary["symmetry"]["passes"] = [*passes, result.summary["symmetry"]["merge"]]
    return result
