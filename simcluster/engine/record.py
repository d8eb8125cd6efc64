"""What a finished run leaves behind, as plain data: the boundary between the SimPy engine and its results.

``results.summarize`` reads only a ``RunRecord``, so the summary, links and trace can be computed (and tested)
without a SimPy environment, and the engine's internals can change without touching what users see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simcluster.core.table import Coded, Table
from simcluster.spec.config import Scenario


@dataclass
class Tally:
    """Where one agent's step time went (seconds, summed over the steps simulated)."""

    compute_s: float = 0.0
    tp_comm_s: float = 0.0  # waiting for tensor-parallel collectives on the network (blocking, or what overlap leaves)
    cp_comm_s: float = 0.0  # ring attention's key/value exchange not hidden by the attention (analytic)
    p2p_wait_s: float = 0.0  # waiting for a pipeline message that was already on the wire
    dp_wait_s: float = 0.0  # waiting for data-parallel gradient reduction and parameter gathering
    ep_comm_s: float = 0.0  # waiting for expert parallelism's token dispatch and combine all-to-alls
    optimizer_s: float = 0.0
    interference_s: float = 0.0  # of compute_s: what communication kernels beside the compute added to it


@dataclass(frozen=True)
class AgentTally:
    """One agent's tally and how many GPUs it stands for (its weight in per-GPU means)."""

    tally: Tally
    multiplicity: int


@dataclass(frozen=True)
class FabricLinks:
    """The fabric as the links table needs it; ``ends`` (source and destination node of every link) is None for a
    fabric that does not name its nodes, ``classes`` (tiers such as nvlink, pcie, nic, leaf-spine:
    ``fabric.classes``) None for one that has no roles. Texts per link are lists or, as ``of`` makes them,
    ``core.table.Coded`` columns (codes into the few distinct names)."""

    topology: str
    kinds: Sequence[str]
    capacity_bytes_per_s: np.ndarray
    ends: Sequence[tuple] | None
    classes: Sequence[str] | None = None

    @classmethod
    def of(cls, fabric) -> FabricLinks:
        """What the links table reads of ``fabric``: kinds and classes as codes into their names where the fabric
        keeps them (``link_kind_codes``, ``link_class_codes``), the ends as codes into its node names (its
        ``tables``: each link's end nodes by index), else its per-link lists."""
        return cls(fabric.name, _coded(fabric, "link_kind"), fabric.link_bytes_per_s, _ends(fabric),
                   _coded(fabric, "link_class"))


def _coded(fabric, attribute: str) -> Sequence | None:
    """The fabric's per-link ``attribute`` as a ``Coded`` column of its ``<attribute>_codes``, else as it is (None
    when it has none)."""
    codes = getattr(fabric, f"{attribute}_codes", None)
    if codes is not None:
        names, code = codes
        return Coded(names, code)
    return getattr(fabric, attribute, None)


def _ends(fabric) -> LinkEnds | Sequence[tuple] | None:
    """(source, destination) node of every link: as two ``Coded`` columns of the node names (as text) when the
    fabric keeps its links' end nodes by index (``tables``), else its ``link_ends`` (None when it has none)."""
    tables = getattr(fabric, "tables", None)
    if tables is not None and getattr(tables, "src", None) is not None:
        names = [str(node) for node in tables.nodes]
        return LinkEnds(Coded(names, tables.src), Coded(names, tables.dst))
    return getattr(fabric, "link_ends", None)


@dataclass(frozen=True)
class LinkEnds:
    """Source and destination node of every link, as two columns (``sources``, ``destinations``)."""

    sources: Sequence
    destinations: Sequence


@dataclass(frozen=True)
class SymmetryCheck:
    """What the network model found of the merge policy's classes (``engine.merge``): how many held a part back and
    the time those parts could have saved, over the whole run (None: the model does not check)."""

    collapsed: bool
    held_back_classes: int | None
    held_back_s: float | None
    # the end of a run the exact one cannot beat (``simulation.lower_bound_step_s``, all steps); None: not computed
    lower_bound_end_s: float | None = None
    # the merge policy the run's network driver applied (``simulation.merge_name``); None: not known (a job's view)
    merge: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """One simulated run: the scenario and plan figures it ran, and everything the engine measured."""

    scenario: Scenario
    steps: int
    microbatches: int
    layout: dict[str, int]  # tp, cp, pp, dp
    agents: tuple[AgentTally, ...]
    events: Table  # recorder rows (recorder.COLUMNS)
    link_bytes: np.ndarray  # bytes carried per directed link, by link id
    fabric: FabricLinks
    network_model: str
    end_s: float  # simulated time at the end of the last step
    wall_time_s: float
    memory: object  # MemoryBreakdown of the worst stage
    model_flop_per_step: float
    hardware_flop_per_step: float
    symmetry: SymmetryCheck | None = None  # None: a run without merged classes (replay)
    variability: dict | None = None  # engine.variability's description; None: every GPU alike
    # tier (fabric.classes.TIERS) bounding each parallelism's traffic (``Fabric.bottleneck_tier``); None: unknown
    bottleneck_by_parallelism: dict[str, str | None] | None = None
    link_peak_utilisation: np.ndarray | None = None  # per link id: utilisation of its busiest window
    peak_window_s: float | None = None  # the width of those windows (``network.windows``)
    fabric_bill: dict | None = None  # the fabric's bill of materials (``fabric.bom.bill``)
