"""The fp8 defaults a contract-only run gets (docs/calibration/round-24.md, "Round 24: contract-only runs get the
framework's defaults" and "Round 24: review of the framework's fp8 defaults"): the values asserted are the frameworks'
own, read from source, not simcluster's output. A scenario names no framework or version, so the GPU stands for the era:
Blackwell is read as Megatron-Bridge, anything else as NeMo 24.09 / 25.02. The proxy is stated on every run that
takes the default (``config.fp8_recipe_note``), with what to state for the other framework.

- fp8 recipe: NeMo 24.09 / 25.02 run Transformer Engine's delayed scaling (NeMo 2.x bf16_with_fp8_mixed fp8_recipe
  "delayed"; scripts/performance/argument_parser.py --fp8_recipe "Defaults to ds", any --gpu: NeMo 2.x defaults to
  delayed on Blackwell too); Megatron-Bridge's performance scripts (NeMo 25.09+ / 25.11 on Blackwell) offer fp8_cs /
  fp8_mx / fp8_sc only, fp8_cs being bf16_with_fp8_current_scaling_mixed (utils/precision.py get_precision_config).
  Transformer Engine 2.x alone says nothing of the framework: NeMo 2.x 25.04-25.07 ran TE 2.x with delayed scaling.
- fp8 parameters: NeMo 2.x and Megatron-Bridge set fp8_param_gather True for delayed and current scaling
  (mixed_precision.py bf16_with_fp8_mixed / bf16_with_fp8_delayed_scaling_mixed, bf16_with_fp8_current_scaling_mixed;
  the NeMo 2.0-era file (24.09): fp8_params = True), on the distributed optimizer (ZeRO 1-3). MXFP8 differs by
  version (NeMo 2.x mixed_precision.py @ 0a07447 bf16_with_mxfp8_mixed: False; Megatron-Bridge @ 0509780: True, with
  reuse_grad_buf_for_mxfp8_param_ag); the default follows Megatron-Bridge, MXFP8 being a Blackwell recipe. NeMo 1.x
  (the 24.07 launcher) left it off (megatron_gpt_model.py cfg.get('fp8_params', False); the launcher's
  llama/llama3_8b.yaml sets no fp8_params): the nemo2407 rows state false."""

from __future__ import annotations

import pytest

from simcluster.spec import config

# What the framework runs, per version (sources in the module doc)
NEMO_2409_2502_FP8_RECIPE = "delayed"      # bf16_with_fp8_mixed / the 24.09 launcher's fp8_hybrid with amax history
MEGATRON_BRIDGE_FP8_RECIPE = "current"     # --compute_dtype fp8_cs -> bf16_with_fp8_current_scaling_mixed
FP8_PARAM_GATHER = {"delayed": True, "current": True,  # NeMo 2.x and Megatron-Bridge mixed_precision.py
                    "mxfp8": True}                      # Megatron-Bridge (NeMo 2.x @ 0a07447: False)


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


def test_te_2_alone_keeps_delayed_scaling_off_blackwell():
    """NeMo 2.x 25.04-25.07 ran Transformer Engine 2.x and still defaulted to delayed scaling (--fp8_recipe "Defaults
    to ds"): a stated te_version 2 on Hopper is not Megatron-Bridge."""
    stated = config.from_dict({**config.rebuildable(_scenario("h100-sxm")),
                               "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": 1, "te_version": 2}})
    assert stated.training.fp8_recipe == NEMO_2409_2502_FP8_RECIPE


def test_bf16_run_rebuilt_as_fp8_on_blackwell_resolves_the_recipe_anew():
    """A bf16 run resolves the recipe it does not read (delayed); its rebuildable dump leaves it unset, so a sweep
    point switched to fp8 on Blackwell gets Megatron-Bridge's current scaling, not the bf16 run's placeholder."""
    data = config.rebuildable(_scenario("b200", precision="bf16"))
    assert data["training"]["fp8_recipe"] is None
    data["training"]["precision"] = "fp8"
    t = config.from_dict(data).training
    assert (t.fp8_recipe, t.fp8_param_gather) == (MEGATRON_BRIDGE_FP8_RECIPE, True)


@pytest.mark.parametrize(("gpu", "says", "other"), [
    ("b200", "current scaling", "fp8_recipe: delayed"), ("h100-sxm", "delayed scaling", "fp8_recipe: current")])
def test_a_defaulted_recipe_is_named_with_the_version_it_stands_for(gpu, says, other):
    note = config.fp8_recipe_note(_scenario(gpu))
    assert note is not None and says in note and other in note and "(default)" in note


@pytest.mark.parametrize(("gpu", "precision", "training"), [
    ("b200", "fp8", {"fp8_recipe": "current"}),      # stated, even to the default's value
    ("h100-sxm", "fp8", {"fp8_recipe": "delayed"}),
    ("b200", "bf16", {}),                            # no fp8 GEMMs: the recipe is not read
])
def test_no_note_when_the_recipe_is_stated_or_unread(gpu, precision, training):
    assert config.fp8_recipe_note(_scenario(gpu, precision=precision, **training)) is None


def test_run_prints_the_defaulted_recipe(cli, write_scenario, tmp_path):
    data = config.rebuildable(_scenario("b200"))
    code, _out, err = cli("run", write_scenario(data), "--out", tmp_path / "out", "--json")
    assert code == 0
    assert "note: training.fp8_recipe (default) is current scaling" in err
