"""Transformer Engine's fp8 recipes (workload/fp8_recipes.py): the bytes of quantizing one 16-bit GEMM operand in both
orientations, against closed forms from the quantizers' kernels (Transformer Engine quantizer.cpp; OCP MX v1.0).

- delayed: one cast-transpose, read 2, write 1 + 1;
- current: nvte_compute_amax reads the tensor once more before the same cast: 2 + 2 + 1 + 1;
- mxfp8: one quantize writes the rowwise and the columnwise copies, each with an E8M0 scale per 32 elements:
  2 + 2 x (1 + 1/32) (the scales' swizzle for cuBLASLt runs in the GEMM call, whose measured time carries it).
"""

import pytest

from simcluster.spec import config
from simcluster.spec.config import ScenarioError
from simcluster.workload import fp8_recipes, ops

CLOSED_FORM = {"delayed": 2 + 1 + 1, "current": 2 + 2 + 1 + 1, "mxfp8": 2 + 2 * (1 + 1 / 32)}


@pytest.mark.parametrize("recipe", fp8_recipes.FP8_RECIPES)
def test_cast_bytes_per_element_are_the_quantizers(recipe):
    assert fp8_recipes.cast_bytes_per_element(recipe) == pytest.approx(CLOSED_FORM[recipe], rel=1e-12)


def _casts(recipe, precision="fp8"):
    model = config.load("nemo2511-llama3-8b-8-b200-fp8").model
    shard = ops.Shard(seq_len=8192, micro_batch=2, tp=1, sequence_parallel=False, precision=precision,
                      fp8_recipe=recipe)
    layer = ops.layer_ops(model, shard)
    names = (fp8_recipes.AMAX_OP, fp8_recipes.CAST_OP)
    return {phase: [op for op in layer[phase] if op.name in names] for phase in ("forward", "backward_input")}


def _norm_fed_and_other_elements(phase):
    """Llama 3 8B at tp 1, micro batch 2: the GEMM inputs a norm wrote (QKV's and fc1's, forward only) and the
    others (the attention output and the SwiGLU output forward; the four output gradients backward)."""
    tokens, h, kv, ffn = 2 * 8192, 4096, 8 * 128, 14336   # Llama 3 8B: 32 heads, 8 KV heads of 128, ffn 14336
    if phase == "forward":
        return [tokens * h, tokens * h], [tokens * h, tokens * ffn]
    return [], [tokens * h, tokens * (h + 2 * kv), tokens * h, tokens * 2 * ffn]


def test_delayed_is_one_fused_op_and_mxfp8_one_quantize_per_tensor_with_the_same_elements():
    """Delayed scaling: one fused op per phase (the convention the per-kernel gap was fitted with). MXFP8 (TE 2.x
    MXFP8Quantizer: one nvte_quantize_v2 per tensor writing both copies, no amax pass; the norm unfused, so the
    norm-fed inputs are quantized by a kernel of their own too): one quantize per GEMM operand, 4 forward and 4
    backward in the dense Llama layer, the same elements and bytes as one fused op would move. Fails with MXFP8
    fused (2 kernels), with an amax pass (12) or with the bytes changed."""
    delayed, mx = _casts("delayed"), _casts("mxfp8")
    for phase in ("forward", "backward_input"):
        (d,) = delayed[phase]
        norm_fed, other = _norm_fed_and_other_elements(phase)
        assert d.flop == pytest.approx(sum(norm_fed + other))
        assert all(op.name == fp8_recipes.CAST_OP and op.block_scaled for op in mx[phase])
        assert sorted(op.flop for op in mx[phase]) == pytest.approx(sorted(norm_fed + other))
        # MXFP8 at its bytes per element; delayed scaling on Hopper is counted to the letter instead
        # (test_megatron_te_layer_casts_*)
        assert all(op.hbm_bytes == pytest.approx((4 + 1 / 16) * op.flop, rel=1e-12)   # 2 + 2 x (1 + 1/32)
                   for op in mx[phase])
    assert len(mx["forward"]) == 4 and len(mx["backward_input"]) == 4


def test_current_scaling_runs_an_amax_pass_and_a_cast_per_tensor_but_none_after_a_norm():
    """Transformer Engine 2.x (Float8CurrentScalingQuantizer::quantize_impl; the norm's FUSED_NORM_AMAX_FP8): one
    cast per quantized tensor with delayed scaling's bytes (here with the Hopper transpose, 2 + 1 + 1), one amax pass
    (a 16-bit read) per tensor no norm wrote. Fails if the amax pass is dropped, or charged after the norms. fc2's
    input keeps its pass: Megatron-Core's bias_swiglu writes it in 16 bits and TE 2.7's fused activation amax needs
    TE's own activation (LayerNormMLP or the op fuser's TEFusedMLP), which the Megatron-Bridge recipes do not run
    (docs/calibration/round-29.md, "Round 29: the fused activation and cast")."""
    current = _casts("current")
    for phase in ("forward", "backward_input"):
        norm_fed, other = _norm_fed_and_other_elements(phase)
        amax = [op for op in current[phase] if op.name == fp8_recipes.AMAX_OP]
        casts = [op for op in current[phase] if op.name == fp8_recipes.CAST_OP]
        assert sorted(op.flop for op in casts) == pytest.approx(sorted(norm_fed + other))
        assert sorted(op.flop for op in amax) == pytest.approx(sorted(other))
        assert all(op.hbm_bytes == pytest.approx(4 * op.flop) for op in casts)
        assert all(op.hbm_bytes == pytest.approx(2 * op.flop) for op in amax)
    assert len(current["forward"]) == 4 + 2 and len(current["backward_input"]) == 4 + 4


def test_current_scaling_bytes_are_delayed_plus_the_amax_passes():
    delayed, current = _casts("delayed"), _casts("current")
    for phase in ("forward", "backward_input"):
        _, other = _norm_fed_and_other_elements(phase)
        (d,) = delayed[phase]
        # a cast-transpose per element (delayed scaling's 4 bytes, the uniform count) plus the amax passes
        assert sum(op.hbm_bytes for op in current[phase]) == pytest.approx(4 * d.flop + 2 * sum(other), rel=1e-12)


def test_bf16_layers_have_no_casts_whatever_the_recipe():
    assert _casts("current", precision="bf16") == {"forward": [], "backward_input": []}


def test_the_scenario_field_reaches_the_layer_and_rejects_unknown_recipes():
    scenario = config.load("nemo2511-llama3-8b-8-b200-fp8")
    assert scenario.training.fp8_recipe == "current"
    assert ops.shard_for(scenario).fp8_recipe == "current"
    data = scenario.model_dump(mode="json")
    data["training"]["fp8_recipe"] = "blockwise"
    with pytest.raises((ScenarioError, ValueError)):
        config.Scenario.model_validate(data)


@pytest.mark.parametrize(("scenario", "change", "field"), [
    ("nemo2409-llama31-8b-8-h100-bf16", {"training": {"fp8_recipe": "current"}}, "training.fp8_recipe"),
    ("nemo2407-llama3-8b-8-h100-fp8", {"training": {"fp8_recipe": "mxfp8"}, "parallelism": {"te_version": None}},
     "training.fp8_recipe"),
    ("nemo2511-llama3-8b-8-b200-fp8", {"training": {"gradient_accumulation_fusion": 1}},
     "gradient_accumulation_fusion"),
    ("nemotron4-15b-768-h100", {"model": {"bias": "yes"}}, "bias"),
])
def test_options_without_what_they_need_are_refused_naming_the_field(scenario, change, field):
    """A recipe on a bf16 run would be silently ignored, MXFP8 needs Blackwell's block-scaled tensor cores, and
    booleans are strict (1 and 'yes' are not true)."""
    data = config.load(scenario).model_dump(mode="json")
    for section, values in change.items():
        data[section].update(values)
    with pytest.raises((ScenarioError, ValueError), match=field.split(".")[-1]):
        config.Scenario.model_validate(data)


def test_mxfp8_runs_on_blackwell():
    data = config.load("nemo2511-llama3-8b-8-b200-fp8").model_dump(mode="json")
    data["training"]["fp8_recipe"] = "mxfp8"
    assert config.Scenario.model_validate(data).training.fp8_recipe == "mxfp8"


# Transformer Engine writes a transposed fp8 copy only where fp8 GEMMs are TN only (quantizer.cpp: create_transpose
# = columnwise_usage && !nvte_is_non_tn_fp8_gemm_supported(), which is true from compute capability 10.0): per-tensor
# casts on Blackwell read the 16-bit tensor (twice with current scaling) and write one fp8 byte; MXFP8 keeps both
# of its copies, whose scale blocks run along different dimensions.
BLACKWELL_CLOSED_FORM = {"delayed": 2 + 1, "current": 2 + 2 + 1, "mxfp8": CLOSED_FORM["mxfp8"]}


@pytest.mark.parametrize("recipe", fp8_recipes.FP8_RECIPES)
def test_blackwell_per_tensor_casts_write_no_transpose(recipe):
    assert fp8_recipes.cast_bytes_per_element(recipe, transpose=False) == pytest.approx(
        BLACKWELL_CLOSED_FORM[recipe], rel=1e-12)


@pytest.mark.parametrize(("gpu", "transposes"), [("h100-sxm", True), ("h200-sxm", True), ("b200", False),
                                                 ("gb200", False), ("b300", False), ("gb300", False)])
def test_only_hopper_transposes(gpu, transposes):
    assert fp8_recipes.transposes(gpu) is transposes


def test_the_gpu_reaches_the_layers_casts():
    """The same Llama 3 8B FP8-CS layer on B200 (scenario) and on H100 (its GPU swapped): 5/6 of the cast bytes."""
    blackwell = config.load("nemo2511-llama3-8b-8-b200-fp8")
    data = blackwell.model_dump(mode="json")
    data["cluster"]["gpu"] = "h100-sxm"
    data["training"]["micro_batch_size"] = 1
    hopper = config.Scenario.model_validate(data)
    data["cluster"]["gpu"] = "b200"
    blackwell = config.Scenario.model_validate(data)
    casts = []
    for scenario in (blackwell, hopper):
        layer = ops.layer_ops(scenario.model, ops.shard_for(scenario))
        casts.append([op for phase in ("forward", "backward_input") for op in layer[phase]
                      if op.name in (fp8_recipes.AMAX_OP, fp8_recipes.CAST_OP)])
    for b, h in zip(*casts, strict=True):   # the casts write one fp8 copy (3/4 of the bytes), the amax passes alike
        assert b.name == h.name and b.flop == h.flop
        assert b.hbm_bytes / h.hbm_bytes == pytest.approx(3 / 4 if b.name == fp8_recipes.CAST_OP else 1, rel=1e-12)


def _cast_and_norm_bytes(name, recipe="delayed"):
    """A scenario's per-layer bytes of its fp8 cast ops and of its two norms' forward ops."""
    scenario = config.load(name)
    scenario = scenario.model_copy(update={"training": scenario.training.model_copy(update={"fp8_recipe": recipe})})
    layer = ops.layer_ops(scenario.model, ops.shard_for(scenario))
    casts = sum(op.hbm_bytes for phase in ("forward", "backward_input") for op in layer[phase]
                if op.name == fp8_recipes.CAST_OP)
    return casts + sum(op.hbm_bytes for op in layer["forward"] if op.name in ("attn_norm", "mlp_norm"))


def test_megatron_te_layer_casts_gpt3_175b_at_tp4_with_sequence_parallelism_to_the_letter():
    """GPT-3 175B, tp 4, sequence 2048, micro batch 1: S = 2048 tokens, shard 512, h = 12288, biases. By hand from TE
    1.x (fp8_recipes' docstring), per layer: norms write fp8 (2 x 512h x (2 + 1)); the projection's and fc2's inputs
    cast in the forward (3 x 2048 x 3072 + 3 x 2048 x 12288: sequence parallelism skips _Linear's cast-transpose)
    and transposed in the backward (2 x 2048 x 3072 + 2 x 2048 x 12288); QKV's and fc1's output gradients
    cast-transposed (4 x 2048 x 9216 + 4 x 2048 x 12288); the two row-parallel output gradients: bias sum 2 and cast
    3 on the shard, transpose 2 gathered (2 x (5 x 512h + 2 x 2048h)); the two norm outputs transposed after the
    gather for the weight gradients (2 x 2 x 2048h). The uniform 4 bytes per cast element would give 182 MB less."""
    h, s, shard = 12288, 2048, 512
    norms = 2 * shard * h * (2 + 1)
    forward = 3 * s * 3072 + 3 * s * h
    backward = (4 * s * 9216 + 4 * s * h + 2 * (5 * shard * h + 2 * s * h) + 2 * 2 * s * h
                + 2 * s * 3072 + 2 * s * h)
    # the norms' backward ops are left out of the sum; the mlp_norm forward is in
    assert _cast_and_norm_bytes("nemo2407-gpt3-175b-128-h100-fp8") == pytest.approx(norms + forward + backward,
                                                                                   rel=1e-12)


def test_megatron_te_layer_casts_llama3_8b_without_sequence_parallelism_to_the_letter():
    """Llama 3 8B, tp 1, cp 2, sequence 8192, micro batch 1: S = 4096 tokens, h = 4096, GQA (kv 1024), ffn 14336,
    SwiGLU, no biases. The norms write fp8 (2 x S h x 3), the row-parallel output gradients are one fused
    cast-transpose each (2 x 4 S h), the norm outputs are transposed for the weight gradients (2 x 2 S h): 101 MB
    less than 4 bytes for every cast element."""
    h, s, kv, ffn = 4096, 4096, 1024, 14336
    norms = 2 * s * h * 3
    forward = 4 * s * h + 4 * s * ffn
    backward = 4 * s * (h + 2 * kv) + 4 * s * 2 * ffn + 2 * 4 * s * h + 2 * 2 * s * h
    assert _cast_and_norm_bytes("nemo2407-llama3-8b-8-h100-fp8") == pytest.approx(norms + forward + backward,
                                                                                 rel=1e-12)


def test_current_scaling_keeps_its_per_tensor_bytes_and_16_bit_norms():
    """The to-the-letter layer is delayed scaling's (TE 1.x); current scaling keeps the norm's 16-bit write."""
    scenario = config.load("nemo2407-llama3-8b-8-h100-fp8")
    current = scenario.model_copy(update={"training": scenario.training.model_copy(update={"fp8_recipe": "current"})})
    norm = next(op for op in ops.layer_ops(current.model, ops.shard_for(current))["forward"] if op.name == "attn_norm")
    assert norm.hbm_bytes == 4096 * 4096 * 2 * 2


@pytest.mark.parametrize("biases", [False, True])
def test_megatron_te_row_parallel_inputs_cast_forward_and_transposed_backward_with_sequence_parallelism(biases):
    """TE 1.x _Linear with sequence parallelism: ``cast_to_fp8`` of the projection's and fc2's inputs in the forward
    (2 read + 1 written) and ``tex.fp8_transpose`` of them in the weight gradient (1 + 1); without sequence
    parallelism one ``fp8_cast_transpose_fused`` in the forward (2 + 1 + 1) and nothing in the backward. By phase,
    with the other tensors held at zero except the norm-fed ones' shard (s) and gathered size (g)."""
    s, g, x = 1000.0, 4000.0, 7000.0
    base_forward, base_backward = fp8_recipes.megatron_te_cast_bytes(s, g, 0.0, 0.0, biases)
    forward, backward = fp8_recipes.megatron_te_cast_bytes(s, g, x, 0.0, biases)
    assert forward - base_forward == pytest.approx(3 * x, rel=1e-12)
    assert backward - base_backward == pytest.approx(2 * x, rel=1e-12)
    base_forward, base_backward = fp8_recipes.megatron_te_cast_bytes(g, g, 0.0, 0.0, biases)
    forward, backward = fp8_recipes.megatron_te_cast_bytes(g, g, x, 0.0, biases)
    assert forward - base_forward == pytest.approx(4 * x, rel=1e-12)
    assert backward == pytest.approx(base_backward, rel=1e-12)
