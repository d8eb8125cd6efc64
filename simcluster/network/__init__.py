"""Network models: how transfers share a fabric's links. Pure and event-driven, free of SimPy.

``base`` holds the interface (``TransferClass``, ``NetworkModel``); ``analytic``, ``flow`` and ``store_forward``
(the ``chunk`` model of the CLI) implement it; ``make`` builds one by name.
"""

from __future__ import annotations

from simcluster.core.errors import ScenarioError
from simcluster.network.base import NetworkModel, TransferClass

__all__ = ["MODELS", "NetworkModel", "TransferClass", "make"]

MODELS = ("analytic", "flow", "chunk")


def make(name: str, fabric, **options) -> NetworkModel:
    """The network model ``name`` (analytic | flow | chunk) on ``fabric``; options go to the model."""
    if name == "analytic":
        from simcluster.network.analytic import AnalyticNetwork

        return AnalyticNetwork(fabric, **options)
    if name == "flow":
        from simcluster.network.flow import FlowNetwork

        return FlowNetwork(fabric, **options)
    if name == "chunk":
        from simcluster.network.store_forward import StoreForwardNetwork

        return StoreForwardNetwork(fabric, **options)
    raise ScenarioError("network", f"unknown network model {name!r} (known: {', '.join(MODELS)})")
