"""A rank's data-parallel collectives run one at a time per NCCL communicator, in issue order, whatever CUDA stream
each is issued on (Megatron-LM megatron/core/distributed/fsdp/src/docs/runtime_schedule.md and its
nccl_same_pg_two_streams_{async,sync}.py probes; pytorch/pytorch#186335). Two groups are two communicators:
Megatron-FSDP gathers its dense and routed-expert buckets asynchronously, each on its own group, so they run at
once and share the links; its reduce-scatters all queue on its one ``rs_stream``. Every other stack keeps one
data-parallel stream (``engine.data_parallel.communicator_streams``).

Closed forms on two 8-rank groups with the same members (TP 2, EP 2: expert-DP = 16 / 2 = 8, the dense and expert
groups are both the even or the odd ranks), so the two collectives cross the same links:
- one stream: the second starts when the first ends, T(S) + T(S);
- two communicators at once: both end together at T(2S), the sum of their bytes over the shared links' rate with
  the latency paid once (``timing.isolated_time_s`` of the summed bytes).
"""

from __future__ import annotations

import pytest

from simcluster.collectives import timing
from simcluster.engine import Simulation
from simcluster.engine.data_parallel import communicator_streams
from simcluster.spec import config

SIZE = 256e6
MODEL = {
    "layers": 2, "hidden": 1024, "heads": 8, "kv_heads": 4, "ffn_hidden": 2048, "vocab": 32000, "mlp": "swiglu",
    "norm": "rmsnorm", "position": "rope", "dropout": False, "tied_embeddings": False,
    "moe": {"experts": 16, "top_k": 2, "ffn_hidden": 512, "load": "balanced"},
}


def _scenario(zero_stage: int, **training) -> config.Scenario:
    return config.from_dict({
        "name": "dp-streams", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2,
                                          "topology": "rail-fat-tree"},
        "model": MODEL,
        "training": {"seq_len": 2048, "global_batch_size": 32, "micro_batch_size": 1, **training},
        "parallelism": {"tp": 2, "pp": 1, "dp": 8, "ep": 2, "zero_stage": zero_stage, "sequence_parallel": True},
    })


def _two_collectives(scenario, op: str) -> tuple[float, float, float]:
    """A dense and an expert ``op`` of SIZE bytes issued together on rank 0: when each ends, and T(SIZE)."""
    sim = Simulation(scenario)
    agent = sim.agents[0]
    dense, experts = (sim._data_parallel_groups(agent, flag) for flag in (False, True))
    assert sorted(dense) == sorted(experts)  # the same members: the two collectives cross the same links
    ends = {}
    for name, flag in (("dense", False), ("experts", True)):
        sim.data_parallel(agent, op, SIZE, f"{name} {op}", experts=flag).callbacks.append(
            lambda _event, key=name: ends.__setitem__(key, sim.env.now))
    sim.env.run()
    return ends["dense"], ends["experts"], timing.isolated_time_s(sim.fabric, op, dense[0], SIZE)


def test_stacks():
    """Megatron-FSDP (ZeRO-3 on Megatron-Core) has a communicator per group; Megatron-Core's ZeRO-1/2, torchtitan's
    FSDP2 and llm-foundry's FSDP1 (their optimizers mark the stacks) keep one stream."""
    assert communicator_streams(_scenario(3))
    assert not communicator_streams(_scenario(1))
    assert not communicator_streams(_scenario(2))
    assert not communicator_streams(_scenario(3, optimizer="torch_adamw"))
    assert not communicator_streams(_scenario(3, optimizer="decoupled_adamw"))


def test_megatron_fsdp_gathers_both_groups_at_once_sharing_the_links():
    dense_s, experts_s, alone_s = _two_collectives(_scenario(3), "all_gather")
    sim = Simulation(_scenario(3))
    both_s = timing.isolated_time_s(sim.fabric, "all_gather", sim._data_parallel_groups(sim.agents[0], False)[0],
                                    2 * SIZE)
    assert dense_s == pytest.approx(both_s, rel=1e-9)
    assert experts_s == pytest.approx(both_s, rel=1e-9)
    assert both_s < 2 * alone_s  # faster than one after the other: the latency is paid once


def test_megatron_fsdp_reduce_scatters_queue_on_one_stream():
    dense_s, experts_s, alone_s = _two_collectives(_scenario(3), "reduce_scatter")
    assert dense_s == pytest.approx(alone_s, rel=1e-9)
    assert experts_s == pytest.approx(2 * alone_s, rel=1e-9)


@pytest.mark.parametrize("op", ["all_gather", "reduce_scatter"])
def test_one_stream_runs_them_one_after_the_other(op):
    dense_s, experts_s, alone_s = _two_collectives(_scenario(1), op)
    assert dense_s == pytest.approx(alone_s, rel=1e-9)
    assert experts_s == pytest.approx(2 * alone_s, rel=1e-9)


def test_a_megatron_fsdp_step_overlaps_only_collectives_of_different_groups():
    """In a whole step: no two collectives of one group overlap (one communicator), no two reduce-scatters overlap
    (rs_stream), and some dense and expert all-gathers do."""
    events = Simulation(_scenario(3)).run(1).events
    dp = events[(events["rank"] == 0) & events["stream"].isin(("dp", "dp-experts"))].sort_values("start_s")
    experts = dp["name"].str.startswith("expert ")
    assert (experts == (dp["stream"] == "dp-experts")).all()   # each stream its own lane
    reductions = dp["name"].str.contains("reduce_scatter")
    for rows in (dp[experts], dp[~experts], dp[reductions]):
        assert len(rows) > 1
        assert (rows["start_s"].to_numpy()[1:] >= rows["end_s"].to_numpy()[:-1] - 1e-12).all()
    pairs = [(a, b) for a in dp[~reductions & ~experts].itertuples() for b in dp[~reductions & experts].itertuples()
             if a.start_s < b.end_s - 1e-12 and b.start_s < a.end_s - 1e-12]
    assert pairs


@pytest.mark.parametrize("zero_stage", [1, 3])
def test_the_compute_beside_them_is_charged_both_kernels(zero_stage):
    """Issued together, the two collectives hold NCCL SMs for T(S) each: one after the other on one stream, or at
    once on two streams (each kernel its own SMs): either way the compute beside them is charged 2 T(S)."""
    sim = Simulation(_scenario(zero_stage))
    agent = sim.agents[0]
    alone_s = timing.isolated_time_s(sim.fabric, "all_gather", sim._data_parallel_groups(agent, False)[0], SIZE)
    for name, flag in (("dense", False), ("experts", True)):
        sim.data_parallel(agent, "all_gather", SIZE, name, experts=flag)
    assert sim.data_parallel_busy_s(agent) == pytest.approx(2 * alone_s, rel=1e-9)
