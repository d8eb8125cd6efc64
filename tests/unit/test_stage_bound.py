"""A pipeline whose last rank is heavier (the output layer and loss of a large vocabulary on the last stage, as in
NVIDIA's Llama 3 70B recipes on 64 H100: 80 layers over 8 x 5 chunks, 2 a chunk) against closed forms (round 27,
docs/calibration/round-27.md "Round 27: the pipelined 70B recipes' last stage"; ``scripts/stage_bound.py``).

Dependency bound: rank b's first block is a forward of chunk b, after the forwards of chunks 0 .. b - 1 of that
microbatch; its last is a backward of chunk b, before the backwards of chunks b - 1 .. 0. So no schedule runs a
step in less than W_b + sum over s < b of (t_f(s) + t_b(s)), W_b every block of rank b. When the last rank is the
busiest, Megatron's interleaved 1F1B (the engine's order, ``parallel.schedules``) keeps it busy from its first
input to its last block: the step is the bound, and an extra delta on the last chunk costs m x delta, not more
(the rest of the pipeline waits on it but adds no idle of its own). Fails if the engine's dependencies let the
last rank idle between its first forward and its last backward, or let a stage start before its input exists.
"""

import dataclasses

import pytest
from scripts_loader import load_script

from simcluster.engine import Simulation
from tests.unit.test_pipeline_bubble import _pipelined, _uniform


@pytest.fixture(scope="module")
def stage_bound():
    return load_script("stage_bound")


def _heavier(sim, index, extra_forward_s, extra_backward_s):
    chunk = sim.plan.chunks[index]
    sim.plan.chunks[index] = dataclasses.replace(chunk, forward_compute_s=chunk.forward_compute_s + extra_forward_s,
                                                 backward_compute_s=chunk.backward_compute_s + extra_backward_s)


def _step(sim):
    return sim.run().summary["step_time_s"] - max(sim.plan.optimizer_s)


@pytest.mark.parametrize(("pp", "m", "v", "extra_forward_s", "extra_backward_s"),
                         [(4, 8, 2, 1e-3, 2e-3), (4, 16, 3, 3e-3, 5e-3), (8, 16, 5, 7e-3, 13e-3),
                          (4, 8, 2, 20e-3, 40e-3), (8, 16, 5, 0.0, 5e-3)])
def test_a_heavier_last_chunk_costs_its_extra_every_microbatch(pp, m, v, extra_forward_s, extra_backward_s):
    sim = Simulation(_pipelined(pp, m, v))
    middle = _uniform(sim)
    _heavier(sim, -1, extra_forward_s, extra_backward_s)
    t_f, t_b = middle.forward_compute_s, middle.backward_compute_s
    last_rank = m * v * (t_f + t_b) + m * (extra_forward_s + extra_backward_s)
    assert _step(sim) == pytest.approx(last_rank + (pp - 1) * (t_f + t_b), rel=1e-9)


@pytest.mark.parametrize(("pp", "m", "v", "index"), [(4, 8, 2, 0), (4, 8, 2, 5), (4, 16, 3, 2), (8, 16, 5, -2),
                                                    (8, 16, 2, 3), (4, 8, 2, -1)])
def test_no_step_beats_the_busiest_rank_bound(stage_bound, pp, m, v, index):
    sim = Simulation(_pipelined(pp, m, v))
    _uniform(sim)
    _heavier(sim, index, 2e-3, 4e-3)
    lower, rank = stage_bound.bound(sim.plan.chunks, pp, m)
    assert rank == sim.plan.chunks[index].stage
    step = _step(sim)
    assert step >= lower * (1 - 1e-12)
    if index % (pp * v) >= pp * (v - 1) and index % pp == pp - 1:   # the last rank the busiest: attained
        assert step == pytest.approx(lower, rel=1e-9)


def test_bound_of_a_uniform_pipeline_is_narayanans_bubble(stage_bound):
    # interleaved 1F1B's bubble (pp - 1) / (v m) of the ideal step (Narayanan et al. 2021, section 2.2.2)
    pp, m, v = 4, 8, 2
    sim = Simulation(_pipelined(pp, m, v))
    middle = _uniform(sim)
    ideal = m * v * (middle.forward_compute_s + middle.backward_compute_s)
    lower, _ = stage_bound.bound(sim.plan.chunks, pp, m)
    assert (lower - ideal) / ideal == pytest.approx((pp - 1) / (v * m), rel=1e-12)


def test_split_notation(stage_bound):
    # the later stored recipe's layout "Et*2|(t*2|)*34,t*3|(t*2|)*3,tL": 35 chunks of 2, one of 3, 3 of 2, one of 1
    split = stage_bound.parse_split("35x2,3,3x2,1")
    assert (len(split), sum(split), split[35], split[-1]) == (40, 80, 3, 1)
