"""Multi-token prediction (workload/mtp.py) against DeepSeek-V3's published FLOP and NVIDIA's recipe.

Sources: DeepSeek-V3 Technical Report (Liu et al. 2024, arXiv 2412.19437), section 2.2: D = 1 MTP module, a
transformer layer, a 2h x h projection, two RMSNorms and the shared embedding and output head. NVIDIA's NeMo 25.11
performance summary (Megatron-Bridge docs/performance-summary.md): DeepSeek-V3 on 256 B200 at 557 model TFLOP/s
and 2139 tokens/s per GPU, 260.4 GFLOP per token; on 256 GB200 (FP8) 1003 and 4018, 249.6 GFLOP per token. The
B200 recipe trains one MTP layer (recipes/deepseek/deepseek_v3.py, mtp_num_layers = 1), the GB200 rows count none
(test_nemo2511_flop_convention.py), so MTP adds 4.1% to the model's FLOP per token in NeMo's count; simcluster's
addition must be NeMo's MTP term within 0.5% once its attention core is counted halved as NeMo's is. The pipeline
layout is the recipe's for (pp 16, vp 1): embedding + 4 layers, 14 x 4, 1 layer + MTP + loss.
"""

import pytest

from simcluster.parallel import memory, plan
from simcluster.spec import config
from simcluster.workload import mla, moe, mtp, ops

B200 = "nemo2511-deepseek-v3-256-b200-fp8"
PUBLISHED_PER_TOKEN = {"b200": 557e12 / 2139, "gb200": 1003e12 / 4018}  # FLOP per token, with and without MTP


def _without_mtp(scenario):
    model = scenario.model.model_copy(update={"mtp_layers": 0})
    parallelism = scenario.parallelism.model_copy(update={"layers_per_stage": None})
    return scenario.model_copy(update={"model": model, "parallelism": parallelism})


def _flop_per_token(scenario):
    t = scenario.training
    return moe.model_flop_per_step(scenario.model, t.seq_len, t.global_batch_size) / (t.seq_len * t.global_batch_size)


def test_mtp_adds_what_nemos_count_adds_for_it():
    """NeMo's MTP term per token (flop_utils: one MoE layer of MLA with its core halved, 6 (3h + 2h^2) for the
    norms and eh_proj, 6 h V for the second head: 10.18 GFLOP, 4.1% of the model, the B200 row's 260.4 against the
    NVL72 rows' 249.6 GFLOP per token) equals simcluster's addition once its core is halved the same way."""
    scenario = config.load(B200)
    m, s = scenario.model, scenario.training.seq_len
    a, h = m.mla, m.hidden
    qk = a.qk_head_dim + a.qk_rope_head_dim
    layer = 6 * (a.q_lora_rank * (h + m.heads * qk + 1) + a.kv_lora_rank * (h + m.heads * (a.qk_head_dim
                 + a.v_head_dim) + 1) + h * a.qk_rope_head_dim + m.heads * a.v_head_dim * h)
    core_halved = 6 * s * m.heads * (qk + a.v_head_dim) / 2
    mlp = 6 * h * 3 * m.moe.ffn_hidden * (m.moe.top_k + m.moe.shared_experts)
    nemo = layer + core_halved + mlp + 6 * (3 * h + 2 * h * h) + 6 * h * m.vocab
    ours = _flop_per_token(scenario) - _flop_per_token(_without_mtp(scenario))
    assert ours - core_halved == pytest.approx(nemo, rel=0.005)     # simcluster's core is unhalved: 2 x
    published = PUBLISHED_PER_TOKEN["b200"] - PUBLISHED_PER_TOKEN["gb200"]
    assert nemo == pytest.approx(published, rel=0.06)               # the published figures' 3-4 digits


def test_mtp_flop_is_one_moe_layer_one_projection_and_one_output_head():
    """Closed form: the modules' matmul FLOP = an MoE layer's + 6 x tokens x 2h x h (eh_proj) + the output head's."""
    scenario = config.load(B200)
    m, t = scenario.model, scenario.training
    tokens = t.seq_len * t.global_batch_size
    shard = ops.Shard(seq_len=t.seq_len, micro_batch=t.global_batch_size)
    phases = ("forward", "backward_input", "backward_weight")
    moe_layer = mla.apply(m, shard, ops.layer_ops(m, shard, moe.moe_block(m, shard)))
    head = ops.output_ops(m, shard)
    expected = sum(ops.flop(moe_layer[p], ops.MATMUL_KINDS) + ops.flop(head[p], ops.MATMUL_KINDS) for p in phases)
    expected += 6 * tokens * 2 * m.hidden * m.hidden
    added = (_flop_per_token(scenario) - _flop_per_token(_without_mtp(scenario))) * tokens
    assert added == pytest.approx(expected, rel=1e-9)


def test_the_last_stage_runs_one_layer_the_mtp_layer_and_two_output_heads():
    scenario = config.load(B200)
    step = plan.plan(scenario, lambda op, group, size: 0.0)
    counts = [c.layers for c in step.chunks]
    assert counts == [4] * 15 + [2]        # the recipe's layout, the MTP layer with the last decoder layer
    m = scenario.model
    shard = ops.shard_for(scenario)
    ep = scenario.parallelism.ep   # experts sized for the busiest rank: forced balanced, the sampling noise only
    load = moe.busiest_rank_load(m.moe, ep, moe.ep_group_tokens(m, shard, ep, scenario.parallelism.etp))
    layer = mla.apply(m, shard, ops.layer_ops(m, shard, moe.moe_block(m, shard, ep, load=load)))
    extra = mtp.extra_ops(m, shard)
    head = ops.output_ops(m, shard)
    expected = sum(op.flop for part in (layer, layer, head, extra) for op in part["forward"])
    assert step.chunks[-1].forward_flop == pytest.approx(expected, rel=1e-9)
    # and the MTP layer's dispatch and combine
    assert step.chunks[-1].ep_collectives["forward"] == (("alltoall", 4),)
    # the shared embedding's gradient is all-reduced between the first and last stage
    assert step.embedding_grad_bytes == m.vocab * m.hidden * 2


def test_the_last_stage_holds_the_mtp_parameters_and_an_embedding_copy():
    scenario = config.load(B200)
    m, p = scenario.model, scenario.parallelism
    with_mtp = memory.stage_params(m, p.tp, p.pp, p.pp - 1, p.virtual_stages, p.layers_per_stage)
    plain = _without_mtp(scenario)
    last_layers = [4] * 15 + [1]
    without = memory.stage_params(plain.model, p.tp, p.pp, p.pp - 1, 1, last_layers)
    mtp_layer = memory.moe_layer_params_per_rank(m, p.tp)
    assert with_mtp - without == pytest.approx(mtp_layer + 2 * m.hidden ** 2 + 3 * m.hidden + m.vocab * m.hidden)
    assert memory.stage_expert_params(m, p.pp, p.pp - 1, p.ep, p.etp, 1, p.layers_per_stage) == pytest.approx(
        2 * memory.expert_params_per_rank(m, p.ep, p.etp))


def test_models_without_mtp_are_unchanged():
    scenario = config.load("nemo2511-deepseek-v3-256-gb200-fp8")
    assert scenario.model.mtp_layers == 0
    assert mtp.extra_ops(scenario.model, ops.shard_for(scenario))["forward"] == []
    counts = [4, 5]
    assert mtp.with_mtp_layers(scenario.model, counts, [3, 5]) == (counts, [3, 5])
