"""The training engine: the only package that imports simpy."""

from __future__ import annotations

from simcluster.engine.pages import no_hugepage_advice
from simcluster.engine.results import Result
from simcluster.engine.simulation import Simulation, run_expanded
from simcluster.spec.config import Scenario

no_hugepage_advice()   # before a run's large temporary arrays: see engine/pages.py


def simulate(scenario: Scenario, network: str | None = None, expand: bool = False, steps: int | None = None,
             fabric=None, check_memory: bool = True, link_windows: bool = True) -> Result:
    """Simulate ``steps`` training steps of ``scenario`` and return its Result (summary, events, links).

    ``check_memory=False`` simulates a layout the memory model says does not fit (its summary still reports the
    memory it needs): for published runs that did fit, to report the throughput and the memory model's error.
    ``link_windows=False``: no bytes per link per time window are kept (the summary's peak link utilisation is None),
    for a caller that reads the step time only (``studies.validation.run_case``): the same step, less work.
    """
    if expand:  # merged where the network model proves it exact, else every call its own class
        return run_expanded(lambda merge: Simulation(scenario, network, expand=True, fabric=fabric,
                                                     check_memory=check_memory, merge=merge,
                                                     link_windows=link_windows), steps)
    return Simulation(scenario, network, fabric=fabric, check_memory=check_memory,
                      link_windows=link_windows).run(steps)


__all__ = ["Simulation", "simulate", "Result"]
