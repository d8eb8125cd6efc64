"""A model that becomes a preset is reported: the summary's ``model_preset`` ({name, chosen_by}) and a line of
`simcluster run`'s table, so a user who wrote DESIGN.md's inline keys learns that the preset of that shape (its
architecture and NeMo's per-model settings) was simulated (config.contract_inline_preset)."""

from __future__ import annotations

import copy
import json

import pytest

from simcluster.spec import config

# Llama 2 7B written with DESIGN.md's inline keys only (data/models.yaml: 32 layers, hidden 4096, 32 heads, MHA,
# ffn 11008, vocab 32000); as the preset it is SwiGLU / RMSNorm / RoPE with untied embeddings.
LLAMA2_7B_INLINE = {"layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 32, "ffn_hidden": 11008, "vocab": 32000}
# the same with a layer less: no preset has that shape, so it is taken as written
OWN_MODEL = {**LLAMA2_7B_INLINE, "layers": 31}


def _with_model(small_scenario, model) -> dict:
    data = copy.deepcopy(small_scenario)
    data["model"] = model
    return data


@pytest.mark.parametrize("model, expected", [
    ("llama2-7b", {"name": "llama2-7b", "chosen_by": "name"}),
    (LLAMA2_7B_INLINE, {"name": "llama2-7b", "chosen_by": "shape"}),
    # a key beyond the contract's: a model of its own, with the NeMo recipe settings of its shape and vocab
    ({**LLAMA2_7B_INLINE, "mlp": "swiglu"}, {"name": "llama2-7b", "chosen_by": "shape+vocab"}),
    (OWN_MODEL, None),
])
def test_model_preset_says_which_preset_and_how(small_scenario, model, expected):
    assert config.from_dict(_with_model(small_scenario, model)).model_preset() == expected


def test_a_dumped_preset_scenario_reloads_as_the_preset_by_name(small_scenario):
    """A run's scenario.yaml writes the preset out in full (with its name): reloaded it is still that preset."""
    shaped = config.from_dict(_with_model(small_scenario, LLAMA2_7B_INLINE))
    reloaded = config.from_dict(shaped.model_dump(mode="json"))
    assert reloaded.model_preset() == {"name": "llama2-7b", "chosen_by": "name"}


def test_run_reports_the_preset_chosen_by_shape(cli, write_scenario, small_scenario, tmp_path):
    path = write_scenario(_with_model(small_scenario, LLAMA2_7B_INLINE))
    code, stdout, _ = cli("run", path, "--network", "analytic", "--json", "--out", tmp_path / "j")
    assert code == 0
    assert json.loads(stdout)["model_preset"] == {"name": "llama2-7b", "chosen_by": "shape"}
    assert json.loads((tmp_path / "j" / "summary.json").read_text())["model_preset"]["chosen_by"] == "shape"
    code, stdout, _ = cli("run", path, "--network", "analytic", "--out", tmp_path / "t")
    assert code == 0
    assert "inline shape = preset llama2-7b" in " ".join(stdout.split())


def test_run_table_names_a_preset_and_an_own_model(cli, write_scenario, small_scenario, tmp_path):
    code, stdout, _ = cli("run", write_scenario(small_scenario), "--network", "analytic", "--out", tmp_path / "a")
    assert code == 0 and "preset gpt3-1.3b" in stdout and "inline shape" not in stdout
    own = write_scenario(_with_model(small_scenario, OWN_MODEL), "own.yaml")
    code, stdout, _ = cli("run", own, "--network", "analytic", "--out", tmp_path / "b")
    assert code == 0 and "inline, as written" in stdout
