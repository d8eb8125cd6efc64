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


# ---- the whole-module checkpoints: mlp, moe, shared_experts (round 35) ------------------------------------------
# Megatron-Core's tensor_parallel.checkpoint runs the module's first forward without autograd and keeps its input
# only; before the module's backward it re-runs the forward once. So: extra backward work = one more forward of the
# module; memory freed = the module's stored activations less its input.

def _gemm_flop(ops_):
    return sum(op.flop for op in ops_ if op.kind == "gemm")


def test_moe_recomputes_the_whole_moe_block_once():
    model = _qwen3()
    layer, shard = _moe_layer(model, ("moe",))
    block = moe.moe_block(model, shard, ep=EP)
    assert layer["recompute"] == block.forward
    # closed form at balanced load: the router (T/tp x h x experts) and the experts' fc1 (2 ffn wide) and fc2 on
    # the T/tp x top_k routed rows, 2 FLOP a multiply-add
    routed = T / TP
    assert _gemm_flop(layer["recompute"]) == pytest.approx(
        2 * routed * H * model.moe.experts + 2 * routed * K * (H * 2 * FFN + FFN * H), rel=1e-12)
    # nested checkpoints re-run their own forward inside the recomputed layer: moe_act adds the activation once more
    both = _moe_layer(model, ("moe", "moe_act"))[0]["recompute"]
    assert both == [*block.forward, *block.act_recompute]


def test_mlp_leaves_an_moe_layer_alone_and_full_recompute_ignores_the_modules():
    model = _qwen3()
    assert _moe_layer(model, ("mlp",))[0]["recompute"] == []
    full = _moe_layer(model, recompute="full")[0]["recompute"]
    assert _moe_layer(model, ("moe", "mlp"), "full")[0]["recompute"] == full


def test_mlp_recomputes_the_dense_mlp_with_its_fused_norm():
    """Llama 3 8B (TE LayerNormMLP: the pre-MLP norm inside fc1): the recompute is the norm, fc1, the activation and
    fc2 again, 2 x T x h x 3 ffn / tp GEMM FLOP."""
    model = config.load("nemo2511-llama3-8b-8-b200-fp8").model
    shard = ops.Shard(seq_len=T, micro_batch=1, tp=TP, sequence_parallel=True, recompute_modules=("mlp",))
    layer = ops.layer_ops(model, shard)
    block = ops.mlp_block(model, shard)
    names = [op.name for op in layer["recompute"]]
    assert names[0] == "mlp_norm" and layer["recompute"][1:] == block.forward
    assert _gemm_flop(layer["recompute"]) == pytest.approx(2 * T * model.hidden * 3 * model.ffn / TP, rel=1e-12)


def test_shared_experts_recompute_the_shared_experts_once_per_checkpoint():
    model = config.load("nemo2511-deepseek-v3-256-b200-fp8").model
    assert model.moe.shared_experts == 1
    shard = ops.Shard(seq_len=T, micro_batch=1, tp=TP, sequence_parallel=True, recompute_modules=("shared_experts",))
    block = moe.moe_block(model, shard, ep=8)
    layer = ops.layer_ops(model, shard, block)
    assert layer["recompute"] == list(block.shared_forward)
    width = model.moe.shared_experts * model.moe.ffn_hidden
    assert _gemm_flop(layer["recompute"]) == pytest.approx(2 * T * model.hidden * 3 * width / TP, rel=1e-12)
    nested = dataclasses.replace(shard, recompute_modules=("moe", "shared_experts"))
    assert ops.layer_ops(model, nested, block)["recompute"] == [*block.forward, *block.shared_forward]


def test_moe_frees_the_experts_and_router_tensors_and_keeps_the_norm_output():
    """Freed: the routed rows' stored tensors (fc1's input h wide, SwiGLU's two inputs and fc2's input ffn wide,
    T/tp x top_k x load rows) and the router's fp32 probabilities (T/tp x experts); the block's input, the pre-MLP
    norm's output, stays (layernorm recompute still frees it on top)."""
    model = _qwen3()
    _, without = _moe_layer(model)
    load = 1.3
    base = memory.moe_layer_activation_bytes(model, without, EP, 1, load)
    rows = T / TP * K * load
    freed = E * rows * (H + 3 * FFN) + 4 * T / TP * model.moe.experts
    _, with_moe = _moe_layer(model, ("moe",))
    assert base - memory.moe_layer_activation_bytes(model, with_moe, EP, 1, load) == pytest.approx(freed, rel=1e-12)
    _, plus_norm = _moe_layer(model, ("moe", "layernorm", "moe_act"))
    assert base - memory.moe_layer_activation_bytes(model, plus_norm, EP, 1, load) == pytest.approx(
        freed + E * T / TP * H, rel=1e-12)   # moe_act frees nothing more: the experts' tensors are gone already
    # rebuilt for the layer's backward: the freed bytes live again, one layer at a time
    assert memory.moe_checkpoint_rebuilt_bytes(model, with_moe, EP, 1, load) == pytest.approx(freed, rel=1e-12)


def test_mlp_frees_the_dense_mlp_tensors_and_fc1s_input():
    model = config.load("nemo2511-llama3-8b-8-b200-fp8").model
    shard = ops.Shard(seq_len=T, micro_batch=1, tp=TP, sequence_parallel=True)
    with_mlp = dataclasses.replace(shard, recompute_modules=("mlp",))
    freed = E * T / TP * model.hidden + E * T * 3 * model.ffn / TP   # norm output; gate, up and fc2's input
    assert memory.layer_activation_bytes(model, shard) - memory.layer_activation_bytes(model, with_mlp) == \
        pytest.approx(freed, rel=1e-12)
    assert memory.workspace_bytes(model, with_mlp) - memory.workspace_bytes(model, shard) == pytest.approx(
        freed, rel=1e-12)


def test_moe_repeats_the_dispatch_and_combine_and_mlp_its_tp_pair():
    from simcluster.parallel import plan

    def scenario(name, modules, recompute="none"):
        data = config.load(name).model_dump(mode="json", exclude_none=True)
        data["training"].update(recompute_modules=modules, activation_recompute=recompute)
        return config.Scenario.model_validate(data)

    zoo = scenario("moezoo-qwen3-235b-256-h100-tp4", ["moe"])
    assert plan.expert_parallel_per_layer(zoo)["backward"] == [("alltoall", 2), ("alltoall", 2)]
    # Qwen3 has no shared experts: the MoE layer's TP pair is the attention's, not recomputed
    assert plan.tp_collectives_per_layer(zoo, moe_layer=True) == plan.tp_collectives_per_layer(
        scenario("moezoo-qwen3-235b-256-h100-tp4", []), moe_layer=True)
    # a dense layer at TP 4 with sequence parallelism: the MLP's reduce-scatter and all-gather once more
    dense, plain = (scenario("nemo2511-llama3-8b-8-b200-fp8", m) for m in (["mlp"], []))
    dense, plain = (s.model_copy(update={"parallelism": s.parallelism.model_copy(
        update={"tp": 4, "dp": 2, "sequence_parallel": True})}) for s in (dense, plain))
    assert plan.tp_collectives_per_layer(dense)["backward"] == [
        *plan.tp_collectives_per_layer(plain)["backward"], ("reduce_scatter", 1), ("all_gather", 1)]


@pytest.mark.parametrize(("name", "modules", "message"), [
    ("nemo2511-llama3-8b-8-b200-fp8", ["moe"], "moe needs a model with moe"),
    (ZOO_ROWS[0], ["shared_experts"], "shared_experts needs a model with moe.shared_experts"),
    (ZOO_ROWS[0], ["mlp"], "mlp recomputes the dense MLP: every layer of this model is an MoE layer"),
])
def test_module_checkpoints_without_their_module_are_refused(name, modules, message):
    data = config.load(name).model_dump(mode="json")
    data["training"]["recompute_modules"] = modules
    with pytest.raises((ScenarioError, ValueError), match=f"training.recompute_modules: {message}"):
        config.Scenario.model_validate(data)


@pytest.mark.parametrize("side", ["balanced", "dropless"])
@pytest.mark.parametrize(("seq", "cp"), [(16384, 1), (32768, 2), (65536, 4), (131072, 8)])
def test_the_zoo_long_context_rows_state_the_readme_and_its_command(seq, cp, side):
    """best_practice/qwen3/readme.md @ 020b8136: 32 nodes, TP 4, CP by length, GBS 256; PP 8, VPP 4, EP 8,
    --recompute-modules layernorm moe; forced balance or dropless; the held-out step is Megatron-LM's FLOP count over
    the row's TFLOP/s x 256 GPUs."""
    from scripts.moe_dropless_pairs import LONG_CONTEXT, zoo_step_s
    from simcluster.studies import validation

    name = f"moezoo-qwen3-235b-256-h100-lc{seq // 1024}k-{side}"
    s = config.load(name)
    p, t = s.parallelism, s.training
    gpus = s.cluster.nodes * s.cluster.gpus_per_node
    assert (gpus, p.tp, p.cp, p.pp, p.virtual_stages, p.ep) == (256, 4, cp, 8, 4, 8)
    assert (t.seq_len, t.global_batch_size, t.micro_batch_size, t.precision) == (seq, 256, 1, "bf16")
    assert t.recompute_modules == ("layernorm", "moe") and t.activation_recompute == "none"
    assert s.model.moe.load == ("balanced" if side == "balanced" else "measured")
    row = next(r for r in LONG_CONTEXT if r.seq_len == seq)
    tflops = row.balanced_tflops if side == "balanced" else row.dropless_tflops
    case = next(c for c in validation.held_out_cases() if c["scenario"] == name)
    assert case["step_time_s"] == pytest.approx(zoo_step_s(s.model, seq, 256, 4, tflops), abs=0.006)


# ---- review (round 35): HFU counts the module checkpoints, the time charge, one long-context row's memory ------

def test_hardware_flop_counts_the_recomputed_module_forwards():
    """HFU's numerator is model FLOP plus every recomputed forward: with moe the MoE block's GEMMs once more, per
    token and MoE layer the router (2 h E) and the routed experts at balanced load (2 k (h 2f + f h)); with mlp a
    dense layer's MLP (2 h 3 ffn for SwiGLU). Model FLOP (MFU's numerator) does not change."""
    model = _qwen3()
    seq, batch = 4096, 8
    tokens = seq * batch
    base = moe.hardware_flop_per_step(model, seq, batch, "none", ("layernorm",))
    with_moe = moe.hardware_flop_per_step(model, seq, batch, "none", ("layernorm", "moe"))
    per_token = 2 * H * model.moe.experts + 2 * K * (H * 2 * FFN + FFN * H)
    assert with_moe - base == pytest.approx(model.moe_layers * tokens * per_token, rel=1e-12)
    # full recompute re-runs the layer already: the modules add nothing
    assert moe.hardware_flop_per_step(model, seq, batch, "full", ("layernorm", "moe")) == \
        moe.hardware_flop_per_step(model, seq, batch, "full")
    llama = config.load("nemo2511-llama3-8b-8-b200-fp8").model
    dense = moe.hardware_flop_per_step(llama, seq, batch, "none", ("mlp",)) - moe.hardware_flop_per_step(
        llama, seq, batch, "none")
    assert dense == pytest.approx(llama.layers * tokens * 2 * llama.hidden * 3 * llama.ffn, rel=1e-12)


def test_moe_recompute_costs_at_least_its_flop_at_peak_and_reports_them():
    """The engine charges the recomputed MoE block: the step grows by at least the extra hardware FLOP per GPU at
    the bf16 peak (a lower bound no schedule beats), and the summary's hardware FLOP carries them. The long-context
    16K row at sequence 4,096 and 64 sequences (its stand-in, layernorm only, then fits)."""
    from simcluster.engine import simulate

    data = config.load("moezoo-qwen3-235b-256-h100-lc16k-balanced").model_dump(mode="json", exclude_none=True)
    data["training"].update(seq_len=4096, global_batch_size=64)
    runs = {}
    for modules in (("layernorm",), ("layernorm", "moe")):
        data["training"]["recompute_modules"] = list(modules)
        scenario = config.Scenario.model_validate(data)
        runs[modules] = simulate(scenario).summary
    without, with_moe = runs[("layernorm",)], runs[("layernorm", "moe")]
    extra_flop = with_moe["hardware_flop_per_step"] - without["hardware_flop_per_step"]
    assert extra_flop == pytest.approx(
        94 * 4096 * 64 * (2 * H * 128 + 2 * K * 3 * H * FFN), rel=1e-12)
    assert with_moe["model_flop_per_step"] == without["model_flop_per_step"]
    peak = scenario.cluster.gpu.peak_flop_per_s("bf16")
    assert with_moe["step_time_s"] - without["step_time_s"] >= extra_flop / scenario.cluster.gpus / peak


def test_a_long_context_rows_moe_layer_keeps_what_megatron_keeps():
    """By hand, per GPU and microbatch, one MoE layer of moezoo-qwen3-235b-256-h100-lc16k-balanced with
    --recompute-modules layernorm moe (T = 16,384 tokens, TP 4 with sequence parallelism, bf16): the two norms'
    inputs (the residual stream, 2 x 2 T/4 h), linear_qkv's stored input (TE LayerNormLinear's norm output, 2 T/4 h),
    Q, K, V and the attention output for linear_proj (2 T (2 q + 2 kv)/4), the q/k norms' inputs (2 T (q + kv)/4)
    and their fp32 rsigma per head row; nothing of the MoE block: its input, the pre-MLP norm's output, is discarded
    by layernorm's output-discarding checkpoint and everything inside MoELayer's checkpoint is rebuilt. Without moe
    the routed rows' tensors (T/4 x k x load rows of h and 3 ffn) and the router's fp32 probabilities come back."""
    from simcluster.workload.moe import step_load

    s = config.load("moezoo-qwen3-235b-256-h100-lc16k-balanced")
    m, p = s.model, s.parallelism
    shard = ops.shard_for(s)
    tokens, tp, e = 16384, 4, 2
    q, kv = m.heads * m.head_dim, m.kv_heads * m.head_dim
    assert (shard.tokens, shard.sp_divisor, q, kv) == (tokens, tp, 8192, 512)
    kept = (2 * e * tokens / tp * H + e * tokens / tp * H + e * tokens * (2 * q + 2 * kv) / tp
            + e * tokens * (q + kv) / tp + 4 * tokens / tp * (m.heads + m.kv_heads))
    load = step_load(m, shard, p.ep, p.etp)
    assert memory.moe_layer_activation_bytes(m, shard, p.ep, p.etp, load) == pytest.approx(kept, rel=1e-12)
    assert kept / 2**20 == pytest.approx(301.1, abs=0.05)
    norm_only = dataclasses.replace(shard, recompute_modules=("layernorm",))
    rows = tokens / tp * K * load
    assert memory.moe_layer_activation_bytes(m, norm_only, p.ep, p.etp, load) - kept == pytest.approx(
        e * rows * (H + 3 * FFN) + 4 * tokens / tp * m.moe.experts, rel=1e-12)


@pytest.mark.parametrize("seq", [16384, 131072])
def test_the_long_context_rows_fit_only_with_moe(seq):
    """Rule (Z7): every tokens-per-GPU is 16,384 (CP = seq / 16K), so the rows hold the same activations; with
    layernorm moe they fit in 80 GB (the readme ran them), with the old stand-in layernorm moe_act they do not."""
    from simcluster.core.errors import OutOfMemoryError

    data = config.load(f"moezoo-qwen3-235b-256-h100-lc{seq // 1024}k-dropless").model_dump(mode="json",
                                                                                          exclude_none=True)
    fits = memory.check_fits(config.Scenario.model_validate(data))
    assert 60 * 2**30 < fits.total_bytes < config.Scenario.model_validate(data).cluster.gpu.hbm_capacity
    data["training"]["recompute_modules"] = ["layernorm", "moe_act"]
    with pytest.raises(OutOfMemoryError):
        memory.check_fits(config.Scenario.model_validate(data))


def test_a_release_before_recompute_modules_states_only_what_it_had():
    """--recompute-modules first ships in Megatron-Core 0.13 (the MoE README's "[MCore v0.13] ... Fine-grained
    recomputation", data/mcore_versions.yaml): a run stating 0.12 cannot have run layernorm; moe (its
    --moe-layer-recompute) and core_attn (its selective recompute) it could."""
    data = config.load("moezoo-qwen3-235b-256-h100-lc16k-balanced").model_dump(mode="json", exclude_none=True)
    data["training"].update(mcore_version="0.12", moe_router="unfused")   # the fused router is 0.14's
    with pytest.raises((ScenarioError, ValueError), match="training.recompute_modules: layernorm is a "
                       "--recompute-modules choice, first in Megatron-Core 0.13"):
        config.Scenario.model_validate(data)
    for modules in (["moe"], ["core_attn", "moe"]):
        data["training"]["recompute_modules"] = modules
        assert config.Scenario.model_validate(data).training.recompute_modules == tuple(modules)
    data["training"].update(mcore_version="0.13", recompute_modules=["layernorm", "moe"])
    config.Scenario.model_validate(data)


def test_one_rebuilt_layer_at_a_time_with_mlp_and_moe():
    """A model with dense and MoE layers checkpointing both (DeepSeek-V3's first three layers are dense): one
    layer's backward runs at a time, so the workspace holds the larger of a rebuilt dense MLP and a rebuilt MoE
    layer, not both."""
    data = config.load("nemo2511-deepseek-v3-256-b200-fp8").model_dump(mode="json", exclude_none=True)

    def workspace(modules):
        data["training"]["recompute_modules"] = list(modules)
        s = config.Scenario.model_validate(data)
        return memory.per_gpu_memory(s, stage=0).workspace_bytes, s

    base, s = workspace(())
    shard = ops.shard_for(s)
    dense = memory.mlp_checkpoint_bytes(s.model, dataclasses.replace(shard, recompute_modules=("mlp",)))
    load = moe.step_load(s.model, shard, s.parallelism.ep, s.parallelism.etp)
    rebuilt = memory.moe_checkpoint_rebuilt_bytes(s.model, dataclasses.replace(shard, recompute_modules=("moe",)),
                                                  s.parallelism.ep, s.parallelism.etp, load)
    assert dense > 0 and rebuilt > 0
    assert workspace(("mlp",))[0] - base == pytest.approx(dense, rel=1e-9)
    assert workspace(("moe",))[0] - base == pytest.approx(rebuilt, rel=1e-9)
    assert workspace(("mlp", "moe"))[0] - base == pytest.approx(max(dense, rebuilt), rel=1e-9)


# DeepSeek-V3 on 1024 H100 (nemo2509 row, TP 2 with sequence parallelism): 3 dense layers, 58 MoE layers and the MTP
# module's layer, an MoE layer too (Megatron-Core's MultiTokenPredictionLayer builds its TransformerLayer from the
# same config, recompute modules included); each MoE layer has one shared expert, a TP-split MLP with its own pair.
DSV3_DENSE_LAYERS, DSV3_MOE_LAYERS = 3, 58 + 1


def _dsv3_blocking_backward(modules):
    """The step's blocking backward TP calls, summed over the chunks, per op."""
    from simcluster.parallel import plan

    row = config.load("nemo2509-deepseek-v3-1024-h100-fp8")
    row = row.model_copy(update={"training": row.training.model_copy(update={"recompute_modules": modules})})
    totals = {}
    for chunk in plan.plan(row, lambda op, group, size: 0.0).chunks:
        for op, count in chunk.tp_blocking.get("backward", ()):
            totals[op] = totals.get(op, 0) + count
    return totals


@pytest.mark.parametrize("modules, pairs", [
    (["mlp"], DSV3_DENSE_LAYERS),                     # the dense MLP's pair, in the dense layers only
    (["moe"], DSV3_MOE_LAYERS),                       # the shared expert's pair, inside the MoE layer's checkpoint
    (["moe", "shared_experts"], 2 * DSV3_MOE_LAYERS),  # nested checkpoints each re-run the shared expert
    (["mlp", "moe", "shared_experts"], DSV3_DENSE_LAYERS + 2 * DSV3_MOE_LAYERS),
])
def test_module_checkpoints_on_a_model_with_dense_and_moe_layers_add_each_kinds_pairs(modules, pairs):
    """Round 36: DeepSeek-V3's recipe on 1024 H100 (Megatron-Bridge deepseek_v3_h100_1024gpus_fp8_config) recomputes
    ``mla_up_proj`` and ``mlp``: ``mlp`` re-runs the MLP pair (one reduce-scatter, one all-gather) of each of the 3
    dense layers and nothing of the MoE layers, so the step's chunks block on exactly 3 more of each; ``moe`` and
    ``shared_experts`` add the shared expert's pair to the MoE layers only (round 36 review: the other list's tail).
    Counted by hand over the model's layers; a chunk mixing both kinds adds each kind's own calls (the chunk's dense
    and MoE call lists then differ in length; the plan used to refuse them with a traceback)."""
    base = _dsv3_blocking_backward(["mla_up_proj"])
    more = _dsv3_blocking_backward(["mla_up_proj", *modules])
    assert more["reduce_scatter"] - base.get("reduce_scatter", 0) == pairs
    assert more["all_gather"] - base["all_gather"] == pairs


def test_chunk_tp_calls_adds_the_shared_calls_and_keeps_each_tail():
    from simcluster.parallel.plan import chunk_tp_calls

    dense_ops = [("reduce_scatter", 2), ("all_gather", 2), ("reduce_scatter", 1), ("all_gather", 1)]
    moe_ops = [("reduce_scatter", 2), ("all_gather", 2)]
    assert chunk_tp_calls(dense_ops, 3, moe_ops, 5) == (
        ("reduce_scatter", 16), ("all_gather", 16), ("reduce_scatter", 3), ("all_gather", 3))
    assert chunk_tp_calls(moe_ops, 3, dense_ops, 5) == (
        ("reduce_scatter", 16), ("all_gather", 16), ("reduce_scatter", 5), ("all_gather", 5))
    with pytest.raises(ValueError, match="differ in order"):
        chunk_tp_calls([("all_gather", 1)], 1, [("reduce_scatter", 1)], 1)
