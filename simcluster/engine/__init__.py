"""The training engine: the only package that imports simpy."""

from __future__ import annotations

from simcluster.config import Scenario
from simcluster.engine.simulation import Simulation
from simcluster.results import Result


def simulate(scenario: Scenario, network: str | None = None, expand: bool = False, steps: int | None = None,
             fabric=None) -> Result:
    """Simulate ``steps`` training steps of ``scenario`` and return its Result (summary, events, links)."""
    return Simulation(scenario, network, expand=expand, fabric=fabric).run(steps)


__all__ = ["Simulation", "simulate", "Result"]
