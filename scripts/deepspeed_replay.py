"""DeepSpeed's TrainSchedule replayed event by event: the test oracle of the engine's DeepSpeed pipeline path
(``parallel.deepspeed_pipeline``, ``engine.agents``; tests/unit/test_deepspeed_schedule.py), and a report of that replay
with the engine's own block times against the engine's step (issue 15, docs/calibration/round-17.md "Round 17:
DeepSpeed's pipeline timeline").

    PYTHONPATH=. python scripts/deepspeed_replay.py smith2022-mtnlg-530b-280-a100 bigscience-bloom-176b-384-a100

**The schedule.** ``train_schedule`` is ``TrainSchedule.steps`` of deepspeed/runtime/pipe/schedule.py (DeepSpeed
0.5-0.7, 2021-2022, unchanged in later releases) as one instruction list per stage: ``2 (m + pp - 1)`` steps per
stage; on an even step even stages run a forward and odd stages a backward, on an odd step the other way round
(``_step_to_micro_batch``: the forward of microbatch j at step ``2 j + s``, its backward at ``2 j + 2 pp - 1 - s``); a
forward step receives the activation (``RecvActivation``), then sends the gradient of the backward of the step before
(``SendGrad``); a backward step sends the output of the forward of the step before (``SendActivation``), then
receives the gradient (``RecvGrad``); steps whose microbatch is outside [0, m) compute nothing but still send what the
step before produced. ``ReduceTiedGrads``, ``ReduceGrads``, ``OptimizerStep`` end the last step. The pass order is
derived here from ``_step_to_micro_batch`` as DeepSpeed writes it, not taken from ``schedules.pipeline_order``: the
tests check that the two orders agree, and the steps (which ``pipeline_order`` does not give) place the sends.

``replay`` runs the streams with every send and receive blocking and matched (p2p.py: ``dist.send``/``dist.recv`` or a
broadcast in a two-rank group, ``async_op=False``): a transfer starts when both its ranks have reached it and holds
both until it ends; a stage runs its instructions one after the other. With uniform stages and free transfers the
step is ``(m + pp - 1)(t_f + t_b)``, the bubble ``(pp - 1)(t_f + t_b)``, not more. The engine does not run this
replay; it equals it with pipeline messages and the end-of-step tail (reductions, optimizer) off.

**The report.** For each scenario (``pipeline_engine: deepspeed``, pp >= 3: it needs a middle stage): the engine runs
one step (``engine.simulation``); each stage's forward and backward block as it ran there (its compute and the TP
communication it waited for, per microbatch, split between the phases as the plan splits them) and one transfer time
(the middle stage's pipeline-message time per microbatch over the four blocking transfers a middle stage takes part in
per microbatch: activation in and out, gradient in and out; at pp 2 no stage has four, hence pp >= 3) are fed to
``replay``. Printed: the pipeline part of the step (replay) and each stage's idle time (the step less its blocks and
transfers), against the engine's idle time per stage (its step less compute, optimizer and exposed communication).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NamedTuple

from simcluster.core.errors import ScenarioError
from simcluster.engine.simulation import Simulation
from simcluster.spec import config

# the instructions that move data between stages, and the one each is matched with on the neighbour
PARTNER = {"SendActivation": ("RecvActivation", 1), "RecvActivation": ("SendActivation", -1),
           "SendGrad": ("RecvGrad", -1), "RecvGrad": ("SendGrad", 1)}


class Instruction(NamedTuple):
    """One ``PipeInstruction`` of a stage's stream: its name, microbatch (-1: none) and schedule step."""

    name: str
    microbatch: int
    step: int


def step_to_micro_batch(pp: int, stage: int, step: int) -> tuple[int, bool]:
    """``TrainSchedule._step_to_micro_batch``: (microbatch, is_forward) of ``stage`` at ``step`` (the microbatch may
    lie outside [0, m): an idle slot)."""
    if step % 2 == stage % 2:  # even step and even stage, or odd and odd: a forward
        return (step - stage % 2) // 2 - stage // 2, True
    if step % 2 == 0:  # even step, odd stage
        return step // 2 - pp + (stage + 1) // 2, False
    return (step - 1) // 2 - pp + 1 + stage // 2, False  # odd step, even stage


def train_schedule(pp: int, microbatches: int, stage: int) -> list[Instruction]:
    """``TrainSchedule(micro_batches, stages, stage_id).steps()`` flattened into one list (the engine runs each
    step's commands in order; ``LoadMicroBatch`` is left out: it moves no data between stages)."""
    m = microbatches

    def valid(j: int) -> bool:
        return 0 <= j < m

    out: list[Instruction] = []
    prev = -1
    has_prev, has_next = stage > 0, stage < pp - 1
    for step in range(2 * (m + pp - 1)):
        j, forward = step_to_micro_batch(pp, stage, step)
        if forward:
            if valid(j) and has_prev:
                out.append(Instruction("RecvActivation", j, step))
            if valid(prev) and has_prev:
                out.append(Instruction("SendGrad", prev, step))
        else:
            if valid(prev) and has_next:
                out.append(Instruction("SendActivation", prev, step))
            if valid(j) and has_next:
                out.append(Instruction("RecvGrad", j, step))
        if valid(j):
            out.append(Instruction("ForwardPass" if forward else "BackwardPass", j, step))
        prev = j
    return out


class Replay(NamedTuple):
    """A replayed step: when each stage ended its last instruction, its compute time and its time on transfers
    (from the later of the two ranks' arrival to the end)."""

    ends_s: list[float]
    busy_s: list[float]
    transfer_s: list[float]

    @property
    def step_s(self) -> float:
        return max(self.ends_s)

    def idle_s(self, stage: int) -> float:
        """The step less the stage's compute and transfers: its bubble."""
        return self.step_s - self.busy_s[stage] - self.transfer_s[stage]


def replay(pp: int, microbatches: int, forward_s: Sequence[float], backward_s: Sequence[float],
           activation_s: float = 0.0, gradient_s: float = 0.0) -> Replay:
    """Run every stage's ``train_schedule`` with blocking, matched transfers: stage s's ``ForwardPass`` lasts
    ``forward_s[s]``, its ``BackwardPass`` ``backward_s[s]``; an activation's transfer ``activation_s``, a gradient's
    ``gradient_s`` (both ranks held from the later arrival to the end)."""
    streams = [train_schedule(pp, microbatches, s) for s in range(pp)]
    at = [0] * pp           # the next instruction of each stage
    clock = [0.0] * pp      # when each stage reached it
    busy = [0.0] * pp
    transfer = [0.0] * pp
    remaining = sum(len(s) for s in streams)
    while remaining:
        progressed = False
        for s in range(pp):
            while at[s] < len(streams[s]):
                ins = streams[s][at[s]]
                if ins.name in ("ForwardPass", "BackwardPass"):
                    seconds = (forward_s if ins.name == "ForwardPass" else backward_s)[s]
                    clock[s] += seconds
                    busy[s] += seconds
                    at[s] += 1
                    remaining -= 1
                    progressed = True
                    continue
                partner_name, offset = PARTNER[ins.name]
                other = s + offset
                theirs = streams[other][at[other]] if at[other] < len(streams[other]) else None
                if theirs is None or theirs.name != partner_name or theirs.microbatch != ins.microbatch:
                    break  # the neighbour has not reached the matching instruction yet
                seconds = activation_s if "Activation" in ins.name else gradient_s
                clock[s] = clock[other] = max(clock[s], clock[other]) + seconds
                transfer[s] += seconds
                transfer[other] += seconds
                at[s] += 1
                at[other] += 1
                remaining -= 2
                progressed = True
        if not progressed:
            raise RuntimeError("TrainSchedule replay deadlocked")  # unreachable for the schedule as written
    return Replay(clock, busy, transfer)


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


def checked(name: str) -> config.Scenario:
    """The scenario ``name``, refused (ScenarioError naming the field) unless DeepSpeed runs its pipeline over at least
    three stages: the replay is TrainSchedule's, and its transfer time is a middle stage's."""
    scenario = config.load(name)
    p = scenario.parallelism
    if p.pipeline_engine != "deepspeed":
        raise ScenarioError("parallelism.pipeline_engine", f"{name}: {p.pipeline_engine}; the replay is DeepSpeed's "
                            "TrainSchedule (pipeline_engine: deepspeed)")
    if p.pp < 3:
        raise ScenarioError("parallelism.pp", f"{name}: {p.pp}; the replay's transfer time is a middle stage's "
                            "(pp >= 3)")
    return scenario


def report(name: str, scenario: config.Scenario) -> list[str]:
    sim = Simulation(scenario, check_memory=False)
    summary = sim.run(1).summary
    step = float(summary["step_time_s"])
    forward, backward, transfer = stage_blocks(sim)
    pp, m = sim.plan.layout.pp, sim.plan.microbatches
    r = replay(pp, m, forward, backward, transfer, transfer)
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
    try:
        scenarios = [checked(name) for name in argv]  # every name refused before any step runs
    except ScenarioError as err:
        print(f"deepspeed_replay: {err}", file=sys.stderr)
        return 2
    for name, scenario in zip(argv, scenarios, strict=True):
        print("\n".join(report(name, scenario)))
    return 0


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, words=(1, None), usage="SCENARIO [SCENARIO ...]"))
