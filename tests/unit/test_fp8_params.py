"""Megatron-Core's fp8 parameters (training.fp8_param_gather, workload/fp8_params.py) against counts made by hand from
the sources the module cites: Transformer Engine's GEMM weights held as 1-byte Float8Tensors (plus the transpose
Hopper's TN-only fp8 GEMMs need), the distributed optimizer's all-gather of the uint8 buffer (1 byte a weight, 2 for
the embedding, output layer, norms and biases that stay 16-bit), the optimizer's cast of the shard into fp8 (read 2,
write 1), and the default: on with fp8 delayed scaling on Megatron-Core's distributed optimizer (ZeRO 1/2)."""

import pytest

from simcluster.engine.simulation import Simulation
from simcluster.parallel import memory
from simcluster.spec import config, model
from simcluster.workload import fp8_params, optimizer_step

# Llama 3 8B (Meta's config: hidden 4096, 32 query and 8 key/value heads of 128, ffn 14336, SwiGLU): one layer's
# GEMM weights are Q and O (4096 x 4096 each), K and V (4096 x 1024 each) and the gate, up and down matrices
# (4096 x 14336 each)
LLAMA3_8B_LAYER_GEMM_WEIGHTS = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336


def _scenario(gpu="h100-sxm", training=None, **parallelism):
    tp, dp, pp = parallelism.get("tp", 1), parallelism.get("dp", 8), parallelism.get("pp", 1)
    return config.from_dict({
        "name": "fp8-params", "cluster": {"gpu": gpu, "gpus_per_node": 8, "nodes": max(tp * dp * pp // 8, 1)},
        "model": "llama3-8b",
        "training": {"seq_len": 2048, "global_batch_size": 2 * dp, "micro_batch_size": 1, "precision": "fp8",
                     **(training or {})},
        "parallelism": {"tp": tp, "dp": dp, "pp": pp, **{k: v for k, v in parallelism.items()
                                                         if k not in ("tp", "dp", "pp")}}})


def test_layer_gemm_weights_are_the_linear_matrices():
    llama = model.preset("llama3-8b")
    assert memory.layer_gemm_weights_per_rank(llama, 1) == LLAMA3_8B_LAYER_GEMM_WEIGHTS == 218_103_808
    assert memory.layer_gemm_weights_per_rank(llama, 4) == LLAMA3_8B_LAYER_GEMM_WEIGHTS / 4
    # the rest of the layer is its two RMSNorm weights (no biases in Llama)
    assert memory.layer_params_per_rank(llama, 1) - LLAMA3_8B_LAYER_GEMM_WEIGHTS == 2 * 4096


@pytest.mark.parametrize(("training", "parallelism", "expected"), [
    ({}, {}, True),                                                      # fp8, delayed scaling, ZeRO 1: NeMo 2.x
    ({}, {"zero_stage": 2}, True),
    ({"precision": "bf16"}, {}, False),                                  # no fp8 GEMMs, no fp8 weights
    ({"fp8_recipe": "current"}, {}, True),   # bf16_with_fp8_current_scaling_mixed: fp8_param_gather True (round 24)
    ({"fp8_recipe": "torchao_tensorwise"}, {"zero_stage": 3}, False),  # FSDP: by the scenario only
    ({}, {"zero_stage": 0}, False),                                      # no distributed optimizer
    ({"fp8_recipe": "torchao_tensorwise"}, {}, False),                  # torchtitan's Float8Linear
    ({"fp8_param_gather": False}, {}, False),                            # what a scenario states wins
])
def test_default_follows_nemo_performance_recipes(training, parallelism, expected):
    assert _scenario(training=training, **parallelism).training.fp8_param_gather is expected


def test_default_serialises_unset_for_rebuilding():
    assert _scenario().model_dump()["training"]["fp8_param_gather"] is True          # outputs show what ran
    assert config.rebuildable(_scenario())["training"]["fp8_param_gather"] is None
    assert config.rebuildable(_scenario(training={"fp8_param_gather": True}))["training"]["fp8_param_gather"] is True


def test_fp8_weight_bytes_hopper_keeps_the_transpose():
    assert fp8_params.weight_bytes_per_param("h100-sxm") == 2      # fp8 data + its transpose (TN-only fp8 GEMMs)
    assert fp8_params.weight_bytes_per_param("b200") == 1          # any layout: the fp8 data alone
    assert fp8_params.gather_bytes_per_param() == 1


def test_weight_memory_is_one_byte_per_gemm_weight_on_blackwell():
    """16-bit weights 2 B each; with fp8 parameters the GEMM weights 1 B on B200, 1 + 1 (transpose) on H100."""
    gemm = 32 * LLAMA3_8B_LAYER_GEMM_WEIGHTS
    for gpu, saved in (("b200", 1), ("h100-sxm", 0)):
        off = memory.per_gpu_memory(_scenario(gpu, {"fp8_param_gather": False}))
        on = memory.per_gpu_memory(_scenario(gpu, {"fp8_param_gather": True}))
        assert off.weights_bytes - on.weights_bytes == pytest.approx(saved * gemm, rel=1e-12)
        assert (off.gradients_bytes, off.optimizer_bytes) == (on.gradients_bytes, on.optimizer_bytes)


def test_parameter_all_gather_moves_one_byte_per_gemm_weight():
    """The chunk's all-gathered bytes: GEMM weights 1 B (the uint8 buffer), embedding, output layer and norms 2 B."""
    off = Simulation(_scenario(training={"fp8_param_gather": False})).plan
    on = Simulation(_scenario(training={"fp8_param_gather": True})).plan
    params = off.stage_params[0]
    gemm = 32 * LLAMA3_8B_LAYER_GEMM_WEIGHTS
    assert off.chunks[0].param_bytes == pytest.approx(2 * params, rel=1e-12)
    assert on.chunks[0].param_bytes == pytest.approx(2 * (params - gemm) + 1 * gemm, rel=1e-12)
    assert on.stage_params == off.stage_params          # the optimizer's shard is the same parameters


def test_optimizer_casts_the_fp8_shard():
    """Megatron-Core _copy_main_params_to_model_params for a Float8Tensor: .to(bf16) (read 4, write 2, the 16-bit
    copy's bytes) then cast_to_fp8 (read 2, write 1) over the fp8 share; current scaling first reads the fp32 shard
    for its amax (4)."""
    def shard_bytes(fp8):
        return sum(p.bytes for p in optimizer_step.passes("adam", fp8=fp8) if p.over == "shard")
    base = shard_bytes(None)
    assert base == 38
    assert shard_bytes(fp8_params.Fp8Shard(1.0, 1.0)) == base + 2 + 1
    assert shard_bytes(fp8_params.Fp8Shard(0.5, 1.0)) == base + 0.5 * (2 + 1)
    assert shard_bytes(fp8_params.Fp8Shard(1.0, 1.0, "current")) == base + 4 + 2 + 1
    # one cast kernel per fp8 tensor of the shard: 4 GEMM weights of a Llama layer's 6 tensors
    cast = next(p for p in optimizer_step.fp8_cast_passes(fp8_params.Fp8Shard(0.9, 4 / 6)) if "cast_to_fp8" in p.name)
    assert optimizer_step.launches(cast, 1e9, 60) == 40


def test_fp8_parameters_add_the_shard_cast_shrink_the_weight_work_and_the_gather():
    """The optimizer's own passes grow by the shard's cast; the once-a-step weight work on the first microbatch (TE's
    weight cast-transpose without fp8 parameters, 4 B a weight; the transpose with them, 2 B: fp8_params.
    weight_quantize_kernels) shrinks, so the step's fp8 weight work as a whole is smaller with them at dp 8."""
    scenarios = {on: _scenario(training={"fp8_param_gather": on}) for on in (False, True)}
    plans = {on: Simulation(s).plan for on, s in scenarios.items()}
    weight_s = {on: plans[on].chunks[0].first_forward_s for on in scenarios}
    assert weight_s[True] < weight_s[False]
    assert plans[True].optimizer_s[0] > plans[False].optimizer_s[0]
    assert plans[True].optimizer_s[0] + weight_s[True] < plans[False].optimizer_s[0] + weight_s[False]
    assert plans[True].chunks[0].param_bytes < plans[False].chunks[0].param_bytes


def test_mxfp8_parameters_hold_both_block_scaled_copies_and_no_cache():
    """Megatron's MXFP8 parameters: each GEMM weight an MXFP8 tensor of rowwise and columnwise fp8 data with one E8M0
    scale per 32 elements, 2 x (1 + 1/32) = 2.0625 B, in place of the 16-bit weight (2 B) and TE's cached MXFP8
    copy (another 2.0625 B): 0.0625 B a weight more than bf16, 2 B less than MXFP8 without fp8 parameters."""
    mx = _scenario("b200", {"fp8_recipe": "mxfp8", "fp8_param_gather": True})
    assert not fp8_params.enabled(mx.training) and fp8_params.mxfp8_params(mx.training)
    off = memory.per_gpu_memory(_scenario("b200", {"fp8_recipe": "mxfp8", "fp8_param_gather": False}))
    bf16 = memory.per_gpu_memory(_scenario("b200", {"precision": "bf16"}))
    on = memory.per_gpu_memory(mx)
    weights = 32 * LLAMA3_8B_LAYER_GEMM_WEIGHTS
    assert on.weights_bytes - bf16.weights_bytes == pytest.approx(weights * (2.0625 - 2), rel=1e-12)
    assert on.workspace_bytes == pytest.approx(bf16.workspace_bytes, rel=1e-12)
    assert off.total_bytes - on.total_bytes == pytest.approx(2 * weights, rel=1e-12)


def test_zero3_with_a_te_recipe_needs_fp8_parameters():
    """FSDP2 and Megatron-FSDP drop TE's cached fp8 weights after each use (re-quantized every microbatch): refused,
    naming the field; torchao's recipe (casts every call) and fp8 parameters are accepted."""
    with pytest.raises(config.ScenarioError, match="fp8_param_gather"):
        _scenario(training={"fp8_param_gather": False}, zero_stage=3)
    _scenario(training={"fp8_param_gather": False, "fp8_recipe": "torchao_tensorwise"}, zero_stage=3)
    _scenario(training={"fp8_param_gather": True}, zero_stage=3)


@pytest.mark.parametrize(("training", "parallelism"), [
    ({"fp8_param_gather": True}, {"zero_stage": 0}),                    # Megatron-LM: distributed optimizer or FSDP
    ({"fp8_param_gather": True, "precision": "bf16"}, {}),              # no fp8 GEMMs to hold fp8 weights for
])
def test_fp8_parameters_without_what_they_need_are_refused(training, parallelism):
    with pytest.raises(config.ScenarioError, match="fp8_param_gather"):
        _scenario(training=training, **parallelism)


def test_zero3_on_megatron_core_defaults_to_fp8_parameters():
    """Megatron-Bridge's fp8 presets (mixed_precision.py: fp8_param_gather True) run Megatron-FSDP with fp8
    parameters: the unset option resolves true at ZeRO 3 with any Transformer Engine recipe, not with torchao's."""
    for recipe in ("delayed", "current", "mxfp8"):
        assert _scenario("b200", {"fp8_recipe": recipe}, zero_stage=3).training.fp8_param_gather is True
    # and at ZeRO 1 too (round 24): the same presets set it whatever the sharding
    assert _scenario("b200", {"fp8_recipe": "current"}, zero_stage=1).training.fp8_param_gather is True
    assert _scenario("b200", {"fp8_recipe": "torchao_tensorwise"}, zero_stage=3).training.fp8_param_gather is False


def _llm_foundry(**training):
    data = config.rebuildable(config.load("mpt-13b-8-h100"))
    data["training"] |= {"precision": "fp8", **training}
    return data


def test_fp8_parameters_are_refused_off_megatron_core():
    """llm-foundry (Composer, FSDP) has no fp8 parameters: the option is refused, and its ZeRO-3 refusal with a TE
    recipe does not tell it to set the option."""
    assert config.load("mpt-13b-8-h100").parallelism.zero_stage == 3
    with pytest.raises(config.ScenarioError, match="fp8_param_gather") as refused:
        config.from_dict(_llm_foundry())
    assert "set it true" not in str(refused.value) and "Megatron-Core" in str(refused.value)
    with pytest.raises(config.ScenarioError, match="Megatron-Core .* only"):
        config.from_dict(_llm_foundry(fp8_param_gather=True))


def test_zero3_fp8_parameters_on_hopper_are_refused():
    """Megatron-FSDP drops an fp8 weight's transpose after each use (keep_fp8_transpose_cache False), so Hopper
    remakes it every microbatch, which the once-a-chunk charge does not model: refused, naming the field; Blackwell
    (no transpose) runs."""
    with pytest.raises(config.ScenarioError, match="fp8_param_gather"):
        _ = Simulation(_scenario(zero_stage=3)).plan
    assert Simulation(_scenario("b200", zero_stage=3)).plan.chunks


def test_zero3_fp8_without_fp8_parameters_suggests_them_only_where_they_run():
    """Megatron-Core at ZeRO 3 with a Transformer Engine recipe and fp8_param_gather false: on Blackwell the refusal
    says to set it true; on Hopper fp8 parameters are refused too (refuse_sharded_transpose), so it says zero_stage
    1/2 or bf16 instead, and both refusals start alike."""
    with pytest.raises(config.ScenarioError, match="set it true") as blackwell:
        _scenario("b200", {"fp8_param_gather": False}, zero_stage=3)
    with pytest.raises(config.ScenarioError, match="fp8_param_gather") as hopper:
        _scenario(training={"fp8_param_gather": False}, zero_stage=3)
    assert "set it true" not in str(hopper.value) and "zero_stage 1 or 2" in str(hopper.value)
    with pytest.raises(config.ScenarioError, match="fp8_param_gather") as transpose:
        _ = Simulation(_scenario(zero_stage=3)).plan
    starts = {str(e.value).split(" on ")[0] for e in (blackwell, hopper, transpose)}
    assert len(starts) == 1 and "zero_stage 1 or 2" in str(transpose.value)


# Round 28 review (docs/calibration/round-28.md, "Round 28: review of the new held-out runs"): the Megatron-Bridge 26.x
# rows run precision fp8_mx, the performance scripts' bf16_with_mxfp8_mixed() unchanged, which sets fp8_param_gather =
# True (src/megatron/bridge/training/mixed_precision.py at d063066b, the 26.04 page's commit, and 8e0fe90d, 26.02's).
BRIDGE_26X_MXFP8 = ["nemo2604-llama3-70b-64-gb300-mxfp8", "nemo2604-llama3-70b-64-gb200-mxfp8",
                    "nemo2604-llama3-405b-256-gb300-mxfp8", "nemo2604-llama3-405b-256-gb200-mxfp8",
                    "nemo2604-deepseek-v3-256-gb300-mxfp8", "nemo2604-qwen3-235b-256-b300-mxfp8",
                    "nemo2602-qwen3-235b-256-b200-mxfp8"]


@pytest.mark.parametrize("name", BRIDGE_26X_MXFP8)
def test_the_bridge_26x_mxfp8_rows_state_the_fp8_parameters_their_recipe_sets(name):
    training = config.load(name).training
    assert training.fp8_recipe == "mxfp8" and fp8_params.mxfp8_params(training)


def test_moe_mxfp8_parameters_are_memory_only_and_include_the_local_experts():
    """Qwen3-235B on 256 B200 (PP 8, EP 8): with MXFP8 parameters the step is the same and each local GEMM weight
    holds 2 B less (the 16-bit weight beside TE's cached MXFP8 copy gone): per layer Q and O (4096 x 8192 each), K and
    V (4096 x 512 each) and 128 / 8 = 16 local experts' gate, up and down (4096 x 1536 each); a stage holds 11 or 12 of
    the 94 layers (the embedding and the loss counted as a layer each)."""
    on = config.load("nemo2602-qwen3-235b-256-b200-mxfp8")
    data = on.model_dump(mode="json", exclude_none=True)
    data["training"]["fp8_param_gather"] = False
    off = config.from_dict(data)
    assert Simulation(on).run().summary["step_time_s"] == Simulation(off).run().summary["step_time_s"]
    layer = 2 * 4096 * 8192 + 2 * 4096 * 512 + 16 * 3 * 4096 * 1536
    saved = memory.per_gpu_memory(off).total_bytes - memory.per_gpu_memory(on).total_bytes
    assert saved / (2 * layer) in (pytest.approx(11, rel=1e-12), pytest.approx(12, rel=1e-12))
