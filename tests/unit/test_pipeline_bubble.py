"""The pipeline bubble against closed forms and Megatron-Core's schedule (issue 15, docs/calibration/round-15.md "Round
15: the pipeline bubble, itemised")."""

from __future__ import annotations

import dataclasses

import pytest

from simcluster.engine import Simulation
from simcluster.engine.aligned_reduction import ReduceAlignedAcrossStages
from simcluster.parallel.schedules import aligned_grad_syncs, pipeline_order
from tests.unit.test_engine import scenario


def _uniform(sim):
    """Every chunk the same (no embedding, output layer or loss), pipeline messages and the step's last
    collectives free."""
    middle = sim.plan.chunks[1]
    sim.plan.chunks = [dataclasses.replace(middle, chunk=c.chunk, stage=c.stage) for c in sim.plan.chunks]
    sim.plan.deferred_wgrads = 0
    sim.plan.p2p_bytes = 0.0
    sim.plan.embedding_grad_bytes, sim.plan.grad_norm_axes = 0.0, ()
    return middle


def _pipelined(pp, m, v, dp=1):
    return scenario(cluster__gpus_per_node=pp * dp, parallelism__pp=pp, parallelism__dp=dp,
                    parallelism__virtual_stages=v, training__global_batch_size=m * dp,
                    model={"layers": pp * v * 2, "hidden": 2048, "heads": 16, "vocab": 32000})


@pytest.mark.parametrize(("pp", "m", "v"), [(4, 8, 2), (4, 16, 2), (4, 12, 3), (2, 4, 4), (4, 4, 2)])
def test_interleaved_bubble_is_the_closed_form_on_a_uniform_pipeline_without_communication(pp, m, v):
    # Narayanan et al. 2021, section 2.2.2: interleaved 1F1B's bubble is (pp - 1) / (v m) of the ideal step
    sim = Simulation(_pipelined(pp, m, v))
    middle = _uniform(sim)
    step = sim.run().summary["step_time_s"] - max(sim.plan.optimizer_s)
    ideal = m * v * (middle.forward_compute_s + middle.backward_compute_s)
    assert (step - ideal) / ideal == pytest.approx((pp - 1) / (v * m), rel=1e-9)


def _megatron_aligned_syncs(pp, rank, m, v):
    """Megatron-Core forward_backward_pipelining_with_interleaving (core_r0.8-r0.12), its own helpers: after backward
    k, the chunk whose last microbatch was backward k - rank (get_model_chunk_id, is_last_microbatch_for_model_chunk;
    microbatch_group_size_per_vp_stage = pp); after the cool-down the others, in model-chunk order."""
    total = m * v

    def chunk_id(k):  # get_model_chunk_id(k, forward=False)
        return v - ((k % (pp * v)) // pp) - 1

    def is_last(k):  # is_last_microbatch_for_model_chunk
        group = pp * v
        return k // group == total // group - 1 and (k % group) % pp == pp - 1

    syncs, done = {}, set()
    for k in range(total):
        j = k - rank
        if j >= 0 and is_last(j):
            syncs[k] = [chunk_id(j) * pp + rank]
            done.add(chunk_id(j))
    rest = [c * pp + rank for c in range(v) if c not in done]
    if rest:
        syncs[total] = rest
    return syncs


@pytest.mark.parametrize(("pp", "m", "v"), [(4, 8, 2), (4, 16, 3), (8, 16, 4), (2, 4, 2)])
def test_aligned_grad_syncs_follow_megatron(pp, m, v):
    for rank in range(pp):
        order = pipeline_order("1f1b", pp, rank, m, v)
        assert aligned_grad_syncs(order, rank, v) == _megatron_aligned_syncs(pp, rank, m, v)


def test_non_interleaved_first_stage_keeps_its_hooks_others_reduce_after_the_cool_down():
    # forward_backward_pipelining_without_interleaving: only rank 0 enables grad sync in its last backward
    assert aligned_grad_syncs(pipeline_order("1f1b", 4, 0, 8), 0, 1) is None
    assert aligned_grad_syncs(pipeline_order("1f1b", 4, 2, 8), 2, 1) == {8: [2]}


def test_stages_start_a_chunks_reduction_together():
    # "we launch asynchronous communication at the same time across the pipeline-parallel group": on a uniform
    # pipeline every stage starts its local chunk j's reduction at the same instant, but the first local chunk's,
    # which each stage starts after its own cool-down (the first stage's last backward ends last)
    pp, m, v = 4, 8, 3
    sim = Simulation(_pipelined(pp, m, v, dp=2))
    _uniform(sim)
    assert all(isinstance(agent.gradients, ReduceAlignedAcrossStages) for agent in sim.agents)
    started = {}
    data_parallel = sim.data_parallel

    def record(agent, op, size_bytes, name, experts=False):
        if name.startswith("grad"):
            started[(agent.stage, name)] = sim.env.now
        return data_parallel(agent, op, size_bytes, name, experts)

    sim.data_parallel = record
    sim.run()
    middle = sim.plan.chunks[1]
    for local in range(1, v):
        times = [started[(stage, f"grad {sim.plan.dp_grad_op} c{local * pp + stage}b0")] for stage in range(pp)]
        assert max(times) - min(times) < 1e-9, (local, times)
    firsts = [started[(stage, f"grad {sim.plan.dp_grad_op} c{stage}b0")] for stage in range(pp)]
    assert firsts == pytest.approx([firsts[0] - stage * middle.backward_compute_s for stage in range(pp)], rel=1e-9)


def test_only_pipelined_zero_0_1_reductions_are_aligned():
    from simcluster.engine.data_parallel import ReduceBucketsDuringBackward

    zero2 = scenario(cluster__gpus_per_node=8, parallelism__pp=4, parallelism__dp=2, parallelism__virtual_stages=2,
                     parallelism__zero_stage=2, training__global_batch_size=16,
                     model={"layers": 16, "hidden": 2048, "heads": 16, "vocab": 32000})
    flat = scenario(parallelism__zero_stage=1)  # no pipeline
    torch_stack = scenario(cluster__gpus_per_node=8, parallelism__pp=4, parallelism__dp=2, parallelism__zero_stage=1,
                           training__global_batch_size=16, training__optimizer="torch_adamw")  # not Megatron-Core
    for spec in (zero2, flat, torch_stack):
        assert all(type(agent.gradients) is ReduceBucketsDuringBackward for agent in Simulation(spec).agents)
