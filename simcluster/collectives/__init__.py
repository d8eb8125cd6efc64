"""Collectives: NCCL's algorithms as steps of point-to-point transfers, their costs, and their timing.

``schedule`` (what a collective sends), ``algorithms`` (the step builders), ``nccl`` (NCCL's tuning model and
measured efficiencies), ``closed_form`` (alpha-beta oracle, nccl-tests bandwidths), ``timing`` (the steps timed on
a network model). The names below are the package's public face.
"""

from __future__ import annotations

from simcluster.collectives.algorithms import Step, delay
from simcluster.collectives.closed_form import (
    algbw_bytes_per_s,
    alpha_beta_time_s,
    busbw_bytes_per_s,
    busbw_factor,
    in_network_time_s,
)
from simcluster.collectives.nccl import calibrated
from simcluster.collectives.schedule import ALGORITHMS, OPS, Collective, Schedule, merge, schedule
from simcluster.collectives.timing import Outcome, run, simulate

__all__ = ["ALGORITHMS", "OPS", "Collective", "Outcome", "Schedule", "Step", "algbw_bytes_per_s",
           "alpha_beta_time_s", "busbw_bytes_per_s", "busbw_factor", "calibrated", "delay", "in_network_time_s",
           "merge", "run", "schedule", "simulate"]
