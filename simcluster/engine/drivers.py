"""SimPy drivers: a pure NetworkModel as events agents can wait on, and collectives driven through it.

One process owns the model: it sleeps until the model's next completion (or until a new transfer starts, which
changes the rates), advances the model and triggers the completed transfers' events. Agents never compute wire
time themselves. Which transfers of one instant go to the model as one class is the driver's merge policy
(``engine.merge``); the calls merged stay distinct parts of the class, so the model can check that merging them
held none back.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

import simpy
from simpy.events import NORMAL, PENDING

from simcluster.collectives import timing
from simcluster.engine.merge import SYMMETRIC, MergePolicy
from simcluster.network.base import NetworkModel, TransferClass

TIME_EPS_S = 1e-12  # relative tolerance when comparing simulated times


@dataclass(slots=True)
class _Batch:
    """The calls of one instant that go to the model as one class."""

    calls: list[TransferClass]
    done: simpy.Event


class NetworkDriver:
    """Transfers on a network model as SimPy events."""

    def __init__(self, env: simpy.Environment, model: NetworkModel, merge: MergePolicy = SYMMETRIC):
        self.env = env
        self.model = model
        self.merge = merge
        self._done: dict[int, simpy.Event] = {}
        self._batches: dict[Hashable, _Batch] = {}  # by merge key, until the end of the instant
        # The driver's loop (``_resume``) is run by callbacks of plain events rather than as a process that waits on
        # ``wake | timeout`` (round 25): a batch's start resumes it at once (the rates changed), and so does its
        # alarm, the event queued for the model's next completion. ``_alarm``: the pending alarm (None: none);
        # ``_alarm_s``: the completion time it was queued for, kept while a resume finds that time unchanged.
        self._alarm: simpy.Event | None = None
        self._alarm_s = math.inf

    def transfer(self, transfers: TransferClass) -> simpy.Event:
        """Start a class of transfers now; the returned event fires when all of them have arrived."""
        if transfers.members == 0 or transfers.size_bytes <= 0:
            done = self.env.event()
            done.succeed()
            return done
        key = self.merge.key(transfers)
        if key in self._batches:
            batch = self._batches[key]
            batch.calls.append(transfers)
            return batch.done
        done = self.env.event()
        self._batches[key] = _Batch([transfers], done)
        # start the batch once every transfer of this instant has joined: after the events already queued now
        self.env.schedule(_Hop(self.env, lambda _event: self._start(key)), priority=NORMAL, delay=0)
        return done

    def _start(self, key) -> None:
        batch = self._batches.pop(key)
        self._settle()
        first = batch.calls[0]
        if len(batch.calls) == 1:  # the class itself: its routing, cached on it, is reused (collectives' programs)
            merged = first
        else:  # every call's parts stay parts of the merged class
            merged = TransferClass.joined(batch.calls, first.size_bytes, first.label)
        handle = self.model.start(merged, self.env.now)
        self._done[handle] = batch.done
        self._resume(None)   # the rates changed: the next completion is read again now

    def _settle(self) -> None:
        """Bring the model to the current time, releasing what completed."""
        now = self.env.now
        next_s = self.model.next_completion_s()
        # a completion within float rounding of now counts as now (timeouts add durations, not absolute times)
        if next_s <= now + TIME_EPS_S * max(1.0, now):
            for handle in self.model.advance(max(now, next_s)):
                self._done.pop(handle).succeed()

    def _queue(self, callback, delay_s: float) -> simpy.Event:
        """A triggered event queued ``delay_s`` from now (normal priority) that calls ``callback`` when processed."""
        event = _Hop(self.env, callback)
        self.env.schedule(event, priority=NORMAL, delay=delay_s)
        return event

    def _alarmed(self, event: simpy.Event) -> None:
        """The alarm (the model's next completion) was processed: the loop resumes now."""
        if event is self._alarm:   # else: a later resume queued another alarm, and this one comes to nothing
            self._alarm = None
            self._resume(event)

    def _resume(self, _event) -> None:
        """One turn of the loop: release what completed by now, then set the alarm for the next completion (a pending
        alarm for the same time is kept: it fires at the time rounded from the instant it was queued at, within
        ``TIME_EPS_S`` of the completion, which ``_settle`` accepts)."""
        self._settle()
        next_s = self.model.next_completion_s()
        if math.isinf(next_s):
            self._alarm = None
        elif self._alarm is None or self._alarm_s != next_s:
            self._alarm_s = next_s
            self._alarm = self._queue(self._alarmed, max(0.0, next_s - self.env.now))


class _Hop(simpy.Event):
    """A succeeded event (value None) whose one callback is ``callback``, for the caller to queue: the driver's own
    turns (a batch's start, the alarm), made without ``Event.__init__`` and ``succeed``."""

    def __init__(self, env: simpy.Environment, callback):   # noqa: D107 (no call to Event.__init__: fields set here)
        self.env = env
        self.callbacks = [callback]
        self._ok = True
        self._value = None


class _AllOf(simpy.Event):
    """SimPy's ``env.all_of(events)`` for a waiter that reads no value: checks each of ``events`` as it is processed
    (at once if it already is), fails with the first failure, and is triggered, and queued, exactly when the
    ``Condition`` would be (when the last of ``events`` is processed), without the ``ConditionValue`` it builds
    and the callbacks it removes once processed (0.6 million of each in the calibration run: ~5% of its CPU)."""

    def __init__(self, env: simpy.Environment, events):
        super().__init__(env)
        self._left = len(events)
        if not events:
            self.succeed()
            return
        for event in events:
            if event.callbacks is None:
                self._check(event)
                if self._value is not PENDING:
                    break
            else:
                event.callbacks.append(self._check)

    def _check(self, event: simpy.Event) -> None:
        if self._value is not PENDING:
            return
        if not event._ok:
            event._defused = True
            self.fail(event._value)
            return
        self._left -= 1
        if self._left == 0:
            self.succeed()


class Groups(tuple):
    """Groups of ranks (each a tuple) as one tuple that hashes once and knows its member count: the engine caches
    the groups of each agent and passes the same ``Groups`` at every block, and the collective driver keys its
    programs on them (an interleaved 16k-GPU run's 12,000 blocks each hashed and compared 1,024 TP groups: 0.3 s).
    Equal to, and hashing as, the plain tuple of the same groups."""

    def __hash__(self) -> int:
        cached = self.__dict__.get("hash")
        if cached is None:
            cached = self.__dict__["hash"] = tuple.__hash__(self)
        return cached

    @property
    def members(self) -> int:
        """Ranks in all the groups."""
        cached = self.__dict__.get("members")
        if cached is None:
            cached = self.__dict__["members"] = sum(len(group) for group in self)
        return cached


def _key(groups) -> tuple:
    """``groups`` as a key: itself when it is a ``Groups`` (its hash kept), else as a tuple."""
    return groups if isinstance(groups, Groups) else tuple(groups)


class CollectiveDriver:
    """Runs collectives on a ``NetworkDriver``: the actions of ``collectives.timing.engine_program``, cached."""

    def __init__(self, env: simpy.Environment, fabric, net: NetworkDriver, latency_noise=None):
        self.env, self.fabric, self.net = env, fabric, net
        # latency_noise(collectives, groups): extra seconds before a call of that many collectives over that many
        # groups starts (engine.variability); None: none, and no event for it
        self.latency_noise = latency_noise
        self._programs: dict = {}

    def run(self, op: str, groups: list[tuple[int, ...]], size_bytes: float, algorithm: str = "auto"):
        """Drive a collective through the network, all ``groups`` at once (identical schedules); ``algorithm``
        forces one where the op has it (``timing.engine_schedules``)."""
        key = (op, _key(groups), round(size_bytes), algorithm)
        if key not in self._programs:
            steps = timing.engine_schedules(self.fabric, op, groups, size_bytes, algorithm)
            self._programs[key] = timing.engine_program(steps, self.fabric)
        yield from self._noise(1, len(groups))
        yield from self._play(self._programs[key])

    def run_block(self, calls: tuple[tuple[str, int], ...], groups: list[tuple[int, ...]], size_bytes: float,
                  tag: str, algorithm: str = "auto", routing=None):
        """Drive a block's collectives ((op, count) of ``size_bytes`` each) as ``timing.fused_program`` does: one
        transfer per kind of step, labelled with ``tag``; ``algorithm`` forces one where the op has it; ``routing``:
        an all-to-all's token routing (``Collective.routing``)."""
        key = (calls, _key(groups), round(size_bytes), tag, algorithm, routing)
        if key not in self._programs:
            schedules = [(timing.engine_schedules(self.fabric, op, groups, size_bytes, algorithm, routing),
                          count) for op, count in calls]
            self._programs[key] = timing.fused_program(schedules, self.fabric, tag)
        yield from self._noise(sum(count for _op, count in calls), len(groups))
        yield from self._play(self._programs[key])

    def run_ring_exchange(self, groups: list[tuple[int, ...]], size_bytes: float, steps: int, tag: str):
        """``steps`` ring steps over each group (every member sends ``size_bytes`` to its successor), fused as
        ``run_block`` fuses a block's collectives."""
        key = ("ring exchange", _key(groups), round(size_bytes), steps, tag)
        if key not in self._programs:
            self._programs[key] = timing.fused_program([(timing.ring_exchange(groups, size_bytes), steps)],
                                                       self.fabric, tag)
        yield from self._play(self._programs[key])

    def _noise(self, collectives: int, groups: int):
        if self.latency_noise is not None:
            yield self.env.timeout(self.latency_noise(collectives, groups))

    def _play(self, actions):
        for action in actions:
            if isinstance(action, timing.Wait):
                yield self.env.timeout(action.seconds)
            else:
                yield _AllOf(self.env, [self.net.transfer(tc) for tc in action.transfers])
