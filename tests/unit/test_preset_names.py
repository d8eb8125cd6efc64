"""A preset is found by the names NeMo's recipes and users write for it (``config.preset_name``), resolves every
per-model recipe setting as under its own name, and the NeMo 2.x recipes' per-model defaults added in round 18 hold.

Truth: NeMo's recipe names (nemo/collections/llm/recipes/*.py NAME: gpt3_175b, llama3_8b, llama3_70b, llama31_8b,
llama31_70b, llama31_405b, nemotron3_8b, nemotron3_22b, nemotron4_15b, nemotron4_340b, mixtral_8x7b, mixtral_8x22b)
and the performance csv's model+size (llama31 405b); Mixtral 8x7B/8x22B's pretrain_performance_optimizations
(grad_reduce_in_fp32 = False for both precisions); Nemotron3Config8B (32 layers, 4096 hidden, ffn 16384, 32 heads,
MHA, squared ReLU, vocab 256000 from pretrain_nemotron3_8b.py's NullTokenizer)."""

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.spec import config, model

NEMO_NAMES = {
    "gpt3_175b": "gpt3-175b", "llama3_8b": "llama3-8b", "llama3_70b": "llama3-70b", "llama31_8b": "llama3.1-8b",
    "llama31_70b": "llama3.1-70b", "llama31_405b": "llama3.1-405b", "nemotron3_8b": "nemotron3-8b",
    "nemotron3_22b": "nemotron3-22b", "nemotron4_15b": "nemotron4-15b", "nemotron4_340b": "nemotron4-340b",
    "mixtral_8x7b": "mixtral-8x7b", "mixtral_8x22b": "mixtral-8x22b",
}
USER_NAMES = {
    "llama3-70b": "llama3-70b", "llama31-405b": "llama3.1-405b", "Llama-3.1-405B": "llama3.1-405b",
    "nemotron4-15b": "nemotron4-15b", "Nemotron-4-340B": "nemotron4-340b", "mixtral-8x7b": "mixtral-8x7b",
    "Mixtral-8x22B": "mixtral-8x22b", "gpt3-175b": "gpt3-175b", "GPT-3-175B": "gpt3-175b", "gpt3_13b": "gpt3-13b",
    "gpt3-1.3b": "gpt3-1.3b",
}


def _scenario(model_value, precision="bf16", **parallelism):
    return config.Scenario.model_validate({
        "name": "x", "model": model_value,
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 16},
        "training": {"seq_len": 4096, "global_batch_size": 256, "micro_batch_size": 1, "precision": precision},
        "parallelism": {"tp": 8, "pp": 8, "dp": 2, **parallelism}})


@pytest.mark.parametrize(("written", "preset"), sorted({**NEMO_NAMES, **USER_NAMES}.items()))
def test_the_names_nemo_and_users_write_resolve_to_the_preset(written, preset):
    assert config.preset_name(written) == preset
    scenario = _scenario(written)
    assert scenario.model == config.token_dropped(model.preset(preset))  # Mixtral: test_moe_token_drop_default
    assert scenario.model_preset() == {"name": preset, "chosen_by": "name"}


# NeMo 2.x's long-context recipes (nemo/collections/llm/recipes/<NAME>.py) build the plain model at a longer sequence:
# llama3_8b_16k.py / _64k.py / _128k.py take llama3_8b.model() and set seq_length; nemotron.py's
# nemotron_model("nemotron4_15b_16k") is Nemotron4Config15B(seq_length=16384); mixtral_8x7b_16k.py, llama3_70b_64k.py
# and mixtral_8x22b_64k.py alike. A scorer may name the model by the recipe.
LONG_CONTEXT_NAMES = {
    "llama3_8b_16k": "llama3-8b", "llama3_8b_64k": "llama3-8b", "llama3_8b_128k": "llama3-8b",
    "llama3_70b_16k": "llama3-70b", "llama3_70b_64k": "llama3-70b", "nemotron4_15b_16k": "nemotron4-15b",
    "nemotron4_15b_64k": "nemotron4-15b", "nemotron3_22b_16k": "nemotron3-22b", "nemotron3_22b_64k": "nemotron3-22b",
    "mixtral_8x7b_16k": "mixtral-8x7b", "mixtral_8x7b_64k": "mixtral-8x7b", "mixtral_8x22b_64k": "mixtral-8x22b",
}


@pytest.mark.parametrize(("written", "preset"), sorted(LONG_CONTEXT_NAMES.items()))
def test_nemo_long_context_recipe_names_mean_the_plain_model(written, preset):
    assert config.preset_name(written) == preset


@pytest.mark.parametrize("written", ["llama5_8b_16k", "16k", "nemotron4_15b_16"])
def test_a_context_suffix_on_no_preset_is_still_refused(written):
    assert config.preset_name(written) == written   # returned as written, for model.preset to refuse


def test_an_alias_takes_the_recipe_settings_of_its_preset():
    by_alias, by_name = _scenario("llama31_405b").parallelism, _scenario("llama3.1-405b").parallelism
    assert by_alias == by_name
    assert by_alias.wgrad_deferral_limit == 50   # llama31_405b.py, not the general 22


def test_a_name_of_two_presets_is_refused_naming_both():
    with pytest.raises(ScenarioError) as err:
        config.preset_name("gpt313b")
    assert err.value.field == "model" and "gpt3-1.3b" in err.value.message and "gpt3-13b" in err.value.message


def test_an_unknown_name_is_still_refused_with_the_list():
    data = {"name": "x", "model": "llama5-9b", "cluster": {"gpu": "h100-sxm"}, "training": {"global_batch_size": 8}}
    with pytest.raises(ScenarioError, match="unknown model preset 'llama5-9b'") as err:
        config.from_dict(data)
    assert err.value.field == "model"


def test_only_the_gpt3_13b_pair_shares_a_compact_name():
    """Any new pair of presets reading alike without separators must be a deliberate exception here."""
    compact: dict[str, list[str]] = {}
    for name in model.catalog.load("models"):
        compact.setdefault(name.translate(config._NAME_SEPARATORS), []).append(name)
    assert [sorted(v) for v in compact.values() if len(v) > 1] == [["gpt3-1.3b", "gpt3-13b"]]


@pytest.mark.parametrize("preset", ["mixtral-8x7b", "mixtral-8x22b"])
def test_mixtral_reduces_gradients_in_bf16_in_bf16_runs_as_its_nemo_recipes(preset):
    assert _scenario(preset, tp=1, pp=4, dp=32, ep=8).parallelism.grad_reduce_dtype == "bf16"
    # a run that states fp32 (the Megatron-LM README and MoE zoo rows) keeps it
    assert _scenario(preset, tp=1, pp=4, dp=32, ep=8,
                     grad_reduce_dtype="fp32").parallelism.grad_reduce_dtype == "fp32"


def test_nemotron3_8b_is_the_nemo_config_and_not_gpt3_6_7b():
    m = model.preset("nemotron3-8b")
    assert (m.layers, m.hidden, m.heads, m.n_kv_heads, m.ffn, m.vocab) == (32, 4096, 32, 32, 16384, 256000)
    assert (m.mlp, m.mlp_matrices, m.linear_biases, m.tied_embeddings) == ("squared_relu", 2, False, False)
    inline = {"layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 32, "ffn_hidden": 16384}
    assert _scenario({**inline, "vocab": 256000}).model_preset() == {"name": "nemotron3-8b", "chosen_by": "shape"}
    assert _scenario({**inline, "vocab": 50257}).model_preset() == {"name": "gpt3-6.7b", "chosen_by": "shape"}
    # 8.5e9 parameters: 2 x 256000 x 4096 untied embeddings + 32 x (4 x 4096^2 + 2 x 4096 x 16384) + norms
    assert m.params == pytest.approx(2 * 256000 * 4096 + 32 * (4 * 4096**2 + 2 * 4096 * 16384), rel=1e-4)
