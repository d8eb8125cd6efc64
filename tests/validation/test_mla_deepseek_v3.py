"""Multi-head latent attention (workload/mla.py) against DeepSeek-V3's published sizes and NVIDIA's FLOP count.

Sources: DeepSeek-V3 Technical Report (arXiv 2412.19437): section 4.2, 128 heads of 128 with 64-wide rotary
query/key parts, values 128, KV compression 512, query compression 1536; abstract and section 1, 671B total and
37B activated parameters per token (the MTP module's 14B aside). Megatron-Bridge training/utils/flop_utils.py
(``transformer_flops``, the MLA branch): per token and layer 6 x (q_lora_rank (h + heads (qk + rope) + 1) +
kv_lora_rank (h + heads (qk + v) + 1) + h rope + heads v h) for the projections, the core counted causal-halved
(test_nemo2511_flop_convention.py). Tolerances: 0.1% on the parameter counts (the paper rounds to the billion),
1e-4 on the projections (NeMo adds the two norms' gains), exact on the core's convention factor.
"""

import pytest

from simcluster.spec import config
from simcluster.workload import mla, moe, ops

SCENARIO = "nemo2511-deepseek-v3-256-gb200-fp8"


@pytest.fixture(scope="module")
def model():
    return config.load(SCENARIO).model


def test_parameters_are_deepseek_v3s_671b_total_and_37b_active(model):
    assert model.params == pytest.approx(671e9, rel=1e-3)
    assert 37e9 <= model.active_params < 38e9
    # the multi-head attention of hidden/heads that stood in for it had 1.1B more, 38.7B active
    assert model.model_copy(update={"mla": None}).active_params > 38.5e9


def _per_token(phases, tokens, kinds=ops.MATMUL_KINDS, names=None):
    return sum(op.flop for p in ("forward", "backward_input", "backward_weight") for op in phases[p]
               if op.kind in kinds and (names is None or op.name in names)) / tokens


def test_projection_flop_match_nemos_mla_count(model):
    shard = ops.Shard(seq_len=4096, micro_batch=1)
    layer = mla.apply(model, shard, ops.layer_ops(model, shard))
    names = {x.name for x in mla.projections(model, shard)} | {mla.OUTPUT}
    a, h = model.mla, model.hidden
    qk = a.qk_head_dim + a.qk_rope_head_dim
    nemo = 6 * (a.q_lora_rank * (h + model.heads * qk + 1) + a.kv_lora_rank * (h + model.heads * (a.qk_head_dim
                + a.v_head_dim) + 1) + h * a.qk_rope_head_dim + model.heads * a.v_head_dim * h)
    assert _per_token(layer, shard.tokens, ("gemm",), names) == pytest.approx(nemo, rel=1e-4)


def test_core_is_nemos_count_unhalved(model):
    """simcluster counts the causal core unhalved (Narayanan et al. 2021): twice NeMo's MLA core count."""
    s = 4096
    shard = ops.Shard(seq_len=s, micro_batch=1)
    layer = mla.apply(model, shard, ops.layer_ops(model, shard))
    a = model.mla
    nemo = 6 * (s * model.heads * (a.qk_head_dim + a.qk_rope_head_dim) / 2 + s * model.heads * a.v_head_dim / 2)
    assert _per_token(layer, shard.tokens, ("attention",)) == pytest.approx(2 * nemo, rel=1e-12)
    # 2.9 times the multi-head attention of hidden/heads = 56 it replaces
    mha = ops.layer_ops(model, shard)
    assert _per_token(layer, shard.tokens, ("attention",)) / _per_token(mha, shard.tokens, ("attention",)) == (
        pytest.approx(320 / 112))


def test_model_flop_count_mla_in_every_layer(model):
    """moe.model_flop_per_step counts MLA's attention in all 61 layers: it differs from the multi-head count by 61
    times one layer's difference."""
    shard = ops.Shard(seq_len=4096, micro_batch=1)
    mha_model = model.model_copy(update={"mla": None})
    diff = moe.model_flop_per_step(model, 4096, 1) - moe.model_flop_per_step(mha_model, 4096, 1)
    layer = ops.layer_ops(model, shard)
    per_layer = (_per_token(mla.apply(model, shard, layer), 1) - _per_token(layer, 1))
    assert diff == pytest.approx(61 * per_layer, rel=1e-9)


def test_models_without_mla_are_unchanged():
    scenario = config.load("nemo2511-qwen3-235b-64-b200-fp8")
    shard = ops.shard_for(scenario)
    layer = ops.layer_ops(scenario.model, shard)
    assert mla.apply(scenario.model, shard, layer) is layer
