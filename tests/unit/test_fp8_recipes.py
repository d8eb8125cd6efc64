"""Transformer Engine's fp8 recipes (workload/fp8_recipes.py): the bytes of quantizing one 16-bit GEMM operand in both
orientations, against closed forms from the quantizers' kernels (Transformer Engine quantizer.cpp; OCP MX v1.0).

- delayed: one cast-transpose, read 2, write 1 + 1;
- current: nvte_compute_amax reads the tensor once more before the same cast: 2 + 2 + 1 + 1;
- mxfp8: one quantize writes the rowwise and the columnwise copies, each with an E8M0 scale per 32 elements, and
  each scale set is swizzled for cuBLASLt before its GEMM (read and written once): 2 + 2 x (1 + 1/32) + 2 x 2/32.
"""

import pytest

from simcluster.spec import config
from simcluster.spec.config import ScenarioError
from simcluster.workload import fp8_recipes, ops

CLOSED_FORM = {"delayed": 2 + 1 + 1, "current": 2 + 2 + 1 + 1, "mxfp8": 2 + 2 * (1 + 1 / 32) + 2 * 2 / 32}


@pytest.mark.parametrize("recipe", fp8_recipes.FP8_RECIPES)
def test_cast_bytes_per_element_are_the_quantizers(recipe):
    assert fp8_recipes.cast_bytes_per_element(recipe) == pytest.approx(CLOSED_FORM[recipe], rel=1e-12)


def _casts(recipe, precision="fp8"):
    model = config.load("nemo2511-llama3-8b-8-b200-fp8").model
    shard = ops.Shard(seq_len=8192, micro_batch=2, tp=1, sequence_parallel=False, precision=precision,
                      fp8_recipe=recipe)
    layer = ops.layer_ops(model, shard)
    return {phase: [op for op in layer[phase] if op.name == "fp8_cast"] for phase in ("forward", "backward_input")}


def test_a_layers_cast_bytes_scale_with_the_recipe_and_count_the_same_elements():
    delayed, current, mx = (_casts(r) for r in ("delayed", "current", "mxfp8"))
    for phase in ("forward", "backward_input"):
        (d,), (c,), (m,) = delayed[phase], current[phase], mx[phase]
        assert d.flop == c.flop == m.flop  # the elements cast, whatever the recipe
        assert c.hbm_bytes / d.hbm_bytes == pytest.approx(6 / 4, rel=1e-12)
        assert m.hbm_bytes / d.hbm_bytes == pytest.approx((4 + 3 / 16) / 4, rel=1e-12)


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
    ("nemo2407-llama3-8b-8-h100-fp8", {"training": {"fp8_recipe": "mxfp8"}}, "training.fp8_recipe"),
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
        casts.append([op for phase in ("forward", "backward_input") for op in layer[phase] if op.name == "fp8_cast"])
    for b, h in zip(*casts, strict=True):
        assert b.flop == h.flop
        assert b.hbm_bytes / h.hbm_bytes == pytest.approx(5 / 6, rel=1e-12)
