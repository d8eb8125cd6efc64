"""A pipelined step's time extrapolated from its steady state: fewer microbatches simulated, the same step.

Once a pipeline schedule (1F1B, interleaved or not) has filled, every further microbatch a pipeline adds the same
work on the critical path, the same sends and the same waits, so the step is affine in the microbatches a
pipeline, T(M) = a + b M, for M past the fill: a holds the fill and drain, the gradient reduction and the optimizer
step, b one microbatch's period. The engine's CPU time is linear in M (every microbatch's blocks, collectives and
sends are events), so a run of 1,120 microbatches a pipeline (narayanan2021-t2-529.6b-560-a100, 35 stages, 3 model
chunks each) simulates 1,120 periods to read one slope (round 26: 85 of the validation suite's CPU seconds).

``step_s`` simulates the scenario at three counts of microbatches a pipeline, pp apart, each past the schedule's
fill (``counts``), and extrapolates the line through the three steps to M if (1) they lie on it (second difference
within ``CHECK_RTOL`` of the largest) and (2) its period is the busiest stage's work a microbatch (its compute and
the collectives it waits on inside the stage, within ``CHECK_RTOL``): that stage then never waits, so the period
cannot shrink (the stage cannot do less) nor grow (a pipeline reaches its steady state when the slowest stage's lag
has used up the slack the schedule gives the others, i.e. when that stage saturates). Otherwise it returns None and
the caller simulates every microbatch. Not applied with variability (per-GPU and per-kernel random draws: no two
microbatches alike), where the output layer's wgrad is deferred for some microbatches but not all (``applies``),
nor where the three runs would cost more than ``MAX_COST`` of the full one.

Why check (2): the line alone is not enough. nemo2511-llama3-405b-256-gb300-fp8 (pp 8, 4 model chunks, 192
microbatches): its steps at 16, 24, 32 and 40 microbatches lie on a line (0.276953 s a microbatch) while its busiest
stage works 0.277891 s a microbatch; the period grows to that between 40 and 64 microbatches and stays there, so the
line alone gives a step 0.25% short. A pipeline whose stages differ in work absorbs the slowest stage's lag in its
in-flight slack at a constant rate until the slack runs out: a transient that is itself affine, which three points
inside it cannot tell from the steady state, but whose period is below the slowest stage's work (impossible in the
steady state). Check (2) refuses it, and also refuses steady states paced by something else than a stage's own
work (they cost their three runs, then are simulated whole; plain 1F1B, whose last stage waits for each activation,
is not tried).
Where both checks pass the extrapolation is exact but for rounding (the three steps carry their absolute times'
rounding, ~1e-13 s, times at most M / pp); measured on the validation rows in docs/performance.md ("Round 26: the
long pipelines' steps from their steady state"). Off by default (``validation.run_case(extrapolate=True)``,
``validate --steady-state``), said in each row's ``note`` where used: the rows it was built for, the 529.6B Table 2
pipelines, are refused by check (2) (their period is 1% above their busiest stage's work: the stage also waits on
the pipeline each period), so on by default it would only add their three short runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from simcluster.parallel import memory
from simcluster.spec import config

# Largest second difference of the three steps, relative to the longest, for them to count as one line: the
# tolerance of the engine's pinned results for float summation order (tests/unit/test_speed_keeps_results.py).
CHECK_RTOL = 1e-9
# Applied only where the three runs' microbatches are at most this share of the full run's (the engine's work is
# linear in them): a check that fails costs its runs on top of the full one.
MAX_COST = 2 / 3


@dataclass(frozen=True)
class Extrapolated:
    """A step extrapolated from runs at ``microbatches`` (per pipeline) whose steps were ``steps_s``."""

    step_s: float
    microbatches: tuple[int, ...]
    steps_s: tuple[float, ...]

    def note(self, full: int) -> str:
        """What the extrapolation did, for the output of the run it stands for (``full`` microbatches a pipeline)."""
        shown = "/".join(str(m) for m in self.microbatches)
        return (f"step extrapolated to {full} microbatches a pipeline from runs of {shown} (steady state: steps "
                f"affine, at the busiest stage's pace, within {CHECK_RTOL:g} relative)")


def counts(scenario: config.Scenario) -> tuple[int, int, int]:
    """The microbatch counts a pipeline of the three shorter runs: multiples of pp (the interleaved schedule takes no
    other, config.py as Megatron-LM), pp apart, from the first with a 1F1B steady state on every stage. 1F1B's warmup
    is pp - rank - 1 < pp microbatches; the interleaved schedule runs every forward first at exactly pp microbatches
    and otherwise warms up (pp - rank - 1) x 2 + (v - 1) x pp model chunks, fewer than the 2 pp v of 2 pp microbatches
    (megatron/core/pipeline_parallel/schedules.py, forward_backward_pipelining_with_interleaving:
    all_warmup_microbatches, num_warmup_microbatches)."""
    p = scenario.parallelism
    first = 2 if p.virtual_stages > 1 else 1
    return first * p.pp, (first + 1) * p.pp, (first + 2) * p.pp


def applies(scenario: config.Scenario) -> bool:
    """Whether ``step_s`` tries the scenario (as it runs, ``memory.with_fitting_deferral``): an interleaved pipeline
    (plain 1F1B's steady state is paced by each activation's trip between stages, not by a stage's work, so check (2)
    refuses it: every non-interleaved row measured in round 26 was refused), no variability, the three runs at most
    ``MAX_COST`` of the full one, and the output layer's wgrad deferred for none of the microbatches or for all
    (``memory.deferred_output_wgrads``: a limit between the shorter runs' counts and the full one's would defer all of
    theirs and only some of its, a bend the three points cannot show)."""
    m, p = scenario.microbatches, scenario.parallelism
    return (p.pp > 1 and p.virtual_stages > 1 and not scenario.variability
            and sum(counts(scenario)) <= MAX_COST * m and memory.deferred_output_wgrads(scenario) in (0, m))


def with_microbatches(scenario: config.Scenario, microbatches: int) -> config.Scenario:
    """The scenario with ``microbatches`` a pipeline (its global batch cut; every other field as it was, defaults
    included: nothing is resolved again)."""
    t = scenario.training
    batch = microbatches * scenario.parallelism.dp * t.micro_batch_size
    return scenario.model_copy(update={"training": t.model_copy(update={"global_batch_size": batch})})


def step_s(scenario: config.Scenario, network: str | None = None) -> Extrapolated | None:
    """The scenario's step extrapolated from its steady state (module docstring), or None where that does not apply,
    the steps are not affine or their period is not the busiest stage's work a microbatch. Memory is not checked in
    the shorter runs (the caller reads it for the full one)."""
    scenario = memory.with_fitting_deferral(scenario)   # resolved at the full count, kept in the shorter runs
    if not applies(scenario):
        return None
    runs = counts(scenario)
    measured = [measure(with_microbatches(scenario, m), network) for m in runs]
    steps = tuple(step for step, _busy in measured)
    if abs(steps[0] - 2 * steps[1] + steps[2]) > CHECK_RTOL * steps[2]:
        return None
    period_s = (steps[2] - steps[1]) / (runs[2] - runs[1])
    busiest_s = max(b - a for a, b in zip(measured[1][1], measured[2][1], strict=True)) / (runs[2] - runs[1])
    if abs(period_s - busiest_s) > CHECK_RTOL * period_s:   # no stage saturated yet (module docstring)
        return None
    return Extrapolated(steps[2] + (scenario.microbatches - runs[2]) * period_s, runs, steps)


def measure(scenario: config.Scenario, network: str | None = None) -> tuple[float, list[float]]:
    """(step, each agent's busy time: its compute and the collectives it waits on inside its stage, not its
    pipeline and data-parallel waits) of one run, memory unchecked."""
    from simcluster.engine import Simulation

    sim = Simulation(scenario, network, check_memory=False)
    step_s = sim.run().summary["step_time_s"]
    return step_s, [a.tally.compute_s + a.tally.tp_comm_s + a.tally.cp_comm_s + a.tally.ep_comm_s for a in sim.agents]
