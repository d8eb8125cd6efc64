"""Collectives: NCCL's algorithms as steps of point-to-point transfers, their costs, and their timing."""

from __future__ import annotations

from simcluster.collectives.schedule import (
    ALGORITHMS,
    OPS,
    Collective,
    Outcome,
    Schedule,
    Step,
    algbw_bytes_per_s,
    alpha_beta_time_s,
    busbw_bytes_per_s,
    busbw_factor,
    calibrated,
    delay,
    merge,
    run,
    schedule,
    simulate,
)

__all__ = ["ALGORITHMS", "OPS", "Collective", "Outcome", "Schedule", "Step", "algbw_bytes_per_s",
           "alpha_beta_time_s", "busbw_bytes_per_s", "busbw_factor", "calibrated", "delay", "merge", "run",
           "schedule", "simulate"]
