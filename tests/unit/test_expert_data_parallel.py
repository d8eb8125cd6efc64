"""Routed-expert parameters reduced and gathered over the expert data-parallel group, dense ones over dp x cp, as
Megatron-Core's DistributedDataParallel does (its ``expert_parallel_buffers`` over ``expt_dp_group``): checked in
closed form, bytes per group, on the plan and on the engine's recorded collectives; nothing for the experts when the
group has one member."""

from __future__ import annotations

import pytest

from simcluster.engine import Simulation, simulate
from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.workload import fp8_params

LAYERS, HIDDEN, EXPERTS, EXPERT_FFN = 4, 2048, 64, 1024
MODEL = {
    "layers": LAYERS, "hidden": HIDDEN, "heads": 16, "kv_heads": 4, "ffn_hidden": 4096, "vocab": 32000,
    "mlp": "swiglu", "norm": "rmsnorm", "position": "rope", "dropout": False, "tied_embeddings": False,
    "moe": {"experts": EXPERTS, "top_k": 4, "ffn_hidden": EXPERT_FFN, "load": "balanced"},
}
TP, DP = 2, 8  # 16 H100s in two nodes, one pipeline stage: expert-DP = tp dp / (ep etp) = 16 / ep


def _scenario(ep: int, zero_stage: int = 1, gpu: str = "h100-sxm", **training) -> config.Scenario:
    return config.from_dict({
        "name": "expert-dp", "cluster": {"gpu": gpu, "gpus_per_node": 8, "nodes": 2,
                                         "topology": "rail-fat-tree"},
        "model": MODEL,
        "training": {"seq_len": 2048, "global_batch_size": 32, "micro_batch_size": 1, **training},
        "parallelism": {"tp": TP, "pp": 1, "dp": DP, "ep": ep, "zero_stage": zero_stage, "sequence_parallel": True},
    })


def _expert_params_per_rank(ep: int) -> float:
    """Routed-expert weights on one rank: EXPERTS/ep experts of three h x F SwiGLU matrices per MoE layer."""
    return LAYERS * EXPERTS / ep * 3 * HIDDEN * EXPERT_FFN


@pytest.mark.parametrize("ep", [16, 4, 2])
def test_the_plan_gathers_dense_parameters_over_dp_and_experts_over_expert_dp(ep):
    sc = _scenario(ep)
    edp = sc.expert_data_parallel
    assert edp == TP * DP // ep
    (chunk,) = Simulation(sc).plan.chunks
    weight = memory.state_bytes_per_param("bf16")["weights"]
    dense = memory.chunk_params(sc.model, TP, LAYERS, True, True, 1, LAYERS)
    experts = _expert_params_per_rank(ep)
    assert chunk.param_bytes == pytest.approx(dense * weight, rel=1e-12)
    assert chunk.expert_param_bytes == pytest.approx(experts * weight if edp > 1 else 0.0, rel=1e-12)
    grad = chunk.grad_bytes / dense  # the gradient buffer's element, the same for both parts
    assert chunk.expert_grad_bytes == pytest.approx(experts * grad if edp > 1 else 0.0, rel=1e-12)


def test_expert_data_parallel_groups_are_megatron_cores():
    """Megatron-Core's expert ranks of a stage: (etp, ep, expert-dp) innermost first, so an expert-DP group is the
    ranks ep x etp apart; the dense groups differ only on dp (tp innermost)."""
    sim = Simulation(_scenario(ep=4))
    agent = sim.agents[0]
    assert sorted(sim._data_parallel_groups(agent, experts=True)) == [(i, i + 4, i + 8, i + 12) for i in range(4)]
    assert sorted(sim._data_parallel_groups(agent, experts=False)) == [tuple(range(0, 16, 2)),
                                                                      tuple(range(1, 16, 2))]


@pytest.mark.parametrize("ep", [16, 4])
def test_the_engine_moves_each_part_over_its_own_group(ep):
    """One step with ZeRO-1 and overlapped parameter gathers: the dp stream's parameter all-gathers carry the dense
    bytes, the expert ones the experts' (none with one expert-DP member); likewise the gradient reduce-scatters."""
    sim = Simulation(_scenario(ep))
    (chunk,) = sim.plan.chunks
    events = sim.run(1).events
    dp = events[events["stream"].isin(("dp", "dp-experts"))]  # Megatron-FSDP: experts on their own stream

    def moved(prefix):
        return float(dp[dp["name"].str.startswith(prefix)]["bytes"].sum())

    weight = memory.state_bytes_per_param("bf16")["weights"]
    dense = memory.chunk_params(sim.scenario.model, TP, LAYERS, True, True, 1, LAYERS)
    assert moved("param all_gather") == pytest.approx(dense * weight, rel=1e-9)
    assert moved("grad reduce_scatter") == pytest.approx(chunk.grad_bytes, rel=1e-9)
    expected = _expert_params_per_rank(ep) * weight if sim.scenario.expert_data_parallel > 1 else 0.0
    assert moved("expert param all_gather") == pytest.approx(expected, rel=1e-9)
    assert (moved("expert grad") > 0) == (expected > 0)


@pytest.mark.parametrize("ep", [16, 4])
def test_zero3_gathers_experts_over_expert_dp_before_each_use(ep):
    """ZeRO-3: every unit's gather splits the same way, forward and backward of each microbatch."""
    sim = Simulation(_scenario(ep, zero_stage=3))
    events = sim.run(1).events
    dp = events[events["stream"].isin(("dp", "dp-experts"))]  # Megatron-FSDP: experts on their own stream
    dense = float(dp[dp["name"].str.startswith("zero3 all_gather")]["bytes"].sum())
    experts = float(dp[dp["name"].str.startswith("expert zero3 all_gather")]["bytes"].sum())
    gathers = 2 * sim.scenario.microbatches  # forward and backward, each microbatch
    weight = memory.state_bytes_per_param("bf16")["weights"]
    params = memory.chunk_params(sim.scenario.model, TP, LAYERS, True, True, 1, LAYERS)
    assert dense == pytest.approx(gathers * params * weight, rel=1e-9)
    expected = _expert_params_per_rank(ep) * weight if sim.scenario.expert_data_parallel > 1 else 0.0
    assert experts == pytest.approx(gathers * expected, rel=1e-9)
    assert (experts > 0) == (sim.scenario.expert_data_parallel > 1)


@pytest.mark.parametrize("ep", [16, 4])
def test_zero3_fp8_weights_save_the_expert_share_over_expert_dp(ep):
    """fp8 parameters under ZeRO-3: each rank holds 1/(dp cp) of the dense GEMM weights and 1/expert-DP of the
    routed experts, so the fp8 saving on the experts is divided by expert-DP, not dp x cp. On B200 (no transposed
    copy) an fp8 weight holds 1 byte instead of the 16-bit weight's 2 (against bf16: a TE recipe at ZeRO 3 without
    fp8 parameters is refused, spec.config)."""
    on = _scenario(ep, zero_stage=3, gpu="b200", precision="fp8", fp8_param_gather=True)
    off = _scenario(ep, zero_stage=3, gpu="b200", precision="bf16")
    saved = memory.state_bytes_per_param("fp8")["weights"] - fp8_params.weight_bytes_per_param("b200")
    assert saved == 1
    experts = _expert_params_per_rank(ep)
    dense_gemm = memory.stage_gemm_weights(on.model, TP, 1, 0, ep, 1) - experts
    expected = (dense_gemm / DP + experts / on.expert_data_parallel) * saved
    assert (memory.per_gpu_memory(off).weights_bytes - memory.per_gpu_memory(on).weights_bytes
            == pytest.approx(expected, rel=1e-9))


@pytest.mark.parametrize("zero_stage", [1, 3])
def test_one_agent_per_gpu_gives_the_collapsed_step(zero_stage):
    """The expanded run (one agent per GPU, each looking up its own expert data-parallel group) is the reference the
    collapsed one must match on a symmetric fabric."""
    sc = _scenario(4, zero_stage=zero_stage)
    assert simulate(sc, expand=True).summary["step_time_s"] == pytest.approx(simulate(sc).summary["step_time_s"],
                                                                              rel=1e-9)
