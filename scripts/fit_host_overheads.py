"""Fit the host model's two fitted values on the calibration set as a whole, and print how well they fit.

    python scripts/fit_host_overheads.py            # fit, print the fit, the errors per series, the sensitivity
    python scripts/fit_host_overheads.py --write    # and put the fitted values into simcluster/data/efficiency.yaml

The host model (``workload.kernels.HostModel``, efficiency.yaml host_overhead): a block of kernels (one model chunk,
one microbatch, one phase) takes max(device time + kernels * kernel gap, kernels * dispatch) plus, when pp > 1, the
pipeline step's host time. The host dispatch per kernel is measured; the stream's gap before each kernel
(``kernel_gap_s``) and the pipeline step's host time (``pipeline_step_s``) are fitted here.

Runs: every calibration case of data/validation.yaml (``validation.cases()``, what ``simcluster validate`` runs),
none weighted; the held-out cases are never read. One series is kept out of the objective (``EXCLUDED_SERIES``,
printed with its reason; ``--all`` keeps it in): its error is per-GPU compute the kernel model misses, which host
time must not stand for. Its errors are still printed, and ``simcluster validate`` reports them.
Objective: the mean absolute error over the runs, subject to no run beyond ``MAX_ERROR`` (the issue's bound for
calibration, 10%); when no pair meets the bound, the mean among the pairs with the smallest maximum (to 0.1
point). The grid: ``GAP_GRID_S`` x ``STEP_GRID_S``.

How: the step time of a run responds to its blocks' times along its critical path. One full simulation of the set
gives each run's step time S0 at the current values; the plan gives every block's device time and kernel count
(``ChunkCost.forward_stream``/``backward_stream``), so a candidate's block times are exact, and the step is
estimated as S0 + c * (mean block time change over the chunks, forward + backward), c = m*v + pp - 1 blocks of
each phase on the critical path of a 1F1B pipeline (m microbatches per replica, v chunks per stage; m without
a pipeline). The best pair on that estimate is simulated in full and the estimate re-linearised around it, until
the best pair stays (at most ``MAX_SIMULATIONS`` + 1 simulations of the set). The errors printed are the full
simulation's at the fitted pair; the sensitivity rows and the hypothesis check are the estimate around it.

Hypothesis checks (printed, not used): (1) the stream's gap fixed at the measured launch overhead (efficiency.yaml
launch_overhead_s) and the host dispatch fitted instead, i.e. every per-kernel cost hidden wherever the GPU is the
bottleneck; (2) the per-kernel gap replaced by a fraction of the blocks' device time (``FRACTION_GRID``), i.e. an
overhead that scales with the work, as a sustained fraction would (round 6: no fraction meets the 10% bound; the
calibration set asks for time per kernel).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simcluster.core import catalog
from simcluster.parallel import plan as step_plan
from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import kernels

ROOT = Path(__file__).resolve().parents[1]
EFFICIENCY_YAML = ROOT / "simcluster" / "data" / "efficiency.yaml"
MAX_ERROR = 0.10                                  # issue 15's "Done when": calibration max <= 10%
GAP_GRID_S = np.arange(0.0, 80.5e-6, 1e-6)        # 0-80 us per kernel, 1 us apart
DISPATCH_GRID_S = np.arange(0.0, 300.5e-6, 2e-6)  # hypothesis check: 0-300 us per kernel
STEP_GRID_S = np.arange(0.0, 2000.5e-6, 10e-6)    # 0-2 ms per pipeline step, 10 us apart
FRACTION_GRID = np.arange(0.0, 0.3001, 0.005)     # hypothesis check 2: 0-30% of the device time
MAX_SIMULATIONS = 3
SENSITIVITY = 0.25
# Series whose residual is known not to be host time, kept out of the objective (docs/calibration.md, round 5):
# Megatron-LM 2021 on A100 is over-predicted by 8-14% on one server and up to 19% across servers, the same as the
# held-out SC21 runs of that software; with it in the objective the fit sets the kernel gap to 70 us and the
# pipeline step to 0 and puts every H100 Llama 3.1 8B run at -9 to -10% (median 7.8%).
EXCLUDED_SERIES = {"megatron_a100_2021": "per-GPU compute of 2021 Megatron-LM on A100 over-predicted (round 5)"}


@contextlib.contextmanager
def host_values(gap_s: float, step_s: float):
    """Simulate with these fitted values: set in the loaded efficiency table the simulator reads, restored after."""
    table = catalog.load("efficiency")["host_overhead"]
    saved = dict(table)
    table.update(kernel_gap_s=float(gap_s), pipeline_step_s=float(step_s))
    try:
        yield
    finally:
        table.clear()
        table.update(saved)


@dataclass
class Run:
    """One calibration run: its blocks (device time and kernel count per chunk, forward and backward) and the
    blocks of each phase on its critical path."""

    case: dict
    device_s: np.ndarray   # [chunks, 2]: forward, backward
    kernels: np.ndarray    # [chunks, 2]
    pipelined: bool
    critical_blocks: int

    @classmethod
    def of(cls, case: dict) -> Run:
        scenario = config.load(case["scenario"])
        plan = step_plan.plan(scenario, lambda op, group, size_bytes: 0.0)  # compute streams only
        streams = [(c.forward_stream, c.backward_stream) for c in plan.chunks]
        pp = scenario.parallelism.pp
        return cls(case, np.array([[s.device_s for s in pair] for pair in streams]),
                   np.array([[s.kernels for s in pair] for pair in streams]), pp > 1,
                   plan.microbatches * (len(plan.chunks) // pp) + pp - 1)

    def block_s(self, gap_s, dispatch_s, step_s) -> np.ndarray:
        """Mean over chunks of a forward plus a backward block's time, over the grid [gap, dispatch, step]."""
        gap_s, dispatch_s, step_s = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (gap_s, dispatch_s, step_s))
        device = (self.device_s[..., None] + self.kernels[..., None] * gap_s)[..., None]     # [chunks, 2, G, 1]
        host = (self.kernels[..., None] * dispatch_s)[..., None, :]                         # [chunks, 2, 1, H]
        blocks = np.maximum(device, host).sum(axis=1).mean(axis=0)                          # [G, H]
        return blocks[..., None] + (2.0 if self.pipelined else 0.0) * step_s               # [G, H, P]

    def dispatch_bound_s(self, gap_s: float) -> float:
        """The largest host dispatch per kernel at which every block of this run is still device-bound."""
        return float(np.min(self.device_s / self.kernels + gap_s))


def simulate(gap_s: float, step_s: float) -> list[validation.CaseResult]:
    with host_values(gap_s, step_s):
        return [validation.run_case(case) for case in validation.cases()]


def estimated_errors(runs: list[Run], reference: list[validation.CaseResult], at: tuple[float, float],
                     gap_s, dispatch_s, step_s) -> np.ndarray:
    """Errors [runs, G, H, P] estimated from the simulation ``reference`` made at ``at`` (gap, step) with the
    dispatch of efficiency.yaml."""
    dispatch0_s = kernels.host_model().dispatch_s
    errors = []
    for run, result in zip(runs, reference, strict=True):
        base = run.block_s(at[0], dispatch0_s, at[1])[0, 0, 0]
        step = result.step_time_s + run.critical_blocks * (run.block_s(gap_s, dispatch_s, step_s) - base)
        errors.append((1.0 + result.error) * result.step_time_s / step - 1.0)
    return np.array(errors)


def best(errors: np.ndarray, fitted: np.ndarray) -> tuple[int, ...]:
    """Grid index minimising the mean |error| of the ``fitted`` runs with no run beyond MAX_ERROR (else among the
    smallest maxima)."""
    magnitude = np.abs(errors[fitted])
    mean, worst = magnitude.mean(axis=0), magnitude.max(axis=0)
    feasible = worst <= MAX_ERROR
    if not feasible.any():
        feasible = worst <= worst.min() + 1e-3
    return np.unravel_index(np.argmin(np.where(feasible, mean, np.inf)), mean.shape)


def in_objective(runs: list[Run], excluded: dict[str, str]) -> np.ndarray:
    """Mask of the runs the objective reads: every run but those of the ``excluded`` series."""
    return np.array([run.case["source"] not in excluded for run in runs])


def fit(excluded: dict[str, str]) -> tuple[tuple[float, float], list[validation.CaseResult], list[Run]]:
    runs = [Run.of(case) for case in validation.cases()]
    fitted = in_objective(runs, excluded)
    host = kernels.host_model()
    at = (host.kernel_gap_s, host.pipeline_step_s)
    print(f"start: kernel gap {at[0] * 1e6:.0f} us, pipeline step {at[1] * 1e6:.0f} us (efficiency.yaml); "
          f"host dispatch {host.dispatch_s * 1e6:.1f} us per kernel (measured, not fitted)")
    seen: dict[tuple[float, float], list[validation.CaseResult]] = {}
    estimate = None
    for simulation in range(MAX_SIMULATIONS):
        started = time.perf_counter()
        seen[at] = simulate(*at)
        stats = validation.error_stats(seen[at])
        print(f"simulation {simulation + 1} at ({at[0] * 1e6:.0f} us, {at[1] * 1e6:.0f} us): "
              f"median {stats['median_abs_error']:.1%}, max {stats['max_abs_error']:.1%} "
              f"({time.perf_counter() - started:.0f} s)")
        if estimate is not None:
            worst = np.abs(estimate - np.array([r.error for r in seen[at]])).max()
            print(f"  the estimate of the previous step was within {worst * 100:.2f} points of every run's error")
        errors = estimated_errors(runs, seen[at], at, GAP_GRID_S, host.dispatch_s, STEP_GRID_S)
        i, _, j = best(errors, fitted)
        estimate = errors[:, i, 0, j]
        candidate = (round(float(GAP_GRID_S[i]), 9), round(float(STEP_GRID_S[j]), 9))
        converged = candidate == at or candidate in seen
        at = candidate
        if converged:
            break
    if at not in seen:
        seen[at] = simulate(*at)
    return at, seen[at], runs


def summary(errors: np.ndarray) -> dict[str, float]:
    magnitude = np.abs(errors)
    return {"median": float(np.median(magnitude)), "max": float(magnitude.max()),
            "mean_abs": float(magnitude.mean()), "mean": float(errors.mean())}


def sensitivity(runs, results, at) -> list[tuple[str, dict[str, float]]]:
    """Calibration median / max |error| and mean error with each fitted value moved by +-25% (estimated)."""
    dispatch_s = kernels.host_model().dispatch_s
    rows = [("as fitted", at)]
    for sign in (-1, 1):
        rows.append((f"kernel gap {sign * SENSITIVITY:+.0%}", (at[0] * (1 + sign * SENSITIVITY), at[1])))
    for sign in (-1, 1):
        rows.append((f"pipeline step {sign * SENSITIVITY:+.0%}", (at[0], at[1] * (1 + sign * SENSITIVITY))))
    return [(f"{label} ({gap_s * 1e6:.1f} us, {step_s * 1e6:.0f} us)",
             summary(estimated_errors(runs, results, at, gap_s, dispatch_s, step_s)[:, 0, 0, 0]))
            for label, (gap_s, step_s) in rows]


def hypothesis(runs, results, at, fitted) -> tuple[float, float, dict[str, float]]:
    """The per-kernel cost hidden where the GPU binds: the gap at the measured launch overhead, the host dispatch
    and the pipeline step fitted by the same objective (estimated)."""
    gap_s = kernels.launch_overhead_s()
    errors = estimated_errors(runs, results, at, gap_s, DISPATCH_GRID_S, STEP_GRID_S)
    _, i, j = best(errors, fitted)
    return float(DISPATCH_GRID_S[i]), float(STEP_GRID_S[j]), summary(errors[:, 0, i, j])


def proportional_hypothesis(runs, results, at, fitted) -> tuple[float, float, dict[str, float]]:
    """The per-kernel gap replaced by a fraction of each block's device time (no gap), the fraction and the pipeline
    step fitted by the same objective (estimated like ``estimated_errors``; exact for the blocks' device side)."""
    dispatch_s = kernels.host_model().dispatch_s
    errors = []
    for run, result in zip(runs, results, strict=True):
        base = run.block_s(at[0], dispatch_s, at[1])[0, 0, 0]
        device = run.device_s.sum(axis=1).mean()
        blocks = (device * (1.0 + FRACTION_GRID[:, None])
                  + (2.0 if run.pipelined else 0.0) * STEP_GRID_S[None, :])                 # [F, P]
        step = result.step_time_s + run.critical_blocks * (blocks - base)
        errors.append((1.0 + result.error) * result.step_time_s / step - 1.0)
    errors = np.array(errors)[:, :, None, :]                                                 # [runs, F, 1, P]
    i, _, j = best(errors, fitted)
    return float(FRACTION_GRID[i]), float(STEP_GRID_S[j]), summary(errors[:, i, 0, j])


def write(at: tuple[float, float]) -> None:
    """Put the fitted pair into efficiency.yaml's host_overhead (the two lines, comments kept)."""
    text = EFFICIENCY_YAML.read_text()
    for key, value in (("kernel_gap_s", at[0]), ("pipeline_step_s", at[1])):
        text, count = re.subn(rf"(?m)^(  {key}: )\S+", rf"\g<1>{value * 1e6:.1f}e-6", text)
        assert count == 1, key
    EFFICIENCY_YAML.write_text(text)
    print(f"wrote kernel_gap_s and pipeline_step_s to {EFFICIENCY_YAML.relative_to(ROOT)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="put the fitted values into efficiency.yaml")
    parser.add_argument("--all", action="store_true", help="fit on every calibration series (EXCLUDED_SERIES in)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    excluded = {} if args.all else EXCLUDED_SERIES
    at, results, runs = fit(excluded)
    fitted = in_objective(runs, excluded)
    by_case = {r.scenario: r for r in results}
    print(f"\nfitted: kernel_gap_s = {at[0] * 1e6:.0f} us per kernel (the stream idles before each kernel, not "
          f"hidden), pipeline_step_s = {at[1] * 1e6:.0f} us per pipeline step (host time the drained stream waits)")
    print(f"objective: mean |error| over {int(fitted.sum())} of the {len(results)} calibration runs, no run beyond "
          f"{MAX_ERROR:.0%}" + "".join(f"; kept out: {name} ({why})" for name, why in excluded.items()))
    bound_s = min(run.dispatch_bound_s(at[0]) for run in runs)
    print(f"every calibration block is device-bound for a host dispatch below {bound_s * 1e6:.0f} us per kernel "
          f"(efficiency.yaml: {kernels.host_model().dispatch_s * 1e6:.1f} us)")
    print("\nrun | published | simulated | error")
    for run in runs:
        r = by_case[run.case["scenario"]]
        print(f"{r.scenario} | {r.published_tflops:.1f} | {r.simulated_tflops:.1f} | {r.error:+.1%}")
    stats = validation.error_stats(results)
    mean_abs = float(np.mean([abs(r.error) for r in results]))
    print(f"median {stats['median_abs_error']:.1%}, max {stats['max_abs_error']:.1%}, mean |error| {mean_abs:.2%} "
          f"over {stats['case_count']}")
    print("\nseries / precision | runs | median | max | mean error")
    for key, g in validation.error_by_group(results).items():
        print(f"{key} | {g['case_count']} | {g['median_abs_error']:.1%} | {g['max_abs_error']:.1%} | "
              f"{g['mean_error']:+.1%}")
    print("\nsensitivity (estimated around the fit) | median | max | mean |error| | mean error")
    for label, row in sensitivity(runs, results, at):
        print(f"{label} | {row['median']:.1%} | {row['max']:.1%} | {row['mean_abs']:.2%} | {row['mean']:+.1%}")
    dispatch_s, step_s, row = hypothesis(runs, results, at, fitted)
    print(f"\nhypothesis check (estimated): kernel gap at the measured launch overhead "
          f"({kernels.launch_overhead_s() * 1e6:.0f} us), dispatch and pipeline step fitted: dispatch "
          f"{dispatch_s * 1e6:.0f} us, pipeline step {step_s * 1e6:.0f} us: median {row['median']:.1%}, "
          f"max {row['max']:.1%}, mean |error| {row['mean_abs']:.2%}, mean {row['mean']:+.1%}")
    fraction, step_s, row = proportional_hypothesis(runs, results, at, fitted)
    print(f"hypothesis check 2 (estimated): no per-kernel gap, a fraction of the device time and the pipeline step "
          f"fitted: {fraction:.1%} of the device time, pipeline step {step_s * 1e6:.0f} us: median "
          f"{row['median']:.1%}, max {row['max']:.1%}, mean |error| {row['mean_abs']:.2%}, mean {row['mean']:+.1%}")
    if args.write:
        write(at)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
