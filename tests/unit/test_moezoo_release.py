"""The Megatron-Core release of the MoE model zoo's rows (docs/calibration/round-27.md, "Round 27: TP overlap with
multi-latent attention and the MoE zoo's Megatron-Core release"). The zoo names Megatron-LM commits, not releases; its
model yamls pass --moe-router-fusion, which the megatron-core 0.14.0 wheel has and 0.13.0 lacks (TransformerConfig
moe_router_fusion; nothing of it in 0.13.0's transformer/moe/). So the rows state '0.14', and a fused-router run
stating an earlier release is refused: a run cannot have used a flag its release did not have."""

from __future__ import annotations

import glob
import os

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.spec import config
from simcluster.workload import te_flash_layout

ZOO = sorted(os.path.basename(f)[:-5] for f in glob.glob(os.path.join(
    os.path.dirname(config.__file__), "..", "data", "scenarios", "moezoo-*.yaml")))


def _with_training(name: str, **training) -> config.Scenario:
    data = config.rebuildable(config.load(name))
    data["training"] = {**data["training"], **training}
    return config.from_dict(data)


def test_the_zoo_rows_are_all_found():
    """Seven rows of the 4K tables, eight of the long-context table (round 35)."""
    assert len(ZOO) == 15 and all(name.startswith("moezoo-") for name in ZOO)
    assert sum("-lc" in name for name in ZOO) == 8


@pytest.mark.parametrize("name", ZOO)
def test_each_zoo_row_states_the_fused_router_release_and_copies_no_layout(name):
    s = config.load(name)
    assert s.training.moe_router == "fused"                  # the zoo's --moe-router-fusion
    assert config.stated_mcore_version(s.training) == "0.14"  # stated, not the by-GPU default ('0.9' on H100)
    # 0.14 has no TEDotProductAttention bshd copies (the released wheel): the v copy 0.9 charged is gone (0.9 can
    # only be stated with the unfused router, the fused one being refused there, and without --recompute-modules,
    # first in 0.13)
    assert te_flash_layout.layout(s) is None
    assert te_flash_layout.layout(_with_training(name, mcore_version="0.9", moe_router="unfused",
                                                 recompute_modules=[])) is not None


@pytest.mark.parametrize("release", ["0.9", "0.12", "0.13"])
def test_a_fused_router_run_stating_a_release_without_it_is_refused(release):
    with pytest.raises(ScenarioError) as err:
        _with_training("moezoo-qwen3-235b-256-h100-a2a", mcore_version=release)
    assert err.value.field == "training.mcore_version"


def test_the_fused_router_is_accepted_from_0_14_and_an_unstated_release_is_not_checked():
    for release in ("0.14", "0.15", "0.16"):
        assert _with_training("moezoo-qwen3-235b-256-h100-a2a", mcore_version=release).training.moe_router == "fused"
    data = config.rebuildable(config.load("moezoo-qwen3-235b-256-h100-a2a"))
    data["training"] = {k: v for k, v in data["training"].items() if k != "mcore_version"}
    assert config.stated_mcore_version(config.from_dict(data).training) is None
