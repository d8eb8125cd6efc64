"""An explicit ``parallelism.te_version: 1`` with what only Transformer Engine 2.x runs (``default_te_version``:
Blackwell GPUs, the current / mxfp8 fp8 recipes, the fused MoE router) is refused in one line naming the field,
exit 2; the same scenarios with te_version 2 (or unset) load."""

from __future__ import annotations

import pytest

from simcluster.spec import config
from tests.cli.test_hostile_inputs import one_line_refusal

DENSE = "nemo2409-llama31-8b-8-h100-bf16"     # states te_version 1 (NeMo 24.09: TE 1.x)
MOE = "mixtral-8x22b-256-h100"


def _scenario(name: str, te_version, training=None, cluster=None) -> dict:
    data = config.load(name).model_dump(mode="json")
    data["parallelism"]["te_version"] = te_version
    data["training"].update(training or {})
    data["cluster"].update(cluster or {})
    return data


CASES = [
    (DENSE, {"precision": "fp8", "fp8_recipe": "current"}, None),
    (DENSE, {"precision": "fp8", "fp8_recipe": "mxfp8"}, {"gpu": "b200"}),
    (DENSE, None, {"gpu": "b200"}),
    # the fused router ships from Megatron-Core 0.14 (a stated earlier release, the 0.9 default on Hopper included, is
    # refused: data/mcore_versions.yaml moe_router_fusion, round 27)
    (MOE, {"moe_router": "fused", "mcore_version": "0.14"}, None),
]


@pytest.mark.parametrize(("name", "training", "cluster"), CASES)
def test_te_1_with_a_te_2_feature_is_refused_in_one_line(cli, write_scenario, tmp_path, name, training, cluster):
    path = write_scenario(_scenario(name, 1, training, cluster))
    code, _out, err = cli("run", path, "--out", tmp_path / "out")
    one_line_refusal(code, err, "parallelism.te_version")


@pytest.mark.parametrize(("name", "training", "cluster"), CASES)
@pytest.mark.parametrize("te_version", [2, None])
def test_te_2_or_unset_with_the_same_features_loads(name, training, cluster, te_version):
    scenario = config.Scenario.model_validate(_scenario(name, te_version, training, cluster))
    assert scenario.parallelism.te_version == 2


def test_te_1_on_hopper_bf16_still_loads():
    assert config.Scenario.model_validate(_scenario(DENSE, 1)).parallelism.te_version == 1
