"""The scenario's ``reliability:`` section: failure rates, checkpoints and restarts over a whole run.

Every field is optional; an unset field takes its sourced default from ``simcluster/data/reliability.yaml``
(``outcomes.reliability`` reads it; docs/reliability.md explains each one).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, Strict, field_validator

from simcluster.core.units import FiniteNumber, NonNegativeDuration, PositiveBytes, PositiveBytesPerS
from simcluster.spec.base import Spec

# Hot spares: at most the most nodes a scenario may have (config.MAX_GPUS at one GPU a node; config imports this
# module, so the figure is repeated, and tests/cli/test_round23_robustness.py holds it >= config.MAX_GPUS). Only an
# overflow guard: a spare pool larger than the cluster is no physical impossibility, just spares no run uses.
MAX_NODES = 10**7

COMPONENTS = ("gpu", "hbm", "nvlink", "nic", "host", "network", "software")

NonNegativeFloat = Annotated[FiniteNumber, Field(ge=0)]  # YAML's true is not a rate


class Reliability(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True)

    failures_per_1000_node_days: NonNegativeFloat | None = Field(
        None, description="unexpected interruptions per 1,000 8-GPU node-days, all components (default 5.11, Meta "
        "RSC-1/RSC-2, Kokolis et al. 2024); 0 = no failures")
    failure_rates: dict[str, NonNegativeFloat] = Field(
        default_factory=dict, description="per-component override, failures per unit-day (unit: GPU for gpu, hbm, "
        "nvlink, nic, network, software; node for host), e.g. {nvlink: 1e-5}")
    planned_per_day: NonNegativeFloat | None = Field(
        None, description="planned interruptions per day (maintenance; checkpointed first), default 0")
    checkpoint_interval: NonNegativeDuration | Literal["auto"] = Field(
        "auto", description="time between checkpoints; auto = the optimum (Daly 2006), rounded to whole steps")
    checkpoint_bytes: PositiveBytes | None = Field(
        None, description="size of one checkpoint; default: weights + optimizer states of the model")
    write_bandwidth_per_gpu: PositiveBytesPerS | None = Field(
        None, description="checkpoint write bandwidth per GPU, all GPUs writing at once (default 122 MB/s)")
    read_bandwidth_per_gpu: PositiveBytesPerS | None = Field(
        None, description="checkpoint read bandwidth per GPU at restore (default 427 MB/s)")
    detection: NonNegativeDuration | None = Field(
        None, description="failure to detection (default 10 min, PyTorch's NCCL timeout)")
    restart: NonNegativeDuration | None = Field(
        None, description="relaunch and initialisation, checkpoint read excluded (default 5 min)")
    requeue: NonNegativeDuration | None = Field(
        None, description="extra wait for a replacement node after a hardware failure without a hot spare "
        "(default 10 min)")
    repair: NonNegativeDuration | None = Field(
        None, description="time until a failed node returns to the spare pool (default 1 day)")
    hot_spares: Annotated[int, Strict(), Field(ge=0, le=MAX_NODES)] = Field(
        0, description="spare nodes kept ready: a hardware failure restarts at once on one")
    horizon: NonNegativeDuration | None = Field(
        None, description="length of the run the event simulation plays (default 54 days)")
    seed: Annotated[int, Strict(), Field(ge=0)] | None = Field(
        None, description="seed of the event simulation (default 0)")

    @field_validator("failure_rates")
    @classmethod
    def _known_components(cls, value: dict) -> dict:
        unknown = sorted(set(value) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"unknown component {unknown[0]!r} (known: {', '.join(COMPONENTS)})")
        return value

    @field_validator("checkpoint_interval")
    @classmethod
    def _positive_interval(cls, value):
        if value != "auto" and value <= 0:
            raise ValueError("must be a positive duration, e.g. '30 min', or auto")
        return value

    @field_validator("horizon")
    @classmethod
    def _positive_horizon(cls, value):
        if value is not None and value <= 0:  # a run of no time: no event to play
            raise ValueError("must be a positive duration, e.g. '54 d', or unset for the default")
        return value
