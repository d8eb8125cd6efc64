"""What the model charges for each data-parallel collective of a row, beside NCCL's own estimate, and how the row's
error answers a slower or faster data-parallel phase (issue 15; docs/calibration/round-32.md "Round 32: the exposed
data-parallel phase across families"). Analysis only: nothing here moves a constant.

    PYTHONPATH=. python scripts/dp_phase_charges.py SCENARIO [SCENARIO ...] [--stretch 1,1.5,2,3,5] [--solve]

Per scenario (a bundled validation row, simulated once as ``simcluster validate`` runs it):

- the engine's step split (compute, exposed communication by parallelism) and the published step, and the
  published step less the compute (what the published step leaves for exposed communication and everything else);
- each distinct data-parallel collective (the engine's ``grad`` / ``param`` events: op, message bytes, count a step)
  with the engine's time, the protocol NCCL's tuning model chooses (``collectives.nccl.choose``), NCCL's estimate for
  ring LL / LL128 / Simple (``nccl.estimate_s``, the 2.18-2.21 form the choice uses) and the bandwidth-only time
  S (n-1)/n / busbw at the model's ring busbw (min(GPUs a node x the measured per-NIC 47 GB/s, the NVLink ring's
  370 GB/s); one NIC at one GPU a node);
- with ``--stretch``: the row's step and signed error when every data-parallel collective takes F times its fabric
  time (the stretch is added after the collective ends and before its waiters go on, whether compute runs beside
  it or not: an upper bound, as round 17's diagnostic). F below 1 is not offered (a collective cannot be shortened
  after it ran); a faster phase is read from the exposed data-parallel time instead;
- with ``--solve``: the closing stretch, the F (1 <= F <= 10) at which the row's simulated step equals its published
  step (``closing_stretch``: bracketing secant steps on the step, which does not fall as F grows), or why there is
  none (the row simulated slow already, or still fast at F = 10). One number a row, comparable across rows of one
  recipe: a cause common to them would need about the same F in each (docs/calibration/round-33.md "Round 33: the MLPerf
  v5.1 Llama 3.1 8B TP 2 row, term by term").

The data-parallel group's GPUs a node are gpus_per_node / (tp x cp), its nodes dp / that: the layouts of the rows
this was written for (pp 1); a pipelined row's groups are not placed this way and are refused.
"""

from __future__ import annotations

import contextlib
import sys
from collections import defaultdict

from simcluster.collectives import nccl
from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.engine import simulation as engine_simulation
from simcluster.spec import config
from simcluster.studies import validation

NIC_BUSBW = 47e9     # data/nccl.yaml measured.per_nic_busbw (NDR 400 Gb/s)
NVLINK_RING = 370e9  # data/nccl.yaml measured.nvlink_ring_busbw nvlink4
PROTOCOLS = ("LL", "LL128", "Simple")
F_MAX = 10.0         # --solve's bracket: a phase ten times the model's is past any reading of a fabric's rate

# The largest --stretch: a data-parallel phase at 1% of the fabric's bandwidth, twenty times the 5x the study reads
# (a plausibility bound, as docs/robustness.md's; round 33)
MAX_STRETCH = 100.0


def _is_data_parallel(name: str) -> bool:
    return name.startswith("grad ") or name.startswith("param ")


@contextlib.contextmanager
def stretched(factor: float):
    """Every data-parallel collective takes ``factor`` times its fabric time while inside the block."""
    original = engine_simulation.Simulation._run_collective
    if factor == 1.0:
        yield
        return

    def run(self, waiting, agent, groups, op, size_bytes, name, experts=False, after_collective=False):
        if not _is_data_parallel(name):
            yield from original(self, waiting, agent, groups, op, size_bytes, name, experts, after_collective)
            return
        started_s = self.env.now
        yield from original(self, [], agent, groups, op, size_bytes, name, experts, after_collective)
        yield self.env.timeout((factor - 1.0) * (self.env.now - started_s))
        for event in waiting:
            event.succeed()

    engine_simulation.Simulation._run_collective = run
    try:
        yield
    finally:
        engine_simulation.Simulation._run_collective = original


def group_layout(scenario) -> tuple[int, int, int]:
    """(ranks, nodes, GPUs a node) of the data-parallel group."""
    p = scenario.parallelism
    if p.pp > 1:
        raise ScenarioError("parallelism.pp", f"{scenario.name}: pp {p.pp}; only pp 1 rows (the DP group's placement)")
    local = max(1, scenario.cluster.gpus_per_node // (p.tp * p.cp))
    return p.dp, max(1, p.dp // local), local


def collective_rows(scenario, events) -> list[tuple]:
    """(op, bytes, count, engine s, NCCL's choice, {protocol: estimate s}, bandwidth-only s) per distinct DP
    collective, the largest total first."""
    n, nodes, local = group_layout(scenario)
    nvlink, nic = scenario.cluster.gpu.nvlink_bandwidth, scenario.cluster.nic.rate
    busbw = min(local * NIC_BUSBW, NVLINK_RING) if local > 1 else NIC_BUSBW
    times = defaultdict(list)
    for name, size, start, end in zip(events["name"], events["bytes"], events["start_s"], events["end_s"], strict=True):
        op = name.split()[1] if _is_data_parallel(name) else None
        if op in ("reduce_scatter", "all_gather", "allreduce"):
            times[(op, float(size))].append(end - start)
    rows = []
    for (op, size), spans in times.items():
        kw = dict(n=n, nodes=nodes, local=local, nvlink_bytes_per_s=nvlink, network_bytes_per_s=nic,
                  gpu=scenario.cluster.gpu)
        _, proto = nccl.choose(op, size, nvls=False, **kw)
        estimates = {p: nccl.estimate_s(op, "ring", p, size, **kw) for p in PROTOCOLS}
        factor = 2 * (n - 1) / n if op == "allreduce" else (n - 1) / n
        rows.append((op, size, len(spans), sum(spans) / len(spans), proto, estimates, factor * size / busbw))
    return sorted(rows, key=lambda r: -r[2] * r[3])


def closing_stretch(case, published_s: float, f_max: float = F_MAX, rel_tol: float = 2e-4) -> float | None:
    """The data-parallel stretch F in [1, f_max] at which the row's simulated step equals ``published_s``, by
    bracketing secant steps (the Illinois rule) on step(F) - published, which does not fall as F grows; exact in one
    step where the step is linear in F (a phase that runs alone). None when the row is simulated slow at F = 1 (no
    stretch shortens it) or still fast at f_max."""
    def excess(factor: float) -> float:
        with stretched(factor):
            return validation.run_case(case).step_time_s - published_s

    lo, g_lo = 1.0, excess(1.0)
    if g_lo >= 0.0:
        return None
    hi, g_hi = f_max, excess(f_max)
    if g_hi < 0.0:
        return None
    side = 0
    for _ in range(40):
        factor = hi - g_hi * (hi - lo) / (g_hi - g_lo)
        g = excess(factor)
        if abs(g) <= rel_tol * published_s or hi - lo <= 1e-4:
            return factor
        if g < 0.0:
            lo, g_lo = factor, g
            if side == -1:
                g_hi /= 2.0
            side = -1
        else:
            hi, g_hi = factor, g
            if side == 1:
                g_lo /= 2.0
            side = 1
    return factor


def row(name: str, stretching: bool = False) -> tuple[dict, object]:
    """The validation case and scenario of ``name``; a name that is not a row, or a pipelined row, is refused, and
    with ``--stretch`` or ``--solve`` (``stretching``) a row of dp 1, which has no data-parallel collective to stretch
    (round 33 review: its steps at every F were the same, and --solve simulated it twice to say "still fast")."""
    case = validation.named_case(name)
    scenario = config.load(name)
    group_layout(scenario)
    if stretching and scenario.parallelism.dp == 1:
        raise ScenarioError("parallelism.dp", f"{name}: dp 1, no data-parallel collective for --stretch or --solve")
    return case, scenario


def report(name: str, factors: list[float], solve: bool = False) -> list[str]:
    case, scenario = row(name)
    n, nodes, local = group_layout(scenario)
    result = simulate(scenario, check_memory=False)
    summary = result.summary
    published_s = validation.published_step_s(case, scenario)
    exposed = {k: v for k, v in summary["exposed_comm_by_parallelism_s"].items() if v}
    rows = collective_rows(scenario, result.events)
    lines = [f"== {name}: DP {n} ranks on {nodes} nodes, {local} a node",
             f"  published {published_s:.4f} s, simulated {summary['step_time_s']:.4f} s "
             f"({published_s / summary['step_time_s'] - 1:+.2%}); compute {summary['compute_s']:.4f} s, exposed "
             + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in exposed.items())
             + f"; published - compute {(published_s - summary['compute_s']) * 1e3:.1f} ms"]
    engine_total = sum(r[2] * r[3] for r in rows)
    estimate_total = sum(r[2] * r[5][r[4]] for r in rows)
    bandwidth_total = sum(r[2] * r[6] for r in rows)
    lines.append(f"  {sum(r[2] for r in rows)} DP collectives a step: engine {engine_total * 1e3:.1f} ms, NCCL's "
                 f"estimate of its choice {estimate_total * 1e3:.1f} ms, bandwidth only {bandwidth_total * 1e3:.1f} ms")
    for op, size, count, engine_s, proto, est, bandwidth_s in rows[:10]:
        lines.append(f"    {op:14s} {size / 1e6:9.2f} MB x{count:3d}  engine {engine_s * 1e3:7.3f} ms  choice "
                     f"{proto:6s} estimate " + " ".join(f"{p} {est[p] * 1e3:7.3f}" for p in PROTOCOLS)
                     + f"  bandwidth {bandwidth_s * 1e3:7.3f}")
    for factor in factors:
        with stretched(factor):
            run = validation.run_case(case)
        lines.append(f"  F = {factor:g}: {run.step_time_s:.4f} s, {run.error:+.2%}")
    if solve:
        closing = closing_stretch(case, published_s)
        if closing is not None:
            lines.append(f"  closing stretch: F = {closing:.3f} puts the step at the published {published_s:.4f} s")
        elif summary["step_time_s"] >= published_s:
            lines.append("  closing stretch: none (simulated slow already; no stretch shortens the step)")
        else:
            lines.append(f"  closing stretch: none up to F = {F_MAX:g} (still fast)")
    return lines


def main(argv: list[str]) -> int:
    factors: list[float] = []
    solve = "--solve" in argv
    argv = [a for a in argv if a != "--solve"]

    if argv.count("--stretch") > 1:
        raise ScenarioError("--stretch", "given twice; give the factors once, comma-separated: --stretch 1,2,3")
    if "--stretch" in argv:
        at = argv.index("--stretch")
        try:
            factors = [float(x) for x in argv[at + 1].split(",")]
        except (IndexError, ValueError):
            factors = []
        # finite and bounded (round 33: inf was an AssertionError traceback in the engine, 1e308 a 10^307 s step)
        if not factors or any(not 1.0 <= f <= MAX_STRETCH for f in factors):
            raise ScenarioError("--stretch", f"comma-separated factors from 1 to {MAX_STRETCH:g}, e.g. 1,2,3")
        argv = argv[:at] + argv[at + 2:]
    if not argv:  # round 33 review: `--stretch 2` alone took 2 for the factors and printed nothing, exit 0
        raise ScenarioError("scenario", "no validation row given (see --help)")
    if repeated := sorted({name for name in argv if argv.count(name) > 1}):  # round 34: simulated and printed twice
        raise ScenarioError("scenario", f"{repeated[0]}: given twice; each row is reported once")
    for name in argv:   # every name checked before the first is simulated (round 33)
        row(name, stretching=bool(factors) or solve)
    for name in argv:
        print("\n".join(report(name, factors, solve)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.run(main, sys.argv[1:], __doc__, options=("--stretch", "--solve"),
                              words=(1, None), usage="SCENARIO [SCENARIO ...] [--stretch F,F,...] [--solve]"))
