"""The scenario's ``variability:`` section: per-GPU speed, per-kernel jitter, per-collective latency noise and named
stragglers.

``variability: measured`` selects the sourced defaults of ``simcluster/data/variability.yaml``; a mapping sets any
of ``gpu_speed_cv``, ``gpu_speed_draw``, ``kernel_jitter_cv``, ``collective_latency_noise``, ``seed`` and
``stragglers`` (absent keys are 0 / none / 'random'). The engine applies it (``engine.variability``);
docs/variability.md explains the model and its sources.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, Strict, model_validator

from simcluster.core import catalog
from simcluster.core.units import FiniteNumber, NonNegativeSeconds
from simcluster.spec.base import Spec

# A coefficient of variation above 1 would make most lognormal draws tiny or huge: not a GPU fleet.
MAX_CV = 1.0
# A straggler 1,000 times slower is a failure, not a straggler (see reliability).
MAX_SLOWDOWN = 1000.0

Index = Annotated[int, Strict(), Field(ge=0)]


class Straggler(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ranks: list[Index] | None = Field(None, description="global ranks slowed")
    nodes: list[Index] | None = Field(None, description="nodes slowed (all their GPUs)")
    slowdown: FiniteNumber = Field(ge=1.0, le=MAX_SLOWDOWN,
                                   description="factor on every compute duration of those GPUs (1.2 = 20% slower)")

    @model_validator(mode="after")
    def _one_target(self) -> Straggler:
        if (self.ranks is None) == (self.nodes is None):
            raise ValueError("give exactly one of ranks and nodes")
        return self


class Variability(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_speed_cv: FiniteNumber = Field(0.0, ge=0.0, le=MAX_CV,
                                       description="per-GPU speed spread, drawn once per GPU (measured: 0.015)")
    gpu_speed_draw: Literal["random", "quantiles"] = Field(
        "random", description="how the per-GPU speeds are drawn: 'random' (independent normal draws) or "
        "'quantiles' (the N normal quantiles at Blom's plotting positions, shuffled over the GPUs: the job's "
        "slowest GPU is then its expected order statistic, not one seed's draw)")
    kernel_jitter_cv: FiniteNumber = Field(0.0, ge=0.0, le=MAX_CV,
                                           description="per-block compute jitter (measured: 0.015)")
    collective_latency_noise: NonNegativeSeconds = Field(
        0.0, description="mean extra latency of each collective, drawn per collective (exponential), e.g. '20 us'; "
        "no sourced default (measured: 0, docs/variability.md)")
    seed: Index = Field(0, description="seed of the simulation's random generator")
    stragglers: list[Straggler] = Field(default_factory=list, description="named slow GPUs or nodes")

    @property
    def active(self) -> bool:
        return (self.gpu_speed_cv > 0 or self.kernel_jitter_cv > 0 or self.collective_latency_noise > 0
                or bool(self.stragglers))


def measured() -> dict:
    """The sourced values of ``variability: measured``."""
    return dict(catalog.load("variability")["measured"])
