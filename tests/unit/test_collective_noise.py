"""Per-collective latency noise (``variability.collective_latency_noise``, engine.variability): none changes nothing,
the delay drawn is the step's delay where every collective is on the critical path, its mean is the closed form, and
it widens the band of step times over seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simcluster.engine import Simulation, simulate
from simcluster.engine.variability import Variability
from simcluster.parallel.layout import Layout
from simcluster.spec import config
from simcluster.spec.variability import Variability as VariabilitySpec
from simcluster.studies import samples as sampling

MEAN_S = 50e-6


def scenario(variability=None, tp=2, dp=8):
    # one stage, the gradient reduction after the backward: the TP collectives after every block, then the
    # data-parallel collectives, one after another on the critical path
    data = {"name": "noise", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": tp * dp // 8},
            "model": {"layers": 8, "hidden": 2048, "heads": 16, "ffn_hidden": 8192, "vocab": 32000},
            "training": {"seq_len": 2048, "global_batch_size": 32, "micro_batch_size": 1},
            "parallelism": {"tp": tp, "dp": dp, "overlap_grad_reduce": False, "tp_comm_overlap": False,
                            "overlap_param_gather": False}}
    if variability is not None:
        data["variability"] = variability
    return config.from_dict(data)


def test_zero_noise_equals_no_noise_exactly():
    jitter = {"kernel_jitter_cv": 0.05, "seed": 4}
    plain = simulate(scenario(jitter)).summary
    zero = simulate(scenario({**jitter, "collective_latency_noise": "0 us"})).summary
    for key in ("step_time_s", "compute_s", "exposed_comm_s", "pipeline_bubble_s"):
        assert zero[key] == plain[key]
    assert simulate(scenario({"collective_latency_noise": "0 s"})).summary["step_time_s"] == \
        simulate(scenario()).summary["step_time_s"]


@pytest.mark.parametrize("tp", [1, 2])
def test_a_serial_step_is_delayed_by_exactly_the_noise_drawn(tp):
    clean_s = simulate(scenario(tp=tp, dp=16 // tp)).summary["step_time_s"]
    sim = Simulation(scenario({"collective_latency_noise": f"{MEAN_S * 1e6} us", "seed": 1}, tp=tp, dp=16 // tp))
    noisy_s = sim.run().summary["step_time_s"]
    assert sim.variability.noise_calls > 0
    if tp == 1:
        assert noisy_s - clean_s == pytest.approx(sim.variability.noise_drawn_s, rel=1e-9)
    else:  # the backward's async TP collectives hide their noise under the compute (workload.async_backward)
        assert 0 < noisy_s - clean_s <= sim.variability.noise_drawn_s * (1 + 1e-9)


@pytest.mark.parametrize(("collectives", "groups", "expected"), [
    (1, 1, MEAN_S),                                          # Exp(mean)
    (6, 1, 6 * MEAN_S),                                      # a fused block: Gamma(6, mean), mean 6 x mean
    (1, 4, MEAN_S * (1 + 1 / 2 + 1 / 3 + 1 / 4)),            # the slowest of 4 groups: mean x H_4
])
def test_the_mean_delay_is_the_closed_form(collectives, groups, expected):
    spec = VariabilitySpec(collective_latency_noise="50 us")
    noise = Variability(spec, Layout(tp=1, pp=1, dp=4, cp=1), 8, np.random.default_rng(0), expand=False)
    draws = np.array([noise.collective_noise_s(collectives, groups) for _ in range(20_000)])
    # standard error of the mean: at most sqrt(collectives + sum 1/i^2) x mean / sqrt(20000) < 2% of expected
    assert draws.mean() == pytest.approx(expected, rel=0.03)
    assert noise.noise_drawn_s == pytest.approx(draws.sum(), rel=1e-12)


def test_the_expected_step_delay_is_calls_times_the_mean():
    # tp = 1, pp = 1: every collective is one group's (no max), one after another, so E[delay] = calls x mean
    clean_s = simulate(scenario(tp=1, dp=16)).summary["step_time_s"]
    delays, calls = [], set()
    for seed in range(40):
        sim = Simulation(scenario({"collective_latency_noise": f"{MEAN_S * 1e6} us", "seed": seed}, tp=1, dp=16))
        delays.append(sim.run().summary["step_time_s"] - clean_s)
        calls.add(sim.variability.noise_calls)
    (count,) = calls
    expected = count * MEAN_S
    # 40 x count exponential draws: standard error 1/sqrt(40 count) of the mean; 4 of them
    assert np.mean(delays) == pytest.approx(expected, rel=4 / math.sqrt(40 * count))


def test_noise_widens_the_band_of_step_times():
    def band(spec, n=12):
        result = sampling.combine([simulate(s) for s in sampling.scenarios(spec, n)], spec.tokens_per_step)
        return result.summary["step_time_p50_s"], result.summary["step_time_p99_s"]

    quiet = band(scenario({"kernel_jitter_cv": 0.01}))
    noisy = band(scenario({"kernel_jitter_cv": 0.01, "collective_latency_noise": "50 us"}))
    assert noisy[1] - noisy[0] > quiet[1] - quiet[0]
    assert noisy[0] > quiet[0]


def test_negative_noise_is_refused_naming_the_field():
    with pytest.raises(config.ScenarioError) as err:
        scenario({"collective_latency_noise": "-1 us"})
    assert "collective_latency_noise" in err.value.field
