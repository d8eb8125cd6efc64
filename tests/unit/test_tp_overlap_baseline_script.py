"""scripts/tp_overlap_baseline.py's what-if rebuilds the old blocking model: on an overlap-off Megatron-Core row with
sequence parallelism the blocking baseline and the run as bundled (async backward collectives) differ, and the
patch is undone afterwards."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import async_backward

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))
import tp_overlap_baseline  # noqa: E402


def _row(name: str):
    case = next(c for c in validation.held_out_cases() if c["scenario"] == name)
    return validation.published_layout(case, config.load(case["scenario"]))


def _megatron_core_tp2():
    # a Megatron-Core layout (framework defaults) with sequence parallelism and the TP overlap off
    sys.path.insert(0, str(Path(__file__).parent))
    from test_variability import scenario

    return scenario(tp=2, pp=2, dp=2)


@pytest.mark.parametrize("make", [lambda: _row("korthikanti2022-22b-a100"), _megatron_core_tp2],
                         ids=["korthikanti2022-22b-a100", "megatron-core-tp2"])
def test_blocking_baseline_and_as_run_differ_on_an_overlap_off_row(make):
    scenario = make()
    p = scenario.parallelism
    assert p.sequence_parallel and p.tp > 1 and not p.tp_comm_overlap and scenario.megatron_core
    assert async_backward.applies(scenario)
    as_run = simulate(scenario, check_memory=False).summary["step_time_s"]
    with tp_overlap_baseline.baseline_blocking():
        assert not async_backward.applies(scenario)
        blocking = simulate(scenario, check_memory=False).summary["step_time_s"]
    assert async_backward.applies(scenario)  # restored
    # the old model waits for every backward collective: slower than the async run by a visible margin
    assert blocking > as_run * 1.001
    assert simulate(scenario, check_memory=False).summary["step_time_s"] == as_run
