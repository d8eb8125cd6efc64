"""Every bundled scenario loads, and fits its GPUs unless it is a published run the memory model is known to
over-count (a held-out case marked ``memory_check: false``, docs/calibration.md)."""

import pytest

from simcluster.parallel import memory
from simcluster.spec import config, jobs
from simcluster.studies import validation

OVER_COUNTED = {c["scenario"] for c in validation.held_out_cases() if not c.get("memory_check", True)}


JOBS = [name for name in config.bundled_names() if jobs.is_jobs_file(name)]


@pytest.mark.parametrize("name", [name for name in config.bundled_names() if name not in JOBS])
def test_bundled_scenario_loads_and_fits_unless_a_known_over_count(name):
    scenario = config.load(name)
    fits = memory.per_gpu_memory(scenario).total_bytes <= scenario.cluster.gpu.hbm_capacity
    assert fits != (name in OVER_COUNTED), name


def test_every_validation_case_is_a_bundled_scenario():
    names = set(config.bundled_names())
    assert {c["scenario"] for c in validation.cases() + validation.held_out_cases()} <= names


@pytest.mark.parametrize("name", JOBS)
def test_bundled_jobs_scenario_loads_and_every_job_fits(name):
    for job in jobs.load(name).jobs:
        assert memory.per_gpu_memory(job.scenario).total_bytes <= job.scenario.cluster.gpu.hbm_capacity, job.name
