"""Failures, checkpoints and goodput over a whole run (outcomes.reliability): the closed form against an event
simulation of the same run, Young-Daly, scaling with the cluster, and the scenario's ``reliability`` section."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from simcluster.core.errors import ScenarioError
from simcluster.outcomes import reliability
from simcluster.spec import config

STEP_S = 10.0


def scenario(name="llama3-405b-16k-h100", **reliability_options):
    data = config.load(name).model_dump(mode="json")
    data["reliability"] = reliability_options
    return config.from_dict(data)


def event_goodput(run, interval_s, seeds=20, days=500):
    """Mean goodput of ``seeds`` independent event simulations and its standard error."""
    values = [reliability.simulate_run(run, interval_s, horizon_s=days * 86400.0, seed=seed)["goodput"]
              for seed in range(seeds)]
    return float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(seeds))


@pytest.mark.parametrize("options", [
    {},                                                              # the sourced defaults, 16,384 GPUs
    {"restart": "30 min", "read_bandwidth_per_gpu": "5 MB/s"},       # restores long enough to fail during them
    {"hot_spares": 4, "repair": "1 s", "requeue": "2 h"},            # spares always free: no re-queue
])
def test_event_simulation_agrees_with_the_closed_form(options):
    run = reliability.model_of(scenario(**options), STEP_S)
    tau = reliability.optimal_interval_s(run)
    mean, stderr = event_goodput(run, tau)
    closed = reliability.expected_goodput(run, tau)
    # statistical agreement: 4 standard errors of 20 independent 500-day runs (about 0.1-0.3 % of goodput)
    assert abs(mean - closed) < 4 * stderr + 1e-4, (mean, closed, stderr)


def test_event_simulation_counts_failures_at_the_running_rate():
    run = reliability.model_of(scenario(), STEP_S)
    result = reliability.simulate_run(run, reliability.optimal_interval_s(run), horizon_s=2000 * 86400.0)
    expected = reliability.interruptions_per_day(run)
    # Poisson counts: about 17,000 failures, 1 % is several standard deviations
    assert result["interruptions_per_day"] == pytest.approx(expected, rel=0.03)


def test_optimal_interval_maximises_goodput_and_agrees_with_young_daly_to_first_order():
    run = reliability.model_of(scenario(), STEP_S)
    tau = reliability.optimal_interval_s(run)
    best = reliability.expected_goodput(run, tau)
    for factor in (0.5, 0.8, 1.25, 2.0):
        assert reliability.expected_goodput(run, tau * factor) <= best
    # delta/M ~ 3e-4 here: Young's sqrt(2 delta M) is the first-order optimum (Daly 2006 eq. 7: within ~sqrt(delta/M))
    assert tau == pytest.approx(reliability.young_daly_interval_s(run), rel=0.1)
    assert tau % STEP_S == pytest.approx(0.0, abs=1e-9)  # whole steps


def test_first_order_goodput_matches_the_exact_form_when_failures_are_rare():
    # goodput ~ 1 - delta/tau - (tau/2 + D + R)/M to first order in 1/M (Young 1974)
    run = reliability.model_of(scenario(failures_per_1000_node_days=0.01), STEP_S)
    tau = reliability.optimal_interval_s(run)
    mtbf = 1.0 / run.failure_rate_per_s
    first_order = 1 - run.checkpoint_write_s / (tau + run.checkpoint_write_s) - (
        tau / 2 + run.downtime_s + run.restore_s) / mtbf
    assert reliability.expected_goodput(run, tau) == pytest.approx(first_order, abs=1e-4)


def test_no_failures_means_no_checkpoints_and_full_goodput():
    entries = reliability.summary_entries(scenario(failures_per_1000_node_days=0), STEP_S)
    assert entries["goodput"] == 1.0
    assert entries["checkpoint_interval_s"] is None
    assert entries["interruptions_per_day"] == 0.0


def test_failure_rate_grows_linearly_with_the_cluster():
    small = reliability.model_of(config.load("gpt3-175b-1024-h100"), STEP_S)
    data = config.load("gpt3-175b-1024-h100").model_dump(mode="json")
    data["cluster"]["nodes"] *= 2
    data["parallelism"]["dp"] *= 2
    data["training"]["global_batch_size"] *= 2
    big = reliability.model_of(config.from_dict(data), STEP_S)
    assert big.failure_rate_per_s == pytest.approx(2 * small.failure_rate_per_s, rel=1e-12)
    # 8-GPU nodes: the source's rate per node-day, whatever the split
    assert small.failure_rate_per_s * 86400 / 128 == pytest.approx(5.11e-3, rel=1e-3)


def test_checkpoint_is_weights_and_adam_states():
    spec = config.load("gpt3-175b-1024-h100")
    run = reliability.model_of(spec, STEP_S)
    assert run.checkpoint_bytes == pytest.approx(14 * spec.model.params)  # 2 (bf16) + 12 (fp32 master, m, v)
    assert run.checkpoint_write_s == pytest.approx(run.checkpoint_bytes / (1.22e8 * spec.cluster.gpus))


def test_hot_spares_remove_the_requeue_wait():
    without = reliability.summary_entries(scenario(requeue="1 h"), STEP_S)["goodput"]
    spared = reliability.summary_entries(scenario(requeue="1 h", hot_spares=8), STEP_S)["goodput"]
    assert spared > without + 0.05


def test_spare_pool_runs_out_when_repairs_are_slow():
    run = reliability.model_of(scenario(hot_spares=1, repair="30 days"), STEP_S)
    result = reliability.simulate_run(run, reliability.optimal_interval_s(run), horizon_s=54 * 86400.0)
    assert result["requeued_without_spare"] > 0.8 * result["failures"] * run.hardware_fraction


def test_event_simulation_is_reproducible_from_its_seed():
    run = reliability.model_of(scenario(), STEP_S)
    a = reliability.simulate_run(run, 200.0, seed=7)
    assert a == reliability.simulate_run(run, 200.0, seed=7)
    assert a != reliability.simulate_run(run, 200.0, seed=8)


def test_planned_interruptions_cost_their_restart():
    base = reliability.model_of(scenario(), STEP_S)
    planned = dataclasses.replace(base, planned_per_s=1.0 / 86400.0)
    tau = reliability.optimal_interval_s(base)
    cost = planned.checkpoint_write_s + planned.restart_s + planned.restore_s
    assert reliability.expected_goodput(planned, tau) == pytest.approx(
        reliability.expected_goodput(base, tau) * (1 - cost / 86400.0))


@pytest.mark.parametrize(("options", "field"), [
    ({"failure_rates": {"gpus": 1e-5}}, "reliability.failure_rates"),
    ({"hot_spares": -1}, "reliability.hot_spares"),
    ({"detection": "ten minutes"}, "reliability.detection"),
    ({"checkpoint_interval": "0 s"}, "reliability.checkpoint_interval"),
    ({"mtbf": "3 h"}, "reliability.mtbf"),
])
def test_bad_reliability_options_name_the_field(options, field):
    with pytest.raises(ScenarioError) as err:
        scenario(**options)
    assert err.value.field == field


def test_user_interval_is_rounded_to_whole_steps():
    run = reliability.model_of(scenario(checkpoint_interval="1 h"), 7.0)
    assert reliability.interval_s(run) == round(3600 / 7) * 7.0


def test_event_simulation_confirms_the_optimal_interval():
    # the same seeds at a quarter and four times the optimum lose clearly more (checkpoint writes, lost work)
    run = reliability.model_of(scenario(), STEP_S)
    tau = reliability.optimal_interval_s(run)
    best, stderr = event_goodput(run, tau, seeds=5)
    for factor in (0.25, 4.0):
        other, other_stderr = event_goodput(run, tau * factor, seeds=5)
        assert other < best - 4 * (stderr + other_stderr)


def test_absurd_rates_give_zero_goodput_and_a_bounded_event_simulation():
    entries = reliability.summary_entries(scenario(failures_per_1000_node_days=1e7, horizon="100 years"), STEP_S)
    assert entries["goodput"] == pytest.approx(0.0, abs=1e-6)
    assert entries["reliability"]["event_simulation"]["horizon_cut"] is True
