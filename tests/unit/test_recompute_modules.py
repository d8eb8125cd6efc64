"""``training.recompute_modules`` beyond mla_up_proj (workload/ops.py ``module_recompute``, parallel/memory.py):
Megatron-Core's selective recompute modules layernorm, moe_act and core_attn, checked against closed forms.

layernorm re-runs the norms that are modules of their own (an MoE layer's pre-MLP TENorm, an MLA layer's input
TENorm; the others are fused into TE LayerNormLinear and Megatron-Core leaves them) and frees their outputs, the next
GEMM's stored input: g x T/sp x h bytes each. moe_act re-runs the routed experts' activation and frees its output,
the down-projection's stored input: g x (T/tp x top_k x load) x ffn/etp bytes. Qwen3-235B-A22B (hidden 4096, 128
experts top-8 of ffn 1536) at sequence 4096, micro batch 1, TP 2 with sequence parallelism, EP 32, bf16 (g = e = 2).
"""

import dataclasses

import pytest

from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.spec.config import ScenarioError
from simcluster.workload import mla, moe, ops

ZOO_ROWS = ("moezoo-qwen3-235b-256-h100-deepep", "moezoo-qwen3-235b-256-h100-a2a",
            "moezoo-qwen3-235b-256-h100-deepep-overlap")
T, TP, EP, H, K, FFN, E = 4096, 2, 32, 4096, 8, 1536, 2


def _qwen3():
    return config.load(ZOO_ROWS[0]).model


def _moe_layer(model, modules=(), recompute="none"):
    shard = ops.Shard(seq_len=T, micro_batch=1, tp=TP, sequence_parallel=True, recompute=recompute,
                      recompute_modules=modules)
    return ops.layer_ops(model, shard, moe.moe_block(model, shard, ep=EP)), shard


def test_layernorm_and_moe_act_rerun_the_pre_mlp_norm_and_the_expert_activation():
    model = _qwen3()
    assert (model.hidden, model.moe.top_k, model.moe.ffn_hidden, model.mlp) == (H, K, FFN, "swiglu")
    layer, _ = _moe_layer(model, ("layernorm", "moe_act"))
    norm, act = layer["recompute"]
    assert (norm.name, act.name) == ("mlp_norm", "expert_act")
    # RMSNorm over T/tp tokens of h: read x, write y
    assert norm.hbm_bytes == 2 * E * (T / TP) * H
    assert norm.flop == ops.RMSNORM_FLOP_PER_ELEMENT * (T / TP) * H
    # SwiGLU over the routed rows (T/tp x k at balanced load) of ffn: read gate and up, write one
    assert act.hbm_bytes == pytest.approx(3 * E * (T / TP) * K * FFN, rel=1e-12)
    # the same kernels as the forward's, re-run
    assert norm in layer["forward"] and act in layer["forward"]


def test_each_module_alone_and_nothing_without_them():
    model = _qwen3()
    assert _moe_layer(model)[0]["recompute"] == []
    assert [op.name for op in _moe_layer(model, ("layernorm",))[0]["recompute"]] == ["mlp_norm"]
    assert [op.name for op in _moe_layer(model, ("moe_act",))[0]["recompute"]] == ["expert_act"]


def test_full_recompute_does_not_count_them_twice():
    model = _qwen3()
    full = _moe_layer(model, recompute="full")[0]["recompute"]
    assert _moe_layer(model, ("layernorm", "moe_act"), "full")[0]["recompute"] == full


def test_fused_norms_of_a_dense_layer_are_not_recomputed():
    """Llama's norms are TE LayerNormLinear / LayerNormMLP's (Megatron-Core's layernorm is IdentityOp there)."""
    model = config.load("nemo2511-llama3-8b-8-b200-fp8").model
    shard = ops.Shard(seq_len=T, micro_batch=1, recompute_modules=("layernorm",))
    assert ops.layer_ops(model, shard)["recompute"] == []


def test_an_mla_layer_recomputes_its_input_norm_too():
    model = config.load("nemo2511-deepseek-v3-256-b200-fp8").model
    shard = ops.Shard(seq_len=T, micro_batch=1, recompute_modules=("layernorm",))
    layer = mla.apply(model, shard, ops.layer_ops(model, shard, moe.moe_block(model, shard, ep=8)))
    assert [op.name for op in layer["recompute"]] == ["attn_norm", "mlp_norm"]


def test_activation_bytes_freed_are_the_norm_output_and_the_activation_output():
    model = _qwen3()
    _, without = _moe_layer(model)
    _, norm_only = _moe_layer(model, ("layernorm",))
    _, both = _moe_layer(model, ("layernorm", "moe_act"))
    load = 1.3
    base = memory.moe_layer_activation_bytes(model, without, EP, 1, load)
    norm_saved = E * (T / TP) * H                                   # the pre-MLP norm's output
    act_saved = E * (T / TP) * K * load * FFN                       # the experts' activation output
    assert base - memory.moe_layer_activation_bytes(model, norm_only, EP, 1, load) == pytest.approx(norm_saved,
                                                                                                    rel=1e-12)
    assert base - memory.moe_layer_activation_bytes(model, both, EP, 1, load) == pytest.approx(
        norm_saved + act_saved, rel=1e-12)
    full = dataclasses.replace(both, recompute="full")
    assert memory.moe_layer_activation_bytes(model, full, EP, 1, load) == memory.moe_layer_activation_bytes(
        model, dataclasses.replace(without, recompute="full"), EP, 1, load)


def test_core_attn_is_the_selective_recompute():
    data = config.load("nemo2511-llama3-8b-8-b200-fp8").model_dump(mode="json")
    data["training"]["recompute_modules"] = ["core_attn"]
    assert ops.shard_for(config.Scenario.model_validate(data)).recompute == "selective"
    assert ops.recompute_mode("none", ()) == "none"
    assert ops.recompute_mode("full", ("core_attn",)) == "full"


def test_moe_act_needs_an_moe_model():
    data = config.load("nemo2511-llama3-8b-8-b200-fp8").model_dump(mode="json")
    data["training"]["recompute_modules"] = ["moe_act"]
    with pytest.raises((ScenarioError, ValueError), match="training.recompute_modules: moe_act needs a model with moe"):
        config.Scenario.model_validate(data)


@pytest.mark.parametrize("name", ZOO_ROWS)
def test_the_zoo_rows_that_ran_norm_act_state_it(name):
    assert config.load(name).training.recompute_modules == ("layernorm", "moe_act")


def test_core_attn_runs_and_counts_as_selective_recompute():
    """The same step and the same hardware FLOP (HFU's numerator) as activation_recompute: selective."""
    from simcluster.engine import simulate

    data = {"name": "t", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1},
            "model": "llama3-8b", "training": {"global_batch_size": 8, "seq_len": 2048},
            "parallelism": {"tp": 2, "pp": 1, "dp": 4}}
    runs = []
    for training in ({"activation_recompute": "selective"}, {"recompute_modules": ["core_attn"]}, {}):
        scenario = config.Scenario.model_validate({**data, "training": {**data["training"], **training}})
        summary = simulate(scenario).summary
        runs.append((summary["step_time_s"], summary["hardware_flop_per_step"]))
    assert runs[0] == runs[1]
    assert runs[2][1] < runs[1][1]        # the recomputed attention core's FLOP
