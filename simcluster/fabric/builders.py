"""Builders of the builtin fabrics: HGX/DGX servers, rail-optimised fat-tree, leaf-spine, k-ary fat-tree,
torus.

Every builder fills a ``GraphBuilder`` (a networkx DiGraph with SI attributes) and returns it;
``topology.build`` wraps the result in a ``Fabric``. Conventions shared with imported fabrics
(docs/topologies.md):
- a cable is two directed edges, one per direction, each with its own link id and the cable's bytes/s;
- the latency of a directed link is the traversal latency of the node it enters (switch hop, NIC, PCIe
  switch), so the latency of a path is the sum over its links and nothing is counted twice;
- parallel cables between the same two nodes are one edge with the summed bandwidth (a trunk).
The Clos builders also set the fabric's routing policy (graph attribute ``routing``): the ``routing`` option, or
by default adaptive spraying on InfiniBand and hash ECMP on Ethernet (``routing.default_routing``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from simcluster.core.errors import ScenarioError
from simcluster.fabric.routing import default_routing
from simcluster.fabric.tables import FabricTables, attr_column
from simcluster.spec import hardware
from simcluster.spec.fabric_options import BUILTIN_OPTIONS, MAX_SWITCH_PORTS, PROTOCOL_KIND
from simcluster.spec.hardware import GpuSpec, NicSpec

if TYPE_CHECKING:
    import networkx as nx

# Switch radix (ports per switch) of the builtin fabrics, at the NIC's line rate.
# NVIDIA Quantum-2 QM9700 datasheet: 64 ports of NDR 400 Gb/s InfiniBand.
QUANTUM2_NDR_PORTS = 64
# NVIDIA Quantum QM8700 datasheet: 40 ports of HDR 200 Gb/s InfiniBand.
QUANTUM_HDR_PORTS = 40
# 25.6 Tb/s Ethernet switch ASICs (Broadcom Tomahawk 4, NVIDIA Spectrum-3/4 class): 64 ports of 400 GbE.
ETHERNET_400G_PORTS = 64
NDR_BYTES_PER_S = 400e9 / 8
# A k-ary fat-tree given k may hold at most this many times the cluster's GPUs (plus a few): its switches and
# cables grow as k^2 and k^3 whatever the GPU count.
MAX_FAT_TREE_HOST_RATIO = 8

# Torus defaults, TPU-v4-like: an ICI link carries 400 Gb/s per direction (Jouppi et al. 2023, "TPU v4: an
# optically reconfigurable supercomputer", ISCA; via glennklockwood.com/garden/processors/TPUv4), and a hop
# between neighbouring chips costs well under a microsecond (same paper; order of magnitude, R).
TORUS_LINK_BYTES_PER_S = 400e9 / 8
TORUS_HOP_LATENCY_S = 0.5e-6

PROTOCOL_SWITCH = {"infiniband": "infiniband-ndr", "ethernet": "ethernet-roce"}


class GraphBuilder:
    """Accumulates nodes and directed links into ``FabricTables`` (``finish``); link ids in creation order.

    Nodes and links are added one at a time by name (``node``, ``link``, ``cable``: fabric files) or in bulk by node
    index (``nodes``, ``links``, ``cables``: the builtin builders, numpy arrays for a whole tier at once). A second
    link u -> v adds its bytes/s to the first (a trunk) and takes no id of its own."""

    def __init__(self, name: str):
        self.graph_attrs: dict = {"name": name}
        self.gpu_nodes: list = []
        self._added_gpus = self.gpu_nodes   # GPUs in the order added (a file may rank them otherwise)
        self._gpu_index: list = []
        self._names: list = []
        self._roles: list = []
        self._latency: list = []        # arrays of node latencies, in node order
        self._attrs: dict = {}           # attribute -> [(node indices, values)], later entries win
        self._index: dict = {}
        self._chunks: list = []          # (src, dst, bytes/s, kind code, extra latency, own class or None) arrays
        self._pending: list = []         # single links not yet in a chunk
        self._kinds: list = []
        self._tables: FabricTables | None = None

    # ---- nodes ----------------------------------------------------------------------------------------------
    @property
    def node_count(self) -> int:
        return len(self._names)

    def nodes(self, names: list, role, latency_s=0.0, **attrs) -> np.ndarray:
        """Add nodes (``role`` one for all or one per node; ``latency_s`` and each attribute a scalar or one value
        per node); returns their node indices. GPUs are ranked in the order they are added."""
        first, count = len(self._names), len(names)
        indices = np.arange(first, first + count, dtype=np.int64)
        self._names.extend(names)
        roles = [role] * count if isinstance(role, str) else list(role)
        self._roles.extend(roles)
        self._latency.append(np.broadcast_to(np.asarray(latency_s, dtype=float), (count,)))
        for key, values in attrs.items():
            self.set_attr(indices, key, values)
        if isinstance(role, str):
            if role == "gpu":
                self._added_gpus.extend(names)
                self._gpu_index.append(indices)
        else:
            is_gpu = np.array([r == "gpu" for r in roles], dtype=bool)
            self._added_gpus.extend(name for name, g in zip(names, is_gpu.tolist(), strict=True) if g)
            self._gpu_index.append(indices[is_gpu])
        self._tables = None
        return indices

    def node(self, name, role: str, latency_s: float = 0.0, **attrs):
        """Add one node; returns its name."""
        self.nodes([name], role, latency_s, **attrs)
        return name

    def set_attr(self, indices, key: str, values) -> None:
        """Set attribute ``key`` of the nodes at ``indices`` (a scalar or one value each)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if np.ndim(values) == 0:
            values = [values] * len(indices)
        self._attrs.setdefault(key, []).append((indices, list(values) if not isinstance(values, np.ndarray)
                                                else values))
        self._tables = None

    def index_of(self, name) -> int:
        """Node index of ``name`` (KeyError when absent)."""
        if len(self._index) < len(self._names):
            self._index.update((self._names[i], i) for i in range(len(self._index), len(self._names)))
        return self._index[name]

    def __contains__(self, name) -> bool:
        try:
            self.index_of(name)
        except KeyError:
            return False
        return True

    # ---- links ----------------------------------------------------------------------------------------------
    def _kind_code(self, kind: str) -> int:
        if kind not in self._kinds:
            self._kinds.append(kind)
        return self._kinds.index(kind)

    def _flush(self):
        if self._pending:
            src, dst, rate, kind, extra, own = zip(*self._pending, strict=True)
            self._chunks.append((np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64),
                                 np.array(rate, dtype=float), np.array(kind, dtype=np.int64),
                                 np.array(extra, dtype=float), np.array(own, dtype=object)))
            self._pending = []

    def links(self, src, dst, bytes_per_s, kind, extra_latency_s=0.0, link_class: str | None = None):
        """Directed links src[i] -> dst[i] (node indices), in that order; entering a node costs its latency.
        ``kind``: one for all, or one per link."""
        src, dst = np.asarray(src, dtype=np.int64).reshape(-1), np.asarray(dst, dtype=np.int64).reshape(-1)
        self._flush()
        count = len(src)
        if isinstance(kind, str):
            codes = np.full(count, self._kind_code(kind), dtype=np.int64)
        else:
            names, inverse = np.unique(np.asarray(kind, dtype=str), return_inverse=True)
            codes = np.array([self._kind_code(str(k)) for k in names], dtype=np.int64)[inverse]
        self._chunks.append((src, dst, np.broadcast_to(np.asarray(bytes_per_s, dtype=float), (count,)), codes,
                             np.broadcast_to(np.asarray(extra_latency_s, dtype=float), (count,)),
                             None if link_class is None else np.full(count, link_class, dtype=object)))
        self._tables = None

    def cables(self, u, v, bytes_per_s, kind: str, extra_latency_s=0.0, link_class: str | None = None):
        """Full-duplex cables u[i] <-> v[i]: links u[i] -> v[i] then v[i] -> u[i], cable after cable."""
        u, v = np.asarray(u, dtype=np.int64).reshape(-1), np.asarray(v, dtype=np.int64).reshape(-1)
        rate = np.broadcast_to(np.asarray(bytes_per_s, dtype=float), u.shape)
        self.links(np.column_stack((u, v)).ravel(), np.column_stack((v, u)).ravel(), np.repeat(rate, 2), kind,
                   extra_latency_s, link_class)

    def link(self, u, v, bytes_per_s: float, kind: str, extra_latency_s: float = 0.0, link_class: str | None = None):
        """One directed link u -> v (node names); entering v costs v's traversal latency. A second link u -> v adds
        capacity. ``link_class`` overrides the class inferred from the ends' roles (``classes.infer``)."""
        self._pending.append((self.index_of(u), self.index_of(v), bytes_per_s, self._kind_code(kind),
                              extra_latency_s, link_class))
        self._tables = None

    def cable(self, u, v, bytes_per_s: float, kind: str, extra_latency_s: float = 0.0, link_class: str | None = None):
        """A full-duplex cable: two directed links of ``bytes_per_s`` each."""
        self.link(u, v, bytes_per_s, kind, extra_latency_s, link_class)
        self.link(v, u, bytes_per_s, kind, extra_latency_s, link_class)

    # ---- the result -----------------------------------------------------------------------------------------
    def finish(self) -> FabricTables:
        """The fabric's tables: trunks merged (a repeated u -> v adds its bytes/s to the first and takes no id)."""
        if self._tables is not None:
            return self._tables
        self._flush()
        n = len(self._names)
        chunks = self._chunks
        src = _cat([c[0] for c in chunks], np.int64)
        dst = _cat([c[1] for c in chunks], np.int64)
        rate = _cat([c[2] for c in chunks], float)
        kind = _cat([c[3] for c in chunks], np.int64)
        extra = _cat([c[4] for c in chunks], float)
        own = None
        if any(c[5] is not None for c in chunks):
            own = np.concatenate([c[5] if c[5] is not None else np.full(len(c[0]), None, dtype=object)
                                  for c in chunks])
        key = src * n + dst
        unique, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        if len(unique) < len(key):   # trunks: ids by first appearance, bytes/s summed in creation order
            order = np.argsort(first, kind="stable")
            new_id = np.empty(len(unique), dtype=np.int64)
            new_id[order] = np.arange(len(unique))
            link_id = new_id[inverse]
            keep = first[order]
            rate = np.bincount(link_id, weights=rate, minlength=len(unique))
            src, dst, kind, extra = src[keep], dst[keep], kind[keep], extra[keep]
            own = None if own is None else own[keep]
        latency = _cat(self._latency, float)
        own_class = {} if own is None else {int(k): c for k, c in enumerate(own.tolist()) if c}
        kinds = self._kinds
        attrs = {name: attr_column(entries, n) for name, entries in self._attrs.items()}
        if self.gpu_nodes is self._added_gpus:   # GPUs ranked in the order they were added
            gpu_index = _cat(self._gpu_index, np.int64)
        else:                                    # a file's own rank order
            gpu_index = np.array([self.index_of(g) for g in self.gpu_nodes], dtype=np.int64)
        # the kinds in the order the links first name them, and each link's index in them (``Fabric.link_kind_codes``)
        named, first = np.unique(kind, return_index=True)
        named = named[np.argsort(first)]
        code = np.zeros(len(kinds), dtype=np.int64)
        code[named] = np.arange(len(named))
        self._tables = FabricTables(list(self._names), list(self._roles), latency, attrs, src, dst,
                                    np.ascontiguousarray(rate, dtype=float), latency[dst] + extra,
                                    np.array(kinds, dtype=object)[kind].tolist(), own_class, self.graph_attrs,
                                    gpu_index, kind_codes=([kinds[k] for k in named.tolist()], code[kind]))
        return self._tables

    @property
    def graph(self) -> nx.DiGraph:
        """The NetworkX graph of what has been added so far (``FabricTables.graph``)."""
        return self.finish().graph


def _cat(arrays: list, dtype) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype=dtype)


@dataclass(frozen=True)
class Servers:
    """Node indices of the servers' parts, in GPU order (pcie and nic empty without NICs); ``nvswitch`` per server
    (-1: none)."""

    gpu: np.ndarray
    pcie: np.ndarray
    nic: np.ndarray
    nvswitch: np.ndarray
    server: np.ndarray   # the server of each GPU


def add_servers(b: GraphBuilder, gpus: int, gpus_per_node: int, gpu: GpuSpec, nic: NicSpec | None) -> Servers:
    """HGX/DGX-style servers: GPUs on one NVSwitch domain, each GPU -> PCIe switch -> its own NIC.

    The NVSwitch chips of a node (four on HGX H100) act as one non-blocking switch whose port per GPU runs at
    ``gpu.nvlink_bandwidth`` per direction. A GPU without NVLink (``nvlink_generation: 0``, e.g. MI300X
    Infinity Fabric) gets a full mesh instead, its scale-up bandwidth split evenly over the peer links.
    Servers of equal size are added in one pass (nodes and links in the order of a server-by-server walk).
    """
    full, rest = divmod(gpus, gpus_per_node)
    parts = [_server_block(b, 0, full, gpus_per_node, gpus_per_node, gpu, nic)] if full else []
    if rest:
        parts.append(_server_block(b, full, 1, rest, gpus_per_node, gpu, nic))
    return Servers(*(np.concatenate([getattr(p, f) for p in parts]) for f in Servers.__dataclass_fields__))


def _server_block(b: GraphBuilder, first: int, count: int, size: int, gpus_per_node: int, gpu: GpuSpec,
                  nic: NicSpec | None) -> Servers:
    """``count`` servers of ``size`` GPUs each, numbered from ``first``: one server's nodes and links as a template,
    repeated."""
    nvswitch = size > 1 and gpu.nvlink_generation > 0
    suffixes = [f"gpu{i}" for i in range(size)] + (["nvswitch"] if nvswitch else [])
    roles = ["gpu"] * size + (["nvswitch"] if nvswitch else [])
    latency = [0.0] * size + ([hardware.switch("nvswitch").latency] if nvswitch else [])
    if nic is not None:
        host = hardware.pcie(nic.host)
        for i in range(size):
            suffixes += [f"pcie{i}", f"nic{i}"]
            roles += ["pcie", "nic"]
            latency += [host.latency, nic.latency]
    width = len(suffixes)
    servers = np.arange(first, first + count, dtype=np.int64)
    names = [f"n{s}/{suffix}" for s in range(first, first + count) for suffix in suffixes]
    base = b.nodes(names, roles * count, np.tile(latency, count), server=np.repeat(servers, width))[::width]
    local = np.arange(size)
    gpu_nodes = (base[:, None] + local).ravel()
    b.set_attr(gpu_nodes, "rank", first * gpus_per_node + np.arange(count * size))
    # one server's cables (ends as offsets in its node block), in the order a server-by-server walk adds them
    cables: list[tuple] = []           # (u, v, bytes/s, kind) arrays
    if nvswitch:
        cables.append((local, np.full(size, size), gpu.nvlink_bandwidth, "nvlink"))
    elif size > 1:
        i, j = np.triu_indices(size, 1)
        cables.append((i, j, gpu.nvlink_bandwidth / (gpus_per_node - 1), "nvlink"))
    offset = size + int(nvswitch)
    if nic is not None:   # per GPU: its PCIe cable, then the PCIe switch's cable to the NIC
        pcie_local = offset + 2 * local
        cables.append((np.column_stack((local, pcie_local)).ravel(),
                       np.column_stack((pcie_local, pcie_local + 1)).ravel(), host.bandwidth, "pcie"))
    if cables:
        u = np.concatenate([c[0] for c in cables])
        v = np.concatenate([c[1] for c in cables])
        rate = np.concatenate([np.full(len(c[0]), c[2]) for c in cables])
        kinds = np.concatenate([np.full(len(c[0]), c[3]) for c in cables])
        src = np.column_stack((u, v)).ravel()          # a cable: u -> v, then v -> u
        dst = np.column_stack((v, u)).ravel()
        b.links((base[:, None] + src).ravel(), (base[:, None] + dst).ravel(), np.tile(np.repeat(rate, 2), count),
                np.tile(np.repeat(kinds, 2), count))
    nvs = base + size if nvswitch else np.full(count, -1, dtype=np.int64)
    pcie = card = np.zeros(0, dtype=np.int64)
    if nic is not None:
        pcie = (base[:, None] + offset + 2 * local).ravel()
        card = pcie + 1
    return Servers(gpu_nodes, pcie, card, nvs, np.repeat(servers, size))


def nvswitch_node(b: GraphBuilder, gpus: int, gpus_per_node: int, gpu: GpuSpec, nic: NicSpec, options: dict):
    if gpus > gpus_per_node:
        raise ScenarioError("cluster.topology",
                            f"nvswitch-node is one node of {gpus_per_node} GPUs; {gpus} GPUs "
                            "need a scale-out fabric (rail-fat-tree, leaf-spine, fat-tree)")
    add_servers(b, gpus, gpus_per_node, gpu, None)


def _default_radix(nic: NicSpec, protocol: str) -> int:
    if protocol == "ethernet":
        return ETHERNET_400G_PORTS
    return QUANTUM2_NDR_PORTS if nic.rate >= NDR_BYTES_PER_S else QUANTUM_HDR_PORTS


def _set_routing(b: GraphBuilder, kind: str, options: dict):
    """Routing policy of a Clos fabric whose switches are joined by links of ``kind``, and the flows a pair's bytes
    are hashed over under ECMP (``flows_per_pair``, ``topology.Fabric``)."""
    b.graph_attrs["routing"] = options.get("routing") or default_routing([kind])
    if "flows_per_pair" in options:
        if options["flows_per_pair"] > 1 and b.graph_attrs["routing"] != "ecmp":
            raise ScenarioError("cluster.topology_options.flows_per_pair", "hashed flows need routing: ecmp (got "
                                f"{b.graph_attrs['routing']}, which spreads a pair's bytes already)")
        b.graph_attrs["flows_per_pair"] = int(options["flows_per_pair"])


def _uplink_bytes_per_s(hosts: int, rate: float, ratio: float, spine_count: int) -> float:
    """Bytes/s of each of a leaf's ``spine_count`` uplink cables when they carry its down capacity (``hosts`` links
    of ``rate``) divided by ``ratio``: hosts x rate / (ratio x spines), a trunk when that exceeds one port
    (``leaf_spine``, ``rail_fat_tree``)."""
    if spine_count > MAX_SWITCH_PORTS:
        raise ScenarioError("cluster.topology_options", f"{spine_count} spines (hosts_per_leaf / oversubscription) "
                            f"exceed the {MAX_SWITCH_PORTS} ports a leaf switch can have")
    return hosts * rate / (ratio * spine_count)


def rail_fat_tree(b: GraphBuilder, gpus: int, gpus_per_node: int, gpu: GpuSpec, nic: NicSpec, options: dict):
    """Rail-optimised, non-blocking fat-tree (NVIDIA DGX SuperPOD reference architecture).

    GPU r of every server plugs into rail r; a rail's leaf switch takes the NICs of ``radix/2`` servers (one
    scalable unit) on its down ports and uses its other half for uplinks. ``radix`` counts ports at the NIC's rate.
    A leaf's uplink capacity equals its down capacity (non-blocking), over ``spines`` cables of
    radix/2 x rate / spines each (``spines`` divides radix/2; default radix/2: one NIC-rate cable a spine; fewer
    make each uplink wider than a NIC link, as a switch whose ports are split into two NIC links downwards and kept
    whole upwards: ``spines: radix/4`` gives uplinks of twice the NIC rate). A switch above the leaves has the leaf's
    port capacity, so it takes ``radix x spines / (radix/2)`` uplink cables (``fan``; radix by default).
    Two tiers: every leaf has one cable to each of ``min(spines, ceil(servers x spines / (radix/2)))`` spines
    (the uplink capacity the servers use); this holds up to ``fan`` leaves (2,048 NDR GPUs by default). Three tiers:
    pods of ``spines`` leaves with ``spines`` aggregation switches each (role spine, 1:1 down to up), aggregation
    switch i of every pod wired to core group i of ``spines`` cores (Al-Fares et al. 2008 wiring), up to
    ``fan`` pods (65,536 NDR GPUs by default). Routing: adaptive by default (InfiniBand), as in DGX SuperPOD
    fabrics of Quantum-2 switches.
    """
    protocol = options.get("protocol", "infiniband")
    kind, switch = PROTOCOL_KIND[protocol], hardware.switch(PROTOCOL_SWITCH[protocol]).latency
    _set_routing(b, kind, options)
    radix = int(options.get("radix", _default_radix(nic, protocol)))
    down = radix // 2
    spine_count = int(options.get("spines", down))
    if not 1 <= spine_count <= down:
        raise ScenarioError("cluster.topology_options.spines", f"must be from 1 to radix/2 = {down} (a leaf's "
                            f"uplinks carry its {down} NIC links' capacity), got {spine_count}")
    if down % spine_count:   # an uplink port is a whole number of NIC-rate lanes (a breakout splits one in 2 or 4)
        raise ScenarioError("cluster.topology_options.spines", f"must divide radix/2 = {down} (each uplink "
                            f"{down} / spines NIC links wide), got {spine_count}")
    uplink = nic.rate if spine_count == down else _uplink_bytes_per_s(down, nic.rate, 1.0, spine_count)
    if spine_count < down:   # the bill of materials counts such an uplink as one cable (fabric/bom.py)
        b.graph_attrs["uplink_port_bytes_per_s"] = uplink
    fan = radix * spine_count // down   # uplink-rate ports of a switch above the leaves
    servers = add_servers(b, gpus, gpus_per_node, gpu, nic)
    server_count = math.ceil(gpus / gpus_per_node)
    groups = math.ceil(server_count / down)
    rails = min(gpus_per_node, gpus)
    group, rail = np.divmod(np.arange(groups * rails), rails)
    leaves = b.nodes([f"leaf/g{j}/r{r}" for j in range(groups) for r in range(rails)], "leaf", switch,
                     rail=rail)   # leaves[j * rails + r]: rail r of group j
    g = np.arange(gpus)
    b.cables(servers.nic, leaves[(g // gpus_per_node) // down * rails + g % gpus_per_node], nic.rate, kind)
    tiers = int(options.get("tiers", 2 if len(leaves) <= fan else 3))
    if tiers == 2:
        if len(leaves) > fan:
            raise ScenarioError("cluster.topology_options.tiers",
                                f"{len(leaves)} leaves exceed a two-tier fat-tree "
                                f"of radix {radix} with {spine_count} spines (at most {fan} leaves); use tiers: 3")
        used = min(spine_count, math.ceil(server_count * spine_count / down))
        spines = b.nodes([f"spine/{s}" for s in range(used)], "spine", switch)
        b.cables(np.repeat(leaves, len(spines)), np.tile(spines, len(leaves)), uplink, kind)
    elif tiers == 3:
        per_pod = per_group = spine_count   # an aggregation switch: spines leaves down, spines cores up (1:1)
        pods = math.ceil(len(leaves) / per_pod)
        if pods > fan:
            raise ScenarioError("cluster.topology",
                                f"{gpus} GPUs need {pods} pods, more than a three-tier fat-tree "
                                f"of radix {radix} with {spine_count} spines holds ({fan}); raise "
                                "topology_options.radix or spines")
        cores = b.nodes([f"core/{i}/{c}" for i in range(per_pod) for c in range(per_group)], "core",
                        switch).reshape(per_pod, per_group)
        for p in range(pods):
            aggs = b.nodes([f"spine/p{p}/{i}" for i in range(per_pod)], "spine", switch, pod=p)
            pod_leaves = leaves[p * per_pod:(p + 1) * per_pod]
            b.cables(np.repeat(pod_leaves, per_pod), np.tile(aggs, len(pod_leaves)), uplink, kind)
            b.cables(np.repeat(aggs, per_group), cores.ravel(), uplink, kind)   # aggregation switch i to core group i
    else:
        raise ScenarioError("cluster.topology_options.tiers", f"must be 2 or 3, got {tiers}")


def leaf_spine(b: GraphBuilder, gpus: int, gpus_per_node: int, gpu: GpuSpec, nic: NicSpec, options: dict):
    """Ethernet/RoCE two-tier Clos, top-of-rack style: consecutive NICs fill a leaf, leaves share the spines.

    A leaf takes ``hosts_per_leaf`` NICs (default half the radix); its uplink capacity is the down capacity
    divided by ``oversubscription`` (default 1), spread over ``spines`` spines (default ceil(hosts_per_leaf /
    oversubscription)), one cable each, so a leaf-spine cable carries hosts_per_leaf * rate /
    (oversubscription * spines) (a trunk when that exceeds one port). Hash ECMP spreads flows over the
    spines (the default on Ethernet; ``protocol: infiniband`` makes it adaptive unless ``routing`` says
    otherwise).

    Pods (``leaves_per_pod``): a third tier, as in Meta's RoCE clusters (Llama 3 Herd of Models 2024, section
    3.3.1: racks of 16 GPUs under one ToR, 192 racks a pod of full bisection through cluster switches, pods joined
    by aggregation switches at 1:7). Consecutive leaves fill pods of ``leaves_per_pod``; each pod is the two-tier
    leaf-spine above with spines of its own (role spine, attribute ``pod``), and spine s of every pod has one
    cable (a trunk) to core s (role core; the planes of Al-Fares et al. 2008), carrying the down capacity of spine
    s in a full pod divided by ``pod_oversubscription`` (default 1). A last, partly filled pod keeps a full pod's
    uplinks: the job then uses part of a pod built whole. Without pods, or when every leaf fits one pod, the
    fabric is the two-tier one.
    """
    protocol = options.get("protocol", "ethernet")
    kind, switch = PROTOCOL_KIND[protocol], hardware.switch(PROTOCOL_SWITCH[protocol]).latency
    _set_routing(b, kind, options)
    radix = int(options.get("radix", _default_radix(nic, protocol)))
    hosts = int(options.get("hosts_per_leaf", radix // 2))
    ratio = float(options.get("oversubscription", 1))
    if hosts < 1 or ratio <= 0:
        raise ScenarioError("cluster.topology_options",
                            "hosts_per_leaf must be >= 1 and oversubscription > 0")
    spine_count = int(options.get("spines", math.ceil(hosts / ratio)))
    uplink_bytes_per_s = _uplink_bytes_per_s(hosts, nic.rate, ratio, spine_count)
    nics = add_servers(b, gpus, gpus_per_node, gpu, nic).nic
    leaf_count = math.ceil(gpus / hosts)
    if "pod_oversubscription" in options and "leaves_per_pod" not in options:
        raise ScenarioError("cluster.topology_options.pod_oversubscription", "needs leaves_per_pod (pods to taper)")
    per_pod = int(options.get("leaves_per_pod", leaf_count))
    if per_pod >= leaf_count:   # one pod: two tiers
        leaves = b.nodes([f"leaf/{j}" for j in range(leaf_count)], "leaf", switch)
        b.cables(nics, leaves[np.arange(gpus) // hosts], nic.rate, kind)
        spines = b.nodes([f"spine/{s}" for s in range(spine_count)], "spine", switch)
        b.cables(np.repeat(leaves, len(spines)), np.tile(spines, len(leaves)), uplink_bytes_per_s, kind)
        return
    pod_ratio = float(options.get("pod_oversubscription", 1))
    pod_of_leaf = np.arange(leaf_count) // per_pod
    leaves = b.nodes([f"leaf/{j}" for j in range(leaf_count)], "leaf", switch, pod=pod_of_leaf)
    b.cables(nics, leaves[np.arange(gpus) // hosts], nic.rate, kind)
    cores = b.nodes([f"core/{s}" for s in range(spine_count)], "core", switch)
    core_bytes_per_s = per_pod * uplink_bytes_per_s / pod_ratio   # spine s's down capacity in a full pod, tapered
    for p in range(int(pod_of_leaf[-1]) + 1):
        pod_leaves = leaves[pod_of_leaf == p]
        spines = b.nodes([f"spine/p{p}/{s}" for s in range(spine_count)], "spine", switch, pod=p)
        b.cables(np.repeat(pod_leaves, spine_count), np.tile(spines, len(pod_leaves)), uplink_bytes_per_s, kind)
        b.cables(spines, cores, core_bytes_per_s, kind)   # spine s of every pod to core s


def fat_tree(b: GraphBuilder, gpus: int, gpus_per_node: int, gpu: GpuSpec, nic: NicSpec, options: dict):
    """k-ary fat-tree (Al-Fares, Loukissas, Vahdat, SIGCOMM 2008, section 3): k pods of k/2 edge and k/2
    aggregation switches, (k/2)^2 core switches, k^3/4 hosts; every switch has k ports of one link rate.

    Each GPU's NIC is one host, in GPU order; the default k is the smallest even k with k^3/4 >= GPUs.
    Routing: adaptive by default (InfiniBand), hash ECMP with ``protocol: ethernet``.
    """
    protocol = options.get("protocol", "infiniband")
    kind, switch = PROTOCOL_KIND[protocol], hardware.switch(PROTOCOL_SWITCH[protocol]).latency
    _set_routing(b, kind, options)
    k = int(options.get("k", 0)) or next(k for k in range(2, 10_000, 2) if k**3 // 4 >= gpus)
    if k < 2 or k % 2:
        raise ScenarioError("cluster.topology_options.k", f"must be an even number >= 2, got {k}")
    if gpus > k**3 // 4:
        raise ScenarioError("cluster.topology_options.k", f"a {k}-ary fat-tree has {k**3 // 4} hosts, "
                            f"fewer than {gpus} GPUs")
    if k**3 // 4 > MAX_FAT_TREE_HOST_RATIO * gpus + 16:
        raise ScenarioError("cluster.topology_options.k", f"a {k}-ary fat-tree has {k**3 // 4} hosts, more than "
                            f"{MAX_FAT_TREE_HOST_RATIO} times the {gpus} GPUs: choose a smaller k")
    link_bytes_per_s = options.get("link_bytes_per_s", nic.rate)
    half = k // 2
    nics = add_servers(b, gpus, gpus_per_node, gpu, nic).nic
    cores = b.nodes([f"core/{c}" for c in range(half * half)], "core", switch)
    edges = []
    for p in range(k):
        pod_edges = b.nodes([f"leaf/p{p}/{e}" for e in range(half)], "leaf", switch, pod=p)
        aggs = b.nodes([f"spine/p{p}/{a}" for a in range(half)], "spine", switch, pod=p)
        b.cables(np.repeat(pod_edges, half), np.tile(aggs, half), link_bytes_per_s, kind)
        b.cables(np.repeat(aggs, half), cores, link_bytes_per_s, kind)   # aggregation switch a to cores a*half..
        edges.append(pod_edges)
    b.cables(nics, np.concatenate(edges)[np.arange(gpus) // half], min(nic.rate, link_bytes_per_s), kind)


def _near_cube(gpus: int, ndims: int) -> list[int]:
    """Factor ``gpus`` into ``ndims`` factors as equal as possible (largest first)."""
    dims = []
    rest = gpus
    for left in range(ndims, 0, -1):
        target = round(rest ** (1 / left))
        factor = next(f for f in sorted(range(1, rest + 1), key=lambda f: (abs(f - target), f))
                      if rest % f == 0) if left > 1 else rest
        dims.append(factor)
        rest //= factor
    return sorted(dims, reverse=True)


def torus(b: GraphBuilder, gpus: int, gpus_per_node: int, gpu: GpuSpec, nic: NicSpec, options: dict):
    """2D/3D torus of GPUs (TPU-like): each GPU links to its two neighbours in every dimension, with
    wraparound.

    GPUs route (``gpu_transit``); GPU i sits at the row-major coordinate of i in ``dims``. A dimension of size
    2 has its two cables between the same pair (one trunk of twice the rate); a dimension of size 1 has none.
    """
    dims = options.get("dims") or _near_cube(gpus, 3)
    dims = [int(d) for d in dims]
    if len(dims) not in (1, 2, 3) or min(dims) < 1 or math.prod(dims) != gpus:
        raise ScenarioError("cluster.topology_options.dims",
                            f"{dims} must list 1 to 3 sizes whose product is the "
                            f"{gpus} GPUs")
    link_bytes_per_s = options.get("link_bytes_per_s", TORUS_LINK_BYTES_PER_S)
    hop_latency_s = options.get("hop_latency_s", TORUS_HOP_LATENCY_S)
    coords = list(np.ndindex(*dims))
    first = b.node_count
    b.nodes([f"gpu{i}" for i in range(gpus)], "gpu", hop_latency_s, rank=np.arange(gpus),
            server=np.arange(gpus) // gpus_per_node, coord=[str(c) for c in coords])
    coord = np.array(coords, dtype=np.int64).reshape(gpus, len(dims))
    strides = np.array([int(np.prod(dims[d + 1:])) for d in range(len(dims))], dtype=np.int64)
    here = np.arange(gpus)[:, None]
    up = here + ((coord + 1) % dims - coord) * strides      # the +1 neighbour in every dimension
    down = here + ((coord - 1) % dims - coord) * strides
    wide = np.array(dims) > 1                               # a dimension of size 1 has no links
    i, j = here.repeat(len(dims), axis=1)[:, wide].ravel(), up[:, wide].ravel()
    b.links(first + np.column_stack((i, j)).ravel(), first + np.column_stack((j, i)).ravel(), link_bytes_per_s,
            "torus")
    b.graph_attrs.update(gpu_transit=True, torus_dims=tuple(dims))
    tables = b.finish()
    n = len(tables.nodes)
    link_of = dict(zip((tables.src * n + tables.dst).tolist(), range(tables.links), strict=True))
    plus = np.full((gpus, len(dims)), -1, dtype=np.int64)
    minus = np.full((gpus, len(dims)), -1, dtype=np.int64)
    for table, ends in ((plus, up), (minus, down)):
        keys = ((first + here) * n + first + ends)[:, wide].ravel().tolist()
        table[:, wide] = np.array([link_of[key] for key in keys], dtype=np.int64).reshape(gpus, int(wide.sum()))
    b.torus_tables = (tuple(dims), plus, minus)


# ---- fabrics debated today: rail-only and multi-plane leaf-spine ------------------------------------------------

def _rail_switches(b: GraphBuilder, rail: int, servers: int, radix: int, switch_latency_s: float, kind: str,
                   rate_bytes_per_s: float) -> list:
    """The switches of one rail: one switch when the rail's servers fit its ports, else a non-blocking two-tier
    Clos of its own: leaves of radix/2 servers, and as few spines as hold the leaves' uplinks
    (ceil(leaves x radix/2 / radix)), each leaf trunked to every spine with an equal share of its radix/2 uplinks.
    Returns the leaf of each server."""
    if servers <= radix:
        switch = b.nodes([f"rail{rail}/switch"], "leaf", switch_latency_s, rail=rail)
        return np.repeat(switch, servers)
    down = radix // 2
    leaves = b.nodes([f"rail{rail}/leaf{j}" for j in range(math.ceil(servers / down))], "leaf", switch_latency_s,
                     rail=rail)
    if len(leaves) > radix:
        raise ScenarioError("cluster.topology", f"{servers} servers need {len(leaves)} leaves per rail, more than "
                            f"a two-tier rail of radix {radix} holds ({radix}); raise topology_options.radix")
    spine_count = math.ceil(len(leaves) * down / radix)
    spines = b.nodes([f"rail{rail}/spine{s}" for s in range(spine_count)], "spine", switch_latency_s, rail=rail)
    b.cables(np.repeat(leaves, spine_count), np.tile(spines, len(leaves)), down * rate_bytes_per_s / spine_count, kind)
    return leaves[np.arange(servers) // down]


def rail_only(b: GraphBuilder, gpus: int, gpus_per_node: int, gpu: GpuSpec, nic: NicSpec, options: dict):
    """Rail-only network (Wang et al. 2023, "How to Build Low-cost Networks for Large Language Models (without
    Sacrificing Performance)", arXiv:2307.12169, section 4): the rail-optimised fabric without its spines. GPU r
    of every server plugs into rail r's switch (or a rail's own two-tier Clos when the servers outnumber the ports);
    rails are not connected to each other. Traffic between GPUs of different rails on different servers first
    crosses the sender's NVSwitch to the GPU of the destination's rail and leaves through that GPU's NIC (NCCL's
    PXN: "PCI x NVLink"), so the scale-up domain does the forwarding the spines did.

    Modelled as NVLink links from each server's NVSwitch to every PCIe switch of the server (class ``nvlink``),
    whose PCIe switches and NICs forward (node attribute ``transit``, ``routing.Router``): a path GPU -> NVSwitch ->
    PCIe -> NIC -> rail, at the NVLink port rate, sharing the peer's PCIe and NIC. The forwarding may happen at the
    sender's server or at the receiver's (equal hop counts; PXN forwards at the sender's). The peer GPU's own
    NVLink port is not loaded by it (a simplification: PXN writes through it). Needs NVLink (an NVSwitch per
    server).
    """
    protocol = options.get("protocol", "infiniband")
    kind, switch_latency_s = PROTOCOL_KIND[protocol], hardware.switch(PROTOCOL_SWITCH[protocol]).latency
    _set_routing(b, kind, options)
    if gpu.nvlink_generation <= 0 and gpus > gpus_per_node:
        raise ScenarioError("cluster.topology", "rail-only forwards between rails over NVSwitch; "
                            f"{gpu.name} has no NVLink switch (use rail-fat-tree)")
    radix = int(options.get("radix", _default_radix(nic, protocol)))
    parts = add_servers(b, gpus, gpus_per_node, gpu, nic)
    servers = math.ceil(gpus / gpus_per_node)
    rails = min(gpus_per_node, gpus)
    leaf_of = np.array([_rail_switches(b, r, servers, radix, switch_latency_s, kind, nic.rate) for r in range(rails)],
                       dtype=np.int64)
    g = np.arange(gpus)
    b.cables(parts.nic, leaf_of[g % gpus_per_node, g // gpus_per_node], nic.rate, kind)
    b.set_attr(np.column_stack((parts.pcie, parts.nic)).ravel(), "transit", True)
    sizes = np.bincount(parts.server)
    many = (sizes[parts.server] > 1) & (parts.nvswitch[parts.server] >= 0)    # GPUs with an NVSwitch
    b.cables(parts.nvswitch[parts.server[many]], parts.pcie[many], gpu.nvlink_bandwidth, "nvlink", link_class="nvlink")


def multi_plane(b: GraphBuilder, gpus: int, gpus_per_node: int, gpu: GpuSpec, nic: NicSpec, options: dict):
    """Multi-plane leaf-spine: every NIC splits its line rate over ``planes`` ports (default 2), each cabled to a
    leaf of its own plane; the planes are independent two-tier Clos networks of the same shape (as in Alibaba's
    HPN, Qian et al. SIGCOMM 2024, dual-plane; and the multi-plane fat-trees of 800G NICs split into 2 x 400G or
    4 x 200G). Each plane is ``leaf-spine`` at the port rate (rate / planes): ``hosts_per_leaf`` NICs a leaf
    (default half the radix, the radix counted at the plane's port rate: ``planes`` times the ASIC's 400G ports),
    uplinks = downlinks / ``oversubscription``, over as few spines as hold every leaf's uplinks (``spines``,
    default ceil(leaves x uplinks / radix)), each leaf trunked to every spine (a trunk is one link of the summed
    rate: hashing spreads flows over spines, not over the cables of a trunk, an optimistic simplification).
    Routing is adaptive by default whatever the protocol: NCCL sees each port as a NIC and stripes its channels
    over them, so a GPU's traffic splits evenly over the planes (the NIC is where routes fork: node attribute
    ``transit``); the even spread over a plane's spines that comes with it is optimistic for Ethernet's hash ECMP,
    which ``routing: ecmp`` restores (one plane and one spine per flow: pessimistic for a NIC's single flow).
    A leaf failure costs a host 1/planes of its
    bandwidth instead of all of it (not simulated here).
    """
    protocol = options.get("protocol", "ethernet")
    kind, switch_latency_s = PROTOCOL_KIND[protocol], hardware.switch(PROTOCOL_SWITCH[protocol]).latency
    b.graph_attrs["routing"] = options.get("routing") or "adaptive"
    planes = int(options.get("planes", 2))
    port_bytes_per_s = nic.rate / planes
    radix = int(options.get("radix", _default_radix(nic, protocol) * planes))
    hosts = int(options.get("hosts_per_leaf", radix // 2))
    ratio = float(options.get("oversubscription", 1))
    if hosts < 1 or ratio <= 0:
        raise ScenarioError("cluster.topology_options", "hosts_per_leaf must be >= 1 and oversubscription > 0")
    leaf_count = math.ceil(gpus / hosts)
    # as few spines as hold the leaves' uplinks (each leaf trunked to every spine), no more than a leaf has uplinks
    uplinks = math.ceil(hosts / ratio)
    spine_count = int(options.get("spines", min(uplinks, math.ceil(leaf_count * uplinks / radix))))
    if spine_count > MAX_SWITCH_PORTS:
        raise ScenarioError("cluster.topology_options", f"{spine_count} spines per plane exceed the "
                            f"{MAX_SWITCH_PORTS} ports a leaf switch can have")
    uplink_bytes_per_s = hosts * port_bytes_per_s / (ratio * spine_count)
    nics = add_servers(b, gpus, gpus_per_node, gpu, nic).nic
    b.set_attr(nics, "transit", True)   # the NIC chooses the plane: it is where routes fork
    for p in range(planes):
        leaves = b.nodes([f"plane{p}/leaf{j}" for j in range(leaf_count)], "leaf", switch_latency_s, plane=p)
        b.cables(nics, leaves[np.arange(gpus) // hosts], port_bytes_per_s, kind)
        spines = b.nodes([f"plane{p}/spine{s}" for s in range(spine_count)], "spine", switch_latency_s, plane=p)
        b.cables(np.repeat(leaves, spine_count), np.tile(spines, leaf_count), uplink_bytes_per_s, kind)


_MAKERS = {"nvswitch-node": nvswitch_node, "rail-fat-tree": rail_fat_tree, "leaf-spine": leaf_spine,
           "fat-tree": fat_tree, "torus": torus, "rail-only": rail_only, "multi-plane": multi_plane}
# Each builtin fabric's builder and the options it takes (``spec.fabric_options``, which a scenario is checked against).
BUILDERS = {name: (_MAKERS[name], options) for name, options in BUILTIN_OPTIONS.items()}
