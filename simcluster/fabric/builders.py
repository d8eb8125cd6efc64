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

import networkx as nx
import numpy as np

from simcluster.core.errors import ScenarioError
from simcluster.fabric.routing import default_routing
from simcluster.spec import hardware
from simcluster.spec.hardware import GpuSpec, NicSpec

# Switch radix (ports per switch) of the builtin fabrics, at the NIC's line rate.
# NVIDIA Quantum-2 QM9700 datasheet: 64 ports of NDR 400 Gb/s InfiniBand.
QUANTUM2_NDR_PORTS = 64
# NVIDIA Quantum QM8700 datasheet: 40 ports of HDR 200 Gb/s InfiniBand.
QUANTUM_HDR_PORTS = 40
# 25.6 Tb/s Ethernet switch ASICs (Broadcom Tomahawk 4, NVIDIA Spectrum-3/4 class): 64 ports of 400 GbE.
ETHERNET_400G_PORTS = 64
NDR_BYTES_PER_S = 400e9 / 8
# Bound on radix, spines, hosts per leaf and k given as options: the largest switch ASICs have 512 ports
# (Broadcom Tomahawk 5, 51.2 Tb/s as 512 x 100 GbE). It also bounds the size of the graph a small option can ask for.
MAX_SWITCH_PORTS = 512
# A k-ary fat-tree given k may hold at most this many times the cluster's GPUs (plus a few): its switches and
# cables grow as k^2 and k^3 whatever the GPU count.
MAX_FAT_TREE_HOST_RATIO = 8

# Torus defaults, TPU-v4-like: an ICI link carries 400 Gb/s per direction (Jouppi et al. 2023, "TPU v4: an
# optically reconfigurable supercomputer", ISCA; via glennklockwood.com/garden/processors/TPUv4), and a hop
# between neighbouring chips costs well under a microsecond (same paper; order of magnitude, R).
TORUS_LINK_BYTES_PER_S = 400e9 / 8
TORUS_HOP_LATENCY_S = 0.5e-6

PROTOCOL_SWITCH = {"infiniband": "infiniband-ndr", "ethernet": "ethernet-roce"}
PROTOCOL_KIND = {"infiniband": "ib", "ethernet": "ethernet"}


class GraphBuilder:
    """Accumulates nodes and cables; assigns link ids in insertion order."""

    def __init__(self, name: str):
        self.graph = nx.DiGraph(name=name)
        self.gpu_nodes: list = []
        self._next_link = 0
        self._node_latency: dict = {}

    def node(self, name, role: str, latency_s: float = 0.0, **attrs):
        self.graph.add_node(name, role=role, latency_s=latency_s, **attrs)
        self._node_latency[name] = latency_s
        if role == "gpu":
            self.gpu_nodes.append(name)
        return name

    def link(self, u, v, bytes_per_s: float, kind: str, extra_latency_s: float = 0.0, link_class: str | None = None):
        """One directed link u -> v; entering v costs v's traversal latency. A second link u -> v adds
        capacity. ``link_class`` overrides the class inferred from the ends' roles (``classes.infer``)."""
        if self.graph.has_edge(u, v):
            self.graph.edges[u, v]["bytes_per_s"] += bytes_per_s
            return
        self.graph.add_edge(u, v, bytes_per_s=bytes_per_s, latency_s=self._node_latency[v] + extra_latency_s,
                            kind=kind, link_id=self._next_link)
        if link_class:
            self.graph.edges[u, v]["link_class"] = link_class
        self._next_link += 1

    def cable(self, u, v, bytes_per_s: float, kind: str, extra_latency_s: float = 0.0, link_class: str | None = None):
        """A full-duplex cable: two directed links of ``bytes_per_s`` each."""
        self.link(u, v, bytes_per_s, kind, extra_latency_s, link_class)
        self.link(v, u, bytes_per_s, kind, extra_latency_s, link_class)


def _server_sizes(gpus: int, gpus_per_node: int) -> list[int]:
    """GPUs in each server, node-major; the last server holds the remainder."""
    full, rest = divmod(gpus, gpus_per_node)
    return [gpus_per_node] * full + ([rest] if rest else [])


def add_servers(b: GraphBuilder, gpus: int, gpus_per_node: int, gpu: GpuSpec, nic: NicSpec | None) -> list:
    """HGX/DGX-style servers: GPUs on one NVSwitch domain, each GPU -> PCIe switch -> its own NIC.

    The NVSwitch chips of a node (four on HGX H100) act as one non-blocking switch whose port per GPU runs at
    ``gpu.nvlink_bandwidth`` per direction. A GPU without NVLink (``nvlink_generation: 0``, e.g. MI300X
    Infinity Fabric) gets a full mesh instead, its scale-up bandwidth split evenly over the peer links.
    Returns the NIC node of every GPU, in GPU order (empty when ``nic`` is None).
    """
    nvs_latency_s = hardware.switch("nvswitch").latency
    nics = []
    rank = 0
    for server, size in enumerate(_server_sizes(gpus, gpus_per_node)):
        names = [b.node(f"n{server}/gpu{i}", "gpu", rank=rank + i, server=server) for i in range(size)]
        if size > 1 and gpu.nvlink_generation > 0:
            nvs = b.node(f"n{server}/nvswitch", "nvswitch", nvs_latency_s, server=server)
            for name in names:
                b.cable(name, nvs, gpu.nvlink_bandwidth, "nvlink")
        elif size > 1:
            per_peer = gpu.nvlink_bandwidth / (gpus_per_node - 1)
            for i, u in enumerate(names):
                for v in names[i + 1:]:
                    b.cable(u, v, per_peer, "nvlink")
        if nic is not None:
            host = hardware.pcie(nic.host)
            for i, name in enumerate(names):
                pcie = b.node(f"n{server}/pcie{i}", "pcie", host.latency, server=server)
                card = b.node(f"n{server}/nic{i}", "nic", nic.latency, server=server)
                b.cable(name, pcie, host.bandwidth, "pcie")
                b.cable(pcie, card, host.bandwidth, "pcie")
                nics.append(card)
        rank += size
    return nics


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
    """Routing policy of a Clos fabric whose switches are joined by links of ``kind``."""
    b.graph.graph["routing"] = options.get("routing") or default_routing([kind])


def rail_fat_tree(b: GraphBuilder, gpus: int, gpus_per_node: int, gpu: GpuSpec, nic: NicSpec, options: dict):
    """Rail-optimised, non-blocking fat-tree (NVIDIA DGX SuperPOD reference architecture).

    GPU r of every server plugs into rail r; a rail's leaf switch takes the NICs of ``radix/2`` servers (one
    scalable unit) on its down ports and uses its other half for uplinks. Two tiers: every leaf has one cable
    to each of ``min(radix/2, servers)`` spines (at least as much up as down: non-blocking); this holds up to
    ``radix`` leaves (2,048 NDR GPUs). Three tiers: pods of ``radix/2`` leaves with ``radix/2`` aggregation
    switches each (role spine), aggregation switch i of every pod wired to core group i of ``radix/2`` cores
    (Al-Fares et al. 2008 wiring), up to ``radix`` pods (65,536 NDR GPUs). Routing: adaptive by default
    (InfiniBand), as in DGX SuperPOD fabrics of Quantum-2 switches.
    """
    protocol = options.get("protocol", "infiniband")
    kind, switch = PROTOCOL_KIND[protocol], hardware.switch(PROTOCOL_SWITCH[protocol]).latency
    _set_routing(b, kind, options)
    radix = int(options.get("radix", _default_radix(nic, protocol)))
    down = radix // 2
    nics = add_servers(b, gpus, gpus_per_node, gpu, nic)
    servers = math.ceil(gpus / gpus_per_node)
    groups = math.ceil(servers / down)
    rails = min(gpus_per_node, gpus)
    leaves = [[None] * rails for _ in range(groups)]
    for j in range(groups):
        for r in range(rails):
            leaves[j][r] = b.node(f"leaf/g{j}/r{r}", "leaf", switch, rail=r)
    for g, card in enumerate(nics):
        server, r = divmod(g, gpus_per_node)
        b.cable(card, leaves[server // down][r], nic.rate, kind)
    flat = [leaf for group in leaves for leaf in group]
    tiers = int(options.get("tiers", 2 if len(flat) <= radix else 3))
    if tiers == 2:
        if len(flat) > radix:
            raise ScenarioError("cluster.topology_options.tiers",
                                f"{len(flat)} leaves exceed a two-tier fat-tree "
                                f"of radix {radix} (at most {radix} leaves); use tiers: 3")
        spines = [b.node(f"spine/{s}", "spine", switch) for s in range(min(down, servers))]
        for leaf in flat:
            for spine in spines:
                b.cable(leaf, spine, nic.rate, kind)
    elif tiers == 3:
        pods = math.ceil(len(flat) / down)
        if pods > radix:
            raise ScenarioError("cluster.topology",
                                f"{gpus} GPUs need {pods} pods, more than a three-tier fat-tree "
                                f"of radix {radix} holds ({radix}); raise topology_options.radix")
        cores = [[b.node(f"core/{i}/{c}", "core", switch) for c in range(down)] for i in range(down)]
        for p in range(pods):
            aggs = [b.node(f"spine/p{p}/{i}", "spine", switch, pod=p) for i in range(down)]
            for leaf in flat[p * down:(p + 1) * down]:
                for agg in aggs:
                    b.cable(leaf, agg, nic.rate, kind)
            for i, agg in enumerate(aggs):
                for core in cores[i]:
                    b.cable(agg, core, nic.rate, kind)
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
    if spine_count > MAX_SWITCH_PORTS:
        raise ScenarioError("cluster.topology_options", f"{spine_count} spines (hosts_per_leaf / oversubscription) "
                            f"exceed the {MAX_SWITCH_PORTS} ports a leaf switch can have")
    uplink_bytes_per_s = hosts * nic.rate / (ratio * spine_count)
    nics = add_servers(b, gpus, gpus_per_node, gpu, nic)
    leaves = [b.node(f"leaf/{j}", "leaf", switch) for j in range(math.ceil(gpus / hosts))]
    for g, card in enumerate(nics):
        b.cable(card, leaves[g // hosts], nic.rate, kind)
    spines = [b.node(f"spine/{s}", "spine", switch) for s in range(spine_count)]
    for leaf in leaves:
        for spine in spines:
            b.cable(leaf, spine, uplink_bytes_per_s, kind)


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
    nics = add_servers(b, gpus, gpus_per_node, gpu, nic)
    cores = [b.node(f"core/{c}", "core", switch) for c in range(half * half)]
    edges = []
    for p in range(k):
        pod_edges = [b.node(f"leaf/p{p}/{e}", "leaf", switch, pod=p) for e in range(half)]
        aggs = [b.node(f"spine/p{p}/{a}", "spine", switch, pod=p) for a in range(half)]
        for edge in pod_edges:
            for agg in aggs:
                b.cable(edge, agg, link_bytes_per_s, kind)
        for a, agg in enumerate(aggs):
            for core in cores[a * half:(a + 1) * half]:
                b.cable(agg, core, link_bytes_per_s, kind)
        edges.extend(pod_edges)
    for g, card in enumerate(nics):
        b.cable(card, edges[g // half], min(nic.rate, link_bytes_per_s), kind)


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
    names = [b.node(f"gpu{i}", "gpu", hop_latency_s, rank=i, server=i // gpus_per_node, coord=str(c))
             for i, c in enumerate(coords)]
    plus = np.full((gpus, len(dims)), -1, dtype=np.int64)
    minus = np.full((gpus, len(dims)), -1, dtype=np.int64)
    strides = [int(np.prod(dims[d + 1:])) for d in range(len(dims))]
    for i, c in enumerate(coords):
        for d, size in enumerate(dims):
            if size == 1:
                continue
            j = i + (((c[d] + 1) % size) - c[d]) * strides[d]
            b.link(names[i], names[j], link_bytes_per_s, "torus")
            b.link(names[j], names[i], link_bytes_per_s, "torus")
    for i, c in enumerate(coords):
        for d, size in enumerate(dims):
            if size == 1:
                continue
            up = i + (((c[d] + 1) % size) - c[d]) * strides[d]
            down = i + (((c[d] - 1) % size) - c[d]) * strides[d]
            plus[i, d] = b.graph.edges[names[i], names[up]]["link_id"]
            minus[i, d] = b.graph.edges[names[i], names[down]]["link_id"]
    b.graph.graph.update(gpu_transit=True, torus_dims=tuple(dims))
    b.torus_tables = (tuple(dims), plus, minus)


BUILDERS = {
    "nvswitch-node": (nvswitch_node, ()),
    "rail-fat-tree": (rail_fat_tree, ("tiers", "radix", "protocol", "routing")),
    "leaf-spine": (leaf_spine, ("oversubscription", "hosts_per_leaf", "spines", "radix", "protocol", "routing")),
    "fat-tree": (fat_tree, ("k", "link", "protocol", "routing")),
    "torus": (torus, ("dims", "link", "hop_latency")),
}


# ---- fabrics debated today: rail-only and multi-plane leaf-spine ------------------------------------------------

def _rail_switches(b: GraphBuilder, rail: int, servers: int, radix: int, switch_latency_s: float, kind: str,
                   rate_bytes_per_s: float) -> list:
    """The switches of one rail: one switch when the rail's servers fit its ports, else a non-blocking two-tier
    Clos of its own: leaves of radix/2 servers, and as few spines as hold the leaves' uplinks
    (ceil(leaves x radix/2 / radix)), each leaf trunked to every spine with an equal share of its radix/2 uplinks.
    Returns the leaf of each server."""
    if servers <= radix:
        switch = b.node(f"rail{rail}/switch", "leaf", switch_latency_s, rail=rail)
        return [switch] * servers
    down = radix // 2
    leaves = [b.node(f"rail{rail}/leaf{j}", "leaf", switch_latency_s, rail=rail)
              for j in range(math.ceil(servers / down))]
    if len(leaves) > radix:
        raise ScenarioError("cluster.topology", f"{servers} servers need {len(leaves)} leaves per rail, more than "
                            f"a two-tier rail of radix {radix} holds ({radix}); raise topology_options.radix")
    spine_count = math.ceil(len(leaves) * down / radix)
    spines = [b.node(f"rail{rail}/spine{s}", "spine", switch_latency_s, rail=rail) for s in range(spine_count)]
    for leaf in leaves:
        for spine in spines:
            b.cable(leaf, spine, down * rate_bytes_per_s / spine_count, kind)
    return [leaves[server // down] for server in range(servers)]


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
    nics = add_servers(b, gpus, gpus_per_node, gpu, nic)
    servers = math.ceil(gpus / gpus_per_node)
    rails = min(gpus_per_node, gpus)
    leaf_of = [_rail_switches(b, r, servers, radix, switch_latency_s, kind, nic.rate) for r in range(rails)]
    for g, card in enumerate(nics):
        server, r = divmod(g, gpus_per_node)
        b.cable(card, leaf_of[r][server], nic.rate, kind)
    for server, size in enumerate(_server_sizes(gpus, gpus_per_node)):
        for i in range(size):
            b.graph.nodes[f"n{server}/pcie{i}"]["transit"] = True
            b.graph.nodes[f"n{server}/nic{i}"]["transit"] = True
            if size > 1:
                b.cable(f"n{server}/nvswitch", f"n{server}/pcie{i}", gpu.nvlink_bandwidth, "nvlink",
                        link_class="nvlink")


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
    b.graph.graph["routing"] = options.get("routing") or "adaptive"
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
    nics = add_servers(b, gpus, gpus_per_node, gpu, nic)
    for p in range(planes):
        leaves = [b.node(f"plane{p}/leaf{j}", "leaf", switch_latency_s, plane=p) for j in range(leaf_count)]
        for g, card in enumerate(nics):
            b.graph.nodes[card]["transit"] = True   # the NIC chooses the plane: it is where routes fork
            b.cable(card, leaves[g // hosts], port_bytes_per_s, kind)
        spines = [b.node(f"plane{p}/spine{s}", "spine", switch_latency_s, plane=p) for s in range(spine_count)]
        for leaf in leaves:
            for spine in spines:
                b.cable(leaf, spine, uplink_bytes_per_s, kind)


BUILDERS.update({
    "rail-only": (rail_only, ("radix", "protocol", "routing")),
    "multi-plane": (multi_plane, ("planes", "oversubscription", "hosts_per_leaf", "spines", "radix", "protocol",
                                  "routing")),
})
