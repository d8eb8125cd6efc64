"""The async backward TP collectives (workload.async_backward) run beside the column-parallel linear that reads each
block's normed input, whatever the layer names it: the shared experts' fc1 (workload.moe) for an MoE layer's MLP;
for MLA (workload.mla) the attention block's up-projections, q_up and kv_up together, not the duplicated
down-projection before its norm (round 27: Megatron-Core gathers MLA's latents there). With a collective outlasting
its slowed GEMMs the backward waits layers x sum(c / f - g) (closed form, ``async_backward.exposed_s``); a layer
whose GEMMs the matching misses exposes nothing, which these assert against."""

from __future__ import annotations

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.parallel import plan
from simcluster.spec import config
from simcluster.spec.model import MLASpec, MoESpec, TransformerSpec
from simcluster.workload import async_backward, kernels, mla, moe
from simcluster.workload.ops import layer_ops, shard_for

TP = 8
BASE = dict(layers=2, hidden=4096, heads=32, ffn_hidden=8192, vocab=32000, mlp="swiglu", norm="rmsnorm",
            position="rope", dropout=False)


def _scenario(model: TransformerSpec) -> config.Scenario:
    return config.from_dict({
        "name": "async-backward-roles",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "topology": "nvswitch-node"},
        "model": model.model_dump(mode="json"),
        "training": {"seq_len": 4096, "global_batch_size": 1, "micro_batch_size": 1, "precision": "bf16"},
        "parallelism": {"tp": TP, "dp": 1, "ep": 1, "sequence_parallel": True, "zero_stage": 1,
                        "tp_comm_overlap": False}})


def _layer(scenario, moe_layer: bool):
    """The layer ops as the plan builds them (MLA where the model has it; an MoE layer's MLP its MoE block, whose
    QKV and shared-expert GEMMs do not depend on the routing)."""
    shard = shard_for(scenario)
    block = moe.moe_block(scenario.model, shard) if moe_layer else None
    return mla.apply(scenario.model, shard, layer_ops(scenario.model, shard, block))


def _gemm(layer, phase: str, name: str):
    (op,) = [op for op in layer[phase] if op.kind == "gemm" and op.name == name]
    return op


MLA = TransformerSpec(**BASE, mla=MLASpec(q_lora_rank=1536, kv_lora_rank=512, qk_head_dim=128, qk_rope_head_dim=64,
                                         v_head_dim=128))
CASES = {
    "dense": (TransformerSpec(**BASE), False, (("qkv",), ("mlp_up",))),
    # an MoE layer with shared experts: QKV and the shared experts' fc1 (the routed experts are EP's, not TP's)
    "shared-experts": (TransformerSpec(**BASE, moe=MoESpec(experts=8, top_k=2, ffn_hidden=2048, shared_experts=1)),
                       True, (("qkv",), ("shared_expert_up",))),
    # MLA: the attention block's collectives beside both up-projections (the GEMM before its norm is mla_q_down's)
    "mla": (MLA, False, (("mla_q_up", "mla_kv_up"), ("mlp_up",))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_exposure_pairs_each_collective_with_the_gemm_reading_the_blocks_input(case):
    model, moe_layer, blocks = CASES[case]
    scenario = _scenario(model)
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    layer = _layer(scenario, moe_layer)
    pairs = async_backward.column_gemms(layer, 2)
    assert [sorted(op.name for op in d) for d, _ in pairs] == [sorted(names) for names in blocks]
    assert [sorted(op.name for op in w) for _, w in pairs] == [sorted(names) for names in blocks]
    dgrads = [sum(kernels.op_time_s(_gemm(layer, "backward_input", n), gpu, precision) for n in names)
              for names in blocks]
    wgrads = [sum(kernels.op_time_s(_gemm(layer, "backward_weight", n), gpu, precision) for n in names)
              for names in blocks]
    f = async_backward.slowdown(layer, 2, True, gpu, precision)  # its closed form: test_async_backward.py
    gather, scatter = 0.5 * min(dgrads + wgrads), 3.0 * f * max(dgrads + wgrads)  # gathers hide, scatters outlast
    chunk = plan.plan(scenario, lambda op, group, size: {"all_gather": gather, "reduce_scatter": scatter}[op]
                      ).chunks[0]
    assert chunk.tp_async_backward
    assert chunk.tp_async_exposed_s == pytest.approx(model.layers * sum(scatter / f - g for g in wgrads), rel=1e-9)


def test_mla_pairs_its_gathers_with_the_up_projections_not_the_duplicated_down_projection():
    layer = _layer(_scenario(MLA), False)
    backward = [op.name for op in layer["backward_input"] if op.kind == "gemm"]
    # the GEMM right before the attention norm's backward is a down-projection, which gathers nothing
    before_norm = [op for op in layer["backward_input"][:[op.name for op in layer["backward_input"]].index(
        "attn_norm")] if op.kind == "gemm"]
    assert before_norm[-1].name == "mla_q_down" and "mla_kv_up" in backward
    (dgrads, _), _ = async_backward.column_gemms(layer, 2)
    assert {op.name for op in dgrads} == {"mla_q_up", "mla_kv_up"}


def _default_overlap(model: TransformerSpec, **parallelism) -> config.Scenario:
    """_scenario's layout with tp_comm_overlap left to the default (or as ``parallelism`` states it)."""
    return config.from_dict({
        "name": "mla-overlap", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1,
                                           "topology": "nvswitch-node"},
        "model": model.model_dump(mode="json"),
        "training": {"seq_len": 4096, "global_batch_size": 1, "micro_batch_size": 1, "precision": "bf16"},
        "parallelism": {"tp": TP, "dp": 1, "ep": 1, "sequence_parallel": True, "zero_stage": 1, **parallelism}})


def test_mla_runs_without_tp_overlap_by_default_and_refuses_it_stated():
    # no Megatron-Core release read runs MLA with userbuffers (spec/config.py MLA_RUNS_TP_OVERLAP): off by default,
    # where a dense model at the same layout gets it on, and refused when stated, naming the field
    assert _default_overlap(TransformerSpec(**BASE)).parallelism.tp_comm_overlap
    assert not _default_overlap(MLA).parallelism.tp_comm_overlap
    with pytest.raises(ScenarioError) as err:
        _default_overlap(MLA, tp_comm_overlap=True)
    assert err.value.field == "parallelism.tp_comm_overlap"
    assert plan.plan(_default_overlap(MLA), lambda op, group, size: 1e-4).chunks[0].tp_async_backward


def test_a_block_without_its_norm_pairs_with_nothing():
    layer = _layer(_scenario(TransformerSpec(**BASE)), False)
    no_mlp_norm = {**layer, "backward_input": [op for op in layer["backward_input"] if op.name != "mlp_norm"]}
    ((qkv,), _), (dgrad, wgrad) = async_backward.column_gemms(no_mlp_norm, 2)
    assert qkv.name == "qkv" and (dgrad, wgrad) == ((), ())
