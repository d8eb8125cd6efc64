"""Simulated vs published training throughput over the whole calibration set (simcluster/data/validation.yaml).

Tolerances (issue 4): median absolute error <= 10% over the set, every run within 20%, with one documented
exception: Megatron-Core's 1.7B model on 48 H100 (41% MFU published) is over-predicted by about 29%; nothing in
the model (GEMM shapes, attention, memory-bound kernels, data-parallel traffic) accounts for the gap, and we
refuse to fit a per-row factor (docs/calibration.md).
"""

import numpy as np
import pytest

from simcluster import validation

KNOWN_OUTLIERS = {"megatron-1.7b-h100": 0.35}


@pytest.fixture(scope="module")
def results():
    return [validation.run_case(case) for case in validation.cases()]


def test_median_error_over_the_calibration_set_is_within_10_percent(results):
    assert validation.error_stats(results)["median_abs_error"] <= 0.10


@pytest.mark.parametrize("case", [c["scenario"] for c in validation.cases()])
def test_each_calibration_run_is_within_20_percent(results, case):
    (result,) = [r for r in results if r.scenario == case]
    assert abs(result.error) <= KNOWN_OUTLIERS.get(case, 0.20), f"{case}: {result.error:+.1%}"


def test_calibration_set_covers_both_gpu_generations(results):
    gpus = {r.scenario.split("-")[-1] for r in results} | {r.scenario.split("-")[-2] for r in results}
    assert {"h100", "a100"} <= gpus
    assert len(results) == 13
    assert np.isfinite([r.simulated_tflops for r in results]).all()
