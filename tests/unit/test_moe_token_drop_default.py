"""training.moe_token_drop: NeMo's Mixtral performance recipes drop tokens at capacity 1.0 and pad every expert to it
(MegatronTokenDropCallback; docs/calibration.md, "Round 18"), so a scenario naming a Mixtral preset with the contract's
keys runs that; Megatron-LM's own dropless benchmarks say so (moe_token_drop: false)."""

from __future__ import annotations

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.parallel.plan import shard_for
from simcluster.spec import config
from simcluster.workload import moe


def _contract(model: str, **parallelism) -> dict:
    """A contract-only scenario: NeMo's Mixtral 8x7B layout on 64 H100 (TP 1, PP 4, VP 8, EP 8, GBS 256)."""
    par = {"tp": 1, "pp": 4, "dp": 16, "ep": 8, "virtual_stages": 8, **parallelism}
    return {"name": "t", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 8},
            "model": model, "training": {"seq_len": 4096, "global_batch_size": 256, "micro_batch_size": 1},
            "parallelism": par}


@pytest.mark.parametrize("name", sorted(config.NEMO_TOKEN_DROP_MODELS))
def test_a_contract_only_mixtral_runs_nemos_token_drop(name):
    """Capacity 1.0 padded: the busiest EP rank's load is exactly the capacity (1.0: every expert at its mean), not
    the trained router's dropless spread (about 1.19 for Mixtral on EP 8)."""
    scenario = config.from_dict(_contract(name))
    assert scenario.training.moe_token_drop is True
    assert (scenario.model.moe.capacity_factor, scenario.model.moe.pad_to_capacity) == (1.0, True)
    p = scenario.parallelism
    assert moe.step_load(scenario.model, shard_for(scenario), p.ep, p.etp) == 1.0
    assert scenario.model_preset() == {"name": name, "chosen_by": "name"}


def test_stated_dropless_and_other_models_keep_megatron_cores_default():
    """false keeps dropless (the zoo's and the Megatron-LM README's Mixtral rows); a model NeMo does not run with token
    drop, or a stack that is not Megatron-Core's, stays dropless; a stated capacity factor is kept as written."""
    stated = _contract("mixtral-8x7b")
    stated["training"]["moe_token_drop"] = False
    dropless = config.from_dict(stated)
    p = dropless.parallelism
    assert dropless.model.moe.capacity_factor is None
    assert moe.step_load(dropless.model, shard_for(dropless), p.ep, p.etp) > 1.1
    for name in ("moezoo-mixtral-8x22b-128-h100", "mcore-mixtral-8x7b-64-h100", "moezoo-qwen3-235b-256-h100-a2a",
                 "deepseek-v3-256-h100"):
        assert config.load(name).model.moe.capacity_factor is None, name
    drop = config.load("moezoo-mixtral-8x22b-128-h100-drop")
    assert drop.training.moe_token_drop is False and drop.model.moe.capacity_factor == 1.0


def test_token_drop_needs_a_dispatcher_that_pads():
    """Unset with the flex dispatcher: no token drop (it cannot pad); asked for with it: a one-line refusal."""
    flex = _contract("mixtral-8x7b", moe_dispatcher="flex", ep_alltoall="hierarchical")
    assert config.from_dict(flex).model.moe.capacity_factor is None
    flex["training"]["moe_token_drop"] = True
    with pytest.raises(ScenarioError, match="training.moe_token_drop"):
        config.from_dict(flex)
