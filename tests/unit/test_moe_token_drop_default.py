"""training.moe_token_drop: NeMo's Mixtral performance recipes drop tokens at capacity 1.0 and pad every expert to it
(MegatronTokenDropCallback on Megatron-Core; docs/calibration/round-18.md, "Round 18"), so a scenario naming a Mixtral
preset with the contract's keys runs that; Megatron-LM's own dropless benchmarks say so (moe_token_drop: false). The
callback is NeMo's on Megatron-Core and pads with the alltoall dispatcher's direct all-to-all: elsewhere it is off by
default and refused when asked for; rebuilt scenarios (sweep, compare) resolve it anew from the model as written."""

from __future__ import annotations

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.parallel.plan import shard_for
from simcluster.spec import config, model
from simcluster.workload import moe


def _contract(model_name, training=None, **parallelism) -> dict:
    """A contract-only scenario: NeMo's Mixtral 8x7B layout on 64 H100 (TP 1, PP 4, VP 8, EP 8, GBS 256)."""
    par = {"tp": 1, "pp": 4, "dp": 16, "ep": 8, "virtual_stages": 8, **parallelism}
    return {"name": "t", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 8},
            "model": model_name, "training": {"seq_len": 4096, "global_batch_size": 256, "micro_batch_size": 1,
                                              **(training or {})},
            "parallelism": par}


def _refusal(data: dict) -> ScenarioError:
    with pytest.raises(ScenarioError) as err:
        config.from_dict(data)
    assert err.value.field == "training.moe_token_drop" and "\n" not in str(err.value)
    return err.value


def _step_load(scenario: config.Scenario) -> float:
    p = scenario.parallelism
    return moe.step_load(scenario.model, shard_for(scenario), p.ep, p.etp)


# ---- the default --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mixtral-8x7b", "mixtral-8x22b", "mixtral_8x7b", "Mixtral-8x22B"])
def test_a_contract_only_mixtral_runs_nemos_token_drop(name):
    """Capacity 1.0 padded (NeMo's and the users' names alike): the busiest EP rank's load is exactly the capacity
    (1.0: every expert at its mean), not the trained router's dropless spread (about 1.19 for Mixtral on EP 8)."""
    scenario = config.from_dict(_contract(name))
    assert scenario.training.moe_token_drop is True
    assert (scenario.model.moe.capacity_factor, scenario.model.moe.pad_to_capacity) == (1.0, True)
    assert _step_load(scenario) == 1.0
    assert scenario.model_preset() == {"name": config.preset_name(name), "chosen_by": "name"}


def test_stated_dropless_and_other_models_keep_megatron_cores_default():
    """false keeps dropless (the zoo's and the Megatron-LM README's Mixtral rows); a model NeMo does not run with token
    drop stays dropless; a stated capacity factor is kept as written."""
    dropless = config.from_dict(_contract("mixtral-8x7b", {"moe_token_drop": False}))
    assert dropless.model.moe.capacity_factor is None and _step_load(dropless) > 1.1
    for name in ("moezoo-mixtral-8x22b-128-h100", "mcore-mixtral-8x7b-64-h100", "moezoo-qwen3-235b-256-h100-a2a",
                 "deepseek-v3-256-h100"):
        assert config.load(name).model.moe.capacity_factor is None, name
    drop = config.load("moezoo-mixtral-8x22b-128-h100-drop")
    assert drop.training.moe_token_drop is False and drop.model.moe.capacity_factor == 1.0
    qwen = config.from_dict(_contract("qwen3-235b-a22b"))
    assert qwen.training.moe_token_drop is False and qwen.model.moe.capacity_factor is None
    stated = {**model.preset("mixtral-8x7b").model_dump(), "moe": {"experts": 8, "top_k": 2, "ffn_hidden": 14336,
                                                                    "capacity_factor": 2.0}}
    kept = config.from_dict(_contract(stated)).model.moe
    assert (kept.capacity_factor, kept.pad_to_capacity) == (2.0, False)


def test_a_stack_that_is_not_megatron_core_stays_dropless_and_refuses_true():
    """The callback is NeMo's, on Megatron-Core: torchtitan's fp32 logits make the stack another one."""
    data = _contract("mixtral-8x7b", {"logits_memory": "torch_fp32"})
    scenario = config.from_dict(data)
    assert not scenario.megatron_core
    assert scenario.training.moe_token_drop is False and scenario.model.moe.capacity_factor is None
    data["training"]["moe_token_drop"] = True
    assert "Megatron-Core" in _refusal(data).message


@pytest.mark.parametrize("parallelism", [{"moe_dispatcher": "flex", "ep_alltoall": "hierarchical"},
                                         {"ep_alltoall": "hierarchical"}])
def test_token_drop_needs_the_alltoall_dispatcher_and_a_direct_all_to_all(parallelism):
    """Unset with flex or a hierarchical all-to-all: no token drop (they do not pad); asked for: a one-line
    refusal."""
    data = _contract("mixtral-8x7b", **parallelism)
    assert config.from_dict(data).model.moe.capacity_factor is None
    data["training"]["moe_token_drop"] = True
    _refusal(data)


def test_true_with_a_stated_capacity_needs_it_padded_and_a_dense_model_is_refused():
    """A stated capacity without padding would silently run unpadded under true: refused; stated padded (what a
    resolved dump writes) it loads as written."""
    written = model.preset("mixtral-8x7b").model_dump()
    unpadded = {**written, "moe": {**written["moe"], "capacity_factor": 1.25, "pad_to_capacity": False}}
    assert "pad_to_capacity" in _refusal(_contract(unpadded, {"moe_token_drop": True})).message
    padded = {**written, "moe": {**written["moe"], "capacity_factor": 1.25, "pad_to_capacity": True}}
    kept = config.from_dict(_contract(padded, {"moe_token_drop": True})).model.moe
    assert (kept.capacity_factor, kept.pad_to_capacity) == (1.25, True)
    dense = {"name": "x", "model": "llama3-8b", "cluster": {"gpu": "h100-sxm"},
             "training": {"global_batch_size": 8, "moe_token_drop": True}}
    _refusal(dense)


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_moe_token_drop_takes_a_boolean_only(value):
    with pytest.raises(ScenarioError) as err:
        config.from_dict(_contract("mixtral-8x7b", {"moe_token_drop": value}))
    assert err.value.field == "training.moe_token_drop"


def test_apex_buckets_are_refused_on_an_moe_model():
    data = _contract("mixtral-8x7b", grad_buckets="apex")
    with pytest.raises(ScenarioError) as err:
        config.from_dict(data)
    assert err.value.field == "parallelism.grad_buckets" and "dense model" in err.value.message


# ---- dumps, copies, equality --------------------------------------------------------------------------------------
def test_a_rebuilt_scenario_resolves_token_drop_anew_from_the_model_as_written():
    scenario = config.from_dict(_contract("mixtral-8x22b"))
    data = config.rebuildable(scenario)
    assert data["model"]["moe"]["capacity_factor"] is None and data["training"]["moe_token_drop"] is None
    assert config.from_dict(data) == scenario
    data["parallelism"]["ep_alltoall"] = "hierarchical"
    rebuilt = config.from_dict(data)
    assert rebuilt.training.moe_token_drop is False and rebuilt.model.moe.capacity_factor is None


def test_a_model_set_by_model_copy_is_the_one_a_rebuildable_dump_keeps():
    """model_copy copies the record of the written model: the serializer substitutes it only for the model it made."""
    scenario = config.from_dict(_contract("mixtral-8x7b"))
    other = model.preset("mixtral-8x7b").model_copy(update={"layers": 16})
    copied = scenario.model_copy(update={"model": other})
    assert config.rebuildable(copied)["model"]["layers"] == 16
    assert config.rebuildable(scenario)["model"]["layers"] == 32


def test_a_resolved_dump_states_the_padded_model_and_reloads_equal():
    scenario = config.from_dict(_contract("mixtral-8x7b"))
    data = scenario.model_dump(mode="json")
    assert (data["model"]["moe"]["capacity_factor"], data["model"]["moe"]["pad_to_capacity"]) == (1.0, True)
    reloaded = config.from_dict(data)
    assert reloaded == scenario
    assert config.from_dict(config.rebuildable(reloaded)).model == scenario.model


def test_scenarios_are_unhashable_and_compare_only_with_scenarios():
    """A scenario holds unhashable sections: it is no dict key (pydantic's hash of the field-less base gave every
    scenario the same hash, 0); against another type equality is left to it (NotImplemented), so it is False; a
    section hashes by its values, consistent with its equality."""
    scenario = config.from_dict(_contract("mixtral-8x7b"))
    with pytest.raises(TypeError):
        hash(scenario)
    assert scenario.__eq__(1) is NotImplemented and scenario != 1
    assert scenario.training.__eq__(1) is NotImplemented
    other = config.from_dict(_contract("mixtral-8x7b", {"seq_len": 2048}))
    assert hash(scenario.training) != hash(other.training) and scenario.training != other.training
    assert hash(config.from_dict(_contract("mixtral-8x7b")).training) == hash(scenario.training)


def test_a_scenario_validated_from_a_scenario_keeps_the_model_as_written():
    scenario = config.from_dict(_contract("mixtral-8x7b"))
    again = config.Scenario.model_validate(scenario)
    assert again._model_as_written == model.preset("mixtral-8x7b")
    assert config.rebuildable(again)["model"]["moe"]["capacity_factor"] is None
