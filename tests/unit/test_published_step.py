"""studies.validation.published_step_s: the published step a case states or implies, the one the validation error
compares (error = simulated / published throughput - 1 = published step / simulated step - 1)."""

import pytest

from simcluster.spec import config
from simcluster.studies import validation


def _case(name: str) -> dict:
    return next(c for c in validation.cases() if c["scenario"] == name)


@pytest.mark.parametrize("name", ["megatron-1.2b-a100-node",            # hardware TFLOP/s, full recompute
                                  "nemo2511-llama3-8b-8-b200-fp8"])     # a published step time
def test_the_published_step_is_the_one_the_validation_error_compares(name):
    case = _case(name)
    result = validation.run_case(case)
    published = validation.published_step_s(case, config.load(name))
    assert published == pytest.approx(result.step_time_s * (1.0 + result.error), rel=1e-9)
