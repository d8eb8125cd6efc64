"""simcluster: an agent-based discrete-event simulator of GPU clusters training large models.

The public Python API, importable from here::

    import simcluster
    scenario = simcluster.load("gpt3-175b-1024-h100")     # a bundled name or a YAML path
    result = simcluster.simulate(scenario)                 # Result: summary, events, links
    print(result.summary["step_time_s"])

``simulate`` and ``Result`` load the engine (and SimPy) on first use, so ``import simcluster`` stays cheap.
"""

from __future__ import annotations

from simcluster.core.errors import OutOfMemoryError, ScenarioError

__version__ = "0.1.0"
__all__ = ["OutOfMemoryError", "Result", "Scenario", "ScenarioError", "__version__", "load", "simulate"]

_LAZY = {
    "simulate": ("simcluster.engine", "simulate"),
    "Result": ("simcluster.engine.results", "Result"),
    "Scenario": ("simcluster.spec.config", "Scenario"),
    "load": ("simcluster.spec.config", "load"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'simcluster' has no attribute {name!r}")
