"""The NeMo 25.11 page's MXFP8 figures (its "FP8-CS (FP8-MX)" rows, the parenthesised tokens/s) as held-out rows of
their own: each MXFP8 scenario is its current-scaling twin with only the fp8 recipe changed (the page gives one
layout per row; Megatron-Bridge's LLAMA31_405B_PRETRAIN_CONFIG_B200_FP8_MX_V1 is the FP8_CS_V1 preset itself), and
the rows are held out, never calibration. The MXFP8 / current-scaling throughput ratio the model gives is the
held-out check reported in docs/calibration/round-18.md (round 18, "MXFP8 against current scaling"), not asserted here.
"""

import pytest

from simcluster.spec import config
from simcluster.studies import validation

TWINS = {"nemo2511-llama3-8b-8-b200-mxfp8": "nemo2511-llama3-8b-8-b200-fp8",
         "nemo2511-llama3-8b-8-gb200-mxfp8": "nemo2511-llama3-8b-8-gb200-fp8",
         "nemo2511-llama3-8b-8-gb300-mxfp8": "nemo2511-llama3-8b-8-gb300-fp8",
         "nemo2511-llama3-405b-128-b200-mxfp8": "nemo2511-llama3-405b-128-b200-fp8"}


def _settings(name):
    d = config.load(name).model_dump()
    d.pop("name")
    d.pop("description")
    return d


@pytest.mark.parametrize("name", sorted(TWINS))
def test_mxfp8_scenario_is_its_twin_with_only_the_recipe_changed(name):
    mx, twin = _settings(name), _settings(TWINS[name])
    assert mx["training"].pop("fp8_recipe") == "mxfp8"
    assert twin["training"].pop("fp8_recipe") == "current"
    assert mx == twin


def test_mxfp8_rows_are_held_out_only():
    held_out = {c["scenario"] for c in validation.held_out_cases()}
    calibration = {c["scenario"] for c in validation.cases()}
    assert set(TWINS) <= held_out
    assert not set(TWINS) & calibration
