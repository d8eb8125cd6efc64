"""ZeRO-3 in time as in memory: parameters gathered per unit, the next unit's all-gather prefetched while the current
unit computes; checked against the pipeline's closed form g + (L-1) max(g, c) + c."""

from __future__ import annotations

import copy

import pytest

from simcluster.collectives import timing
from simcluster.engine import Simulation
from simcluster.parallel import memory
from simcluster.parallel.plan import GRAD_NORM_BYTES
from simcluster.spec import config

# one 8-GPU H100 node, pure FSDP: no tensor, pipeline or context parallelism, so the data-parallel stream is all
# the traffic and every collective takes its time alone on the fabric
FSDP = {"cluster": {"nodes": 1, "topology": "nvswitch-node"},
        "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": 3, "sequence_parallel": False}}


@pytest.fixture
def fsdp(small_scenario):
    def make(model=None, **training):
        data = copy.deepcopy(small_scenario)
        for section, values in FSDP.items():
            data[section].update(values)
        data["training"].update(training)
        if model is not None:
            data["model"] = model
        return Simulation(config.from_dict(data))

    return make


def unit_times(sim: Simulation) -> tuple[int, float, float, float]:
    """(units L, one unit's all-gather g, one unit's reduce-scatter, one unit's forward compute c alone)."""
    cost, model = sim.plan.chunks[0], sim.scenario.model
    units = memory.zero3_units(model, cost.layers, True, True, 1)
    group = tuple(range(8))
    gather_s = timing.isolated_time_s(sim.fabric, "all_gather", group, cost.param_bytes / units)
    reduce_s = timing.isolated_time_s(sim.fabric, "reduce_scatter", group, cost.grad_bytes / units)
    return units, gather_s, reduce_s, cost.forward_compute_s / units


def test_units_are_the_ones_memory_counts():
    model = config.from_dict({**FSDP, "model": "gpt3-1.3b", "cluster": {"gpu": "h100-sxm", "nodes": 1,
                              "gpus_per_node": 8}, "training": {"seq_len": 2048, "global_batch_size": 8}}).model
    assert model.tied_embeddings
    assert memory.zero3_units(model, 24, True, True, 1) == 24 + 1  # layers + the embedding, reused by the output
    assert memory.zero3_units(model, 12, False, True, 2) == 12 + 1  # the last stage's own copy of the embedding
    assert memory.zero3_units(model, 12, False, False, 4) == 12


def test_compute_far_longer_than_the_gathers_exposes_one_unit_gather_per_block(fsdp):
    # 16k tokens a microbatch: a unit computes ~10x longer than it gathers, so each block waits only for its first
    # unit's gather, after each backward's last reduce-scatter (one data-parallel stream: NCCL runs a
    # communicator's collectives in order), which the step's end also waits for
    sim = fsdp(micro_batch_size=8, global_batch_size=128)
    units, gather_s, reduce_s, compute_s = unit_times(sim)
    assert compute_s > 5 * (gather_s + reduce_s)
    summary = sim.run().summary
    blocks = 2 * sim.plan.microbatches  # a forward and a backward per microbatch
    # and the gradient-norm all-reduce before the optimizer (one fp32 over the 8 ranks)
    norm_s = timing.isolated_time_s(sim.fabric, "allreduce", tuple(range(8)), GRAD_NORM_BYTES)
    expected_s = blocks * gather_s + sim.plan.microbatches * reduce_s + norm_s
    assert summary["exposed_comm_by_parallelism_s"]["dp"] == pytest.approx(expected_s, rel=1e-9)
    # without prefetching, every unit's gather would be exposed: L times more
    assert summary["exposed_comm_by_parallelism_s"]["dp"] < blocks * units * gather_s / 5


def test_gathers_dominating_make_the_step_the_sum_of_the_collectives(fsdp):
    # 128 tokens a microbatch of 8192-wide layers: a unit gathers far longer than it computes, even with each
    # kernel's gap (kernels.HostModel.kernel_gap_s), which dominates the compute of so few tokens
    wide = {"layers": 4, "hidden": 8192, "heads": 64, "vocab": 32000, "max_seq_len": 2048}
    sim = fsdp(model=wide, seq_len=128, micro_batch_size=1, global_batch_size=16)
    units, gather_s, reduce_s, compute_s = unit_times(sim)
    assert gather_s > 2 * compute_s
    result = sim.run()
    events = result.events
    first = events[(events["rank"] == 0) & (events["stream"] == "compute") & (events["microbatch"] == 0)
                   & (events["name"] == f"forward c0 b{units - 1}")]
    # the first forward: g + (L-1) max(g, c) + c, the last unit at full speed (nothing left to gather beside it)
    assert first["end_s"].min() == pytest.approx(units * gather_s + compute_s, rel=1e-9)
    microbatches = sim.plan.microbatches
    collectives_s = microbatches * units * (2 * gather_s + reduce_s)
    step_s, summary = result.summary["step_time_s"], result.summary
    assert collectives_s < step_s < collectives_s + summary["compute_s"]
    assert step_s < 1.1 * collectives_s  # the data-parallel stream is busy nearly all the step
