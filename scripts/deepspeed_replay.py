"""DeepSpeed's TrainSchedule replayed with the engine's own block times, against the engine's step (issue 15,
docs/calibration.md "Round 17: DeepSpeed's pipeline timeline").

    PYTHONPATH=. python scripts/deepspeed_replay.py smith2022-mtnlg-530b-280-a100 bigscience-bloom-176b-384-a100

For each scenario: the engine runs one step (``engine.simulation``); each stage's forward and backward block as it
ran there (its compute and the TP communication it waited for, per microbatch, split between the phases as the plan
splits them) and one transfer time (the middle stage's pipeline-message time per microbatch over the four blocking
transfers a middle stage takes part in per microbatch: activation in and out, gradient in and out) are fed to
``parallel.deepspeed_schedule.replay``, the instruction stream of ``TrainSchedule.steps`` with blocking, matched
transfers. Printed: the pipeline part of the step (replay) and each stage's idle time (the step less its blocks and
transfers), against the engine's idle time per stage (its step less compute, optimizer and exposed communication).
"""

from __future__ import annotations

import sys

from simcluster.engine.simulation import Simulation
from simcluster.parallel import deepspeed_schedule
from simcluster.spec import config


def stage_blocks(sim: Simulation) -> tuple[list[float], list[float], float]:
    """Per stage, one microbatch's forward and backward as the engine ran them, and one transfer's time."""
    plan, m = sim.plan, sim.plan.microbatches
    forward, backward = [], []
    for agent in sim.agents:
        t = agent.tally
        ran = (t.compute_s + t.tp_comm_s + t.cp_comm_s + t.ep_comm_s) / m
        chunks = [c for c in plan.chunks if c.stage == agent.stage]
        f = sum(c.forward_compute_s + c.forward_tp_comm_s for c in chunks)
        b = sum(c.backward_compute_s + c.backward_tp_comm_s + c.tp_async_exposed_s for c in chunks)
        forward.append(ran * f / (f + b))
        backward.append(ran * b / (f + b))
    middle = sim.agents[len(sim.agents) // 2]
    return forward, backward, middle.tally.p2p_wait_s / (4 * m)


def report(name: str) -> list[str]:
    scenario = config.load(name)
    sim = Simulation(scenario, check_memory=False)
    summary = sim.run(1).summary
    step = float(summary["step_time_s"])
    forward, backward, transfer = stage_blocks(sim)
    pp, m = sim.plan.layout.pp, sim.plan.microbatches
    r = deepspeed_schedule.replay(pp, m, forward, backward, transfer, transfer)
    engine_idle = [step - a.tally.compute_s - a.tally.optimizer_s - a.tally.tp_comm_s - a.tally.cp_comm_s
                   - a.tally.p2p_wait_s - a.tally.dp_wait_s - a.tally.ep_comm_s for a in sim.agents]
    middle = pp // 2
    closed = (pp - 1) * (forward[middle] + backward[middle])
    lines = [f"== {name}: pp {pp}, {m} microbatches; middle stage t_f {forward[middle] * 1e3:.2f} ms, "
             f"t_b {backward[middle] * 1e3:.2f} ms, transfer {transfer * 1e3:.3f} ms",
             f"  engine step {step:.3f} s, bubble {float(summary['pipeline_bubble_s']):.3f} s",
             f"  replay: pipeline part {r.step_s:.3f} s (engine step less it: {step - r.step_s:.3f} s, the tail: "
             "reduction, optimizer, step collectives)",
             f"  (pp-1)(t_f+t_b) of the middle stage: {closed:.3f} s",
             f"  idle, stage 0 / middle / last: replay {r.idle_s(0):.3f} / {r.idle_s(middle):.3f} / "
             f"{r.idle_s(pp - 1):.3f} s; engine {engine_idle[0]:.3f} / {engine_idle[middle]:.3f} / "
             f"{engine_idle[-1]:.3f} s"]
    return lines


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for name in argv:
        print("\n".join(report(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
