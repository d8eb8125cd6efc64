"""DeepSpeed's ``TrainSchedule`` as the instruction stream each pipeline stage runs, and an event-level replay of it.

The stream is ``TrainSchedule.steps`` of deepspeed/runtime/pipe/schedule.py (DeepSpeed 0.5-0.7, 2021-2022, unchanged
in later releases): ``2 (m + pp - 1)`` steps per stage; on an even step even stages run a forward and odd stages a
backward, on an odd step the other way round (``_step_to_micro_batch``: the forward of microbatch j at step
``2 j + s``, its backward at ``2 j + 2 pp - 1 - s``); a forward step receives the activation (``RecvActivation``),
then sends the gradient of the backward of the step before (``SendGrad``); a backward step sends the output of the
forward of the step before (``SendActivation``), then receives the gradient (``RecvGrad``); steps whose microbatch is
outside [0, m) compute nothing but still send what the step before produced. ``ReduceTiedGrads``, ``ReduceGrads``,
``OptimizerStep`` end the last step.

``replay`` runs the streams with every send and receive blocking and matched (p2p.py: ``dist.send``/``dist.recv`` or a
broadcast in a two-rank group, ``async_op=False``): a transfer starts when both its ranks have reached it and holds
both until it ends; a stage runs its instructions one after the other. It is the reference the engine's DeepSpeed
path (``parallel.deepspeed_pipeline``, ``engine.agents``) is checked against: the stream's data dependencies are
those of 1F1B (each pass waits for the neighbour's pass of the step before), so with uniform stages and free
transfers the step is ``(m + pp - 1)(t_f + t_b)``, the bubble ``(pp - 1)(t_f + t_b)``, not more
(tests/unit/test_deepspeed_schedule.py; docs/calibration.md "Round 17: DeepSpeed's pipeline timeline").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

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
