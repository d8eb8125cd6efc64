"""The engine's light events keep SimPy's order: ``drivers._AllOf`` is queued when SimPy's ``Condition``
(``env.all_of``) would be, and ``simulation.fire`` resumes a waiter when ``succeed`` would.
The engine merges transfers by the instant and order they start, so a waiter resumed one queue turn earlier or
later can change a result: each test replays one interleaving with SimPy's own event and with the light one, and the
two logs must be the same, step for step."""

from __future__ import annotations

import pytest
import simpy

from simcluster.engine.drivers import _AllOf
from simcluster.engine.simulation import fire


def _log_of(make_wait, succeed) -> list[tuple[str, float]]:
    """Processes racing a waiter at the same instants: what ran, in order. ``make_wait(env, events)`` builds what
    the waiter yields; ``succeed(event)`` fires the events the waiter waits on."""
    env = simpy.Environment()
    log = []
    events = [env.event(), env.event(), env.event()]

    def waiter():
        yield make_wait(env, events[:2])
        log.append(("waiter", env.now))
        yield make_wait(env, [events[2], env.timeout(5)])
        log.append(("waiter again", env.now))

    def firer():
        yield env.timeout(1)
        succeed(events[0])
        log.append(("fired 0", env.now))
        yield env.timeout(1)
        succeed(events[1])
        log.append(("fired 1", env.now))
        succeed(events[2])   # before the waiter waits on it: processed when the waiter looks
        yield env.timeout(0)
        log.append(("firer again", env.now))   # ordered after the waiter's resumption only at normal priority

    def bystander(name, at_s):
        yield env.timeout(at_s)
        log.append((name, env.now))
        yield env.timeout(0)
        log.append((name + " again", env.now))

    for at_s in (1, 2):
        env.process(bystander(f"early {at_s}", at_s))
    env.process(firer())
    env.process(waiter())
    for at_s in (1, 2):
        env.process(bystander(f"late {at_s}", at_s))
    env.run()
    return log


def test_all_of_resumes_its_waiter_when_simpys_condition_does():
    def simpy_all_of(env, events):
        return env.all_of(events)

    def light_all_of(env, events):
        return _AllOf(env, events)

    want = _log_of(simpy_all_of, lambda event: event.succeed())
    assert ("waiter", 2) in want
    assert _log_of(light_all_of, lambda event: event.succeed()) == want


def _guarded_log(succeed) -> list[tuple[str, float]]:
    """A waiter that looks before it waits, as the engine's do (``if not event.triggered: yield event``), on events
    fired before and after it looks, with processes running at the same instants."""
    env = simpy.Environment()
    log = []
    events = [env.event() for _ in range(3)]

    def waiter():
        for index, event in enumerate(events):
            if not event.triggered:
                yield event
            log.append((f"waiter {index}", env.now))
            yield env.timeout(1)

    def firer():
        yield env.timeout(0.5)
        succeed(events[1])   # before the waiter looks: nobody waits on it
        yield env.timeout(0.5)
        succeed(events[0])   # the waiter waits on it
        log.append(("fired", env.now))
        yield env.timeout(3)
        succeed(events[2])

    def bystander(name):
        for _ in range(4):
            yield env.timeout(1)
            log.append((name, env.now))

    env.process(bystander("early"))
    env.process(firer())
    env.process(waiter())
    env.process(bystander("late"))
    env.run()
    return log


def test_fire_resumes_a_waiter_when_succeed_does_and_marks_an_unwatched_event_processed():
    want = _guarded_log(lambda event: event.succeed())
    assert ("waiter 0", 1) in want and ("waiter 2", 4) in want
    assert _guarded_log(fire) == want
    env = simpy.Environment()
    unwatched = env.event()
    fire(unwatched)
    assert unwatched.processed and unwatched.ok   # no turn on the queue
    assert env.peek() == float("inf")


def test_fire_refuses_an_event_already_triggered():
    """``fire`` keeps SimPy's guard: a second trigger is an error, not a corrupted queue."""
    env = simpy.Environment()
    event = env.event()
    event.succeed()
    with pytest.raises(RuntimeError, match="already been triggered"):
        fire(event)
    other = env.event()
    fire(other)
    with pytest.raises(RuntimeError, match="already been triggered"):
        fire(other)
