"""scripts/scenario_walk.py: the walk from one row's scenario to another's finds exactly the settings that differ,
ends on the second row's settings (so its steps sum to the two rows' difference), and carries a setting the scenario
refuses alone into the next one. A stand-in step function keeps the test free of simulation: the walk's bookkeeping,
not the simulator, is under test.
"""

import pytest
from scripts_loader import load_script

from simcluster.core.errors import ScenarioError
from simcluster.spec import config


@pytest.fixture(scope="module")
def walk_script():
    return load_script("scenario_walk")


@pytest.fixture(scope="module")
def zoo():
    return config.load("moezoo-mixtral-8x22b-128-h100").model_dump(mode="json", exclude_none=True)


def fake_step(data: dict) -> float:
    """A number that changes with every setting the tests move (not a step time)."""
    p = data["parallelism"]
    return p["pp"] * 1000 + p["dp"] * 10 + p["virtual_stages"] + (0.5 if p["tp_comm_overlap"] else 0.0)


def test_differences_are_exactly_the_leaves_changed(walk_script, zoo):
    twin = walk_script.with_leaf(zoo, "parallelism.tp_comm_overlap", False)
    twin = walk_script.with_leaf(twin, "model.vocab", 32000)
    twin = walk_script.with_leaf(twin, "name", "another")   # a name is not a setting
    assert walk_script.differences(zoo, twin) == [("model.vocab", 32768, 32000),
                                                  ("parallelism.tp_comm_overlap", True, False)]
    assert walk_script.differences(zoo, zoo) == []
    assert zoo["parallelism"]["tp_comm_overlap"] is True    # with_leaf copies: the original is untouched


def test_walk_ends_on_the_twin_and_carries_a_refused_setting(walk_script, zoo):
    # pp 8 -> 4 alone leaves tp x pp x dp = 64 of 128 GPUs (refused); with dp 8 -> 16 it is a layout again
    twin = walk_script.with_leaf(zoo, "parallelism.pp", 4)
    twin = walk_script.with_leaf(twin, "parallelism.dp", 16)
    twin = walk_script.with_leaf(twin, "parallelism.tp_comm_overlap", False)
    with pytest.raises(ScenarioError):
        config.from_dict(walk_script.with_leaf(zoo, "parallelism.pp", 4))
    rows = walk_script.walk(zoo, twin, fake_step, first=["parallelism.pp"])
    assert [paths for paths, _ in rows] == [(), ("parallelism.pp", "parallelism.dp"), ("parallelism.tp_comm_overlap",)]
    assert rows[0][1] == fake_step(zoo)
    assert rows[-1][1] == fake_step(twin)   # the walk's steps sum to the two scenarios' difference


def test_walk_refuses_to_end_on_a_refused_scenario(walk_script, zoo):
    twin = walk_script.with_leaf(zoo, "parallelism.pp", 4)   # no dp change to make it a layout
    with pytest.raises(ScenarioError, match="parallelism.pp"):
        walk_script.walk(zoo, twin, fake_step)


def test_with_leaf_removes_a_leaf_only_one_side_has_without_touching_the_original(walk_script, zoo):
    # a leaf the twin lacks is walked to None (differences): removed from the copy, kept in the original
    assert "seq_len" in zoo["training"]
    dropped = walk_script.with_leaf(zoo, "training.seq_len", None)
    assert "seq_len" not in dropped["training"] and zoo["training"]["seq_len"] == 4096
    assert walk_script.differences(zoo, dropped) == [("training.seq_len", 4096, None)]
    nested = walk_script.with_leaf(zoo, "model.moe.experts", 16)   # a nested section copied, not shared
    assert nested["model"]["moe"]["experts"] == 16 and zoo["model"]["moe"]["experts"] == 8
