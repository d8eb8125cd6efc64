"""Timing collectives on a network model, without SimPy: alone on a fabric (``simulate``, ``run``,
``isolated_time_s``), and the step sequence the engine drives through its shared network (``engine_steps``).

A step repeated k times (the 2(n-1) steps of a ring) is the one place where the two differ, and both rules live
here. Alone on the fabric every repeat takes the same time, so ``simulate`` solves the step once and multiplies
(exact; the links' byte counters advance by the same factor). On the engine's shared network the rates can change
between repeats, so ``engine_steps`` runs the first repeat, then one transfer of the other k-1 repeats' bytes after
their software and path latencies: one event instead of k, identical to k steps while the rates do not change.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from dataclasses import dataclass, field

from simcluster.collectives import nccl
from simcluster.collectives.algorithms import Step
from simcluster.collectives.closed_form import algbw_bytes_per_s, busbw_bytes_per_s
from simcluster.collectives.schedule import Collective, Schedule, merge, schedule, schedules_over_groups, supports
from simcluster.network import make as make_model
from simcluster.network.base import NetworkModel, TransferClass, class_load


def _run_step(network: NetworkModel, step: Step, now_s: float) -> float:
    """Issue one step's classes at ``now_s`` + overhead, advance the model to their last completion."""
    now_s += step.overhead_s
    pending = {network.start(transfers, now_s) for transfers in step.transfers}
    while pending:
        next_s = network.next_completion_s()
        assert math.isfinite(next_s), "a started class never completes"
        pending.difference_update(network.advance(next_s))
        now_s = next_s
    return now_s


def simulate(
    collective: Collective | list[Step], network: NetworkModel, *, fabric=None, gpu=None, start_s: float = 0.0
) -> float:
    """Duration in seconds of a collective (or a schedule) alone on ``network``.

    Identical consecutive steps are solved once: the model is otherwise idle, so each repeat takes the same
    time; the links' byte counters (of a model that keeps them) are advanced by the same amount per repeat.
    """
    steps = (
        collective
        if not isinstance(collective, Collective)
        else schedule(collective, fabric if fabric is not None else network.fabric, gpu=gpu)
    )
    now_s = start_s
    for step in steps:
        started_at_s = now_s
        counted = step.repeat > 1 and step.transfers and network.link_bytes is not None
        before = network.link_bytes.copy() if counted else None
        now_s = _run_step(network, step, now_s)
        if step.repeat > 1:
            now_s += (step.repeat - 1) * (now_s - started_at_s - step.hidden_s)
            if before is not None:
                network.link_bytes += (step.repeat - 1) * (network.link_bytes - before)
    return now_s - start_s


@dataclass(frozen=True)
class Outcome:
    """One collective run: its time, rates per nccl-tests, and what ran."""

    op: str
    n: int
    size_bytes: float
    time_s: float
    algorithm: str
    protocol: str
    steps: int = field(default=0)

    @property
    def algbw_bytes_per_s(self) -> float:
        return algbw_bytes_per_s(self.size_bytes, self.time_s)

    @property
    def busbw_bytes_per_s(self) -> float:
        return busbw_bytes_per_s(self.op, self.n, self.size_bytes, self.time_s)


def run(collective: Collective, fabric, network: str = "flow", gpu=None, **options) -> Outcome:
    """Schedule ``collective``, build the ``network`` model on the NCCL-calibrated fabric (``options`` go to the
    model), and time it."""
    steps = schedule(collective, fabric, gpu=gpu)
    model = make_model(network, calibrated_view(fabric, steps.algorithm, steps.protocol), **options)
    time_s = simulate(steps, model)
    return Outcome(
        collective.op,
        collective.n,
        collective.size_bytes,
        time_s,
        steps.algorithm,
        steps.protocol,
        steps.step_count,
    )


def ring_exchange(groups: list[tuple[int, ...]], size_bytes: float) -> list[Step]:
    """One step in which every member of every group sends ``size_bytes`` to its successor around the group (a
    ring attention key/value pass): point-to-point sends, no NCCL collective latency."""
    pairs = [(group[i], group[(i + 1) % len(group)]) for group in groups for i in range(len(group))]
    parts = [k for k, group in enumerate(groups) for _ in group] if len(groups) > 1 else None
    return [Step((TransferClass(pairs, size_bytes, "ring exchange", parts),))]


def isolated_time_s(fabric, op: str, group: tuple[int, ...], size_bytes: float) -> float:
    """Time of one collective alone on ``fabric`` (analytic model, NCCL-calibrated), cached per fabric.

    ``op`` is a collective of ``schedule.OPS`` or ``"sendrecv_ring"``: every member sends ``size_bytes`` to its
    successor at once (one step of ring attention's key/value exchange).
    """
    if len(group) <= 1 or size_bytes <= 0:
        return 0.0
    cache = _ISOLATED.setdefault(fabric, {})  # weak on the fabric: a collected fabric takes its entries along
    key = (op, group, round(size_bytes))
    if key not in cache:
        if op == "sendrecv_ring":
            cache[key] = simulate(ring_exchange([group], size_bytes),
                                  make_model("analytic", calibrated_view(fabric), windows=False, link_bytes=False))
        else:   # only the time is read: no windows, no link bytes
            cache[key] = run(Collective(op=op, group=group, size_bytes=size_bytes), fabric, "analytic",
                             windows=False, link_bytes=False).time_s
    return cache[key]


_ISOLATED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def calibrated_view(fabric, algorithm: str = "ring", protocol: str = "Simple"):
    """``nccl.calibrated(fabric, algorithm, protocol)``, made once per fabric and (algorithm, protocol): it scales
    every link's capacity (a pass over ~10^6 links at 131k GPUs), and the models built on it only read it."""
    raw = getattr(fabric, "raw", fabric)
    try:
        # kept on the fabric itself: a view refers to its fabric, so a cache keyed weakly on the fabric (as
        # _ISOLATED) would hold every fabric a run made for the life of the process (a sweep's, a test session's);
        # on the fabric, fabric and views are a cycle that the collector frees with the fabric
        views = vars(raw).setdefault("_calibrated_views", {})
    except TypeError:  # an object without attributes of its own: no cache
        views = {}
    key = (algorithm, protocol)
    if key not in views:
        views[key] = nccl.calibrated(raw, algorithm, protocol)
    return views[key]


# ---- the engine's steps -----------------------------------------------------------------------------------------

def engine_schedule(fabric, op: str, group, size_bytes: float) -> list[Step]:
    """The steps the engine runs for a collective: NCCL's automatic choice, on the engine's one network.

    That network sees every link through its measured ring/Simple efficiency. An algorithm or protocol that moves
    less payload per wire byte (LL: an 8-byte flag per 8 bytes; LL128: 120 of 128; trees: NCCL's 0.92 cap) or
    whose links run at another measured efficiency (NVLS: the NVSwitch's reduction and multicast, 0.686 of NVLink
    line rate against the ring's 0.822; IB SHARP: 0.95 of the NIC's point-to-point rate) puts proportionally more
    bytes on the wire: each class grows by the ratio of the two efficiencies on the links it uses
    (``nccl.wire_factor``), so on an idle fabric the engine's collective takes what ``run`` gives.
    """
    return _on_engine_network(schedule(Collective(op=op, group=group, size_bytes=size_bytes), fabric), fabric)


def engine_schedules(fabric, op: str, groups, size_bytes: float, algorithm: str = "auto",
                     routing=None) -> list[Step]:
    """``engine_schedule`` over every group of ``groups`` (disjoint, equal sizes) as one schedule (``merge``: one
    part per group), built once per kind of group (``schedule.schedules_over_groups``). ``algorithm`` forces one
    where ``op`` can run it (NCCL_ALGO restricts the algorithms of the collectives that have it); others choose
    as NCCL would; ``routing`` (TokenRouting) is an all-to-all's token routing (``Collective.routing``)."""
    algorithm = algorithm if supports(op, algorithm) else "auto"
    kinds = schedules_over_groups(Collective(op=op, group=groups[0], size_bytes=size_bytes, algorithm=algorithm,
                                             routing=routing), groups, fabric)
    return merge([_on_engine_network(steps, fabric) for steps in kinds])


def _on_engine_network(steps: Schedule, fabric) -> list[Step]:
    """``steps`` with each class's bytes scaled to the engine's ring/Simple-calibrated network
    (``engine_schedule``), with the efficiencies of the fabric's GPUs."""
    if (steps.algorithm, steps.protocol) == ("ring", "Simple"):
        return list(steps)
    gpu = getattr(getattr(fabric, "raw", fabric), "gpu", None)
    return [dataclasses.replace(step, transfers=tuple(
        dataclasses.replace(tc, size_bytes=tc.size_bytes * nccl.wire_factor(steps.algorithm, steps.protocol,
                                                                           tc.label, gpu))
        for tc in step.transfers)) for step in steps]


@dataclass(frozen=True)
class Wait:
    """Software latency before the next transfers (a SimPy timeout in the engine, even when zero)."""

    seconds: float


@dataclass(frozen=True)
class Send:
    """Transfer classes that start together; the next action waits for all of them."""

    transfers: tuple[TransferClass, ...]


def engine_program(steps: list[Step], fabric) -> list[Wait | Send]:
    """The actions the engine drives through its shared network for ``steps`` (see the module docstring).

    A step repeated k times runs once, then waits the other k-1 repeats' software latency and k-2 path latencies
    (the last one the network model charges itself), less what each hides behind the transfer before it
    (``Step.hidden_s``), then sends their bytes as one transfer per class; when the hidden part reaches into the
    path latency, all k repeats go as one transfer after the latency left, so the total stays exact. The path
    latency is the class's own as the network model routes it (``class_load``, cached on the class it then sends),
    so its route set is made once, not a latency-only pass first.
    """
    actions: list[Wait | Send] = []
    for step in steps:
        rest = step.repeat - 1
        latency_s = max((class_load(fabric, tc)[2] for tc in step.transfers), default=0.0) if rest else 0.0
        between_s = rest * (step.overhead_s - step.hidden_s) + (rest - 1) * latency_s
        if rest and step.transfers and between_s < 0:
            # the repeats hide path latency too (Step.hidden_s): all of them as one send, after the latency left
            actions.append(Wait(step.overhead_s + between_s + latency_s))
            actions.append(Send(tuple(dataclasses.replace(tc, size_bytes=step.repeat * tc.size_bytes)
                                      for tc in step.transfers)))
            continue
        if step.overhead_s > 0:
            actions.append(Wait(step.overhead_s))
        if step.transfers:
            actions.append(Send(step.transfers))
        if step.repeat > 1:
            actions.append(Wait(between_s))
            if step.transfers:
                actions.append(Send(tuple(dataclasses.replace(tc, size_bytes=rest * tc.size_bytes)
                                          for tc in step.transfers)))
    return actions


def fused_program(calls: list[tuple[list[Step], int]], fabric, tag: str = "") -> list[Wait | Send]:
    """Collectives run back to back (each ``(steps, count)``: a schedule run ``count`` times) as one wait and one
    transfer per kind of step: a tensor-parallel block's collectives (2 per layer, tens per block) as one event.

    Steps that send the same bytes between the same pairs (a ring's steps, and those of the block's other ring
    collectives over the same group) are one kind: their R repeats become one transfer of R times the bytes after
    all their software latencies and R-1 path latencies (the network model charges the last). On an idle fabric
    this takes exactly the time of the collectives one after the other; under contention the block's traffic
    shares the links as one flow. ``tag`` prefixes the labels, so that the merge policy keeps them apart from
    other parallelisms' transfers.
    """
    kinds: dict[tuple, list] = {}  # signature -> [transfers, repeats, overhead_s]
    delay_s = 0.0
    for steps, count in calls:
        for step in steps:
            if not step.transfers:
                delay_s += step.overhead_s * count
                continue
            signature = tuple((tc.pairs.tobytes(), None if tc.parts is None else tc.parts.tobytes(), tc.size_bytes)
                              for tc in step.transfers)
            kind = kinds.setdefault(signature, [step.transfers, 0, 0.0])
            kind[1] += step.repeat * count
            kind[2] += (step.overhead_s * step.repeat - step.hidden_s * (step.repeat - 1)) * count
    actions: list[Wait | Send] = []
    for transfers, repeats, overhead_s in kinds.values():
        latency_s = max(class_load(fabric, tc)[2] for tc in transfers)
        actions.append(Wait(max(0.0, delay_s + overhead_s + (repeats - 1) * latency_s)))
        actions.append(Send(tuple(dataclasses.replace(tc, size_bytes=repeats * tc.size_bytes,
                                                      label=f"{tag} {tc.label}".strip()) for tc in transfers)))
        delay_s = 0.0
    if delay_s > 0:
        actions.append(Wait(delay_s))
    return actions
