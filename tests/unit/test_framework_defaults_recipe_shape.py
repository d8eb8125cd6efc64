"""An inline model without a name (DESIGN.md's {layers, hidden, heads, kv_heads, ffn_hidden, vocab}) takes the
per-recipe framework defaults and userbuffers configuration of the presets with its layer shape, as NeMo picks them by
the model its recipe builds
(NeMo 2.x llm/recipes/gpt3_175b.py pretrain_recipe_performance: grad_reduce_in_fp32 False, wgrad_deferral_limit 50;
nemotron4_340b.py: grad_reduce_in_fp32 False, limit 22). A named model keeps its own settings: Megatron-LM's 177B
benchmark model has GPT-3 175B's layers but not NeMo's recipe. Fails if the lookup goes back to the name alone (the
unnamed models then resolve fp32 and 22) or matches named models by shape (megatron-177b then resolves bf16)."""

import pytest

from simcluster.spec import config, model


def _resolved(spec, precision: str = "bf16"):
    p = config.Scenario.model_validate({
        "name": "x", "model": spec,
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 16},
        "training": {"seq_len": 2048, "global_batch_size": 256, "micro_batch_size": 1, "precision": precision},
        "parallelism": {"tp": 8, "pp": 8, "dp": 2}}).parallelism
    return p.grad_reduce_dtype, p.wgrad_deferral_limit, p.defer_embedding_wgrad


def _inline(preset: str, **change) -> dict:
    """The preset written inline with DESIGN.md's keys only (no name, no mlp/norm options), ``change`` applied."""
    m = model.preset(preset)
    return {"layers": m.layers, "hidden": m.hidden, "heads": m.heads, "kv_heads": m.n_kv_heads,
            "ffn_hidden": m.ffn, "vocab": m.vocab, **change}


@pytest.mark.parametrize(("preset", "expected"), [
    ("gpt3-175b", ("bf16", 50, True)),       # gpt3_175b.py: bf16 reduction in bf16 runs, limit 50
    ("nemotron4-340b", ("bf16", 22, True)),  # nemotron4_340b.py: bf16 reduction, limit 22
    ("llama3-405b", ("fp32", 50, True)),     # llama31_405b.py: fp32 reduction in bf16 runs, limit 50
    ("llama3-70b", ("fp32", 22, True)),      # llama3_70b.py: neither
])
def test_an_unnamed_inline_model_runs_the_recipe_of_its_shape(preset, expected):
    assert _resolved(preset) == expected  # the preset by name
    assert _resolved(_inline(preset)) == expected
    assert _resolved(_inline(preset, vocab=51200)) == expected  # NeMo pads GPT-3's vocab to 51200: same recipe


def test_the_nemo_rows_gpt3_175b_runs_the_gpt3_175b_recipe():
    """gpt3-175b-nemo (the NeMo GPT-3 rows' inline model: vocab padded to 51200) is trained by gpt3_175b.py, as
    data/userbuffers.yaml has it: bf16 reduction in bf16 runs, deferral limit 50."""
    assert _resolved(_inline("gpt3-175b", name="gpt3-175b-nemo", vocab=51200)) == ("bf16", 50, True)


def test_a_named_model_of_gpt3s_shape_keeps_its_own_settings():
    assert _resolved("megatron-177b") == ("fp32", 22, True)  # Megatron-LM's benchmark model, not NeMo's recipe
    assert _resolved(_inline("gpt3-175b", name="gpt3-175b-custom")) == ("fp32", 22, True)
    assert _resolved(_inline("gpt3-175b", layers=95)) == ("fp32", 22, True)  # another shape: the general defaults


def test_fp8_reduces_in_bf16_whatever_the_model():
    assert _resolved(_inline("llama3-70b"), "fp8")[0] == "bf16"
    assert _resolved("megatron-177b", "fp8")[0] == "bf16"


def _userbuffers(spec, precision: str = "bf16"):
    from simcluster.workload import userbuffers
    return userbuffers.scenario_config(config.Scenario.model_validate({
        "name": "x", "model": spec, "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 16},
        "training": {"seq_len": 2048, "global_batch_size": 256, "micro_batch_size": 1, "precision": precision},
        "parallelism": {"tp": 4, "pp": 8, "dp": 4, "virtual_stages": 12}}))


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_an_unnamed_gpt3_175b_takes_nemos_userbuffers_configuration(precision):
    """NeMo 2.x scripts/performance/llm/pretrain_gpt3_175b.py passes userbuffers_{bf16,fp8}_h100_h12288_tp4_mbs1_
    seqlen2048 to the GPT-3 175B run whatever the model config is called; Megatron-LM's 177B benchmark model, same
    layers, runs TE's defaults (no NeMo configuration). Fails with the lookup by name alone (the unnamed model then
    takes TE's defaults: 6.3% longer steps on the 128-GPU NeMo GPT-3 row written inline)."""
    from simcluster.workload import userbuffers
    te_defaults = userbuffers.config(te_version=1)  # TE 1.x's: the te_version an H100 run leaves unset resolves to
    nemo = _userbuffers("gpt3-175b", precision)
    assert nemo != te_defaults  # the preset takes NeMo's configuration, not TE's defaults
    assert _userbuffers(_inline("gpt3-175b"), precision) == nemo
    assert _userbuffers(_inline("gpt3-175b", vocab=51200), precision) == nemo
    assert _userbuffers("megatron-177b", precision) == te_defaults
