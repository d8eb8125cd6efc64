"""What every NeMo 25.11 Blackwell row ran (Megatron-Bridge's performance scripts), held against its scenario.

The loss: ``set_workload_base_configs`` ends with ``_set_common_perf_overrides``, which sets
``recipe.model.cross_entropy_fusion_impl = "te"`` for every recipe, Llama, Qwen3 and DeepSeek alike
(NVIDIA-NeMo/Megatron-Bridge scripts/performance/utils/overrides.py, commit 00538e26; the older
utils/helpers.py ``set_common_perf_overrides``, commit 01328424), on the providers' ``cross_entropy_loss_fusion =
True``: Megatron-Core calls Transformer Engine's ``parallel_cross_entropy`` (``cross_entropy: fused``). Until round
15 the three Qwen3-235B rows ran Megatron-LM's unfused loss (docs/calibration/round-15.md, "Round 15: Blackwell rows").
The set of rows is found by name (every bundled ``nemo2511-*`` scenario on a Blackwell GPU), so a row added later is
held to the same recipe.
"""

import pytest

from simcluster.spec import config

BLACKWELL = ("b200", "gb200", "b300", "gb300")
ROWS = sorted(name for name in config.bundled_names()
              if name.startswith("nemo2511-") and name.rsplit("-", 2)[-2] in BLACKWELL)


def test_every_blackwell_row_is_found():
    # 3 Llama 3 8B, 2 Llama 3 70B, Llama 3.1 405B, 5 DeepSeek-V3, 3 Qwen3-235B (the H100 Qwen3 row is not Blackwell);
    # round 18: the 8B and 405B MXFP8 twins (4) and the 256-GPU GB200 / GB300 405B rows (2)
    assert len(ROWS) == 20, ROWS


@pytest.mark.parametrize("name", ROWS)
def test_the_loss_is_transformer_engines_fused_cross_entropy(name):
    assert config.load(name).training.cross_entropy == "fused"


# The DGX-H100 rows of the same page go through the same override: qwen3_235b_a22b_pretrain_config_h100 ends with
# set_workload_base_configs, as the Blackwell builders do (scripts/performance/configs/qwen/qwen3_llm_pretrain.py,
# stored radixark/Megatron-Bridge @ d063066b). Until round 36 the Qwen3-235B H100 row resolved the framework default,
# Megatron-Core's own fused loss (docs/calibration/round-36.md "Round 36: audit of the NeMo Blackwell and MoE rows").
H100_ROWS = sorted(name for name in config.bundled_names()
                   if name.startswith("nemo2511-") and name.rsplit("-", 2)[-2] == "h100")


def test_every_h100_row_is_found():
    # Llama 3 70B on 64, Llama 3.1 405B on 1024, Qwen3-235B on 256
    assert len(H100_ROWS) == 3, H100_ROWS


@pytest.mark.parametrize("name", H100_ROWS)
def test_the_h100_rows_run_the_same_loss(name):
    assert config.load(name).training.cross_entropy == "fused"


# DeepSeek-V3's pipeline layouts, decoder layers per model chunk in model order, from Megatron-Bridge's
# set_deepseek_v3_pipeline_model_parallel_layout (recipes/deepseek/deepseek_v3.py, layout_map): (pp, vp) ->
# embedding + 4, 14 x 4, 1 + (MTP) + loss, for both layouts the NeMo 25.11 DeepSeek rows on these GPUs share
# with the map; the other rows' (pp, vp) are not in the stored maps.
DEEPSEEK_LAYOUTS = {(16, 1): [4] * 15 + [1], (4, 4): [4] * 15 + [1]}


@pytest.mark.parametrize("name", [n for n in ROWS if "deepseek-v3" in n])
def test_deepseek_rows_split_their_layers_as_the_recipe_layout(name):
    p = config.load(name).parallelism
    layout = DEEPSEEK_LAYOUTS.get((p.pp, p.virtual_stages))
    if layout is None:
        pytest.skip(f"no stored recipe layout for pp {p.pp}, vp {p.virtual_stages}")
    assert p.layers_per_stage == layout
