"""Failures, checkpoints and restarts over a whole run: goodput, the checkpoint interval, interruptions per day.

A job of G GPUs on N nodes fails at rate lambda = sum over components of (rate per unit-day x units), units being
GPUs or nodes (``data/reliability.yaml``: the total from Meta's RSC clusters, the split by component from the
Llama 3 run). It writes a checkpoint (weights + optimizer states, ``parallel.memory``) every tau seconds of
work, which blocks training for delta = bytes / write bandwidth; after a failure it loses the work since the last
checkpoint, is down for D (detection + restart, + re-queue for a hardware failure without a hot spare), then
restores for R = bytes / read bandwidth, during which it can fail again.

With failures a Poisson process in running time, the expected wall time of a segment of w = tau + delta seconds
is exactly (Hérault & Robert 2015, "Fault-Tolerance Techniques for High-Performance Computing", ch. 1, eq. for
exponential failures with downtime D and recovery R):

    E[T(w)] = exp(lambda R) (1/lambda + D) (exp(lambda w) - 1)

so goodput = tau / E[T(tau + delta)]. The interval maximising it is found numerically over whole steps; Young's
first-order optimum sqrt(2 delta / lambda) (Young 1974; Daly 2006) is reported beside it. ``simulate_run`` plays
a run event by event (failures by component, a hot-spare pool with repairs, planned interruptions) with one seeded
generator: it checks the closed form (tests hold them equal within their statistical error) and models what the
closed form does not (spares running out).

Simplifications, stated: failure times are exponential (no infant mortality or wear-out, no correlated bursts);
a failure during the downtime D is not counted (nothing runs); planned interruptions cost their restart and
restore to first order (goodput x (1 - rate x cost)); the closed form assumes a hot spare is always free when
``hot_spares > 0``; storage bandwidth grows with the cluster (per GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simcluster.core import catalog
from simcluster.parallel import memory
from simcluster.spec.reliability import COMPONENTS, Reliability

SECONDS_PER_DAY = 86400.0
# exp(700) is near the largest float (1.8e308): beyond it a segment's expected time overflows; its goodput is 0.
MAX_EXPONENT = 700.0
# Events the event simulation plays at most (about a second of Python); a longer horizon is cut to this many
# expected interruptions and the result says so (``horizon_cut``).
MAX_EVENTS = 200_000


@dataclass(frozen=True)
class RunModel:
    """What the reliability outcome of a run depends on, in SI units. Rates are per second of running time."""

    rates_per_s: dict[str, float]      # job-level failure rate of each component
    hardware: frozenset[str]           # components whose failure takes a node out of service
    planned_per_s: float
    checkpoint_bytes: float
    checkpoint_write_s: float          # delta: training blocked per checkpoint
    restore_s: float                   # R: checkpoint read after a restart (can itself fail)
    detection_s: float
    restart_s: float
    requeue_s: float
    repair_s: float
    hot_spares: int
    step_time_s: float
    interval: float | None             # user-set checkpoint interval, None: the optimum
    horizon_s: float
    seed: int

    @property
    def failure_rate_per_s(self) -> float:
        return sum(self.rates_per_s.values())

    @property
    def hardware_fraction(self) -> float:
        total = self.failure_rate_per_s
        return sum(r for c, r in self.rates_per_s.items() if c in self.hardware) / total if total > 0 else 0.0

    @property
    def downtime_s(self) -> float:
        """Mean D after a failure: detection and restart, plus the re-queue of hardware failures without spares
        (the closed form's assumption: a spare is free whenever ``hot_spares > 0``)."""
        requeue = 0.0 if self.hot_spares > 0 else self.hardware_fraction * self.requeue_s
        return self.detection_s + self.restart_s + requeue


def _pick(value, default):
    """The scenario's value, or the sourced default when it left the field unset."""
    return default if value is None else value


def defaults() -> dict:
    return catalog.load("reliability")


def checkpoint_bytes(scenario) -> float:
    """Bytes of one checkpoint: the model's weights and optimizer states (gradients are not saved), at the
    bytes per parameter of ``parallel.memory`` (mixed-precision Adam: 2 + 12; the precision-aware optimizer's
    remainders 2 + 10; fp32 parameters under autocast, 4 + 8: ``memory.state_precision``; 16-bit parameters without
    master weights, 2 + 4: ``training.master_weights``)."""
    t = scenario.training
    states = memory.state_precision(t)
    weights = memory.state_bytes_per_param(states)["weights"]
    return float(scenario.model.params) * (weights + memory.optimizer_state_bytes_per_param(
        states, t.optimizer, t.adam_moments_dtype, t.master_weights))


def model_of(scenario, step_time_s: float) -> RunModel:
    """The RunModel of ``scenario`` (its ``reliability`` section over the sourced defaults)."""
    data = defaults()
    options: Reliability = getattr(scenario, "reliability", None) or Reliability()
    failures = data["failures"]
    gpus, nodes = scenario.cluster.gpus, scenario.cluster.nodes
    total_per_1000 = (failures["per_1000_node_days"] if options.failures_per_1000_node_days is None
                      else options.failures_per_1000_node_days)
    per_gpu_day = total_per_1000 / 1000.0 / failures["gpus_per_node_of_source"]
    rates = {}
    for component in COMPONENTS:
        unit = failures["unit"][component]
        if component in options.failure_rates:
            per_unit_day = options.failure_rates[component]
        else:  # the source's rate per GPU-day, per node-day for host parts (its nodes had 8 GPUs)
            scale = failures["gpus_per_node_of_source"] if unit == "node" else 1
            per_unit_day = per_gpu_day * failures["shares"][component] * scale
        rates[component] = per_unit_day * (nodes if unit == "node" else gpus) / SECONDS_PER_DAY
    size = options.checkpoint_bytes or checkpoint_bytes(scenario)
    ckpt, restart = data["checkpoint"], data["restart"]
    write = options.write_bandwidth_per_gpu or ckpt["write_bytes_per_s_per_gpu"]
    read = options.read_bandwidth_per_gpu or ckpt["read_bytes_per_s_per_gpu"]
    simulation = data["event_simulation"]
    return RunModel(
        rates_per_s=rates, hardware=frozenset(failures["hardware"]),
        planned_per_s=_pick(options.planned_per_day, data["planned_per_day"]) / SECONDS_PER_DAY,
        checkpoint_bytes=size, checkpoint_write_s=size / (write * gpus), restore_s=size / (read * gpus),
        detection_s=_pick(options.detection, restart["detection_s"]),
        restart_s=_pick(options.restart, restart["restart_s"]),
        requeue_s=_pick(options.requeue, restart["requeue_s"]),
        repair_s=_pick(options.repair, restart["repair_s"]),
        hot_spares=options.hot_spares, step_time_s=step_time_s,
        interval=None if options.checkpoint_interval == "auto" else options.checkpoint_interval,
        horizon_s=_pick(options.horizon, simulation["horizon_days"] * SECONDS_PER_DAY),
        seed=_pick(options.seed, simulation["seed"]))


# ---- closed form ----------------------------------------------------------------------------------------------

def expected_goodput(run: RunModel, interval_s: float) -> float:
    """Fraction of wall time spent on work that is kept, checkpointing every ``interval_s`` of work (the exact
    expectation for exponential failures; planned interruptions to first order)."""
    lam, delta = run.failure_rate_per_s, run.checkpoint_write_s
    if lam == 0.0:  # no failures: only the checkpoints cost (none when the interval is infinite)
        failures = interval_s / (interval_s + delta) if math.isfinite(interval_s) else 1.0
    else:
        exponent = lam * (run.restore_s + interval_s + delta)
        if exponent > MAX_EXPONENT:  # the segment (almost) never completes
            return 0.0
        segment_s = (math.exp(lam * run.restore_s) * (1.0 / lam + run.downtime_s)
                     * math.expm1(lam * (interval_s + delta)))
        failures = interval_s / segment_s
    planned_cost_s = delta + run.restart_s + run.restore_s
    return max(0.0, failures * (1.0 - run.planned_per_s * planned_cost_s))


def young_daly_interval_s(run: RunModel) -> float | None:
    """Young's first-order optimum sqrt(2 delta M) (M = 1/lambda; Young 1974, Daly 2006 eq. 7); None without
    failures."""
    lam = run.failure_rate_per_s
    return math.sqrt(2.0 * run.checkpoint_write_s / lam) if lam > 0 else None


def optimal_interval_s(run: RunModel) -> float | None:
    """The checkpoint interval of greatest expected goodput, in whole steps (at least one); None without
    failures (no checkpoint needed)."""
    lam = run.failure_rate_per_s
    if lam == 0.0:
        return None
    step = run.step_time_s
    # the goodput is unimodal in tau: golden-section search on a log scale, then the best neighbouring step count.
    # The upper end in logs, at most e^MAX_EXPONENT s (1e304 s): 50 / lam overflowed to inf for a rate of 1e-300
    # failures per 1000 node-days, and the whole step count of inf raised OverflowError (round 36).
    lo = math.log(step)
    hi = min(max(math.log(step * 2), math.log(50.0) - math.log(lam)), max(lo, MAX_EXPONENT))
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(100):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if expected_goodput(run, math.exp(a)) < expected_goodput(run, math.exp(b)):
            lo = a
        else:
            hi = b
    steps = math.exp((lo + hi) / 2.0) / step
    candidates = {max(1, math.floor(steps)), max(1, math.ceil(steps))}
    return max((n * step for n in candidates), key=lambda tau: expected_goodput(run, tau))


def interval_s(run: RunModel) -> float | None:
    """The interval used: the user's (rounded to whole steps), else the optimum."""
    if run.interval is not None:
        return max(1, round(run.interval / run.step_time_s)) * run.step_time_s
    return optimal_interval_s(run)


def interruptions_per_day(run: RunModel) -> float:
    """Expected interruptions per wall-clock day: failures strike while the job runs (a fraction 1/(1 + lambda D)
    of the time, to first order), planned ones at their rate."""
    lam = run.failure_rate_per_s
    return (lam / (1.0 + lam * run.downtime_s) + run.planned_per_s) * SECONDS_PER_DAY


# ---- event simulation -----------------------------------------------------------------------------------------

def simulate_run(run: RunModel, interval_s: float | None, horizon_s: float | None = None,
                 seed: int | None = None) -> dict:
    """Play a run of ``horizon_s`` wall seconds event by event; returns its goodput and interruption counts.

    One numpy Generator (``seed``) draws every failure time and component. Per running phase: restore (after an
    interruption), then segments of interval + checkpoint until the next failure or planned interruption; a failure
    loses the segment in progress and costs detection + restart (+ re-queue for a hardware failure when no hot spare
    is free; a used spare returns after the repair time); a planned interruption writes a checkpoint, then
    restarts. Work not yet checkpointed at the horizon counts as done.
    """
    horizon_s = run.horizon_s if horizon_s is None else horizon_s
    rng = np.random.default_rng(run.seed if seed is None else seed)
    lam, planned = run.failure_rate_per_s, run.planned_per_s
    horizon_cut = (lam + planned) * horizon_s > MAX_EVENTS
    if horizon_cut:
        horizon_s = MAX_EVENTS / (lam + planned)
    components = list(run.rates_per_s)
    weights = np.array([run.rates_per_s[c] for c in components]) / lam if lam > 0 else None
    tau = interval_s if interval_s is not None else math.inf
    delta = run.checkpoint_write_s if math.isfinite(tau) else 0.0
    segment = tau + delta
    t = useful = 0.0
    counts = {"failures": 0, "planned": 0, "requeued": 0}
    by_component = dict.fromkeys(components, 0)
    spares_back_at_s: list[float] = []  # when each hot spare in use comes back from repair
    restoring = False  # the first phase starts from scratch
    while t < horizon_s:
        to_failure = rng.exponential(1.0 / lam) if lam > 0 else math.inf
        to_planned = rng.exponential(1.0 / planned) if planned > 0 else math.inf
        running_s = min(to_failure, to_planned)
        restore_s = run.restore_s if restoring else 0.0
        if t + running_s >= horizon_s:  # the run ends first: progress since the last checkpoint counts
            working_s = horizon_s - t - restore_s
            if working_s > 0:
                done = _segments(working_s, segment)
                useful += done * tau + min(working_s - done * segment, tau) if done else min(working_s, tau)
            break
        if running_s < restore_s:  # interrupted while reading the checkpoint: nothing to save, restore again
            t += running_s
            rest = 0.0
        else:
            working_s = running_s - restore_s
            done = _segments(working_s, segment)
            rest = working_s - done * segment if done else working_s
            useful += done * tau if done else 0.0
            t += running_s
        if to_failure <= to_planned:  # the segment in progress is lost
            counts["failures"] += 1
            component = components[rng.choice(len(components), p=weights)]
            by_component[component] += 1
            t += run.detection_s + run.restart_s
            if component in run.hardware:
                spares_back_at_s = [back for back in spares_back_at_s if back > t]
                if len(spares_back_at_s) < run.hot_spares:  # restart at once on a spare; the node goes to repair
                    spares_back_at_s.append(t + run.repair_s)
                else:
                    counts["requeued"] += 1
                    t += run.requeue_s
        else:  # planned: checkpoint the work in progress (or finish the write under way), then restart
            counts["planned"] += 1
            if running_s >= restore_s:
                useful += min(rest, tau)
                t += delta if rest <= tau else segment - rest
            t += run.restart_s
        restoring = True
    days = horizon_s / SECONDS_PER_DAY
    return {"goodput": useful / horizon_s if horizon_s > 0 else 1.0, "days": days, "seed": run.seed if seed is None
            else seed, "failures": counts["failures"], "planned": counts["planned"],
            "requeued_without_spare": counts["requeued"], "failures_by_component": by_component,
            "horizon_cut": horizon_cut,
            "interruptions_per_day": (counts["failures"] + counts["planned"]) / days if days > 0 else 0.0}


def _segments(working_s: float, segment_s: float) -> int:
    """Whole checkpointed segments in ``working_s`` (none when the job never checkpoints)."""
    return math.floor(working_s / segment_s) if math.isfinite(segment_s) else 0


# ---- the summary's entries ------------------------------------------------------------------------------------

def summary_entries(scenario, step_time_s: float) -> dict:
    """``goodput``, ``interruptions_per_day``, ``checkpoint_interval_s`` and the ``reliability`` details of a run
    whose step takes ``step_time_s`` (DESIGN.md contract keys; docs/reliability.md)."""
    run = model_of(scenario, step_time_s)
    tau = interval_s(run)
    goodput = expected_goodput(run, tau) if tau is not None else expected_goodput(run, math.inf)
    simulated = simulate_run(run, tau)
    lam = run.failure_rate_per_s
    return {
        "goodput": goodput,
        "interruptions_per_day": interruptions_per_day(run),
        "checkpoint_interval_s": tau,
        "reliability": {
            "mtbf_s": 1.0 / lam if lam > 0 else None,
            "failures_per_day_by_component": {c: r * SECONDS_PER_DAY for c, r in run.rates_per_s.items()},
            "planned_per_day": run.planned_per_s * SECONDS_PER_DAY,
            "checkpoint_bytes": run.checkpoint_bytes,
            "checkpoint_write_s": run.checkpoint_write_s,
            "restore_s": run.restore_s,
            "downtime_s": run.downtime_s,
            "young_daly_interval_s": young_daly_interval_s(run),
            "hot_spares": run.hot_spares,
            "event_simulation": simulated,
            "note": "goodput is the expected fraction of wall time on kept work (exponential failures, Meta RSC "
                    "rates split as in Llama 3; closed form checked by event_simulation); docs/reliability.md",
        },
    }
