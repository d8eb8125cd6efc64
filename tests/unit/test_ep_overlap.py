"""Megatron-Core's combined 1F1B all-to-all overlap (parallelism.ep_overlap, parallel/ep_overlap.py): which works
merge, what each all-to-all hides under, and the engine's exposed time against the closed form."""

from __future__ import annotations

import pytest
from test_expert_parallel import _moe_scenario

from simcluster.engine import simulate
from simcluster.engine.simulation import Simulation
from simcluster.parallel import ep_overlap
from simcluster.parallel.schedules import pipeline_order


def test_1f1b_merges_each_steady_state_forward_with_the_next_backward_and_leaves_warm_up_and_cool_down_alone():
    """pp = 4, stage 0, 8 microbatches: 3 warm-up forwards, then F3..F7 merged with B0..B4, then 3 cool-down
    backwards alone (Megatron-Core schedules.py: the steady state's forward_backward_step)."""
    pairs = ep_overlap.partners(pipeline_order("1f1b", 4, 0, 8))
    assert sorted((phase, mb) for phase, _, mb in pairs) == sorted(
        [("forward", m) for m in range(3, 8)] + [("backward", m) for m in range(5)])
    # without pipelining a forward cannot merge with its own backward: B_i with F_{i+1}; F0 and B7 alone
    alone = ep_overlap.partners(pipeline_order("1f1b", 1, 0, 8))
    assert len(alone) == 14 and ("forward", 0, 0) not in alone and ("backward", 0, 7) not in alone


def test_interleaved_overlap_adds_one_warm_up_forward_and_one_cool_down_backward_on_every_stage():
    """Megatron-Core's interleaved schedule runs one extra warm-up forward with the overlap: on each stage one
    pair fewer than without it, the forward after the warm-up and the last steady-state backward alone; on the last
    stage that forward is the one the first backward needs, which could not merge with it anyway."""
    for stage in range(4):
        order = pipeline_order("1f1b", 4, stage, 16, 2)
        plain, extra = ep_overlap.partners(order), ep_overlap.partners(order, extra_warmup=True)
        assert len(extra) == len(plain) - (2 if stage < 3 else 0)
        first_backward = next(i for i, w in enumerate(order) if w.phase == "backward")
        before = order[first_backward - 1]
        assert ("forward", before.chunk, before.microbatch) not in extra


def test_each_all_to_all_hides_under_one_sub_stage_of_the_partner_only():
    """Two all-to-alls of 3 s per layer, partner attention 1 s and MLP 5 s: 2 s exposed per layer (not 0, which
    hiding under the whole 6 s layer would give); layers beyond the partner's and a recompute's pair run alone."""
    assert ep_overlap.exposed_s(6.0, 2, 1, 1, 1.0, 5.0) == pytest.approx(2.0)
    assert ep_overlap.exposed_s(12.0, 4, 2, 1, 1.0, 5.0) == pytest.approx(2.0 + 6.0)
    assert ep_overlap.exposed_s(12.0, 4, 1, 1, 1.0, 5.0) == pytest.approx(2.0 + 6.0)
    assert ep_overlap.exposed_s(2.0, 2, 1, 1, 1.0, 5.0) == 0.0


def test_engine_exposes_the_unpaired_blocks_whole_and_the_paired_ones_past_their_partner_sub_stage():
    """pp = 1, 4 microbatches on an idle analytic fabric: F0 and B3 have no partner and keep their blocking
    all-to-alls; the 6 merged blocks expose max(0, a2a - partner sub-stage) per all-to-all; the all-to-alls' kernels
    slow the compute (interference grows)."""
    kw = dict(network_model="analytic")
    blocking_sc = _moe_scenario("b200", 8, 2, ep=16, **kw)
    blocking_sc = blocking_sc.model_copy(update={"training": blocking_sc.training.model_copy(
        update={"global_batch_size": 4 * 16})})
    overlap_sc = blocking_sc.model_copy(update={"parallelism": blocking_sc.parallelism.model_copy(
        update={"ep_overlap": True})})
    blocking = simulate(blocking_sc)
    overlapped = simulate(overlap_sc)
    assert blocking_sc.microbatches == 4
    layers = blocking_sc.model.moe_layers
    per_call_s = blocking.summary["exposed_comm_by_parallelism_s"]["ep"] / (8 * 2 * layers)  # 8 blocks, 2 per layer
    attention = {phase: Simulation(overlap_sc).plan.chunks[0].ep_substages[phase][0] for phase in ("forward",
                                                                                                       "backward")}
    mlp = {phase: Simulation(overlap_sc).plan.chunks[0].ep_substages[phase][1] for phase in ("forward", "backward")}
    unpaired = 2 * (2 * layers * per_call_s)  # F0 and B3, blocking
    paired = sum(3 * layers * (max(0.0, per_call_s - attention[other]) + max(0.0, per_call_s - mlp[other]))
                 for other in ("forward", "backward"))  # F1..F3 beside backwards, B0..B2 beside forwards
    got = overlapped.summary["exposed_comm_by_parallelism_s"]["ep"]
    assert got == pytest.approx(unpaired + paired, rel=1e-6)
    assert got < blocking.summary["exposed_comm_by_parallelism_s"]["ep"]
    assert overlapped.summary["comm_interference_s"] > blocking.summary["comm_interference_s"]
