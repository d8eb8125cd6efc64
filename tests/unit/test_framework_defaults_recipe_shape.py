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
    vocab = model.preset(preset).vocab
    # padded (Megatron: to a multiple of 128 x tp, up to 1023 more at tp 8): the same model, the same recipe
    assert _resolved(_inline(preset, vocab=vocab + 768)) == expected
    # beyond padding (config.PADDED_VOCAB_MAX): another model, the general defaults
    assert _resolved(_inline(preset, vocab=vocab + 5000)) == ("fp32", 22, True)


def test_gpt3s_padded_vocab_is_gpt3_and_the_inline_preset_agrees_with_the_recipe():
    """NeMo pads GPT-3's 50257 to 51200 (+943, within padding): recipe_match and contract_inline_preset read it by one
    rule (config.shape_presets), so the run takes gpt3-175b's architecture and recipe with its own vocab kept; 52224
    (+1967) is beyond padding: neither takes the preset (chosen_by "none", the model as written)."""
    assert _resolved(_inline("gpt3-175b", vocab=51200)) == ("bf16", 50, True)
    inline = {k: v for k, v in _inline("gpt3-175b", vocab=51200).items() if k not in ("kv_heads", "ffn_hidden")}
    taken = config.contract_inline_preset(inline)
    assert (taken["name"], taken["vocab"]) == ("gpt3-175b", 51200)
    assert config.recipe_match(config.TransformerSpec(**inline)) == (
        frozenset({"gpt3-175b", config.TransformerSpec.model_fields["name"].default}), "shape+nearest-vocab")
    far = {**inline, "vocab": 52224}
    assert config.contract_inline_preset(far) == far
    assert config.recipe_match(config.TransformerSpec(**far))[1] == "none"
    for vocab in (51200, 52224, 50257, 60000):   # one rule: both take a preset or neither
        spec = {**inline, "vocab": vocab}
        by_recipe = config.recipe_match(config.TransformerSpec(**spec))[1] != "none"
        assert (config.contract_inline_preset(spec) is not spec) == by_recipe


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


def _full_unnamed(preset: str, **change) -> dict:
    """The preset written out in full (architecture keys included), without its name: not a contract-keys model."""
    spec = model.preset(preset).model_dump(exclude={"name", "source"})
    return {**spec, **change}


def test_megatron_177b_written_in_full_without_a_name_resolves_like_its_contract_form():
    """One rule for every way of writing a model: shape plus vocab. megatron-177b's vocab (131072) picks it alone,
    not the union with gpt3-175b (which gave bf16 reduction, limit 50 and NeMo's GPT-3 userbuffers)."""
    named = _resolved("megatron-177b")
    assert _resolved(_inline("megatron-177b")) == named == ("fp32", 22, True)
    assert _resolved(_full_unnamed("megatron-177b")) == named
    assert _userbuffers(_full_unnamed("megatron-177b")) == _userbuffers("megatron-177b")


def _llama70b_userbuffers(spec):
    from simcluster.workload import userbuffers
    return userbuffers.scenario_config(config.Scenario.model_validate({
        "name": "x", "model": spec, "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 8},
        "training": {"seq_len": 4096, "global_batch_size": 128, "micro_batch_size": 1, "precision": "bf16"},
        "parallelism": {"tp": 4, "pp": 4, "dp": 4, "virtual_stages": 5}}))


def test_the_llama_70b_family_resolves_alike_however_written():
    """llama2-70b, llama3-70b and llama3.1-70b share a layer shape; Llama 3 70B (vocab 128256) written by name, with
    contract keys, or in full without a name takes Llama 3's settings (TE's defaults at seq 4096), never llama2-70b's
    NeMo 1.x userbuffers configuration (data/userbuffers.yaml, hidden 8192 tp 4 tokens 4096)."""
    named = _llama70b_userbuffers("llama3-70b")
    assert _llama70b_userbuffers(_inline("llama3-70b")) == named
    assert _llama70b_userbuffers(_full_unnamed("llama3-70b")) == named
    assert _llama70b_userbuffers(_full_unnamed("llama3-70b", max_seq_len=4096)) == named
    assert _llama70b_userbuffers("llama2-70b") != named  # the case would not test anything otherwise


def test_presets_of_one_shape_that_disagree_give_no_recipe(monkeypatch):
    """Presets of an unnamed model's shape and vocab whose recipe settings disagree: none of them (the run's own
    defaults), reported as ambiguous, never the union (which would take the larger deferral limit)."""
    monkeypatch.setattr(config, "NEMO_WGRAD_DEFERRAL_LIMITS",
                        {**config.NEMO_WGRAD_DEFERRAL_LIMITS, "llama3.1-70b": 50})  # llama3-70b keeps 22
    spec = _full_unnamed("llama3-70b")
    assert config.recipe_match(model.TransformerSpec(**spec))[1] == "ambiguous"
    assert _resolved(spec) == ("fp32", 22, True)
    scenario = config.Scenario.model_validate({
        "name": "x", "model": spec, "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 16},
        "training": {"seq_len": 2048, "global_batch_size": 256, "micro_batch_size": 1},
        "parallelism": {"tp": 8, "pp": 8, "dp": 2}})
    assert scenario.model_preset() == {"name": None, "chosen_by": "ambiguous"}
