"""Megatron-Core's blocking exchanges in the interleaved schedule: the warm-up forwards' and the cool-down backwards'
(every release; ``overlap_p2p_comm_warmup_flush`` off, its default, from 0.10), against closed forms
of the fill and Megatron's loop structure (docs/calibration/round-38.md "Round 38: Megatron-Core's blocking warm-up and
flush exchanges")."""

from __future__ import annotations

import dataclasses

import pytest

from simcluster.engine import Simulation
from simcluster.parallel.schedules import (
    interleaved_blocking,
    interleaved_blocking_sends,
    pipeline_order,
    receive_posts,
    warmup_forwards,
)
from tests.unit.test_engine import scenario


def _pipelined(pp, m, v, **overrides):
    return scenario(cluster__gpus_per_node=pp, parallelism__pp=pp, parallelism__dp=1,
                    parallelism__virtual_stages=v, training__global_batch_size=m,
                    model={"layers": pp * v, "hidden": 1024, "heads": 8, "vocab": 32000}, **overrides)


def _fill_s(pp, m, v, blocking, p2p_bytes=None):
    """The schedule's time (step less the optimizer) on a uniform pipeline (every chunk the middle one's, no
    embedding, output layer, loss or step-end collectives) with the interleaved exchanges ``blocking`` ((warm-up,
    flush)); ``p2p_bytes`` 0: free messages."""
    sim = Simulation(_pipelined(pp, m, v))
    middle = sim.plan.chunks[1]
    sim.plan.chunks = [dataclasses.replace(middle, chunk=c.chunk, stage=c.stage) for c in sim.plan.chunks]
    sim.plan.deferred_wgrads = 0
    sim.plan.embedding_grad_bytes, sim.plan.grad_norm_axes = 0.0, ()
    sim.plan.p2p_interleaved_blocking = blocking
    if p2p_bytes is not None:
        sim.plan.p2p_bytes = p2p_bytes
    return sim.run().summary["step_time_s"] - max(sim.plan.optimizer_s)


def test_the_stack_switches_the_exchanges_in_every_release():
    # the cool-down's send_backward_recv_backward is blocking in every release; the warm-up's send_forward_recv_forward
    # is blocking from 0.10 (overlap_p2p_comm_warmup_flush off) and before is posted with overlap_p2p_comm=True and
    # waited, its send included, before the next forward with nothing between: the same hold (round 38's review)
    assert interleaved_blocking("auto", 4, True) == (True, True)
    assert interleaved_blocking("async", 4, True) == (False, False)   # a stack that overlaps every exchange
    assert interleaved_blocking("auto", 1, True) == (False, False)    # not interleaved
    assert interleaved_blocking("auto", 4, False) == (False, False)   # not Megatron-Core's schedule
    plans = {version: Simulation(_pipelined(4, 8, 2, training__mcore_version=version)).plan.p2p_interleaved_blocking
             for version in ("0.5", "0.8", "0.9", "0.10", "0.17")}
    assert set(plans.values()) == {(True, True)}
    steps = {version: Simulation(_pipelined(4, 4, 2, training__mcore_version=version)).run().summary["step_time_s"]
             for version in ("0.9", "0.10")}
    assert steps["0.9"] == steps["0.10"]


@pytest.mark.parametrize(("pp", "m", "v"), [(4, 8, 2), (2, 2, 3), (3, 6, 2), (4, 4, 4)])
def test_blocking_sends_are_the_warm_up_forwards_and_the_cool_down_backwards(pp, m, v):
    # Megatron: `for k in range(num_warmup_microbatches)` forwards, then the steady state's pairs, then `for k in
    # range(num_microbatches_remaining, total_num_microbatches)` backwards: as many as the warm-up's
    for stage in range(pp):
        order = pipeline_order("1f1b", pp, stage, m, v)
        warmup = warmup_forwards("1f1b", pp, stage, m, v)
        warm = interleaved_blocking_sends(order, warmup, True, False)
        flush = interleaved_blocking_sends(order, warmup, False, True)
        assert len(warm) == len(flush) == warmup
        assert all(order[i].phase == "forward" for i in warm) and all(order[i].phase == "backward" for i in flush)
        last_forward = max(i for i, w in enumerate(order) if w.phase == "forward")
        # after the last forward: its steady-state backward, if any, then the cool-down
        assert min(flush) == last_forward + (1 if warmup == m * v else 2) and max(warm) == warmup - 1
        assert interleaved_blocking_sends(order, warmup, True, True) == warm | flush


@pytest.mark.parametrize(("pp", "m", "v"), [(4, 8, 2), (4, 4, 2), (2, 6, 3)])
def test_each_receive_is_posted_after_the_previous_block_of_its_phase(pp, m, v):
    for stage in range(pp):
        order = pipeline_order("1f1b", pp, stage, m, v)
        warmup = warmup_forwards("1f1b", pp, stage, m, v)
        posted_by = {j: i for i, js in receive_posts(order, warmup).items() for j in js}
        forwards = [i for i, w in enumerate(order) if w.phase == "forward"]
        backwards = [i for i, w in enumerate(order) if w.phase == "backward"]
        # every block but the first forward (its blocking recv_forward before the loop) is posted for, once
        assert sorted(posted_by) == sorted(forwards[1:] + backwards)
        for earlier, later in zip(forwards, forwards[1:], strict=False):
            assert posted_by[later] == earlier
        for earlier, later in zip(backwards, backwards[1:], strict=False):
            assert posted_by[later] == earlier
        # the first backward's receive goes with the last warm-up forward (send_backward_recv_backward(None, ...))
        assert posted_by[backwards[0]] == warmup - 1


@pytest.mark.parametrize(("pp", "v"), [(2, 2), (4, 2), (3, 3), (4, 3)])
def test_all_warm_up_fill_grows_by_one_transfer_a_stage_boundary_per_blocking_phase(pp, v):
    # m == pp: every forward is a warm-up one and every backward a cool-down one. On a uniform pipeline (forward f,
    # transfer c) the asynchronous forwards start at j f + g (f + c) (microbatch j, global chunk g: each stage runs a
    # chunk's microbatches back to back and the chain through the stages is tight), so the forward phase is
    # (pp - 1) f + (v pp - 1)(f + c) + f and carries (v pp - 1) c; the backward phase likewise. Blocking exchanges
    # hold every sender f + c a block, so they start at (j + g)(f + c): (pp - 1) c more per phase.
    free = _fill_s(pp, pp, v, (False, False), p2p_bytes=0.0)
    asynchronous = _fill_s(pp, pp, v, (False, False))
    transfer_s = (asynchronous - free) / (2 * (v * pp - 1))
    assert transfer_s > 1e-6
    assert _fill_s(pp, pp, v, (False, True)) - asynchronous == pytest.approx((pp - 1) * transfer_s, rel=1e-6)
    assert _fill_s(pp, pp, v, (True, True)) - asynchronous == pytest.approx(2 * (pp - 1) * transfer_s, rel=1e-6)
    # free messages: the rendezvous alone costs nothing (each receive is posted a block ahead)
    assert _fill_s(pp, pp, v, (True, True), p2p_bytes=0.0) == pytest.approx(free, rel=1e-12)


@pytest.mark.parametrize(("pp", "m", "v"), [(4, 8, 2), (3, 9, 3), (2, 8, 4)])
def test_blocking_exchanges_never_speed_a_uniform_pipeline(pp, m, v):
    asynchronous = _fill_s(pp, m, v, (False, False))
    flush = _fill_s(pp, m, v, (False, True))
    both = _fill_s(pp, m, v, (True, True))
    assert asynchronous <= flush * (1 + 1e-12) and flush <= both * (1 + 1e-12)


def test_off_is_the_asynchronous_schedule_byte_for_byte():
    # the exchanges off (p2p: async, or forced off in the plan) run the engine's asynchronous schedule exactly; a
    # non-interleaved run is the same for every release
    auto = Simulation(_pipelined(4, 8, 2, training__mcore_version="0.10"))
    auto.plan.p2p_interleaved_blocking = (False, False)
    stated = Simulation(_pipelined(4, 8, 2, training__mcore_version="0.10", parallelism__p2p="async"))
    assert auto.run().summary["step_time_s"] == stated.run().summary["step_time_s"]
    flat = [Simulation(_pipelined(4, 8, 1, training__mcore_version=version)).run().summary["step_time_s"]
            for version in ("0.9", "0.10")]
    assert flat[0] == flat[1]


@pytest.mark.parametrize("pp", range(2, 9))
def test_no_deadlock(pp):
    # SimPy raises if the step cannot finish (a blocking sender whose receiver never posts)
    for v in (2, 3, 4):
        for m in (pp, 2 * pp):
            assert Simulation(_pipelined(pp, m, v, training__mcore_version="0.10")).run().summary["step_time_s"] > 0


@pytest.mark.parametrize(("pp", "m", "v"), [(4, 8, 2), (3, 9, 3)])
def test_a_steady_state_receive_is_posted_before_the_block_between(pp, m, v, monkeypatch):
    # Megatron posts the receive of a rank's next forward with the send after its forward (next backward: after its
    # backward), so in the steady state, where the blocks alternate, a receive is posted one block (of the other
    # phase, taking time) before the block that needs it starts; posted only when that block starts, a blocking
    # sender of it would wait the block between for nothing
    from simcluster.engine.agents import Agent

    posted, needed = {}, {}
    sim = Simulation(_pipelined(pp, m, v, training__mcore_version="0.10"))
    post = sim.post_receive

    def recording_post(agent, key):
        posted.setdefault((agent.stage, key), sim.env.now)
        return post(agent, key)

    receive = Agent._receive

    def recording_receive(agent, key):
        needed.setdefault((agent.stage, key), sim.env.now)
        return (yield from receive(agent, key))

    monkeypatch.setattr(sim, "post_receive", recording_post)
    monkeypatch.setattr(Agent, "_receive", recording_receive)
    sim.run()
    steady = 0
    for stage in range(pp):
        order = pipeline_order("1f1b", pp, stage, m, v)
        warmup = warmup_forwards("1f1b", pp, stage, m, v)
        for index in range(warmup + 1, len(order) - warmup):
            work = order[index]
            key = (stage, (work.phase, 0, work.microbatch, work.chunk))
            if key in needed and order[index - 1].phase != work.phase:
                assert posted[key] < needed[key]
                steady += 1
    assert steady > 0
