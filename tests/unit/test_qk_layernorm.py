"""model.qk_layernorm (Megatron-Core --qk-layernorm: q_layernorm and k_layernorm over each head's head_dim before
RoPE) against closed forms: its kernels and bytes per layer, the activations it keeps, its parameters, and what
recompute does with it."""


import pytest
from pydantic import ValidationError

from simcluster.parallel import memory
from simcluster.spec import model
from simcluster.spec.model import MLASpec, TransformerSpec
from simcluster.workload.ops import LAYERNORM, Shard, layer_ops

# GQA shape with head_dim set apart from hidden/heads (Qwen3-style): 16 heads x 128 on a 1024 hidden, 4 KV heads
SHAPE = dict(layers=2, hidden=1024, heads=16, kv_heads=4, head_dim=128, vocab=32000, mlp="swiglu", position="rope",
             dropout=False)
B, S, TP = 2, 4096, 2
T = B * S                      # tokens a rank's QKV output holds (split by heads, not by sequence)
Q_LOCAL, KV_LOCAL = 16 * 128 // TP, 4 * 128 // TP


def spec(norm="rmsnorm", qk=True, **extra):
    return TransformerSpec(**SHAPE, norm=norm, qk_layernorm=qk, **extra)


def shard(**extra):
    return Shard(seq_len=S, micro_batch=B, tp=TP, sequence_parallel=True, **extra)


def named(ops, name):
    return [op for op in ops if op.name == name]


@pytest.mark.parametrize("norm, statistics", [("rmsnorm", 1), ("layernorm", 2)])
def test_q_and_k_norm_kernels_match_the_closed_form(norm, statistics):
    """One kernel per tensor and phase: forward reads x, writes y (2 bytes each) and fp32 statistics per head row;
    backward reads x, dy, the statistics and writes dx."""
    phases = layer_ops(spec(norm), shard())
    for name, width in (("q_norm", Q_LOCAL), ("k_norm", KV_LOCAL)):
        elements, rows = T * width, T * width / 128
        (forward,) = named(phases["forward"], name)
        (backward,) = named(phases["backward_input"], name)
        assert forward.kind == backward.kind == "memory"
        assert forward.hbm_bytes == 2 * 2 * elements + 4 * statistics * rows
        assert backward.hbm_bytes == 3 * 2 * elements + 4 * statistics * rows
        assert not named(phases["backward_weight"], name)


def test_the_norms_sit_between_the_qkv_projection_and_rope_and_add_nothing_else():
    with_, without = layer_ops(spec(), shard()), layer_ops(spec(qk=False), shard())
    names = [op.name for op in with_["forward"]]
    assert names.index("qkv") < names.index("q_norm") < names.index("k_norm") < names.index("rope")
    backward = [op.name for op in with_["backward_input"]]
    assert backward.index("rope") < backward.index("q_norm") < backward.index("qkv")
    for phase in with_:
        rest = [op for op in with_[phase] if op.name not in ("q_norm", "k_norm", "k_norm_input_copy")]
        assert rest == without[phase], phase
    added = sum(op.hbm_bytes for op in with_["forward"]) - sum(op.hbm_bytes for op in without["forward"])
    # the norms, and TE's copy of the strided key before its norm (read and write, 2 bytes each:
    # tests/unit/test_qk_norm_input_copies.py); 2 KV groups of 4 query heads a rank: the query's reshape copies
    assert added == T * (Q_LOCAL + KV_LOCAL) * (4 + 4 / 128) + 4 * T * KV_LOCAL


def test_recompute_full_reruns_them_layernorm_and_core_attention_recompute_do_not():
    """Megatron-Core's recompute_modules layernorm checkpoints input_layernorm and pre_mlp_layernorm only;
    q_layernorm/k_layernorm run un-checkpointed inside SelfAttention."""
    full = layer_ops(spec(), shard(recompute="full"))["recompute"]
    assert len(named(full, "q_norm")) == len(named(full, "k_norm")) == 1
    for recompute, modules in (("selective", ()), ("none", (LAYERNORM,)), ("selective", (LAYERNORM,))):
        ops = layer_ops(spec(mla=None), shard(recompute=recompute, recompute_modules=modules))["recompute"]
        assert not named(ops, "q_norm") and not named(ops, "k_norm"), (recompute, modules)


@pytest.mark.parametrize("norm, statistics", [("rmsnorm", 1), ("layernorm", 2)])
@pytest.mark.parametrize("recompute, modules", [("none", ()), ("selective", ()), ("selective", (LAYERNORM,))])
def test_activation_bytes_add_the_norm_inputs_and_statistics(norm, statistics, recompute, modules):
    """Each norm keeps its input (the QKV output, 2 bytes) and fp32 statistics per head row; nothing else moves."""
    s = shard(recompute=recompute, recompute_modules=modules)
    added = memory.layer_activation_bytes(spec(norm), s) - memory.layer_activation_bytes(spec(norm, qk=False), s)
    assert added == T * (Q_LOCAL + KV_LOCAL) * (2 + 4 * statistics / 128)


def test_full_recompute_keeps_only_the_layer_input():
    s = shard(recompute="full")
    assert memory.layer_activation_bytes(spec(), s) == memory.layer_activation_bytes(spec(qk=False), s)


def test_moe_layers_carry_the_same_activation_bytes():
    moe = model.MoESpec(experts=8, top_k=2, ffn_hidden=512)
    s = shard()
    added = (memory.moe_layer_activation_bytes(spec(moe=moe), s, 1, 1, 1.0)
             - memory.moe_layer_activation_bytes(spec(moe=moe, qk=False), s, 1, 1, 1.0))
    assert added == T * (Q_LOCAL + KV_LOCAL) * (2 + 4 / 128)


@pytest.mark.parametrize("norm, per_element", [("rmsnorm", 1), ("layernorm", 2)])
def test_parameters_add_two_head_dim_norms(norm, per_element):
    assert spec(norm).norm_params - spec(norm, qk=False).norm_params == 2 * per_element * 128


def test_qwen3_preset_has_it_and_the_others_do_not():
    assert model.preset("qwen3-235b-a22b").qk_layernorm
    assert not any(model.preset(name).qk_layernorm for name in ("gpt3-175b", "llama3-70b", "nemotron4-340b",
                                                                "deepseek-v3", "mixtral-8x7b"))


@pytest.mark.parametrize("value", ["yes", 1, "true", None])
def test_non_bool_is_refused(value):
    with pytest.raises(ValidationError, match="qk_layernorm"):
        TransformerSpec(**SHAPE, qk_layernorm=value)


def test_mla_with_qk_layernorm_is_refused():
    mla = MLASpec(kv_lora_rank=512, qk_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
    with pytest.raises(ValidationError, match="qk_layernorm"):
        TransformerSpec(**SHAPE, qk_layernorm=True, mla=mla)
