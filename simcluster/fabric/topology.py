"""Fabrics: networkx graphs of GPUs, NVSwitch, PCIe, NICs and switches with SI link attributes, and their
routes.

``build`` makes a builtin fabric (``BUILTIN``, builders in ``builders``) or imports a user's
YAML/GraphML file (``files``); ``Fabric`` holds the graph and per-link arrays indexed by link id, and
answers route queries (``path_links``, ``links_of``) through a lazily built, cached router
(``routing``). A fabric's ``routing`` policy says how flows share equal-cost paths: ``adaptive``
(InfiniBand: every flow sprayed over all shortest paths) or ``ecmp`` (Ethernet/RoCE: one hashed path per flow).
The file format and the conventions (one edge per direction of a cable, switch latency folded into the links
entering it) are in docs/topologies.md.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simcluster.core import inputs
from simcluster.core.errors import ScenarioError, did_you_mean, quoted
from simcluster.fabric import builders, classes, files
from simcluster.fabric.routing import (
    NETWORK_SWITCH_ROLES,
    EdgeTable,
    Router,
    TorusRouter,
    default_routing,
    loads_by_part,
)
from simcluster.fabric.tables import FabricTables
from simcluster.spec import fabric_options
from simcluster.spec.fabric_options import ROUTING_POLICIES
from simcluster.spec.hardware import GpuSpec, NicSpec

if TYPE_CHECKING:
    import networkx as nx

BUILTIN = tuple(fabric_options.BUILTIN_OPTIONS)

# In-network reduction (IB SHARP) in the scale-out switches: ``cluster.sharp`` auto (where the fabric has it), on
# (it must), off. NCCL reaches SHARP through CollNet with NVIDIA Quantum HDR switches or newer and ConnectX-6 HDR
# NICs or newer ("Using NVIDIA SHARP with NVIDIA NCCL", SHARP 3.9.1 LTS documentation): InfiniBand switch links,
# and NICs of at least HDR's 200 Gb/s.
SHARP_MODES = ("auto", "on", "off")


def _mean_over_flows(keys: list[np.ndarray], loads: list[np.ndarray], flows: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``keys`` of ``flows`` hashed flows' route sets and their load averaged over the flows (each flow
    carries 1/flows of the pair's bytes)."""
    key, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    return key, np.bincount(inverse, weights=np.concatenate(loads).astype(float), minlength=len(key)) / flows
SHARP_MIN_NIC_BYTES_PER_S = 200e9 / 8
_SCALE_OUT_ROLES = ("leaf", "spine", "core", "switch")

# Route sets of this many distinct pair arrays are kept per fabric (a ring collective reuses one per step).
_ROUTE_CACHE_ENTRIES = 64
# Pair arrays up to this size (pipeline send/recv classes) are kept in a larger cache than collectives' arrays
_SMALL_PAIRS = 64
_SMALL_CACHE_ENTRIES = 2**16
# Latencies of pair arrays asked for without their route set (collectives' schedules), kept per fabric: up to this
# many arrays and this many latencies in all (8 bytes each)
_LATENCY_CACHE_ENTRIES = 1024
_LATENCY_CACHE_VALUES = 2**22


def _pairs_key(pairs: np.ndarray, salt: int) -> tuple:
    """The cache key of a (contiguous int64) pair array and salt: the pairs' bytes when few, else their length and
    SHA-256 digest (the bytes of a collective's 4 million pairs would take 64 MiB, and take longer to hash as a key
    than to digest)."""
    if len(pairs) <= _SMALL_PAIRS:
        return pairs.tobytes(), int(salt)
    return len(pairs), hashlib.sha256(pairs.data).digest(), int(salt)


class LinkEnds(Sequence):
    """(source node, destination node) of every directed link, by link id, kept as the two columns ``sources`` and
    ``destinations`` (the links table writes them as such; a list of 10^5-10^6 tuples costs more than the table)."""

    def __init__(self, sources: list, destinations: list):
        assert len(sources) == len(destinations)
        self.sources, self.destinations = sources, destinations

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return list(zip(self.sources[k], self.destinations[k], strict=True))
        return self.sources[k], self.destinations[k]

    def __iter__(self):
        return zip(self.sources, self.destinations, strict=True)


@dataclass(eq=False)
class Fabric:
    """A fabric graph plus per-link arrays (index = link id) and cached routes between GPU ranks.

    ``routing`` ("adaptive" or "ecmp", ``ROUTING_POLICIES``) decides how ``links_of`` loads the links; torus
    fabrics route dimension-order paths chosen per flow by hash whatever it says. ``flows_per_pair`` (ECMP only):
    each pair's bytes are split evenly over that many flows, each hashed onto its own path (salts salt x flows ..
    salt x flows + flows - 1), as a collective library that opens several connections per peer does.
    """

    name: str
    tables: FabricTables   # nodes and links as arrays; ``graph`` is made from them when asked for
    gpu_nodes: list
    gpus_per_node: int
    link_bytes_per_s: np.ndarray
    link_latency_s: np.ndarray
    link_kind: list[str]
    routing: str = "ecmp"
    gpu: GpuSpec | None = None  # the GPUs' spec: collectives ask it what the GPUs can do (NVLink SHARP)
    nic: NicSpec | None = None  # the NICs' spec: a ring across nodes takes NCCL's channel count from it
    sharp: bool = False  # the switches reduce in the network (IB SHARP), as the scenario allows
    flows_per_pair: int = 1  # ECMP: flows a pair's bytes are split over, each hashed onto its own path
    _router: object = field(default=None, repr=False)
    _routes: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _small_routes: dict = field(default_factory=dict, repr=False)
    _latencies: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)  # fresh in a replace()
    _latency_values: int = field(default=0, init=False, repr=False)

    @property
    def graph(self) -> nx.DiGraph:
        """The fabric as a NetworkX DiGraph (``tables.TableGraph``: its node and edge dicts made on first use; the
        fabric's own computations read ``tables``)."""
        return self.tables.graph

    @property
    def gpus(self) -> int:
        return len(self.gpu_nodes)

    @cached_property
    def gpu_index(self) -> np.ndarray:
        """Node index (``tables.nodes``) of every GPU, by rank."""
        if self.gpu_nodes == self.tables.gpu_nodes:
            return self.tables.gpu_index
        index = self.tables.index
        return np.array([index[node] for node in self.gpu_nodes], dtype=np.int64)

    def gpu_attr(self, name: str, gpus=None) -> np.ndarray | None:
        """Node attribute ``name`` (e.g. ``server``) of GPUs ``gpus`` (default all, by rank), read from the tables
        without making the graph; None when no node has it (integer attributes: ``tables.ABSENT`` where missing)."""
        column = self.tables.node_attr(name)
        if column is None:
            return None
        at = self.gpu_index if gpus is None else self.gpu_index[np.asarray(gpus, dtype=np.int64)]
        return column[at]

    @property
    def links(self) -> int:
        return len(self.link_bytes_per_s)

    @property
    def edge_table(self) -> EdgeTable:
        """The directed links in the graph's edge order (``EdgeTable``), from the tables; made on each use, not kept
        (the router and the bill of materials read it once; 40 bytes a link)."""
        return EdgeTable.of_tables(self.tables)

    @cached_property
    def link_ends(self) -> LinkEnds:
        """(source node, destination node) of every directed link, by link id."""
        names = np.array(self.tables.nodes, dtype=object)
        return LinkEnds(names[self.tables.src].tolist(), names[self.tables.dst].tolist())

    @cached_property
    def link_class(self) -> list[str]:
        """Where every directed link sits (``nvlink``, ``pcie``, ``nic``, ``leaf-spine``, ``spine-core``, ``torus``
        ...: ``classes``), by link id: a link's own class when it has one, else inferred from its ends' roles and its
        kind (``classes.infer``), once per distinct (roles, kind)."""
        names, codes = self.link_class_codes
        return np.array(names, dtype=object)[codes].tolist() if self.links else []

    @cached_property
    def link_class_codes(self) -> tuple[list[str], np.ndarray]:
        """``link_class`` as (the distinct classes, each link's index in them), for counting links by class with numpy
        (``bom.bill``)."""
        tables = self.tables
        role_names: dict = {}
        role = np.fromiter((role_names.setdefault(r, len(role_names)) for r in tables.role), dtype=np.int64,
                           count=len(tables.role))
        kinds, kind = self.link_kind_codes
        key = (role[tables.src] * len(role_names) + role[tables.dst]) * max(len(kinds), 1) + kind
        distinct, inverse = np.unique(key, return_inverse=True)
        roles = list(role_names)
        names: dict = {}
        found = []
        for k in distinct.tolist():
            pair, kind_of = divmod(k, max(len(kinds), 1))
            src_role, dst_role = divmod(pair, len(roles))
            found.append(names.setdefault(classes.infer(roles[src_role], roles[dst_role], kinds[kind_of]), len(names)))
        codes = np.array(found, dtype=np.int64)[inverse.reshape(-1)] if self.links else np.zeros(0, dtype=np.int64)
        for link_id, own in tables.own_class.items():
            codes[link_id] = names.setdefault(own, len(names))
        return list(names), codes

    @cached_property
    def link_kind_codes(self) -> tuple[list[str], np.ndarray]:
        """``link_kind`` as (the distinct kinds, each link's index in them): the builder's when it kept them."""
        if self.tables.kind_codes is not None and self.link_kind is self.tables.kind:
            return self.tables.kind_codes
        names: dict = {}
        codes = np.fromiter((names.setdefault(k, len(names)) for k in self.link_kind), dtype=np.int64,
                            count=self.links)
        return list(names), codes

    @property
    def router(self):
        if self._router is None:
            attrs = self.tables.graph_attrs
            dims, tables = attrs.get("torus_dims"), attrs.get("_torus_tables")
            if dims is not None and tables is not None:
                self._router = TorusRouter(*tables)
            else:
                self._router = Router(self.edge_table, self.gpu_index, self.link_latency_s,
                                      bool(attrs.get("gpu_transit", False)), self.tables.node_attr("transit"))
        return self._router

    def _check_rank(self, rank: int, what: str):
        if not 0 <= rank < self.gpus:
            raise ScenarioError(what, f"GPU {rank} is not in this {self.gpus}-GPU fabric")

    def path_links(self, src: int, dst: int, salt: int = 0) -> np.ndarray:
        """Directed link ids from GPU ``src`` to GPU ``dst`` (empty when src == dst).

        Shortest path by hop count; among equal-cost paths the ECMP choice is a deterministic hash of
        (src, dst, salt). Under adaptive routing this is one representative of the paths the flow is sprayed
        over (all have the same hop count). Routes are cached; core distances are cached per destination
        switch.
        """
        self._check_rank(src, "src")
        self._check_rank(dst, "dst")
        try:
            return self.router.path(int(src), int(dst), int(salt))
        except KeyError as err:
            raise ScenarioError(f"topology {self.name}", str(err.args[0])) from None

    def path_latency_s(self, src: int, dst: int) -> float:
        """Sum of the link latencies (switch hops, NICs, PCIe) along the route src -> dst."""
        return float(self.link_latency_s[self.path_links(src, dst)].sum())

    def _route_set(self, pairs: np.ndarray, salt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unique link ids, load on each, path latency per pair) for a pair array.

        Cached: large pair arrays (collectives) in a small LRU, since each pins arrays of up to ~10^5 entries;
        small ones (pipeline send/recv, which recur in many subsets) in a larger cache, cleared when full."""
        pairs = np.ascontiguousarray(np.asarray(pairs, dtype=np.int64).reshape(-1, 2))
        key = _pairs_key(pairs, salt)
        small = len(pairs) <= _SMALL_PAIRS
        hit = self._small_routes.get(key) if small else self._routes.get(key)
        if hit is not None:
            if not small:
                self._routes.move_to_end(key)
            return hit
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= self.gpus):
            raise ScenarioError("pairs", f"GPU indices must lie in 0..{self.gpus - 1}")
        result = self._computed_route_set(pairs, int(salt))
        if small:
            # few pairs (pipeline send/recv): small arrays, kept in a large cache so that the same pairs always
            # return the same arrays (the flow model keys its rate solutions on route identity)
            if len(self._small_routes) >= _SMALL_CACHE_ENTRIES:
                self._small_routes.clear()
            self._small_routes[key] = result
            return result
        self._routes[key] = result
        if len(self._routes) > _ROUTE_CACHE_ENTRIES:
            self._routes.popitem(last=False)
        return result

    @property
    def _hashed_flows(self) -> int:
        """Flows a pair's bytes are hashed over: ``flows_per_pair`` under ECMP, else 1 (spraying is their limit)."""
        return self.flows_per_pair if self.routing == "ecmp" else 1

    def _computed_route_set(self, pairs: np.ndarray, salt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        router = self.router
        try:
            if isinstance(router, Router):
                flows = self._hashed_flows
                if flows > 1:
                    sets = [router.route_set(pairs[:, 0], pairs[:, 1], salt * flows + f, False, self.links)
                            for f in range(flows)]
                    links, load = _mean_over_flows([r[0] for r in sets], [r[1] for r in sets], flows)
                    return links, load, np.max([r[2] for r in sets], axis=0)
                return router.route_set(pairs[:, 0], pairs[:, 1], salt, self.routing == "adaptive", self.links)
            return self._paths_route_set(pairs, salt)
        except KeyError as err:
            raise ScenarioError(f"topology {self.name}", str(err.args[0])) from None

    def _paths_route_set(self, pairs: np.ndarray, salt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Route set from one path per pair (routers without a vectorised route set: the torus)."""
        path = self.router.path
        paths = [path(s, d, salt) for s, d in pairs.tolist()]
        if paths:
            lengths = np.fromiter((len(p) for p in paths), dtype=np.int64, count=len(paths))
            flat = np.concatenate(paths) if lengths.sum() else np.zeros(0, dtype=np.int64)
        else:
            lengths, flat = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        links, counts = np.unique(flat, return_counts=True)
        owner = np.repeat(np.arange(len(paths)), lengths)
        latency_s = np.bincount(owner, weights=self.link_latency_s[flat], minlength=len(paths))
        return links, counts, latency_s

    def links_of(self, pairs: np.ndarray, salt: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """For many (src, dst) pairs: the unique link ids they use and the load each link carries.

        The load of a link is the number of pairs whose traffic crosses it, counting each pair by the fraction
        of its bytes on the link: under ``ecmp`` a whole number (each pair takes one hashed path); under
        ``adaptive`` a pair's bytes are sprayed over all its shortest paths, so a core link carries fractions
        (a flow between two leaves of a two-tier fat-tree puts 1/spines on every uplink), while the access
        links GPU -> PCIe -> NIC -> leaf carry whole pairs. A class of transfers of S bytes each thus puts
        S x load bytes on each link. Cached per pair array (and salt).
        """
        links, counts, _ = self._route_set(pairs, salt)
        return links, counts

    def links_of_parts(self, pairs: np.ndarray, part: np.ndarray, salt: int = 0
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``links_of`` kept apart per part, for all parts in one pass: (part of each entry, link id, load), sorted
        by part then link; ``part`` gives each pair's part id. Not cached (callers keep what they reuse)."""
        pairs = np.ascontiguousarray(np.asarray(pairs, dtype=np.int64).reshape(-1, 2))
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= self.gpus):
            raise ScenarioError("pairs", f"GPU indices must lie in 0..{self.gpus - 1}")
        router = self.router
        try:
            if isinstance(router, Router):
                return self._parts_route_set(router, pairs, part, int(salt), True)
            paths = [router.path(s, d, int(salt)) for s, d in pairs.tolist()]
        except KeyError as err:
            raise ScenarioError(f"topology {self.name}", str(err.args[0])) from None
        owner = np.repeat(np.arange(len(paths)), [len(p) for p in paths])
        flat = np.concatenate(paths).astype(np.int64) if paths else np.zeros(0, dtype=np.int64)
        return loads_by_part(part, owner, flat, np.ones(len(flat)), self.links)

    def _parts_route_set(self, router: Router, pairs: np.ndarray, part: np.ndarray, salt: int, core: bool
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(part, link id, load) of ``Router.route_set`` by part, over the pair's hashed flows (``flows_per_pair``)."""
        flows = self._hashed_flows
        if flows == 1:
            return router.route_set(pairs[:, 0], pairs[:, 1], salt, self.routing == "adaptive", self.links,
                                    part=part, core=core)[:3]
        sets = [router.route_set(pairs[:, 0], pairs[:, 1], salt * flows + f, False, self.links, part=part,
                                 core=core)[:3] for f in range(flows)]
        key, load = _mean_over_flows([r[0].astype(np.int64) * self.links + r[1] for r in sets], [r[2] for r in sets],
                                     flows)
        return key // self.links, key % self.links, load

    def access_links_of_parts(self, pairs: np.ndarray, part: np.ndarray, salt: int = 0
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``links_of_parts`` of the links each route takes whatever its path through the network: a direct GPU-GPU
        link, or the access segments (from the GPU up to its first network switch, and down from the last).
        Much cheaper than whole routes when the core is sprayed; None on fabrics routed without access segments
        (the torus)."""
        pairs = np.ascontiguousarray(np.asarray(pairs, dtype=np.int64).reshape(-1, 2))
        router = self.router
        if not isinstance(router, Router):
            return None
        try:
            return self._parts_route_set(router, pairs, part, int(salt), False)
        except KeyError as err:
            raise ScenarioError(f"topology {self.name}", str(err.args[0])) from None

    def pair_latencies_s(self, pairs: np.ndarray, salt: int = 0) -> np.ndarray:
        """Path latency of each (src, dst) pair, in pair order: its ``path_latency_s`` under ``ecmp``; under
        ``adaptive`` the slowest of the sprayed paths (the same on fabrics whose switches have one latency).

        The latencies of a route set already made, else found without spraying loads (``Router.latencies``) and
        kept in a cache of their own."""
        pairs = np.ascontiguousarray(np.asarray(pairs, dtype=np.int64).reshape(-1, 2))
        key = _pairs_key(pairs, salt)
        hit = self._small_routes.get(key) if len(pairs) <= _SMALL_PAIRS else self._routes.get(key)
        if hit is not None:
            return hit[2]
        router = self.router
        if not isinstance(router, Router) or self.routing != "adaptive":
            return self._route_set(pairs, salt)[2]
        latency_s = self._latencies.get(key)
        if latency_s is None:
            if len(pairs) and (pairs.min() < 0 or pairs.max() >= self.gpus):
                raise ScenarioError("pairs", f"GPU indices must lie in 0..{self.gpus - 1}")
            try:
                latency_s = router.latencies(pairs[:, 0], pairs[:, 1], int(salt), True)
            except KeyError as err:
                raise ScenarioError(f"topology {self.name}", str(err.args[0])) from None
            self._latencies[key] = latency_s
            self._latency_values += len(latency_s)
            while len(self._latencies) > 1 and (len(self._latencies) > _LATENCY_CACHE_ENTRIES
                                                or self._latency_values > _LATENCY_CACHE_VALUES):
                self._latency_values -= len(self._latencies.popitem(last=False)[1])
        else:
            self._latencies.move_to_end(key)
        return latency_s

    def route_set_of(self, pairs: np.ndarray, salt: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``links_of`` and ``pair_latencies_s`` at once, from the pairs' route set (made and cached if it is not
        yet): one cache look-up (a large pair array is hashed once, not once per question), and for pairs that are
        routed anyway no latency-only pass first. The same arrays: ``pair_latencies_s`` returns a cached route set's
        own latencies."""
        return self._route_set(pairs, salt)

    def bottleneck_tier(self, pairs: np.ndarray) -> str | None:
        """The tier (``classes.tier``) of the link that bounds ``pairs`` sending at once on the idle fabric: the link
        carrying the most of them per byte/s of capacity (their max-min bottleneck). Ties (within 1e-6) go to the
        tier closest to the GPU: on a non-blocking fabric the injection link, not the spine that matches it. None
        when no pair leaves its GPU."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        if not len(pairs):
            return None
        links, counts = self.links_of(pairs)
        load = np.asarray(counts, dtype=float) / self.link_bytes_per_s[links]
        binding = links[load >= load.max() * (1 - 1e-6)]
        # each class once, in the order the binding links meet them, by codes: no list of every link's class name
        # (1.57 million at 131,072 GPUs) made and walked for up to 1.3 million binding links
        names, codes = self.link_class_codes
        found, first = np.unique(codes[binding], return_index=True)
        return min((classes.tier(names[k]) for k in found[np.argsort(first)].tolist()), key=classes.tier_order)

    def summary(self) -> dict:
        """Counts of nodes per role and directed links per kind (for reports and tests)."""
        roles: dict[str, int] = {}
        for role in self.tables.role:
            roles[role] = roles.get(role, 0) + 1
        kinds: dict[str, int] = {}
        for kind in self.link_kind:
            kinds[kind] = kinds.get(kind, 0) + 1
        tiers: dict[str, int] = {}
        for link_class in self.link_class:
            tiers[link_class] = tiers.get(link_class, 0) + 1
        return {"name": self.name, "gpus": self.gpus, "nodes": roles, "links": kinds, "link_classes": tiers,
                "routing": self.routing}


def fabric_from_graph(name: str, graph: nx.DiGraph, gpu_nodes: list, gpus_per_node: int) -> Fabric:
    """Wrap a graph whose edges carry bytes_per_s, latency_s, kind and link_id 0..E-1 into a Fabric (the graph is
    the fabric's ``graph``).

    The routing policy is the graph's ``routing`` attribute when set (builders set it), else the default for
    its switch-to-switch links (``routing.default_routing``: adaptive on InfiniBand, else ECMP).
    """
    return fabric_from_tables(name, FabricTables.of_graph(graph, gpu_nodes), gpus_per_node)


def fabric_from_tables(name: str, tables: FabricTables, gpus_per_node: int) -> Fabric:
    """A Fabric over ``tables`` (``fabric_from_graph``, without a graph)."""
    routing = tables.graph_attrs.get("routing") or default_routing(
        kind for kind, u, v in zip(tables.kind, tables.src.tolist(), tables.dst.tolist(), strict=True)
        if tables.role[u] in NETWORK_SWITCH_ROLES and tables.role[v] in NETWORK_SWITCH_ROLES)
    assert routing in ROUTING_POLICIES, routing
    return Fabric(name, tables, tables.gpu_nodes, gpus_per_node, tables.bytes_per_s, tables.latency_s, tables.kind,
                  routing, flows_per_pair=int(tables.graph_attrs.get("flows_per_pair", 1)))


def sharp_capable(fabric: Fabric) -> bool:
    """Whether a fabric's switches can reduce in the network: it has scale-out switches (leaf, spine, core or a
    file's switch) and every link into or out of them is InfiniBand (``ib``). Ethernet/RoCE switches, NVSwitch
    alone and GPU-routed tori cannot (NVLink SHARP inside a node is the GPU's ``nvls``)."""
    tables = fabric.tables
    switch = np.array([role in _SCALE_OUT_ROLES for role in tables.role], dtype=bool)
    touches = switch[tables.src] | switch[tables.dst]
    kinds = np.asarray(fabric.link_kind, dtype=object)[touches]
    return bool(switch.any()) and bool(np.all(kinds == "ib"))


def _resolve_sharp(mode: str, fabric: Fabric, nic: NicSpec) -> bool:
    """``cluster.sharp`` against what the fabric has: True when SHARP is available and allowed."""
    if mode not in SHARP_MODES:
        raise ScenarioError("cluster.sharp", f"expected one of {', '.join(SHARP_MODES)}, got {mode!r}")
    if mode == "off":
        return False
    capable = nic.rate >= SHARP_MIN_NIC_BYTES_PER_S and sharp_capable(fabric)
    if mode == "on" and not capable:
        raise ScenarioError("cluster.sharp", f"on needs InfiniBand switches (NVIDIA Quantum HDR or newer) and "
                            f"NICs of 200 Gb/s or more; {fabric.name} with {nic.name} has no IB SHARP")
    return capable and mode != "off"


def _resolve_file(topology: str) -> Path | None:
    """A topology file: the path as given, or under ./topologies/, with or without its suffix."""
    for candidate in (Path(topology), Path("topologies") / topology):
        for path in (candidate, candidate.with_name(candidate.name + ".yaml"),
                     candidate.with_name(candidate.name + ".graphml")):
            try:
                if path.is_file():
                    return path
            except OSError:  # a name too long for the file system (ENAMETOOLONG) names no file
                continue
    return None


def file_digest(topology: str) -> str | None:
    """sha256 of the fabric file ``topology`` names (as ``build`` resolves it), None for a builtin fabric or a name
    that resolves to no readable file: what a run read from outside its scenario, for the keys of cached results
    (``grid.run_key``), so that an edited file is not answered with the runs of its old content."""
    if topology in builders.BUILDERS:
        return None
    path = _resolve_file(topology)
    if path is None:
        return None
    try:
        status = path.stat()
        return _file_digest(str(path.resolve()), status.st_mtime_ns, status.st_size, status.st_ino,
                            status.st_ctime_ns)
    except OSError:
        return None


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, _mtime_ns: int, _size: int, _inode: int, _ctime_ns: int) -> str:
    """sha256 of a file's first ``MAX_FABRIC_BYTES + 1`` bytes (the loader refuses more), once per file version: a
    grid of 10^4 points names the same file 10^4 times. A version is its modification time, size, inode and
    status-change time: a file of the same size replaced (a script's write-then-rename, a new inode) or rewritten
    and its mtime set back (``touch -r``, ``cp -p``: a new ctime) is another version (round 30)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(inputs.MAX_FABRIC_BYTES + 1))
    return digest.hexdigest()


def build(topology: str, *, gpus: int, gpus_per_node: int, gpu: GpuSpec, nic: NicSpec,
          options: dict | None = None, sharp: str = "off") -> Fabric:
    """A fabric of ``gpus`` GPUs: a builtin name (``BUILTIN``) or a path to a YAML/GraphML fabric file.

    ``sharp`` (``SHARP_MODES``) says whether its switches may reduce in the network (``Fabric.sharp``)."""
    if gpus < 1 or gpus_per_node < 1:
        raise ScenarioError("cluster",
                            f"need at least one GPU and gpus_per_node >= 1 (got {gpus}, {gpus_per_node})")
    if topology in builders.BUILDERS:
        builder = builders.GraphBuilder(topology)
        make = builders.BUILDERS[topology][0]
        make(builder, gpus, gpus_per_node, gpu, nic, fabric_options.parse(topology, options))
        torus_tables = getattr(builder, "torus_tables", None)
        if torus_tables is not None:
            builder.graph_attrs["_torus_tables"] = torus_tables
        fabric = fabric_from_tables(topology, builder.finish(), gpus_per_node)
        fabric.gpu, fabric.nic = gpu, nic
        fabric.sharp = _resolve_sharp(sharp, fabric, nic)
        return fabric
    path = _resolve_file(topology)
    if path is None:
        raise ScenarioError("cluster.topology",
                            f"{quoted(topology)} is neither a builtin fabric ({did_you_mean(topology, BUILTIN)}"
                            f"{', '.join(BUILTIN)}) "
                            "nor a YAML/GraphML file (looked up as given, then under ./topologies/ of the "
                            "current folder, with or without .yaml/.graphml)")
    routing = fabric_options.file_routing(options, path)
    builder, file_gpus_per_node = files.load(path)
    if len(builder.gpu_nodes) != gpus:
        raise ScenarioError(str(path),
                            f"the file has {len(builder.gpu_nodes)} GPUs but the cluster has {gpus} "
                            "(nodes * gpus_per_node)")
    if file_gpus_per_node is not None and file_gpus_per_node != gpus_per_node:
        raise ScenarioError(f"{path}:gpus_per_node", f"{file_gpus_per_node} differs from the cluster's "
                            f"gpus_per_node {gpus_per_node}")
    if routing is not None:
        builder.graph_attrs["routing"] = routing
    fabric = fabric_from_tables(builder.graph_attrs.get("name") or path.stem, builder.finish(), gpus_per_node)
    _check_routes(fabric, str(path))
    fabric.gpu, fabric.nic = gpu, nic
    fabric.sharp = _resolve_sharp(sharp, fabric, nic)
    return fabric


def _check_routes(fabric: Fabric, source: str):
    """Every GPU reaches GPU 0 and back (GPUs are not transit unless gpu_transit: a connected graph can still
    leave a GPU unreachable when its only way out is through another GPU)."""
    for rank in range(1, fabric.gpus):
        for src, dst in ((0, rank), (rank, 0)):
            try:
                fabric.router.path(src, dst)
            except KeyError:
                raise ScenarioError(f"{source}:nodes.{fabric.gpu_nodes[rank]}",
                                    f"no route between GPU {fabric.gpu_nodes[src]} and GPU "
                                    f"{fabric.gpu_nodes[dst]} through switches (GPUs do not forward unless "
                                    "gpu_transit: true)") from None


def from_scenario(scenario) -> Fabric:
    """The fabric of ``scenario.cluster`` (gpu, nic, nodes, gpus_per_node, topology, topology_options, sharp)."""
    c = scenario.cluster
    return build(c.topology, gpus=c.gpus, gpus_per_node=c.gpus_per_node, gpu=c.gpu, nic=c.nic,
                 options=c.topology_options, sharp=c.sharp)


def write_graphml(fabric: Fabric, path: str | Path):
    """Export a fabric as GraphML with unit strings (readable back by ``build``)."""
    import networkx as nx  # loaded by what needs a graph, not by every fabric
    out = nx.DiGraph(name=fabric.name, gpus_per_node=fabric.gpus_per_node,
                     gpu_transit=bool(fabric.graph.graph.get("gpu_transit", False)), routing=fabric.routing)
    uplink_port = fabric.tables.graph_attrs.get("uplink_port_bytes_per_s")
    if uplink_port:   # the rail fat-tree's wide uplink ports, for the bill of materials of the file read back
        out.graph["uplink_port"] = f"{uplink_port:.17g} B/s"
    rank = {node: i for i, node in enumerate(fabric.gpu_nodes)}
    for node, d in fabric.graph.nodes(data=True):
        attrs = {"role": d["role"], "latency": f"{d.get('latency_s', 0.0) * 1e9:.6g} ns"}
        if node in rank:
            attrs["rank"] = rank[node]
        out.add_node(str(node), **attrs)
    for u, v, d in fabric.graph.edges(data=True):
        entered = fabric.graph.nodes[v].get("latency_s", 0.0)
        out.add_edge(str(u), str(v), bandwidth=f"{d['bytes_per_s']:.17g} B/s",
                     latency=f"{(d['latency_s'] - entered) * 1e9:.6g} ns", kind=d["kind"],
                     **{"class": fabric.link_class[d["link_id"]]})
    nx.write_graphml(out, str(path))
