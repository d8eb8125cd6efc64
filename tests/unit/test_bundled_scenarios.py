"""Every bundled scenario loads, and fits its GPUs unless it is a published run the memory model is known to
over-count (a held-out case marked ``memory_check: false``, docs/calibration.md). A validation case that restates
its published layout for memory (``memory_layout``) must fit as published."""

import pytest

from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.studies import validation

OVER_COUNTED = {c["scenario"] for c in validation.held_out_cases() if not c.get("memory_check", True)}
CASES = {c["scenario"]: c for c in validation.cases() + validation.held_out_cases()}


@pytest.mark.parametrize("name", config.bundled_names())
def test_bundled_scenario_loads_and_fits_unless_a_known_over_count(name):
    scenario = config.load(name)
    if name in CASES:
        scenario = validation.published_layout(CASES[name], scenario)
    fits = memory.per_gpu_memory(scenario).total_bytes <= scenario.cluster.gpu.hbm_capacity
    assert fits != (name in OVER_COUNTED), name


def test_every_validation_case_is_a_bundled_scenario():
    names = set(config.bundled_names())
    assert {c["scenario"] for c in validation.cases() + validation.held_out_cases()} <= names
