"""Fit the fitted part of the per-kernel model on the calibration set as a whole, and print how well it fits.

    python scripts/fit_host_overheads.py                     # fit efficiency.yaml's structure ("gap"), print the fit,
                                                             # the errors per series, the sensitivity, the condition,
                                                             # leave-one-series-out refits and the other structures
    python scripts/fit_host_overheads.py --structure fill    # round 9's structure instead
    python scripts/fit_host_overheads.py --structure call    # round 29's: the fitted gap per Python-issued kernel
    python scripts/fit_host_overheads.py --structure gapfill # round 30's: the gap AND the GEMM fill fitted together
    python scripts/fit_host_overheads.py --write             # and put the fitted values into efficiency.yaml
    python scripts/fit_host_overheads.py --variability measured   # what-if: every run with GPU speed variability
    python scripts/fit_host_overheads.py --jobs 1            # simulate in this process (default: one worker per CPU)

The model (``workload.kernels.HostModel``, efficiency.yaml host_overhead), per block of kernels (one model chunk,
one microbatch, one phase):

    max(D + N * kernel gap + fill_waves * sum over GEMM kernels of their time per wave, N * dispatch)
    + pipeline step (pp > 1)

The host dispatch is measured. Four structures (``STRUCTURES``), the first three fitting one per-kernel value with
the pipeline step: "gap" (rounds 5-8, in use): one gap before every kernel fitted, no GEMM fill; "fill" (round 9, not
applied): the gap at the measured queued-launch latency (efficiency.yaml launch_overhead_s, Kineto traces), a GEMM
kernel's fill in waves of its own fitted; "call" (round 29, not applied): the fitted gap before every kernel issued
from Python, the measured queued-launch latency before a kernel the C++ of one call queues behind the one before it
(host_overhead gap_per "call"; ``Op.queued``, workload.call_issue), no GEMM fill; "gapfill" (round 30, not
applied): the gap before every kernel and the GEMM fill both fitted (round 13's three-term check as a structure, a 3-D
grid). ``--write`` writes the fitted values and the structure's fixed values. Printed as checks (not used): the
other structures on the same estimate, including the gap before tensor-core kernels only (round 8), a fraction of
the device time (round 6), and the three terms
together (fitted gap, GEMM fill and pipeline step, with their condition number: round 13), and the pipeline term's
structure against the schedules' stream drains (``PIPELINE_STRUCTURES``, round 28: every block, per drain, both,
host-side, message time; each with its leave-one-series-out refits).

Runs: every calibration case of data/validation.yaml (``validation.cases()``, what ``simcluster validate`` runs),
none weighted; the held-out cases are never read. A series can be kept out of the objective (``EXCLUDED_SERIES``,
printed with its reason; ``--all`` keeps it in); none is kept out since round 7.
Objective: the mean absolute error over the runs, subject to no run beyond ``MAX_ERROR`` (the issue's bound for
calibration, 10%); when no pair meets the bound, the mean among the pairs with the smallest maximum (to 0.1
point). The grid: the structure's terms' grids (``GAP_GRID_S``, ``FILL_GRID``; "gapfill": ``GAPFILL_*``) x
``STEP_GRID_S``.

How: the step time of a run responds to its blocks' times along its critical path. One full simulation of the set
gives each run's step time S0 at the current values; the plan gives every block's device time, kernel count and
GEMM wave time (``ChunkCost.forward_stream``/``backward_stream``), so a candidate's block times are exact, and the
step is estimated as S0 + c * (mean block time change over the chunks, forward + backward), c = m*v + pp - 1 blocks
of each phase on the critical path of a 1F1B pipeline (m microbatches per replica, v chunks per stage; m without
a pipeline). The best pair on that estimate is simulated in full and the estimate re-linearised around it, until
the best pair stays (at most ``MAX_SIMULATIONS`` + 1 simulations of the set). The errors printed are the full
simulation's at the fitted pair; the sensitivity rows, the leave-one-series-out refits and the checks are the
estimate around it. Identifiability: the condition number of the fitted terms' columns (each run's step-time
change per unit of each, relative to its step, columns scaled to unit norm).
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from simcluster.collectives import nccl
from simcluster.core import catalog, script_entry
from simcluster.engine.aligned_reduction import megatron_lm_2020_22
from simcluster.parallel import plan as step_plan
from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import kernels, schedule_host

ROOT = Path(__file__).resolve().parents[1]
EFFICIENCY_YAML = ROOT / "simcluster" / "data" / "efficiency.yaml"
MAX_ERROR = 0.10                                  # issue 15's "Done when": calibration max <= 10%
FILL_GRID = np.arange(0.0, 3.0001, 0.01)          # 0-3 waves per GEMM kernel
GAP_GRID_S = np.arange(0.0, 150.5e-6, 1e-6)       # checks: 0-150 us per kernel, 1 us apart
STEP_GRID_S = np.arange(0.0, 2000.5e-6, 10e-6)    # 0-2 ms per pipeline step, 10 us apart
FRACTION_GRID = np.arange(0.0, 0.3001, 0.005)     # hypothesis check 2: 0-30% of the device time
EXCHANGE_GRID = np.arange(0.0, 4.0001, 0.02)      # round-16 check: 0-4 pipeline messages' NIC time a step
THREE_TERM_GAP_S = np.arange(0.0, 60.5e-6, 1e-6)      # check: gap + fill + step, 0-60 us a kernel
THREE_TERM_FILL = np.arange(0.0, 2.0001, 0.02)          # 0-2 waves
THREE_TERM_STEP_S = np.arange(0.0, 1000.5e-6, 20e-6)    # 0-1 ms a pipeline step
MAX_SIMULATIONS = 3
SENSITIVITY = 0.25
# Series whose residual is known not to be host time, kept out of the objective (docs/calibration/rounds-1-9.md, round
# 5): Megatron-LM 2021 on A100 is over-predicted by 8-14% on one server and up to 19% across servers, the same as the
# held-out SC21 runs of that software; with it in the objective the fit sets the kernel gap to 70 us and the
# pipeline step to 0 and puts every H100 Llama 3.1 8B run at -9 to -10% (median 7.8%).
EXCLUDED_SERIES: dict[str, str] = {}   # series name -> why it is kept out of the objective
# One NDR NIC's point-to-point rate, NCCL's measured per-NIC busbw (data/nccl.yaml; the round-16 check only)
NIC_BYTES_PER_S = nccl.per_nic_busbw()


@dataclass(frozen=True)
class Term:
    """One fitted per-kernel value: its efficiency.yaml key, its ``Run.block_s`` argument, its grid, its unit."""

    key: str
    arg: str
    grid: np.ndarray
    unit: float    # printed in this unit
    unit_name: str

    def text(self, value: float) -> str:
        digits = 2 if self.unit == 1 else 0
        return f"{value / self.unit:.{digits}f} {self.unit_name}"


GAP = Term("kernel_gap_s", "gap_s", GAP_GRID_S, 1e-6, "us")
FILL = Term("fill_waves", "fill", FILL_GRID, 1.0, "waves")


@dataclass(frozen=True)
class Structure:
    """Which per-kernel values (``terms``) are fitted with the pipeline step, and the values the other per-kernel
    keys take. A fit's point ``at`` is (the terms' values in order, the pipeline step)."""

    terms: tuple[Term, ...]
    # (yaml key, block_s argument, value; None: launch_overhead_s; a string: gap_per's)
    fixed: tuple[tuple[str, str, float | str | None], ...]

    @property
    def key(self) -> str:
        return " + ".join(term.key for term in self.terms)

    def fixed_values(self) -> dict[str, float | str]:
        return {key: kernels.launch_overhead_s() if value is None else value for key, _, value in self.fixed}

    def text(self, *values: float) -> str:
        return ", ".join(term.text(value) for term, value in zip(self.terms, values, strict=True))

    def fitted_values(self, at: tuple[float, ...]) -> dict[str, float]:
        """efficiency.yaml host_overhead keys -> values at ``at``, the pipeline step included."""
        return {**{term.key: float(v) for term, v in zip(self.terms, at, strict=False)}, "pipeline_step_s": at[-1]}


# --structure: "fill" (round 9): the measured queued-launch gap (launch_overhead_s) before every kernel, the GEMM
# fill fitted; "gap" (rounds 5-8, efficiency.yaml's default): one gap before every kernel fitted, no GEMM fill;
# "call" (round 29): the gap fitted before every kernel issued from Python, launch_overhead_s before the kernels a
# call's C++ queues (workload.call_issue), no GEMM fill; "gapfill" (round 30): the gap before every kernel AND the
# GEMM fill fitted together (round 13's three-term check as a structure, on ``GAPFILL_*`` grids).
GAPFILL_GAP = Term("kernel_gap_s", "gap_s", np.arange(0.0, 60.5e-6, 1e-6), 1e-6, "us")
GAPFILL_FILL = Term("fill_waves", "fill", np.arange(0.0, 2.0001, 0.02), 1.0, "waves")
STRUCTURES = {
    "fill": Structure((FILL,), (("kernel_gap_s", "gap_s", None), ("gap_per", "gap_per", "kernel"))),
    "gap": Structure((GAP,), (("fill_waves", "fill", 0.0), ("gap_per", "gap_per", "kernel"))),
    "call": Structure((GAP,), (("fill_waves", "fill", 0.0), ("gap_per", "gap_per", "call"))),
    "gapfill": Structure((GAPFILL_GAP, GAPFILL_FILL), (("gap_per", "gap_per", "kernel"),)),
}
STRUCTURE = STRUCTURES["gap"]   # set by main
VARIABILITY = None              # set by main (--variability): every calibration run with it, a what-if
JOBS = None                     # set by main (--jobs): worker processes simulating the calibration runs


@contextlib.contextmanager
def host_values(*at: float, structure: Structure | None = None):
    """Simulate with these fitted values (``structure``'s values, pipeline step; default ``STRUCTURE``) and the
    structure's fixed ones: set in the loaded efficiency table the simulator reads, restored after."""
    structure = structure or STRUCTURE
    table = catalog.load("efficiency")["host_overhead"]
    saved = dict(table)
    table.update({**structure.fitted_values(at), **structure.fixed_values()})
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
    wave_s: np.ndarray     # [chunks, 2]: the GEMM kernels' time per wave, summed
    pipelined: bool
    critical_blocks: int
    tensor_core_kernels: np.ndarray   # [chunks, 2]: GEMM and attention kernels (the round-8 check)
    drained_s: float = 0.0   # sourced stream drains on the critical path per step (workload.schedule_host; a check)
    exchange_s: float = 0.0  # one pipeline message over one NIC at NCCL's measured busbw (the round-16 check)
    drain_weight: float = 1.0  # drains a block (schedule_host.drains per_block; the round-28 per-drain check)
    queued: np.ndarray | None = None   # [chunks, 2]: of ``kernels``, those a call's C++ queues (workload.call_issue)
    graphed: np.ndarray | None = None  # [chunks, 2]: of ``kernels``, those replayed from a CUDA graph (round 30)
    no_work: np.ndarray | None = None  # [chunks, 2]: of ``queued``, launches with no work (launch_overhead_s; round 32)
    measured: np.ndarray | None = None  # [chunks, 2]: of ``no_work``, inside a measured call time (no gap; round 32)

    @classmethod
    def of(cls, case: dict) -> Run:
        scenario = config.load(case["scenario"])
        plan = step_plan.plan(scenario, lambda op, group, size_bytes: 0.0)  # compute streams only
        streams = [(c.forward_stream, c.backward_stream) for c in plan.chunks]
        pp = scenario.parallelism.pp
        critical = plan.microbatches * (len(plan.chunks) // pp) + pp - 1
        return cls(case, np.array([[s.device_s for s in pair] for pair in streams]),
                   np.array([[s.kernels for s in pair] for pair in streams]),
                   np.array([[s.wave_s for s in pair] for pair in streams]), pp > 1, critical,
                   np.array([[s.tensor_core_kernels for s in pair] for pair in streams]),
                   drained_s(scenario, case, 2 * critical, plan.microbatches),
                   plan.p2p_bytes / NIC_BYTES_PER_S if pp > 1 else 0.0, schedule_drains(scenario, case).per_block,
                   np.array([[s.queued_kernels for s in pair] for pair in streams]),
                   np.array([[s.graphed_kernels for s in pair] for pair in streams]),
                   np.array([[s.no_work_kernels for s in pair] for pair in streams]),
                   np.array([[s.measured_kernels for s in pair] for pair in streams]))

    def block_s(self, gap_s, fill, dispatch_s, step_s, tensor_core_gap_s=0.0, fraction=0.0,
                exchange_factor=0.0, drain_step_s=0.0, host_block_s=0.0, gap_per="kernel") -> np.ndarray:
        """Mean over chunks of a forward plus a backward block's time; arguments broadcast (grids on distinct
        axes). ``tensor_core_gap_s``, ``fraction`` and ``exchange_factor`` serve the checks of other structures: a
        gap before every tensor-core kernel, a fraction of the device time, a multiple of the pipeline message's
        time on one NIC per pipeline step. The round-28 checks of the pipeline term's structure: ``drain_step_s``
        per stream drain (``drain_weight`` of them a block), ``host_block_s`` host work a pipelined block on the
        host side of the max (hidden while the host is ahead). ``gap_per`` (not broadcast): "call", the queued kernels
        (``queued``) pay the measured queued-launch latency instead of ``gap_s`` (efficiency.yaml gap_per). Graphed
        kernels (``graphed``, host_overhead.cuda_graphs on) pay the in-graph node latency and no dispatch."""
        gap_s, fill, dispatch_s, step_s, tc_gap_s, fraction, factor, drain_step_s, host_block_s = np.broadcast_arrays(
            *(np.asarray(v, dtype=float) for v in (gap_s, fill, dispatch_s, step_s, tensor_core_gap_s, fraction,
                                                   exchange_factor, drain_step_s, host_block_s)))
        step_s = step_s + factor * self.exchange_s + self.drain_weight * drain_step_s
        grid = (...,) + (None,) * gap_s.ndim
        host = replace(kernels.host_model(), kernel_gap_s=gap_s, dispatch_s=dispatch_s, fill_waves=fill,
                       gap_per=gap_per)
        streams = self.streams(grid, host_block_s if self.pipelined else 0.0)
        d, tc = self.device_s[grid], self.tensor_core_kernels[grid]
        device = streams.device_bound_s(host) + d * fraction + tc * tc_gap_s      # [chunks, 2, *grid]
        blocks = np.maximum(device, streams.host_bound_s(host)).sum(axis=1).mean(axis=0)
        return blocks + (2.0 if self.pipelined else 0.0) * step_s

    def streams(self, grid: tuple = (...,), host_extra_s=0.0) -> kernels.StreamTime:
        """The blocks as the simulator's ``kernels.StreamTime`` (its fields arrays [chunks, 2], indexed by
        ``grid``), so that the estimate charges each kernel class's gap and dispatch by the simulator's own
        ``device_bound_s`` / ``host_bound_s``: queued kernels pay ``HostModel.queued_gap_s`` (the fitted gap unless
        gap_per is "call"; those with no work ``launch_overhead_s``, none inside a measured call time), graphed
        ones ``graph_node_s`` and no dispatch (round-30 review: no twin formula)."""
        zeros = np.zeros_like(self.kernels)
        queued = zeros if self.queued is None else self.queued
        graphed = zeros if self.graphed is None else self.graphed
        no_work = zeros if self.no_work is None else self.no_work
        measured = zeros if self.measured is None else self.measured
        return kernels.StreamTime(device_s=self.device_s[grid], kernels=self.kernels[grid], wave_s=self.wave_s[grid],
                                  host_extra_s=host_extra_s, queued_kernels=queued[grid],
                                  graphed_kernels=graphed[grid], no_work_kernels=no_work[grid],
                                  measured_kernels=measured[grid])

    def dispatch_bound_s(self, host: kernels.HostModel) -> float:
        """The largest host dispatch per kernel at which every block of this run is still device-bound."""
        return float(np.min(self.streams().device_bound_s(host) / self.kernels))

# Series run with Megatron-LM's pretrain_gpt.py, whose loss reads the loss on the host once a microbatch
# (--check-for-nan-in-loss-and-grad, on by default; workload.schedule_host). The NeMo series use NeMo's losses.
PRETRAIN_GPT_SOURCES = ("megatron_core_h100_2024", "megatron_core_h100_2024_strong")


def schedule_drains(scenario, case: dict) -> schedule_host.Drains:
    """The run's stream drains from source (``schedule_host.drains``): per block and per last-stage microbatch."""
    p = scenario.parallelism
    return schedule_host.drains(p.pp, p.virtual_stages, megatron_lm_2020_22(scenario),
                                loss_nan_check=case.get("source") in PRETRAIN_GPT_SOURCES)


def drained_s(scenario, case: dict, blocks: int, microbatches: int) -> float:
    """The sourced drains' idle on the critical path of one step (``schedule_host``): per block, and the loss's per
    microbatch on the last stage."""
    return schedule_host.drained_s_per_step(schedule_drains(scenario, case), blocks, microbatches,
                                            scenario.cluster.gpu.name)


def drain_attribution(runs: list[Run], step_s: float) -> list[tuple[str, float, float]]:
    """Per pipelined run: the sourced drains and the fitted pipeline step on the critical path, seconds a step."""
    return [(run.case["scenario"], run.drained_s, 2 * run.critical_blocks * step_s) for run in runs if run.pipelined]


def share_text(drain_s: float, steps_s: float) -> str:
    """The drains' share of the fitted steps; "n/a" where the fitted pipeline step is 0 (STEP_GRID_S starts there)."""
    return f"{drain_s / steps_s:.2%}" if steps_s > 0 else "n/a"


def simulate(*at: float) -> list[validation.CaseResult]:
    """Every calibration run simulated at ``at``, in the set's order, on ``JOBS`` worker processes
    (``validation.run_cases``, as ``simcluster validate --jobs``: the results are the same for any number)."""
    cases = validation.cases()
    run = functools.partial(simulated_case, at=at, structure=STRUCTURE, variability=VARIABILITY)
    results = dict(validation.run_cases(cases, run, JOBS))
    return [results[index] for index in range(len(cases))]


def simulated_case(case: dict, at: tuple[float, ...], structure: Structure, variability) -> validation.CaseResult:
    """One calibration run simulated at ``at`` (a worker's call: the structure and variability main set are passed,
    not read from this module's globals, which a worker started by spawning does not have)."""
    with host_values(*at, structure=structure):
        return validation.run_case(case, variability=variability)


def estimated_errors(runs: list[Run], reference: list[validation.CaseResult], at: tuple[float, ...],
                     **values) -> np.ndarray:
    """Errors [runs, *grid] estimated from the simulation ``reference`` made at ``at`` (``STRUCTURE``'s values, step)
    with its fixed values and the dispatch of efficiency.yaml; ``values`` (gap_s, fill, dispatch_s, step_s,
    tensor_core_gap_s, fraction) replace those, broadcasting (``Run.block_s``)."""
    now = reference_values(at)
    errors = []
    for run, result in zip(runs, reference, strict=True):
        base = run.block_s(**now)
        step = result.step_time_s + run.critical_blocks * (run.block_s(**{**now, **values}) - base)
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


def reference_values(at: tuple[float, ...]) -> dict[str, float]:
    """``Run.block_s`` arguments at ``at`` (``STRUCTURE``'s values, step) with the structure's fixed values."""
    now: dict = dict(dispatch_s=kernels.host_model().dispatch_s, step_s=at[-1])
    now.update({arg: value for (_, arg, _), value in zip(STRUCTURE.fixed, STRUCTURE.fixed_values().values(),
                                                           strict=True)})
    now.update({term.arg: value for term, value in zip(STRUCTURE.terms, at, strict=False)})
    return now


def grid_errors(runs, results, at) -> np.ndarray:
    """Every run's estimated error on ``STRUCTURE``'s grids x ``STEP_GRID_S``: [runs, *term grids, step] (one slice
    of the first term's grid at a time, the other axes broadcast)."""
    axes = len(STRUCTURE.terms)
    rest = {term.arg: term.grid.reshape([-1 if k == i else 1 for k in range(axes)])
            for i, term in enumerate(STRUCTURE.terms[1:])}
    first = STRUCTURE.terms[0]
    return np.stack([estimated_errors(runs, results, at, **{first.arg: value}, **rest, step_s=STEP_GRID_S)
                     for value in first.grid], axis=1)


def grid_best(errors, fitted) -> tuple[tuple[float, ...], np.ndarray]:
    """The best point of ``grid_errors``'s grid for the ``fitted`` runs, and every run's error there."""
    index = best(errors, fitted)
    grids = [term.grid for term in STRUCTURE.terms] + [STEP_GRID_S]
    return (tuple(round(float(grid[i]), 9) for grid, i in zip(grids, index, strict=True)),
            errors[(slice(None),) + index])


def grid_fit(runs, results, at, fitted) -> tuple[tuple[float, ...], np.ndarray]:
    """The best (values, step) on the estimate around ``at`` for the ``fitted`` runs, and every run's error there."""
    return grid_best(grid_errors(runs, results, at), fitted)


def fit(excluded: dict[str, str]) -> tuple[tuple[float, ...], list[validation.CaseResult], list[Run]]:
    runs = [Run.of(case) for case in validation.cases()]
    fitted = in_objective(runs, excluded)
    host = kernels.host_model()
    start = tuple(float(getattr(host, term.key)) for term in STRUCTURE.terms)
    if not any(start) or any(getattr(host, key) != value for key, value in STRUCTURE.fixed_values().items()
                             if key != "gap_per"):
        # efficiency.yaml holds another structure: start mid-grid
        start = tuple(float(np.median(term.grid)) for term in STRUCTURE.terms)
    at = (*start, host.pipeline_step_s)
    print(f"start: {STRUCTURE.key} {STRUCTURE.text(*at[:-1])}, pipeline step {at[-1] * 1e6:.0f} us; fixed: "
          + ", ".join(f"{key} {value}" for key, value in STRUCTURE.fixed_values().items())
          + f"; host dispatch {host.dispatch_s * 1e6:.1f} us per kernel (measured, not fitted)")
    seen: dict[tuple[float, ...], list[validation.CaseResult]] = {}
    estimate = None
    for simulation in range(MAX_SIMULATIONS):
        started = time.perf_counter()
        seen[at] = simulate(*at)
        stats = validation.error_stats(seen[at])
        print(f"simulation {simulation + 1} at ({STRUCTURE.text(*at[:-1])}, {at[-1] * 1e6:.0f} us): "
              f"median {stats['median_abs_error']:.1%}, max {stats['max_abs_error']:.1%} "
              f"({time.perf_counter() - started:.0f} s)")
        if estimate is not None:
            worst = np.abs(estimate - np.array([r.error for r in seen[at]])).max()
            print(f"  the estimate of the previous step was within {worst * 100:.2f} points of every run's error")
        candidate, estimate = grid_fit(runs, seen[at], at, fitted)
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
    names = [term.key for term in STRUCTURE.terms] + ["pipeline step"]
    rows = [("as fitted", at)]
    for k, name in enumerate(names):
        for sign in (-1, 1):
            moved = tuple(v * (1 + sign * SENSITIVITY) if i == k else v for i, v in enumerate(at))
            rows.append((f"{name} {sign * SENSITIVITY:+.0%}", moved))
    return [(f"{label} ({STRUCTURE.text(*point[:-1])}, {point[-1] * 1e6:.0f} us)",
             summary(estimated_errors(runs, results, at, **{t.arg: v for t, v in zip(STRUCTURE.terms, point,
                                                                                       strict=False)},
                                      step_s=point[-1])))
            for label, point in rows]


def condition(runs, results, at) -> float:
    """Condition number of the fitted terms' columns: each run's relative step change per unit of each fitted
    per-kernel value and of the pipeline step (estimated, exact in the blocks), scaled to unit norm."""
    now = reference_values(at)
    deltas = [(term.arg, 1e-2 if term.unit == 1 else 1e-6) for term in STRUCTURE.terms] + [("step_s", 1e-6)]
    columns = []
    for key, delta in deltas:
        columns.append([run.critical_blocks * (run.block_s(**{**now, key: now[key] + delta}) - run.block_s(**now))
                        / delta / result.step_time_s for run, result in zip(runs, results, strict=True)])
    matrix = np.array(columns).T
    return float(np.linalg.cond(matrix / np.linalg.norm(matrix, axis=0)))


def leave_one_series_out(runs, results, at, fitted) -> list[tuple[str, tuple[float, ...], dict[str, float]]]:
    """Refit without each series (estimated); the left-out series' errors at that refit."""
    series = np.array([r.family for r in results])
    errors = grid_errors(runs, results, at)
    rows = []
    for name in dict.fromkeys(series):
        out = series == name
        values, at_values = grid_best(errors, fitted & ~out)
        rows.append((name, values, summary(at_values[out])))
    return rows


def other_structures(runs, results, at, fitted) -> list[tuple[str, str, dict[str, float]]]:
    """Other structures, fitted with the pipeline step by the same objective on the same estimate: one gap before
    every kernel (rounds 5-8), one before every kernel issued from Python (round 29's "call"), the measured gap plus a
    GEMM fill (round 9), the measured gap plus a gap before
    tensor-core kernels (round 8's "tensor_core"), the measured gap plus a fraction of the device time (round 6's
    hypothesis 2)."""
    measured = kernels.launch_overhead_s()
    steps = STEP_GRID_S[None, :]
    rows = []
    for label, unit, values in (
            ("one gap before every kernel", "us a kernel", dict(fill=0.0, gap_s=GAP_GRID_S[:, None],
                                                                gap_per="kernel")),
            ("one gap before every kernel issued from Python (round 29)", "us a call",
             dict(fill=0.0, gap_s=GAP_GRID_S[:, None], gap_per="call")),
            ("measured gap + GEMM fill", "waves", dict(gap_s=measured, fill=FILL_GRID[:, None])),
            ("measured gap + a gap before tensor-core kernels", "us a GEMM or attention kernel",
             dict(fill=0.0, gap_s=measured, tensor_core_gap_s=GAP_GRID_S[:, None])),
            ("measured gap + a fraction of the device time", "of the device time",
             dict(fill=0.0, gap_s=measured, fraction=FRACTION_GRID[:, None])),
            ("one gap + pipeline messages' NIC time a step (round 16)", "messages a step",
             dict(fill=0.0, gap_s=reference_values(at)["gap_s"], exchange_factor=EXCHANGE_GRID[:, None]))):
        errors = estimated_errors(runs, results, at, **values, step_s=steps)
        i, j = best(errors, fitted)
        grid = next(v for v in values.values() if isinstance(v, np.ndarray)).ravel()
        value = (f"{grid[i] * 1e6:.0f}" if unit.startswith("us") else f"{grid[i]:.2f}" if unit in ("waves",
                 "messages a step")
                 else f"{grid[i]:.1%}")
        rows.append((label, f"{value} {unit}, pipeline step {STEP_GRID_S[j] * 1e6:.0f} us", summary(errors[:, i, j])))
    return rows


HOST_BLOCK_GRID_S = np.arange(0.0, 10000.5e-6, 100e-6)   # round-28 check: 0-10 ms host work a pipelined block
# Round 28: the pipeline term's structure against what Megatron's schedules do per block (workload.schedule_host):
# label -> the fitted terms, each (Run.block_s argument, grid, unit in us or 1); the terms not named are 0, the gap
# is always fitted. "every block" is efficiency.yaml's structure.
PIPELINE_STRUCTURES = {
    "(a) fitted time every pipelined block (in use)": (("step_s", STEP_GRID_S, 1e-6),),
    "(b) fitted time per stream drain (schedule_host weights), none on overlap_p2p_comm blocks":
        (("drain_step_s", STEP_GRID_S, 1e-6),),
    "(c1) every block + per stream drain": (("step_s", THREE_TERM_STEP_S, 1e-6),
                                             ("drain_step_s", STEP_GRID_S, 1e-6)),
    "(c2) host work a block beside the dispatch, hidden while the host is ahead":
        (("host_block_s", HOST_BLOCK_GRID_S, 1e-6),),
    "(c3) pipeline messages' NIC time a block (round 16's check, no constant)":
        (("exchange_factor", EXCHANGE_GRID, 1.0),),
}


def pipeline_structure(runs, results, at, fitted, terms) -> tuple[tuple[float, ...], np.ndarray, list]:
    """Fit the gap with ``terms`` (``PIPELINE_STRUCTURES``) on the estimate around ``at``: the best values (gap
    first), every run's error there, and per left-out series the refit values and that series' errors."""
    grids = [("gap_s", GAP_GRID_S)] + [(arg, grid) for arg, grid, _ in terms]
    axes = len(grids)
    values = {arg: grid.reshape([-1 if k == i else 1 for k in range(axes)]) for i, (arg, grid) in enumerate(grids)}
    values.setdefault("step_s", 0.0)
    errors = estimated_errors(runs, results, at, fill=0.0, **values)
    errors = np.broadcast_to(errors, (len(runs),) + tuple(len(grid) for _, grid in grids))

    def at_best(mask):
        index = best(errors, mask)
        return tuple(float(grid[i]) for (_, grid), i in zip(grids, index, strict=True)), errors[(slice(None),) + index]

    chosen, chosen_errors = at_best(fitted)
    series = np.array([r.family for r in results])
    loo = []
    for name in dict.fromkeys(series):
        out = series == name
        refit, refit_errors = at_best(fitted & ~out)
        loo.append((name, refit, refit_errors[out]))
    return chosen, chosen_errors, loo


def pipeline_structure_rows(runs, results, at, fitted) -> list[tuple[str, str, dict, dict, str]]:
    """Per ``PIPELINE_STRUCTURES`` entry: fitted values, summary, summary per series, leave-one-series-out spread."""
    series = np.array([r.family for r in results])
    rows = []
    for label, terms in PIPELINE_STRUCTURES.items():
        chosen, errors, loo = pipeline_structure(runs, results, at, fitted, terms)
        per_series = {name: summary(errors[series == name]) for name in dict.fromkeys(series)}
        spread = "; ".join(f"without {name}: {structure_text(terms, refit)}, its max {np.abs(out).max():.1%}"
                           for name, refit, out in loo)
        rows.append((label, structure_text(terms, chosen), summary(errors), per_series, spread))
    return rows


def structure_text(terms, values) -> str:
    """A ``PIPELINE_STRUCTURES`` entry's fitted values (gap first), printed."""
    named = [("gap", 1e-6)] + [(arg, unit) for arg, _, unit in terms]
    return ", ".join(f"{name} {value / unit:.0f} us" if unit != 1.0 else f"{name} {value:.2f}"
                     for (name, unit), value in zip(named, values, strict=True))


def three_terms(runs, results, at, fitted) -> tuple[tuple[float, float, float], dict[str, float], float]:
    """Check (not used): a fitted gap before every kernel AND a fitted GEMM fill AND the pipeline step, on the same
    estimate and objective (``THREE_TERM_*`` grids; the gap structure is its fill = 0 case, the fill structure its
    gap = launch_overhead_s case). Returns the best (gap, fill, step), the errors' summary there and the condition
    number of the three terms' columns around it (each run's relative step change per unit, scaled to unit norm)."""
    steps = THREE_TERM_STEP_S[None, :]
    errors = np.stack([estimated_errors(runs, results, at, gap_s=gap_s, fill=THREE_TERM_FILL[:, None], step_s=steps)
                       for gap_s in THREE_TERM_GAP_S], axis=1)                     # [runs, gap, fill, step]
    i, j, k = best(errors, fitted)
    values = (float(THREE_TERM_GAP_S[i]), float(THREE_TERM_FILL[j]), float(THREE_TERM_STEP_S[k]))
    now = {**reference_values(at), "gap_s": values[0], "fill": values[1], "step_s": values[2]}
    columns = []
    for key, delta in (("gap_s", 1e-6), ("fill", 1e-2), ("step_s", 1e-6)):
        columns.append([run.critical_blocks * (run.block_s(**{**now, key: now[key] + delta}) - run.block_s(**now))
                        / delta / result.step_time_s for run, result in zip(runs, results, strict=True)])
    matrix = np.array(columns).T
    return values, summary(errors[:, i, j, k]), float(np.linalg.cond(matrix / np.linalg.norm(matrix, axis=0)))


def write(at: tuple[float, ...]) -> None:
    """Put the fitted values and the structure's fixed ones into efficiency.yaml's host_overhead (the lines, comments
    kept)."""
    text = EFFICIENCY_YAML.read_text()
    values = {**STRUCTURE.fitted_values(at), **STRUCTURE.fixed_values()}
    for key, value in values.items():
        literal = (value if isinstance(value, str) else f"{value:.2f}" if key == "fill_waves"
                   else f"{value * 1e6:.1f}e-6")
        text, count = re.subn(rf"(?m)^(  {key}: )\S+", rf"\g<1>{literal}", text)
        assert count == 1, key
    EFFICIENCY_YAML.write_text(text)
    print(f"wrote {', '.join(values)} to {EFFICIENCY_YAML.relative_to(ROOT)}")


def row_text(row: dict[str, float]) -> str:
    return f"{row['median']:.1%} | {row['max']:.1%} | {row['mean_abs']:.2%} | {row['mean']:+.1%}"


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="put the fitted values into efficiency.yaml")
    parser.add_argument("--all", action="store_true", help="fit on every calibration series (EXCLUDED_SERIES in)")
    parser.add_argument("--structure", choices=sorted(STRUCTURES), default="gap",
                        help="gap: one fitted gap before every kernel (efficiency.yaml's); fill: the measured gap "
                             "and a fitted GEMM fill (round 9); call: the fitted gap before every kernel issued from "
                             "Python, the measured gap before those a call's C++ queues (round 29); gapfill: the gap "
                             "and the GEMM fill fitted together (round 30)")
    parser.add_argument("--variability", default=None,
                        help="what-if: simulate every run with this variability (simcluster validate --variability: "
                             "'measured' or key=value pairs); cannot be combined with --write")
    parser.add_argument("--jobs", type=script_entry.count, default=None,
                        help="worker processes simulating the calibration runs (default: one per CPU, as simcluster "
                             "validate and sweep; 1: in this process); the printout is the same whatever the number")
    args = parser.parse_args(argv)
    if args.write and args.variability:
        parser.error("--variability is a what-if: efficiency.yaml is fitted on the runs as validation runs them")
    global STRUCTURE, VARIABILITY, JOBS
    STRUCTURE, JOBS = STRUCTURES[args.structure], args.jobs
    VARIABILITY = validation.parse_variability(args.variability)
    if VARIABILITY is not None:
        print(f"variability (what-if): {VARIABILITY.model_dump()}")
    started = time.perf_counter()
    excluded = {} if args.all else EXCLUDED_SERIES
    at, results, runs = fit(excluded)
    if args.write:   # before the printouts: a failing diagnostic cannot lose the refit
        write(at)
    fitted = in_objective(runs, excluded)
    by_case = {r.scenario: r for r in results}
    host = kernels.host_model()
    print(f"\nfitted ({args.structure}): {STRUCTURE.key} = {STRUCTURE.text(*at[:-1])}, pipeline_step_s = "
          f"{at[-1] * 1e6:.0f} us per pipeline step (host time the drained stream waits); fixed: "
          + ", ".join(f"{key} {value}" for key, value in STRUCTURE.fixed_values().items()))
    print(f"objective: mean |error| over {int(fitted.sum())} of the {len(results)} calibration runs, no run beyond "
          f"{MAX_ERROR:.0%}" + "".join(f"; kept out: {name} ({why})" for name, why in excluded.items()))
    with host_values(*at):
        bound_s = min(run.dispatch_bound_s(kernels.host_model()) for run in runs)
    print(f"every calibration block is device-bound for a host dispatch below {bound_s * 1e6:.0f} us per kernel "
          f"(efficiency.yaml: {host.dispatch_s * 1e6:.1f} us)")
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
        print(f"{label} | {row_text(row)}")
    print(f"\ncondition number of the {len(at)} fitted terms (columns scaled): {condition(runs, results, at):.1f}")
    print("\nleave one series out (estimated): refit without it | its median | max | mean |error| | mean error")
    for name, values, row in leave_one_series_out(runs, results, at, fitted):
        print(f"{name}: {STRUCTURE.text(*values[:-1])}, {values[-1] * 1e6:.0f} us | {row_text(row)}")
    print("\nstructures (estimated) | fitted | median | max | mean |error| | mean error")
    for label, values, row in other_structures(runs, results, at, fitted):
        print(f"{label} | {values} | {row_text(row)}")
    print("\npipeline term structures (round 28, estimated) | fitted | median | max | mean |error| | mean error")
    drained = sum(run.pipelined and run.drain_weight > 0 for run in runs)
    print(f"pipelined calibration runs with a drain-bearing block (schedule_host): {drained} of "
          f"{sum(run.pipelined for run in runs)}")
    for label, values, row, per_series, spread in pipeline_structure_rows(runs, results, at, fitted):
        print(f"{label} | {values} | {row_text(row)}")
        for name, srow in per_series.items():
            print(f"    {name} | {row_text(srow)}")
        print(f"    leave one series out: {spread}")
    (gap_s, fill, step_s), row, cond = three_terms(runs, results, at, fitted)
    print(f"fitted gap + GEMM fill + pipeline step (three terms) | {gap_s * 1e6:.0f} us a kernel, {fill:.2f} waves, "
          f"pipeline step {step_s * 1e6:.0f} us | {row_text(row)} | condition {cond:.1f}")
    print("\nsourced stream drains (workload.schedule_host) against the fitted pipeline step, critical path, per step: "
          "run | drains | fitted steps | share")
    for name, drain_s, steps_s in drain_attribution(runs, at[-1]):
        print(f"{name} | {drain_s * 1e3:.2f} ms | {steps_s * 1e3:.0f} ms | {share_text(drain_s, steps_s)}")
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
