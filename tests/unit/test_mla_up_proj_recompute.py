"""``training.recompute_modules: [mla_up_proj]`` (workload/mla.py): before each layer's backward Megatron-Core re-runs
MLA's query and key/value up-projections and the rotary embedding (MLASelfAttention's qkv_up_checkpoint), nothing
else. Closed form per token and layer (DeepSeek-V3 Technical Report, section 4.2 widths): 2 x (q_lora_rank x heads x
(qk + rope) + kv_lora_rank x heads x (qk + v)) FLOP, which the recompute phase must hold exactly."""

import pytest

from simcluster.spec import config
from simcluster.spec.config import ScenarioError
from simcluster.workload import mla, ops

SCENARIO = "nemo2511-deepseek-v3-256-b200-fp8"


def _recompute_flop(model, recompute="none", modules=()):
    shard = ops.Shard(seq_len=4096, micro_batch=1, tp=1, sequence_parallel=False, recompute=recompute,
                      recompute_modules=modules)
    layer = mla.apply(model, shard, ops.layer_ops(model, shard))
    return sum(op.flop for op in layer["recompute"] if op.kind == "gemm"), layer, shard


def test_up_projection_recompute_is_the_two_up_gemms():
    model = config.load(SCENARIO).model
    a = model.mla
    flop, layer, shard = _recompute_flop(model, modules=("mla_up_proj",))
    per_token = 2 * (a.q_lora_rank * model.heads * (a.qk_head_dim + a.qk_rope_head_dim)
                     + a.kv_lora_rank * model.heads * (a.qk_head_dim + a.v_head_dim))
    assert flop / shard.tokens == pytest.approx(per_token, rel=1e-12)
    # the latents' norms run again inside the up-projections (TE LayerNormColumnParallelLinear; round 28)
    assert [op.name for op in layer["recompute"]] == ["mla_norm", "mla_norm", "mla_q_up", "mla_kv_up", "rope"]


def test_nothing_is_recomputed_without_it_and_full_recompute_does_not_count_it_twice():
    model = config.load(SCENARIO).model
    assert _recompute_flop(model)[0] == 0
    full, _, _ = _recompute_flop(model, "full")
    assert _recompute_flop(model, "full", ("mla_up_proj",))[0] == full


def test_the_field_needs_multi_head_latent_attention():
    data = config.load("nemo2511-llama3-8b-8-b200-fp8").model_dump(mode="json")
    data["training"]["recompute_modules"] = ["mla_up_proj"]
    with pytest.raises((ScenarioError, ValueError), match="recompute_modules"):
        config.Scenario.model_validate(data)
