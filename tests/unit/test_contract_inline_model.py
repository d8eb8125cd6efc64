"""DESIGN.md's inline model ({layers, hidden, heads, kv_heads, ffn_hidden, vocab}) cannot state the architecture: an
inline model written with those keys only takes the preset of exactly that shape (Llama 3 8B: swiglu, rmsnorm, rope,
untied embeddings, no dropout, Table 3 of the Llama 3 paper in data/models.yaml), so a scenario written by an outside
tool simulates the model it names by its shape. Fails if the inline model keeps GPT-style defaults (gelu, layernorm,
learned positions) or if a model stating any other key is rewritten."""

import pytest

from simcluster.spec import config, model

ARCHITECTURE = ("mlp", "norm", "position", "bias", "tied_embeddings", "dropout", "qk_layernorm")


def _inline(preset: str, **change) -> dict:
    m = model.preset(preset)
    return {"layers": m.layers, "hidden": m.hidden, "heads": m.heads, "kv_heads": m.n_kv_heads, "ffn_hidden": m.ffn,
            "vocab": m.vocab, **change}


def _model(spec) -> model.TransformerSpec:
    return config.Scenario.model_validate({
        "name": "x", "model": spec, "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1},
        "training": {"seq_len": 4096, "global_batch_size": 8, "micro_batch_size": 1},
        "parallelism": {"tp": 8}}).model


@pytest.mark.parametrize("preset", ["llama3-8b", "llama3-70b", "nemotron4-15b", "nemotron4-340b", "gpt3-175b",
                                    "llama2-7b"])
def test_an_inline_contract_model_is_the_preset_of_its_shape(preset):
    truth, got = model.preset(preset), _model(_inline(preset))
    assert {k: getattr(got, k) for k in ARCHITECTURE} == {k: getattr(truth, k) for k in ARCHITECTURE}
    assert (got.layers, got.hidden, got.heads, got.n_kv_heads, got.ffn, got.vocab) == \
        (truth.layers, truth.hidden, truth.heads, truth.n_kv_heads, truth.ffn, truth.vocab)


def test_llama3_and_31_share_the_architecture_the_longer_context_is_taken():
    assert _model(_inline("llama3-8b")).name == "llama3.1-8b"
    assert (_model(_inline("llama3-8b")).mlp, _model(_inline("llama3-8b")).norm) == ("swiglu", "rmsnorm")


def test_an_inline_model_stating_more_is_taken_as_written():
    written = _model(_inline("llama3-8b", mlp="gelu"))
    assert (written.name, written.mlp, written.norm) == ("custom-model", "gelu", "layernorm")
    assert _model(_inline("llama3-8b", name="mine")).mlp == "gelu"  # a name: the user's own model
    assert _model(_inline("llama3-8b", vocab=32000)).mlp == "gelu"  # no preset of that shape
    assert _model(_inline("llama3-8b", layers=31)).name == "custom-model"
