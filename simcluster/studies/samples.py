"""Several seeds of one scenario: the spread of the step time under variability (``run --samples N``, ``sweep
--samples N``).

Sample i runs the scenario with ``variability.seed`` = its seed + i (each run owns one generator seeded so,
``engine.variability``). The Result kept is the median sample's (the run whose step time is the lower median), its
summary extended with the percentiles of the step time over the samples and the throughput at them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from simcluster.spec.config import Scenario

# Percentiles reported (DESIGN.md: p50, p90, p99; p10 draws the lower edge of sweep's band).
PERCENTILES = (10, 50, 90, 99)
# Samples of one run: each is a full simulation; 10^4 is hours even for a small scenario.
MAX_SAMPLES = 10_000


def seeded(scenario: Scenario, index: int) -> Scenario:
    """``scenario`` with its variability seed advanced by ``index`` (unchanged without variability)."""
    if scenario.variability is None or index == 0:
        return scenario
    spec = scenario.variability
    return scenario.model_copy(update={"variability": spec.model_copy(update={"seed": spec.seed + index})})


def scenarios(scenario: Scenario, samples: int) -> Iterator[Scenario]:
    return (seeded(scenario, i) for i in range(samples))


def percentiles(step_times_s: list[float], tokens_per_step: float) -> dict:
    """``step_time_pNN_s`` for NN in PERCENTILES (linear interpolation, numpy's default), the throughput at the
    p10 and p90 step times (the band: ``tokens_per_s_p90_step``, ``tokens_per_s_p10_step``), and the samples."""
    times = np.asarray(step_times_s, dtype=float)
    out = {f"step_time_p{p}_s": float(np.percentile(times, p)) for p in PERCENTILES}
    out["tokens_per_s_p10_step"] = tokens_per_step / out["step_time_p10_s"]
    out["tokens_per_s_p90_step"] = tokens_per_step / out["step_time_p90_s"]
    out["samples"] = len(times)
    out["step_time_samples_s"] = times.tolist()
    return out


def run_samples(scenario: Scenario, samples: int, simulate: Callable[[Scenario], object]):
    """Run ``samples`` seeds of ``scenario`` through ``simulate`` (scenario -> Result); the median sample's
    Result with the percentiles in its summary."""
    results = [simulate(spec) for spec in scenarios(scenario, samples)]
    return combine(results, scenario.tokens_per_step)


def combine(results: list, tokens_per_step: float):
    """The lower-median Result of ``results`` with ``percentiles`` of their step times added to its summary."""
    times = [r.summary["step_time_s"] for r in results]
    median = sorted(range(len(results)), key=lambda i: times[i])[(len(results) - 1) // 2]
    kept = results[median]
    kept.summary.update(percentiles(times, tokens_per_step))
    kept.summary["median_sample"] = median
    return kept
