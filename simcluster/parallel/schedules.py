"""Pipeline schedules: the order in which a pipeline rank runs its forward and backward passes (GPipe, 1F1B,
Megatron's interleaved 1F1B)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Work:
    """One entry of a pipeline rank's compute order: forward or backward of a microbatch on a model chunk."""

    phase: str  # "forward" | "backward"
    microbatch: int
    chunk: int  # global chunk index in model order (0 .. pp*virtual_stages - 1)


def pipeline_order(schedule: str, pp: int, stage: int, microbatches: int, virtual_stages: int = 1) -> list[Work]:
    """The order in which pipeline rank ``stage`` runs its forward and backward passes.

    gpipe: all forwards, then all backwards (Huang et al. 2019). 1f1b: pp-stage-1 warm-up forwards, then one
    forward/one backward, then the cool-down backwards (Narayanan et al. 2021, PipeDream-Flush). With
    virtual_stages > 1 Megatron-LM's interleaved 1F1B: rank ``stage`` holds chunks stage, stage+pp, ...; forwards
    walk microbatch groups of size pp through the chunks, warm-up (pp-stage-1)*2 + (v-1)*pp units (Narayanan et al.
    2021, section 2.2.2; Megatron-LM schedules.py).
    """
    m, v = microbatches, virtual_stages
    if v == 1:
        forwards = [Work("forward", mb, stage) for mb in range(m)]
        backwards = [Work("backward", mb, stage) for mb in range(m)]
        warmup = m if schedule == "gpipe" else min(pp - stage - 1, m)
    else:
        assert schedule == "1f1b" and m % pp == 0, "validated in config"

        def unit(k: int, backward: bool) -> Work:
            local = (k // pp) % v
            if backward:
                local = v - 1 - local
            microbatch = (k // (pp * v)) * pp + k % pp
            return Work("backward" if backward else "forward", microbatch, local * pp + stage)

        forwards = [unit(k, False) for k in range(m * v)]
        backwards = [unit(k, True) for k in range(m * v)]
        # Megatron-LM runs every forward first when there are exactly pp microbatches (all_warmup_microbatches)
        warmup = m * v if m == pp else min((pp - stage - 1) * 2 + (v - 1) * pp, m * v)
    order = forwards[:warmup]
    for i in range(len(forwards) - warmup):
        order += [forwards[warmup + i], backwards[i]]
    order += backwards[len(forwards) - warmup:]
    return order
