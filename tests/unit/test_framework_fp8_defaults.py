"""The fp8 defaults a contract-only run gets follow the framework version its GPU implies (docs/calibration.md,
"Round 24: contract-only runs get the framework's defaults"): the values asserted are the frameworks' own, read from
source, not simcluster's output.

- fp8 recipe: NeMo 24.09 / 25.02 run Transformer Engine's delayed scaling (NeMo 2.x bf16_with_fp8_mixed fp8_recipe
  "delayed"; scripts/performance/argument_parser.py --fp8_recipe "Defaults to ds"); Megatron-Bridge's performance
  scripts (NeMo 25.09+ / 25.11 on Blackwell) offer fp8_cs / fp8_mx / fp8_sc only, fp8_cs being
  bf16_with_fp8_current_scaling_mixed (utils/precision.py get_precision_config).
- fp8 parameters: every Transformer Engine recipe of NeMo 2.x and Megatron-Bridge sets fp8_param_gather True
  (mixed_precision.py bf16_with_fp8_mixed / bf16_with_fp8_delayed_scaling_mixed, bf16_with_fp8_current_scaling_mixed,
  bf16_with_mxfp8_mixed), on the distributed optimizer (ZeRO 1-3)."""

from __future__ import annotations

import pytest

from simcluster.spec import config

# What the framework runs, per version (sources in the module doc)
NEMO_2409_2502_FP8_RECIPE = "delayed"      # bf16_with_fp8_mixed / the 24.09 launcher's fp8_hybrid with amax history
MEGATRON_BRIDGE_FP8_RECIPE = "current"     # --compute_dtype fp8_cs -> bf16_with_fp8_current_scaling_mixed
FP8_PARAM_GATHER = {"delayed": True, "current": True, "mxfp8": True}  # mixed_precision.py, every TE preset


def _scenario(gpu: str, precision: str = "fp8", zero_stage: int = 1, **training) -> config.Scenario:
    return config.from_dict({
        "name": "fp8-defaults",
        "cluster": {"gpu": gpu, "gpus_per_node": 8, "nodes": 1},
        "model": "llama3-8b",
        "training": {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1, "precision": precision,
                     **training},
        "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": zero_stage},
    })


def test_fp8_recipe_on_hopper_is_nemo_2409_2502s_delayed_scaling():
    assert _scenario("h100-sxm").training.fp8_recipe == NEMO_2409_2502_FP8_RECIPE


@pytest.mark.parametrize("gpu", ["b200", "gb200", "gb300"])
def test_fp8_recipe_on_blackwell_is_megatron_bridges_current_scaling(gpu):
    assert _scenario(gpu).training.fp8_recipe == MEGATRON_BRIDGE_FP8_RECIPE


def test_fp8_recipe_stated_is_kept_and_unset_again_in_rebuildable_dumps():
    assert _scenario("b200", fp8_recipe="mxfp8").training.fp8_recipe == "mxfp8"
    assert _scenario("b200", fp8_recipe="delayed").training.fp8_recipe == "delayed"
    resolved = _scenario("b200")
    assert config.rebuildable(resolved)["training"]["fp8_recipe"] is None
    # rebuilt on Hopper, the unset recipe follows the new GPU
    data = config.rebuildable(resolved)
    data["cluster"]["gpu"] = "h100-sxm"
    assert config.from_dict(data).training.fp8_recipe == NEMO_2409_2502_FP8_RECIPE


def test_bf16_run_reads_no_recipe():
    assert _scenario("b200", precision="bf16").training.fp8_recipe == NEMO_2409_2502_FP8_RECIPE


@pytest.mark.parametrize(("gpu", "recipe"), [("h100-sxm", "delayed"), ("h100-sxm", "current"), ("b200", "delayed"),
                                             ("b200", "current"), ("b200", "mxfp8")])
@pytest.mark.parametrize("zero_stage", [1, 2])
def test_fp8_param_gather_follows_every_te_preset(gpu, recipe, zero_stage):
    t = _scenario(gpu, zero_stage=zero_stage, fp8_recipe=recipe).training
    assert t.fp8_param_gather is FP8_PARAM_GATHER[recipe]


def test_fp8_param_gather_needs_the_distributed_optimizer():
    assert _scenario("b200", zero_stage=0, fp8_recipe="current").training.fp8_param_gather is False


def test_contract_twin_of_the_nemo2511_fp8_row_runs_what_its_recipe_ran():
    """The NeMo 25.11 Llama 3.1 405B FP8-CS row states current scaling and fp8 parameters (its recipe's
    bf16_with_fp8_current_scaling_mixed); written with the contract keys only, it now resolves the same."""
    bundled = config.load("nemo2511-llama3-405b-128-b200-fp8")
    data = config.rebuildable(bundled)
    for key in ("fp8_recipe", "fp8_param_gather"):
        data["training"][key] = None
    twin = config.from_dict(data)
    assert (twin.training.fp8_recipe, twin.training.fp8_param_gather) == ("current", True)
