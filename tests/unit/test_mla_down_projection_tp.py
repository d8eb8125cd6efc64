"""MLA's down-projections per tensor-parallel rank (workload/mla.py, parallel/sequence_parallel_grads.py,
workload/mtp.py tp_collectives). megatron-core 0.14.0: ``linear_q_down_proj`` / ``linear_kv_down_proj`` are TELinear
with ``parallel_mode='duplicated'`` run on the rank's sequence-parallel input ([s / TP, b, h]); their weights are
whole on every rank and their gradients all-reduced over TP in finalize_model_grads; MTP's eh_proj is column-parallel
with its output all-gathered. Closed forms from DeepSeek-V3's widths (Technical Report, section 4.2: hidden 7168,
q_lora_rank 1536, kv_lora_rank 512, rope 64)."""

import pytest

from simcluster.engine import simulate
from simcluster.parallel import memory, plan, sequence_parallel_grads
from simcluster.spec import config
from simcluster.workload import mla, mtp, ops

H100 = "nemo2509-deepseek-v3-1024-h100-fp8"   # tp 2, sequence parallel, one MTP module
H, Q, KV, ROPE = 7168, 1536, 512, 64
DOWN = H * Q + H * (KV + ROPE)   # the two down-projections' weights


def _layer(tp, sequence_parallel, seq=4096):
    model = config.load(H100).model
    shard = ops.Shard(seq_len=seq, micro_batch=1, tp=tp, sequence_parallel=sequence_parallel)
    return mla.apply(model, shard, ops.layer_ops(model, shard))


def _flop(layer, phase, names):
    return sum(op.flop for op in layer[phase] if op.name in names)


@pytest.mark.parametrize("phase", ["forward", "backward_input", "backward_weight"])
def test_down_projections_run_on_the_sequence_parallel_share(phase):
    """2 FLOP x (4096 / 2) tokens x h x (q_lora_rank + kv_lora_rank + rope) on each of the tp 2 ranks (main counted
    all 4096 tokens on every rank)."""
    layer = _layer(tp=2, sequence_parallel=True)
    assert _flop(layer, phase, {"mla_q_down", "mla_kv_down"}) == 2 * (4096 // 2) * DOWN


def test_without_sequence_parallelism_every_rank_projects_every_token():
    layer = _layer(tp=2, sequence_parallel=False)
    assert _flop(layer, "forward", {"mla_q_down", "mla_kv_down"}) == 2 * 4096 * DOWN


def test_up_projections_stay_split_by_heads_on_every_token():
    layer = _layer(tp=2, sequence_parallel=True)
    assert _flop(layer, "forward", {"mla_q_up"}) == 2 * 4096 * Q * (128 // 2) * (128 + 64)
    assert _flop(layer, "forward", {"mla_kv_up"}) == 2 * 4096 * KV * (128 // 2) * (128 + 128)


def test_latent_norms_run_on_the_sequence_parallel_share():
    """RMSNorm (4 FLOP an element) of the q and kv latents over 4096 / 2 tokens."""
    layer = _layer(tp=2, sequence_parallel=True)
    norms = [op for op in layer["forward"] if op.name == "mla_norm"]
    assert sum(op.flop for op in norms) == ops.RMSNORM_FLOP_PER_ELEMENT * (4096 // 2) * (Q + KV)


def test_down_projection_weights_are_whole_on_every_rank():
    """(attention - duplicated) / tp + duplicated, the duplicated being the down-projections and the two latent
    norm gains; the fp8 weight tensors list the down-projections unsplit."""
    model = config.load(H100).model
    duplicated = DOWN + Q + KV
    assert mla.duplicated_params(model) == duplicated
    attention = model.attention_params
    mlp = model.mlp_matrices * H * model.ffn / 2
    assert memory.layer_gemm_weights_per_rank(model, 2) == pytest.approx((attention - duplicated) / 2 + duplicated
                                                                         + mlp, rel=1e-12)
    tensors = [n for n, _ in memory.chunk_gemm_weight_tensors(model, 2, 1)]
    assert tensors[0] == H * Q and tensors[2] == H * (KV + ROPE)
    assert tensors[1] == Q * 128 * (128 + 64) / 2


def test_sequence_parallel_gradients_all_reduced_once_a_step():
    """Per stage: per layer its two RMSNorm gains (2h), the duplicated MLA weights and, in MoE layers, the router
    (h x 256 experts), in bf16 main gradients (grad_reduce_dtype bf16); the last chunk adds the final norm and MTP's
    three norms."""
    s = config.load(H100)
    p = s.parallelism
    counts, moe_counts = memory.chunk_layers(s.model, p.pp, p.virtual_stages, p.layers_per_stage)
    per_stage = sequence_parallel_grads.stage_bytes(s, counts, moe_counts)
    per_layer = 2 * H + DOWN + Q + KV
    want = [0.0] * p.pp
    for index, (layers, moe_layers) in enumerate(zip(counts, moe_counts, strict=True)):
        edge = (1 + 3) * H if index == len(counts) - 1 else 0
        want[index % p.pp] += 2 * (layers * per_layer + moe_layers * H * 256 + edge)
    assert per_stage == pytest.approx(want, rel=1e-12)
    assert plan.plan(s, lambda *_: 0.0).sequence_parallel_grad_bytes == pytest.approx(want, rel=1e-12)
    off = s.model_copy(update={"parallelism": p.model_copy(update={"sequence_parallel": False})})
    assert sequence_parallel_grads.stage_bytes(off, counts, moe_counts) == [0.0] * p.pp
    fsdp = s.model_copy(update={"parallelism": p.model_copy(update={"zero_stage": 3})})  # Megatron-FSDP: the shard
    assert sequence_parallel_grads.stage_bytes(fsdp, counts, moe_counts) == pytest.approx(
        [w / p.dp for w in want], rel=1e-12)


def test_mtp_projection_collectives():
    """eh_proj at tp 2 with sequence parallelism in fp8 training (all-gather units in fp8 of [s, h]): forward its
    fp8 2h input (2 units) and its bf16 h output (2 units), backward the bf16 h gradient's sequence gather (2 units)
    and the 2h input gradient's reduce-scatter (2 bf16 units); on the last chunk only, blocking."""
    s = config.load(H100)
    calls = mtp.tp_collectives(s.model, True, 2)
    assert calls == {"forward": [("all_gather", 4)], "backward": [("all_gather", 2), ("reduce_scatter", 2)]}
    chunks = plan.plan(s, lambda *_: 0.0).chunks
    assert chunks[-1].tp_blocking["forward"] == (("all_gather", 4),)
    # the layers' blocking collectives (TP overlap off, round 27: the dY gathers) are backward only: no chunk but
    # the last has a blocking forward collective, nor eh_proj's backward pair appended
    assert all(not c.tp_blocking.get("forward") for c in chunks[:-1])
    assert chunks[-1].tp_blocking["backward"][-2:] == (("all_gather", 2), ("reduce_scatter", 2))
    assert all(c.tp_blocking["backward"][-2:] != (("all_gather", 2), ("reduce_scatter", 2)) for c in chunks[:-1])
    assert mtp.tp_collectives(s.model, False, 1) == {"forward": [("all_gather", 1)], "backward": [("allreduce", 2)]}


SMALL = {
    "name": "mla-tp", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 2, "nodes": 1},
    "model": {"layers": 2, "hidden": 1024, "heads": 8, "vocab": 32000, "tied_embeddings": False, "norm": "rmsnorm",
              "mla": {"q_lora_rank": 256, "kv_lora_rank": 128, "qk_head_dim": 64, "qk_rope_head_dim": 32,
                      "v_head_dim": 64}},
    "training": {"seq_len": 1024, "global_batch_size": 2, "micro_batch_size": 1, "precision": "bf16", "steps": 1},
    "parallelism": {"tp": 2, "pp": 1, "dp": 1, "cp": 1, "sequence_parallel": True, "grad_reduce_dtype": "bf16"},
}


def test_the_engine_runs_the_all_reduce_over_the_tp_group():
    s = config.from_dict(SMALL)
    events = simulate(s).events
    rows = events[events.name == "sequence parallel allreduce"]
    duplicated = 1024 * 256 + 256 + 1024 * (128 + 32) + 128
    want = 2 * (2 * (2 * 1024 + duplicated) + 1024)   # bf16: two layers and the final norm
    assert len(rows) >= 1 and set(rows.stream) == {"tp"}
    assert rows["bytes"].iloc[0] == pytest.approx(want, rel=1e-12)
