"""Shortest-path routing over a fabric graph, by hash ECMP or by adaptive spraying; computed lazily, cached.

A route from GPU ``src`` to GPU ``dst`` is split in three: an *access* segment from the GPU through its
host-side nodes (PCIe switch, NIC) up to a network switch, a *core* segment between network switches, and an
access segment down to ``dst``. Access segments of all GPUs are found at once by a breadth-first search
vectorised with numpy; core distances are found once per destination switch by a vectorised breadth-first
search (about a millisecond on a 16k-GPU fabric), and cached. Cost is the hop count (the usual metric of
fat-tree routing); a direct GPU-GPU link is always taken when it exists. GPUs are never transit nodes unless
the fabric says so (``gpu_transit``: torus fabrics, where chips route).

Two policies share the equal-cost core paths among flows (``spec.fabric_options.ROUTING_POLICIES``):
- ``ecmp``: at every switch the next hop is picked by a deterministic hash of (src, dst, salt, hop), as
  hash-based ECMP does in Ethernet switches (RFC 2992, hash-threshold next-hop selection). A flow stays on one
  path, so two flows can collide on one uplink while another idles.
- ``adaptive``: the fluid limit of per-packet adaptive routing. At every switch a flow's bytes split evenly
  over the next hops that lie on shortest paths to the destination, so a link carries a *fraction* of each
  flow. NVIDIA InfiniBand switches (Quantum, Quantum-2) select the output port per packet by port load among an
  AR group that, for fat-trees (the TREE algorithm), holds all ports with minimal hops to the destination; the
  subnet manager enables it by default (NVIDIA, "InfiniBand Cluster Bring-up Procedure" v1.0, 2024, section
  Adaptive Routing: "AR is enabled by default in the opensm.conf file", routing engine ``ar_updn``). Splitting
  evenly is the steady state of load-based port choice over equal ports.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import networkx as nx

# Roles of nodes that forward traffic between GPUs (the routing core). Host-side nodes carry one GPU's traffic
# only.
CORE_ROLES = frozenset({"nvswitch", "leaf", "spine", "core", "switch"})
HOST_ROLES = frozenset({"pcie", "nic"})
# Network switches: the links between two of them decide a fabric's default routing policy.
NETWORK_SWITCH_ROLES = frozenset({"leaf", "spine", "core", "switch"})

# Link kinds whose switches spray adaptively by default. InfiniBand: adaptive routing is on by default in the
# subnet manager (NVIDIA InfiniBand Cluster Bring-up Procedure v1.0, "Adaptive Routing"), and DGX SuperPOD
# compute fabrics are rail-optimised InfiniBand fat-trees of Quantum-2 switches (NVIDIA DGX SuperPOD reference
# architecture, DGX H100, RA-11333-001). Ethernet/RoCE is not: on NVIDIA Spectrum switches adaptive routing is
# "disabled" by default (Cumulus Linux NVUE reference, ``nv set router adaptive-routing``), leaving per-flow
# hash ECMP.
ADAPTIVE_LINK_KINDS = frozenset({"ib"})

_NO_LINKS = np.zeros(0, dtype=np.int64)
# (part, link) keys below this are counted in a dense array (8 bytes each) rather than sorted
_DENSE_PART_KEYS = 2**22
# Destination groups with at most this many source switches use cached per switch-pair sprays; larger groups
# (e.g. a random permutation) are spread in one pass, which costs about as much as one cached spray.
_CACHED_SPRAY_SOURCES = 4
# Switch-pair sprays are kept up to this many route entries (16 bytes each: 128 MiB): at 131,072 GPUs a spray between
# pods holds 8,320 entries and a run makes thousands
_SPRAY_CACHE_ENTRIES = 2**23
# Summed core loads of switch pairs (``_gathered_sprays``) of at least this many route entries are kept, up to this
# many links in all (16 bytes each: 32 MiB): a data-parallel ring's steps from every pipeline stage cross the same
# switch pairs (16 stages x 2,048 pairs of leaves between pods at 131,072 GPUs)
_KEPT_CORE_MIN_ENTRIES = 2**16
_KEPT_CORE_ENTRIES = 2**21
# Route entries are summed over the distinct links when fewer than 1/this of the links (``summed``)
_SPARSE_SUM_RATIO = 8
# Pairs whose ways up and down are chosen at once (``_endpoints``): larger arrays go in chunks of this many (each
# chunk's temporaries, about 40 arrays of 8 bytes per candidate, stay within a few MB)
_ENDPOINT_CHUNK = 2**15
# Pair arrays longer than this are checked for repeated pairs, each routed once (``route_set``)
_DEDUPLICATE_PAIRS = 4096


def default_routing(switch_link_kinds) -> str:
    """The policy of a fabric whose switch-to-switch links have these kinds: adaptive when there are some and
    all are InfiniBand, else ECMP (hash ECMP is also what a fabric without equal-cost choices amounts to)."""
    kinds = set(switch_link_kinds)
    return "adaptive" if kinds and kinds <= ADAPTIVE_LINK_KINDS else "ecmp"


def _csr(n: int, src: np.ndarray, dst: np.ndarray, link: np.ndarray):
    """Compressed adjacency: neighbours of node i are nbr[ptr[i]:ptr[i+1]], reached over link[...]."""
    order = np.argsort(src, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(ptr, src + 1, 1)
    return np.cumsum(ptr), dst[order], link[order]


def _sorted_rows(ptr: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` with each row ptr[i]:ptr[i+1] sorted."""
    row = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    return values[np.lexsort((values, row))]


def _ranges(ptr: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Concatenated index ranges ptr[i]:ptr[i+1] for every i in ``nodes`` (vectorised)."""
    starts, ends = ptr[nodes], ptr[nodes + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return _NO_LINKS
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return offsets + np.arange(total)


@dataclass(frozen=True)
class AccessTable:
    """The access segments of every GPU in one direction: row r of GPU g (ptr[g] <= r < ptr[g+1]) reaches
    network switch ``switch[r]`` (core numbering) in ``hops[r]`` links ``links[r, :hops[r]]`` (travel order,
    padded with -1) of total latency ``latency_s[r]``. Rows of a GPU are in breadth-first order."""

    ptr: np.ndarray
    switch: np.ndarray
    hops: np.ndarray
    links: np.ndarray
    latency_s: np.ndarray


@dataclass(frozen=True, eq=False)
class EdgeTable:
    """A fabric graph's directed links in its edge order (``graph.edges``), read in one pass over the adjacency:
    the end nodes' indices in node order (``nodes``), each link's id and the edge's own ``link_class`` (None when
    the ends' roles tell it); ``role`` is every node's role in node order. Whole-fabric counts (the bill of materials,
    link classes) read it instead of walking networkx views edge by edge."""

    nodes: list
    src_index: np.ndarray
    dst_index: np.ndarray
    link_id: np.ndarray
    own_class: list
    role: list

    @classmethod
    def of_tables(cls, tables) -> EdgeTable:
        """The edge table of a fabric's ``FabricTables`` (no pass over a graph)."""
        order = tables.edge_order()
        own = tables.own_class
        return cls(tables.nodes, tables.src[order], tables.dst[order], order,
                   [own.get(k) for k in order.tolist()] if own else [None] * len(order), tables.role)

    @classmethod
    def of(cls, graph: nx.DiGraph) -> EdgeTable:
        index = {node: i for i, node in enumerate(graph.nodes)}
        src_index, dst_index, link_id, own_class = [], [], [], []
        for u, out in graph.adjacency():   # plain loops: several times faster than edges(data=...) views
            iu = index[u]
            for v, d in out.items():
                src_index.append(iu)
                dst_index.append(index[v])
                link_id.append(d["link_id"])
                own_class.append(d.get("link_class"))
        return cls(list(index), np.array(src_index, dtype=np.int64), np.array(dst_index, dtype=np.int64),
                   np.array(link_id, dtype=np.int64), own_class, [role for _, role in graph.nodes(data="role")])


class Router:
    """Routes between the GPUs of one fabric graph. Pure: the same (src, dst, salt) always gives the same
    path, and the same pairs the same link loads."""

    def __init__(self, edges: EdgeTable, gpu_index: np.ndarray, link_latency_s: np.ndarray, gpu_transit: bool = False,
                 transit: np.ndarray | None = None):
        """``edges``: the fabric's links; ``gpu_index``: the node index of every GPU, by rank; ``gpu_transit``: GPUs
        forward (tori); ``transit``: per node, whether a host-side node forwards other GPUs' traffic."""
        nodes = edges.nodes
        self.nodes = nodes
        roles = edges.role
        core_roles = CORE_ROLES | ({"gpu"} if gpu_transit else set())
        # a host-side node marked ``transit`` forwards other GPUs' traffic (rail-only: NCCL's PXN through a peer's
        # PCIe switch and NIC), so it belongs to the routing core
        self.is_core = np.array([role in core_roles for role in roles], dtype=bool)
        if transit is not None:
            self.is_core |= np.asarray(transit, dtype=bool)
        self.is_host = np.array([role in HOST_ROLES for role in roles], dtype=bool) & ~self.is_core
        self.gpu_index = np.asarray(gpu_index, dtype=np.int64)
        n = len(nodes)
        src, dst, link = edges.src_index, edges.dst_index, edges.link_id
        is_gpu = np.zeros(n, dtype=bool)
        is_gpu[self.gpu_index] = True
        direct = is_gpu[src] & is_gpu[dst]
        self.edge_link = {(int(u), int(v)): int(k) for u, v, k in zip(src[direct], dst[direct], link[direct],
                                                                        strict=True)}
        # the links the access searches walk (``access``): out of (up) or into (down) the GPUs and host-side nodes
        # they expand, kept until each search has run (about half of the links, no other use)
        expands = (is_gpu & ~self.is_core) | self.is_host
        up, down = expands[src], expands[dst]
        self._access_links: dict[bool, tuple] = {True: (src[up], dst[up], link[up]),
                                                 False: (dst[down], src[down], link[down])}
        # the core graph in compact numbering (core node i <-> graph node core_ids[i]) keeps BFS arrays small
        self.core_ids = np.flatnonzero(self.is_core)
        self.core_pos = np.full(n, -1, dtype=np.int64)
        self.core_pos[self.core_ids] = np.arange(len(self.core_ids))
        both = self.is_core[src] & self.is_core[dst]
        csrc, cdst = self.core_pos[src[both]], self.core_pos[dst[both]]
        m = len(self.core_ids)
        self.core_ptr, self.core_nbr, self.core_link = _csr(m, csrc, cdst, link[both])
        self.rcore_ptr, self.rcore_nbr, _ = _csr(m, cdst, csrc, link[both])
        self.link_latency_s = np.asarray(link_latency_s, dtype=float)
        self._tables: dict[bool, AccessTable] = {}
        self._dist: dict[int, np.ndarray] = {}
        self._paths: dict[tuple[int, int, int], np.ndarray] = {}
        self._sprays: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray, float]] = OrderedDict()
        self._spray_entries = 0
        self._core_loads: OrderedDict[tuple, tuple] = OrderedDict()   # ``_gathered_sprays``
        self._core_load_entries = 0
        self._slowest_s: dict[int, float] = {}
        self._widths: dict[bool, int] = {}   # ``_rows_per_gpu``
        self._lists: tuple | None = None   # access tables as Python arrays (``_endpoint``: 8 bytes an entry)
        self._twin: np.ndarray | None = None
        self._alike: np.ndarray | None = None   # ``_twin_alike``
        self._second: np.ndarray | None = None  # ``_second_twin``
        self._has_out, self._has_in = np.diff(self.core_ptr) > 0, np.diff(self.rcore_ptr) > 0
        # the ends of every core link (core numbering, -1 elsewhere) and core links by (u, v), for moved sprays
        core_src = np.repeat(np.arange(m), np.diff(self.core_ptr))
        self._link_src = np.full(len(link), -1, dtype=np.int32)   # core numbering: < 2**31 (cast before products)
        self._link_dst = np.full(len(link), -1, dtype=np.int32)
        self._link_src[self.core_link], self._link_dst[self.core_link] = core_src, self.core_nbr
        keys = core_src * m + self.core_nbr
        order = np.argsort(keys)
        self._core_keys, self._core_key_link = keys[order], self.core_link[order]

    # ---- access segments -------------------------------------------------------------------------------
    def access(self, upward: bool) -> AccessTable:
        """Access segments of every GPU (up: GPU -> switch; down: switch -> GPU); found once, all GPUs at once.

        A breadth-first search from each GPU through host-side nodes; every network switch it meets is a way in
        (or out) at that hop count. Among equal-length ways to one switch the first found wins (neighbours in
        link order), as a per-GPU search would pick.
        """
        table = self._tables.get(upward)
        if table is not None:
            return table
        ptr, nbr, lnk = _csr(len(self.nodes), *self._access_links.pop(upward))
        n, gpus = len(self.nodes), len(self.gpu_index)
        start_core = self.is_core[self.gpu_index]
        # found switches, one array per breadth-first level: (owning GPU, switch, hops, links in search order)
        found = [(np.flatnonzero(start_core), self.core_pos[self.gpu_index[start_core]], 0,
                  np.zeros((int(start_core.sum()), 0), dtype=np.int64))]
        origin = np.flatnonzero(~start_core)
        here = self.gpu_index[origin]
        path = np.zeros((len(origin), 0), dtype=np.int64)
        seen = np.sort(origin * n + here)     # (GPU, node) pairs met so far, as sorted keys
        level = 0
        while len(origin):
            level += 1
            edge = _ranges(ptr, here)
            walker = np.repeat(np.arange(len(origin)), ptr[here + 1] - ptr[here])
            there = nbr[edge]
            keys = origin[walker] * n + there
            at = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
            fresh = np.flatnonzero(seen[at] != keys)
            order = np.argsort(keys[fresh], kind="stable")
            ranked = keys[fresh][order]
            first = order[np.concatenate(([True], ranked[1:] != ranked[:-1]))]
            keep = fresh[np.sort(first)]          # first arrival at each (GPU, node), in search order
            seen = np.sort(np.concatenate((seen, keys[keep])))
            there, walker = there[keep], walker[keep]
            step = np.column_stack([path[walker], lnk[edge[keep]]])
            core = self.is_core[there]
            found.append((origin[walker[core]], self.core_pos[there[core]], level, step[core]))
            onward = self.is_host[there]
            origin, here, path = origin[walker[onward]], there[onward], step[onward]
        width = max(level_links.shape[1] for *_, level_links in found)
        owner = np.concatenate([f[0] for f in found])
        order = np.argsort(owner, kind="stable")  # per GPU: by level, then in search order
        switch = np.concatenate([f[1] for f in found])[order]
        hops = np.concatenate([np.full(len(f[0]), f[2], dtype=np.int64) for f in found])[order]
        links = np.concatenate([np.pad(f[3], ((0, 0), (0, width - f[3].shape[1])), constant_values=-1)
                                for f in found])[order]
        if not upward and width:  # searched from the GPU backwards: travel order is the reverse
            back = hops[:, None] - 1 - np.arange(width)
            links = np.where(back >= 0, np.take_along_axis(links, np.maximum(back, 0), axis=1), -1)
        ptr_out = np.zeros(gpus + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=gpus), out=ptr_out[1:])
        latency_s = np.where(links >= 0, self.link_latency_s[np.maximum(links, 0)], 0.0).sum(axis=1)
        table = AccessTable(ptr_out, switch, hops, links, latency_s)
        self._tables[upward] = table
        return table

    # ---- core distances ---------------------------------------------------------------------------------
    @property
    def twin(self) -> np.ndarray:
        """For every core node, the first core node with the same core neighbours in and out (itself when none
        shares them, or when it has no core neighbour on both sides).

        Twins (the leaves of one pod of a fat-tree, the spines of a leaf-spine, the cores of one group) are as far
        from every other node: a path into one ends with a hop from a neighbour they share, so it reaches the other
        as soon. Between two twins the distance is 2 (through a shared neighbour, linked both ways; no link joins
        them, since a twin's neighbour is its twin's). So the distances to a node are its first twin's, with those
        two entries swapped (``_dist_to``): one breadth-first search per class of twins (32 instead of 2,048 leaves
        on a 131,072-GPU rail-optimised fat-tree)."""
        if self._twin is None:
            m = len(self.core_ids)
            out_deg, in_deg = np.diff(self.core_ptr), np.diff(self.rcore_ptr)
            src = np.repeat(np.arange(m), out_deg)
            key = src * m + self.core_nbr
            sorted_keys = np.sort(key)
            back = self.core_nbr * m + src
            at = np.minimum(np.searchsorted(sorted_keys, back), max(len(key) - 1, 0))
            both_ways = np.bincount(src, weights=(sorted_keys[at] == back) if len(key) else None, minlength=m) > 0
            twin = np.arange(m)
            out_rows = _sorted_rows(self.core_ptr, self.core_nbr)
            in_rows = _sorted_rows(self.rcore_ptr, self.rcore_nbr)
            candidates = np.flatnonzero(both_ways & (out_deg > 0) & (in_deg > 0))
            for pair in np.unique(np.column_stack((out_deg[candidates], in_deg[candidates])), axis=0).tolist():
                members = candidates[(out_deg[candidates] == pair[0]) & (in_deg[candidates] == pair[1])]
                rows = np.hstack((out_rows[_ranges(self.core_ptr, members)].reshape(len(members), pair[0]),
                                  in_rows[_ranges(self.rcore_ptr, members)].reshape(len(members), pair[1])))
                _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
                twin[members] = members[first[inverse.reshape(-1)]]
            self._twin = twin
        return self._twin

    def _dist_to(self, switch: int) -> np.ndarray:
        """Hop distance from every core node to core node ``switch`` over core links (-1: unreachable); one
        breadth-first search per class of twins (``twin``), cached."""
        first = int(self.twin[switch])
        dist = self._bfs_to(first)
        if first == switch:
            return dist
        dist = dist.copy()
        dist[switch], dist[first] = 0, 2
        return dist

    def _hops_to(self, switch: int, sources: np.ndarray) -> np.ndarray:
        """``_dist_to(switch)[sources]`` without copying the twin's distances."""
        first = int(self.twin[switch])
        hops = self._bfs_to(first)[sources]
        if first != switch:
            hops = np.where(sources == switch, 0, np.where(sources == first, 2, hops))
        return hops

    def _bfs_to(self, switch: int) -> np.ndarray:
        """Hop distance from every core node to core node ``switch`` over core links (-1: unreachable); cached."""
        dist = self._dist.get(switch)
        if dist is not None:
            return dist
        dist = np.full(len(self.core_ids), -1, dtype=np.int32)
        dist[switch] = 0
        frontier = np.array([switch], dtype=np.int64)
        reached = np.zeros(len(self.core_ids), dtype=bool)
        level = 0
        while frontier.size:
            level += 1
            preds = self.rcore_nbr[_ranges(self.rcore_ptr, frontier)]
            preds = preds[dist[preds] < 0]
            reached[preds] = True
            frontier = np.flatnonzero(reached)
            reached[frontier] = False
            dist[frontier] = level
        self._dist[switch] = dist
        return dist

    def _core_hops(self, a: np.ndarray, b: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        """Core hop counts a[i] -> b[i] where ``wanted`` (-1: unreachable or not wanted), with one breadth-first
        search per class of twins among the b (``twin``)."""
        hops = np.where(a == b, 0, -1).astype(np.int64)
        # a switch with no core link out (or in) reaches (is reached by) no other: no search needed
        need = np.flatnonzero(wanted & (a != b) & (self._has_out[a]) & (self._has_in[b]))
        if len(need):
            first = self.twin[b[need]]
            order = np.argsort(first, kind="stable")
            need, first = need[order], first[order]
            cuts = np.flatnonzero(np.diff(first)) + 1
            for group, rep in zip(np.split(need, cuts), first[np.concatenate(([0], cuts))].tolist(), strict=True):
                hops[group] = self._bfs_to(rep)[a[group]]
            # to a twin of the class's first switch, that switch itself is 2 hops away
            swapped = (a[need] == first) & (b[need] != first)
            hops[need[swapped]] = 2
        return hops

    # ---- choice of the switches where a route enters and leaves the core ---------------------------------
    def _endpoints(self, src: np.ndarray, dst: np.ndarray, salt: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the up and down access tables taken by each pair (src[i], dst[i]) (vectorised).

        Every combination of a way up from src and a way down to dst is costed (access hops + core hops); the
        cheapest wins, and ties (ordered by lower bound, then up row, then down row) are broken by
        hash((src, dst, salt)), as ECMP would. Raises KeyError naming the first pair without a route.
        """
        up, down = self.access(True), self.access(False)
        n_up = up.ptr[src + 1] - up.ptr[src]
        n_down = down.ptr[dst + 1] - down.ptr[dst]
        combos = n_up * n_down
        if np.any(combos == 0):
            bad = int(np.flatnonzero(combos == 0)[0])
            raise KeyError(f"no route from GPU {int(src[bad])} to GPU {int(dst[bad])}")
        widths = (self._rows_per_gpu(True), self._rows_per_gpu(False))
        if widths[0] and widths[1]:
            if len(src) <= _ENDPOINT_CHUNK:
                return self._endpoints_of_equal_rows(src, dst, salt, *widths)
            # each pair's choice is its own: in chunks, whose temporaries are reused rather than mapped anew
            chunks = [self._endpoints_of_equal_rows(src[i:i + _ENDPOINT_CHUNK], dst[i:i + _ENDPOINT_CHUNK], salt,
                                                    *widths) for i in range(0, len(src), _ENDPOINT_CHUNK)]
            return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])
        pair = np.repeat(np.arange(len(src)), combos)
        starts = np.cumsum(combos) - combos
        local = np.arange(int(combos.sum())) - starts[pair]
        i, j = local // n_down[pair], local % n_down[pair]
        up_row, down_row = up.ptr[src[pair]] + i, down.ptr[dst[pair]] + j
        a, b = up.switch[up_row], down.switch[down_row]
        bound = up.hops[up_row] + down.hops[down_row] + (a != b)   # exact when a == b
        exact = np.minimum.reduceat(np.where(a == b, bound, np.iinfo(np.int64).max), starts)
        core_hops = self._core_hops(a, b, bound <= exact[pair])    # others can neither win nor tie
        cost = np.where(core_hops >= 0, up.hops[up_row] + core_hops + down.hops[down_row],
                        np.iinfo(np.int64).max)
        best = np.minimum.reduceat(cost, starts)
        unroutable = best == np.iinfo(np.int64).max
        if np.any(unroutable):
            bad = int(np.flatnonzero(unroutable)[0])
            raise KeyError(f"no route from GPU {int(src[bad])} to GPU {int(dst[bad])}")
        tied = np.flatnonzero(cost == best[pair])             # candidates in pair order
        ties = np.bincount(pair[tied], minlength=len(src))
        chosen = np.empty(len(src), dtype=np.int64)
        alone = ties[pair[tied]] == 1
        chosen[pair[tied[alone]]] = tied[alone]                # a pair's one cheapest candidate
        several = np.flatnonzero(ties > 1)
        if len(several):                                       # the others' ties in candidate order, then hashed
            tied = tied[~alone]
            order = tied[np.lexsort((j[tied], i[tied], bound[tied], pair[tied]))]
            first = np.cumsum(ties[several]) - ties[several]
            pick = [hash((s, d, int(salt))) % t for s, d, t in zip(src[several].tolist(), dst[several].tolist(),
                                                                   ties[several].tolist(), strict=True)]
            chosen[several] = order[first + np.array(pick, dtype=np.int64)]
        return up_row[chosen], down_row[chosen]

    def _rows_per_gpu(self, upward: bool) -> int:
        """The number of rows every GPU has in the access table (0: not the same for all)."""
        width = self._widths.get(upward)
        if width is None:
            rows = np.diff(self.access(upward).ptr)
            width = self._widths[upward] = int(rows[0]) if len(rows) and (rows == rows[0]).all() else 0
        return width

    def _endpoints_of_equal_rows(self, src: np.ndarray, dst: np.ndarray, salt: int, ups: int, downs: int):
        """``_endpoints`` when every GPU has ``ups`` rows up and ``downs`` down: the same candidates in the same order
        (pair, then up row, then down row), costed as a (pairs x candidates) array, without per-candidate indices."""
        up, down = self.access(True), self.access(False)
        n, width = len(src), ups * downs
        up_row = np.repeat(up.ptr[src][:, None] + np.arange(ups), downs, axis=1)         # (pairs, candidates)
        down_row = np.tile(down.ptr[dst][:, None] + np.arange(downs), (1, ups))
        a, b = up.switch[up_row], down.switch[down_row]
        up_hops, down_hops = up.hops[up_row], down.hops[down_row]
        bound = up_hops + down_hops + (a != b)   # exact when a == b
        never = np.iinfo(np.int64).max
        exact = np.where(a == b, bound, never).min(axis=1)
        core_hops = self._core_hops(a.ravel(), b.ravel(), (bound <= exact[:, None]).ravel()).reshape(n, width)
        cost = np.where(core_hops >= 0, up_hops + core_hops + down_hops, never)
        best = cost.min(axis=1)
        if np.any(best == never):
            bad = int(np.flatnonzero(best == never)[0])
            raise KeyError(f"no route from GPU {int(src[bad])} to GPU {int(dst[bad])}")
        tied = cost == best[:, None]
        ties = tied.sum(axis=1)
        chosen = np.argmax(tied, axis=1)                      # a pair's one cheapest candidate
        several = np.flatnonzero(ties > 1)
        if len(several):                                      # the others' ties by bound, then candidate, hashed
            rank = np.where(tied[several], bound[several] * width + np.arange(width), never)
            order = np.argsort(rank, axis=1, kind="stable")
            pick = [hash((s, d, int(salt))) % t for s, d, t in zip(src[several].tolist(), dst[several].tolist(),
                                                                   ties[several].tolist(), strict=True)]
            chosen[several] = order[np.arange(len(several)), np.array(pick, dtype=np.int64)]
        at = np.arange(n)
        return up_row[at, chosen], down_row[at, chosen]

    def _endpoint(self, src: int, dst: int, salt: int) -> tuple[int, int]:
        """``_endpoints`` of one pair, in plain Python (a numpy pass costs more than the few candidates of a pair):
        the same candidates, costs and tie order."""
        lists = self._lists
        if lists is None:
            up, down = self.access(True), self.access(False)
            lists = self._lists = tuple(array("q", np.asarray(values, dtype=np.int64).tobytes()) for values in (
                up.ptr, up.switch, up.hops, down.ptr, down.switch, down.hops, self._has_out, self._has_in))
        up_ptr, up_switch, up_hops, down_ptr, down_switch, down_hops, has_out, has_in = lists
        ups, downs = range(up_ptr[src], up_ptr[src + 1]), range(down_ptr[dst], down_ptr[dst + 1])
        if not ups or not downs:
            raise KeyError(f"no route from GPU {src} to GPU {dst}")
        candidates = [(up_hops[u] + down_hops[d] + (up_switch[u] != down_switch[d]), i, j, u, d)
                      for i, u in enumerate(ups) for j, d in enumerate(downs)]
        exact = min((c[0] for c in candidates if up_switch[c[3]] == down_switch[c[4]]), default=None)
        costed = []
        for bound, i, j, u, d in candidates:
            a, b = up_switch[u], down_switch[d]
            if a == b:
                core = 0
            elif (exact is None or bound <= exact) and has_out[a] and has_in[b]:
                core = int(self._hops_to(b, np.array([a]))[0])
            else:
                core = -1
            if core >= 0:
                costed.append((up_hops[u] + core + down_hops[d], bound, i, j, u, d))
        if not costed:
            raise KeyError(f"no route from GPU {src} to GPU {dst}")
        best = min(c[0] for c in costed)
        ties = sorted(c[1:] for c in costed if c[0] == best)
        pick = hash((src, dst, salt)) % len(ties) if len(ties) > 1 else 0
        return ties[pick][3], ties[pick][4]

    # ---- one path (ECMP) -----------------------------------------------------------------------------------
    def _walk(self, a: int, b: int, key: tuple[int, int, int]) -> list[int]:
        """Links of one shortest core path a -> b; at each hop the next switch is picked by hash (ECMP). Hop counts
        to b are its first twin's, swapped between the two (``_dist_to``), read without copying them."""
        first = int(self.twin[b])
        base = self._bfs_to(first)
        links = []
        here, hop = a, 0
        left = 0 if a == b else 2 if a == first else int(base[a])     # hops from here to b
        while here != b:
            lo, hi = self.core_ptr[here], self.core_ptr[here + 1]
            nbrs = self.core_nbr[lo:hi]
            hops = base[nbrs]
            if first != b and left - 1 in (0, 2):   # the swap turns a 2 into a 0 and a 0 into a 2, nothing else
                hops = np.where(nbrs == b, 0, np.where(nbrs == first, 2, hops))
            ok = np.flatnonzero(hops == left - 1)
            pick = ok[hash((*key, hop)) % len(ok)] if len(ok) > 1 else ok[0]
            links.append(int(self.core_link[lo + pick]))
            here = int(nbrs[pick])
            left -= 1
            hop += 1
        return links

    def _direct(self, src: int, dst: int) -> int | None:
        return self.edge_link.get((int(self.gpu_index[src]), int(self.gpu_index[dst]))) if self.edge_link else None

    def path(self, src: int, dst: int, salt: int = 0) -> np.ndarray:
        """Directed link ids of the route GPU ``src`` -> GPU ``dst`` (cached); raises KeyError when
        unreachable. Under either policy this is the hash-ECMP path: one representative shortest path."""
        key = (src, dst, salt)
        cached = self._paths.get(key)
        if cached is not None:
            return cached
        direct = self._direct(src, dst) if src != dst else None
        if src == dst:
            result = _NO_LINKS
        elif direct is not None:
            result = np.array([direct], dtype=np.int64)
        else:
            up, down = self.access(True), self.access(False)
            u, d = self._endpoint(src, dst, salt)
            a, b = int(up.switch[u]), int(down.switch[d])
            core = self._walk(a, b, key) if a != b else []
            result = np.array([*up.links[u, :up.hops[u]], *core, *down.links[d, :down.hops[d]]], dtype=np.int64)
        self._paths[key] = result
        return result

    # ---- spraying (adaptive) -------------------------------------------------------------------------------
    def _reaching_dist(self, b: int, sources: np.ndarray) -> np.ndarray:
        """Hop distance of every core switch to core switch ``b``; KeyError naming the pair if a source has none."""
        dist = self._dist_to(b)
        if np.any(dist[sources] < 0):
            a = int(sources[np.flatnonzero(dist[sources] < 0)[0]])
            raise KeyError(f"no route between switches {self.nodes[self.core_ids[a]]} and "
                           f"{self.nodes[self.core_ids[b]]}")
        return dist

    def _spray_to(self, b: int, sources: np.ndarray, flows: np.ndarray):
        """Traffic of ``flows[i]`` flows from core switch sources[i] to core switch ``b``, each spread evenly
        over the shortest-path next hops at every switch: (core links, load on each, for each source the
        latency of its slowest shortest path to b).

        Level by level down the distance to ``b``: a switch holding load f passes f / k to each of its k
        neighbours one hop closer; loads entering a switch add up, with the flows that start there. Spreading
        is linear, so all sources of one destination go in one pass. Every unit that leaves a level arrives at
        the next: the loads crossing any cut between the sources and b sum to the number of flows.
        """
        dist = self._reaching_dist(b, sources)
        m = len(self.core_ids)
        held = np.bincount(sources, weights=flows, minlength=m).astype(float)
        steps = []                            # per level: (from switch, to switch, link, load)
        for level in range(int(dist[sources].max()), 0, -1):
            here = np.flatnonzero((dist == level) & (held > 0))
            edge = _ranges(self.core_ptr, here)
            owner = np.repeat(np.arange(len(here)), self.core_ptr[here + 1] - self.core_ptr[here])
            nbr = self.core_nbr[edge]
            closer = dist[nbr] == level - 1
            edge, owner, nbr = edge[closer], owner[closer], nbr[closer]
            load = held[here][owner] / np.bincount(owner, minlength=len(here))[owner]
            held += np.bincount(nbr, weights=load, minlength=m)
            steps.append((here[owner], nbr, self.core_link[edge], load))
        slowest_s = np.zeros(m)                # latency of the slowest path on to b, back up the levels
        for came, went, link, _ in reversed(steps):
            np.maximum.at(slowest_s, came, self.link_latency_s[link] + slowest_s[went])
        if not steps:
            return _NO_LINKS, np.zeros(0), slowest_s[sources]
        return (np.concatenate([st[2] for st in steps]), np.concatenate([st[3] for st in steps]),
                slowest_s[sources])

    def sprays(self, a: np.ndarray, b: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """``spray`` of every switch pair (a[i], b[i]) (a != b).

        A pair of twins (``twin``) of another pair's switches sprays over the same switches with the same loads: only
        its first hops leave from its own source and its last hops enter its own destination (a twin has the same
        neighbours, and a destination's twin is never on the way to it: its neighbours are one hop from the
        destination, itself two). So the spray of the first twins of a pair's classes is made (and cached) and the
        pair's is that one with its first and last links swapped for its own, when those have the same latencies
        (else it is made itself). Two twins of one class (two hops apart, through the neighbours they share) take
        the spray between the class's first two switches so moved (a pipeline's sends between the leaves of one
        pod). Moved sprays are cached as made ones are; the cache keeps at most ``_SPRAY_CACHE_ENTRIES`` route entries
        (least recently used first out)."""
        twin = self.twin
        out = []
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            first_x, first_y = int(twin[x]), int(twin[y])
            if first_x == first_y:          # twins of one class: from its first switch to its second
                first_y = int(self._second_twin()[first_x])
            out.append(self._cached_spray(x, y, (first_x, first_y))[:3])
        return out

    def _second_twin(self) -> np.ndarray:
        """Per first switch of a class of twins (``twin``), the class's second switch (by index); made once."""
        if self._second is None:
            m = len(self.core_ids)
            self._second = np.full(m, m, dtype=np.int64)
            others = np.flatnonzero(self.twin != np.arange(m))
            np.minimum.at(self._second, self.twin[others], others)
        return self._second

    def _cached_spray(self, x: int, y: int, base: tuple[int, int] | None = None) -> tuple:
        """(links, fractions, slowest latency, positions of the links out of x and into y, or None when the two are
        one hop apart, the fractions' ``_dyadic_exponent``) of the spray x -> y, cached (``sprays``); moved from the
        spray between the switches ``base`` (``_moved_spray``: the links at the same positions) when that one can be,
        else made."""
        cache = self._sprays
        key = (x, y)
        spray = cache.get(key)
        if spray is not None:
            cache.move_to_end(key)
            return spray
        if base is not None and base != key:
            made = self._cached_spray(*base)
            moved = self._moved_spray(made, *base, x, y) if made[3] is not None else None
            if moved is not None:
                spray = (*moved, made[3], made[4])
        if spray is None:
            links, fractions, slowest_s = self._spray_to(y, np.array([x], dtype=np.int64), np.ones(1))
            ends = None
            if self._dist_to(y)[x] > 1:
                ends = (np.flatnonzero(self._link_src[links] == x), np.flatnonzero(self._link_dst[links] == y))
            spray = (links, fractions, float(slowest_s[0]), ends, _dyadic_exponent(fractions))
        links = spray[0]
        cache[key] = spray
        self._spray_entries += len(links)
        while self._spray_entries > _SPRAY_CACHE_ENTRIES and len(cache) > 1:
            _, dropped = cache.popitem(last=False)
            self._spray_entries -= len(dropped[0])
        return spray

    def _moved_spray(self, base: tuple, first_x: int, first_y: int, x: int, y: int) -> tuple | None:
        """The spray x -> y from the spray ``base`` between their first twins: its first links leave x, its last enter
        y. None when those links' latencies differ from base's (the slowest path would differ)."""
        links, fractions, slowest_s, (out_of, into) = base[:4]
        moved = links.copy()
        if x != first_x:
            moved[out_of] = self._core_link_of(np.full(len(out_of), x), self._link_dst[links[out_of]])
        if y != first_y:
            moved[into] = self._core_link_of(self._link_src[links[into]], np.full(len(into), y))
        changed = np.concatenate((out_of, into))
        if not np.array_equal(self.link_latency_s[moved[changed]], self.link_latency_s[links[changed]]):
            return None
        return moved, fractions, slowest_s

    def _core_link_of(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Link id of the core link u -> v (core numbering) for each i; every such link exists."""
        m = len(self.core_ids)
        at = np.searchsorted(self._core_keys, np.asarray(u, dtype=np.int64) * m + v)
        return self._core_key_link[at]

    def spray(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(core links, fraction of the bytes on each, latency of the slowest path) of one flow from core
        switch ``a`` to core switch ``b`` sprayed over all shortest paths; cached per switch pair."""
        return self.sprays(np.array([a], dtype=np.int64), np.array([b], dtype=np.int64))[0]

    def _slowest(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Latency of the slowest shortest core path from core switch a[i] to core switch b[i] (a != b), as a spray
        of a flow a -> b finds it (``_spray_to``), without spreading any load; cached per switch pair.

        To a twin b of a class's first switch r (``twin``) whose links have the latencies of r's links to and from
        the same neighbours (``_twin_alike``), from any a other than b and r, the slowest path is as slow as to r:
        swapping b and r maps the shortest paths to one onto those to the other, link latencies kept. So one pass
        per class of such twins is made (``_slowest_to``), not one per destination (32 instead of 1,024 leaves)."""
        m = len(self.core_ids)
        key = b * m + a
        out = np.empty(len(key))
        cache = self._slowest_s
        missing = []
        for i, k in enumerate(key.tolist()):
            value = cache.get(k)
            if value is None:
                missing.append(i)
            else:
                out[i] = value
        if missing:
            at = np.array(missing, dtype=np.int64)
            first = self.twin[b[at]]
            moved = (first != b[at]) & (a[at] != first) & self._twin_alike()[b[at]]
            asked = np.where(moved, first, b[at]) * m + a[at]      # the pair whose slowest path is the same
            wanted = np.unique(asked)
            wanted = wanted[[cache.get(k) is None for k in wanted.tolist()]]
            for target in np.unique(wanted // m).tolist():
                group = wanted[wanted // m == target]
                values = self._slowest_to(target, group % m)
                cache.update(zip(group.tolist(), values.tolist(), strict=True))
            values = [cache[k] for k in asked.tolist()]
            out[at] = values
            cache.update(zip(key[at].tolist(), values, strict=True))
        return out

    def _twin_alike(self) -> np.ndarray:
        """Per core switch: whether each of its core links in and out has the latency of its first twin's link from
        and to the same neighbour (``_slowest``); True for a switch that is its own first twin. Made once."""
        if self._alike is None:
            twin, src, dst = self.twin, self._link_src[self.core_link], self.core_nbr
            latency_s = self.link_latency_s[self.core_link]
            into = np.flatnonzero(twin[dst] != dst)        # u -> v against u -> first twin of v
            out_of = np.flatnonzero(twin[src] != src)      # u -> v against first twin of u -> v
            differs = np.zeros(len(self.core_ids), dtype=bool)
            np.logical_or.at(differs, dst[into],
                             self.link_latency_s[self._core_link_of(src[into], twin[dst[into]])] != latency_s[into])
            np.logical_or.at(differs, src[out_of],
                             self.link_latency_s[self._core_link_of(twin[src[out_of]], dst[out_of])]
                             != latency_s[out_of])
            self._alike = ~differs
        return self._alike

    def _slowest_to(self, b: int, sources: np.ndarray) -> np.ndarray:
        """``_slowest`` from each of ``sources`` to ``b``: back up the shortest-path levels from ``b``, each switch
        taking the slowest of its next hops (the recursion of ``_spray_to`` over the switches the sources reach)."""
        dist = self._reaching_dist(b, sources)
        m = len(self.core_ids)
        reached = np.zeros(m, dtype=bool)
        reached[sources] = True
        steps = []
        for level in range(int(dist[sources].max()), 0, -1):
            here = np.flatnonzero((dist == level) & reached)
            edge = _ranges(self.core_ptr, here)
            owner = np.repeat(here, self.core_ptr[here + 1] - self.core_ptr[here])
            nbr = self.core_nbr[edge]
            closer = dist[nbr] == level - 1
            reached[nbr[closer]] = True
            steps.append((owner[closer], nbr[closer], self.core_link[edge[closer]]))
        slowest_s = np.zeros(m)
        for came, went, link in reversed(steps):
            np.maximum.at(slowest_s, came, self.link_latency_s[link] + slowest_s[went])
        return slowest_s[sources]

    def latencies(self, src: np.ndarray, dst: np.ndarray, salt: int, adaptive: bool) -> np.ndarray:
        """The latency of each pair's route, as ``route_set`` gives it, without its link loads: under ``adaptive``
        the core segment is the slowest sprayed path (``_slowest``), no spray is made; under ``ecmp`` the walk is
        the route (``route_set``). A pair listed several times is routed once."""
        src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        if not adaptive:
            return self.route_set(src, dst, salt, adaptive, 0)[2]
        gpus = len(self.gpu_index)
        unique, inverse = np.unique(src * gpus + dst, return_inverse=True)
        if len(unique) < len(src):
            return self.latencies(unique // gpus, unique % gpus, salt, adaptive)[inverse]
        latency_s = np.zeros(len(src))
        via = np.flatnonzero(src != dst)
        if self.edge_link and len(via):
            direct = [self._direct(s, d) for s, d in zip(src[via].tolist(), dst[via].tolist(), strict=True)]
            has = np.array([k is not None for k in direct], dtype=bool)
            if has.any():
                latency_s[via[has]] = self.link_latency_s[np.array([k for k in direct if k is not None])]
            via = via[~has]
        if len(via):
            up, down = self.access(True), self.access(False)
            u, d = self._endpoints(src[via], dst[via], salt)
            latency_s[via] = up.latency_s[u] + down.latency_s[d]
            a, b = up.switch[u], down.switch[d]
            cross = np.flatnonzero(a != b)
            if len(cross):
                latency_s[via[cross]] += self._slowest(a[cross], b[cross])
        return latency_s

    # ---- many pairs at once ----------------------------------------------------------------------------
    def route_set(self, src: np.ndarray, dst: np.ndarray, salt: int, adaptive: bool, links: int,
                  part: np.ndarray | None = None, core: bool = True):
        """(link ids in use, load on each, latency per pair) of the flows src[i] -> dst[i] over ``links`` links.

        Load = number of flows crossing a link; under ``adaptive`` the sum over flows of the fraction of each
        flow's bytes on the link (access segments carry a whole flow). Latency = the pair's path (ECMP), or its
        access segments plus the slowest sprayed core path (adaptive; all equal on the builtin fabrics).
        Raises KeyError when a pair has no route.

        With ``part`` (an id per pair) the loads are kept apart per part: (part of each entry, link ids, load,
        latency per pair), entries sorted by part then link (the route of each part, all parts in one pass).

        A pair listed several times (within one part) is routed once and counted that many times: a route is a
        function of (src, dst, salt), and loads add over flows (a collective over many channels repeats its
        pairs: the gradient-norm all-reduce of 16k GPUs lists 90k distinct pairs 524k times).
        """
        src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        if len(src) > _DEDUPLICATE_PAIRS:
            gpus = len(self.gpu_index)
            key = src * gpus + dst
            if part is not None:
                key = key + np.asarray(part, dtype=np.int64) * (gpus * gpus)
            unique, first, inverse, repeats = _unique_inverse(key)
            if len(unique) < len(key):
                routed = self._route_set(src[first], dst[first], salt, adaptive, links,
                                         None if part is None else np.asarray(part)[first], repeats.astype(float),
                                         core)
                return (*routed[:-1], routed[-1][inverse])
        return self._route_set(src, dst, salt, adaptive, links, part, None, core)

    def _route_set(self, src: np.ndarray, dst: np.ndarray, salt: int, adaptive: bool, links: int,
                   part: np.ndarray | None, flows: np.ndarray | None, core: bool = True):
        """``route_set`` of pairs each standing for ``flows[i]`` flows (None: one each)."""
        latency_s = np.zeros(len(src))
        weight = np.ones(len(src)) if flows is None else flows
        parts: list[np.ndarray] = []        # link ids, one array per piece of route
        weights: list[np.ndarray] = []      # with the load each piece puts on them
        owners: list[np.ndarray] | None = None if part is None else []  # the pair of every entry, per part
        via = np.flatnonzero(src != dst)
        if self.edge_link and len(via):
            direct = [self._direct(s, d) for s, d in zip(src[via].tolist(), dst[via].tolist(), strict=True)]
            has = np.array([k is not None for k in direct], dtype=bool)
            if has.any():
                hit = np.array([k for k in direct if k is not None], dtype=np.int64)
                parts.append(hit)
                weights.append(weight[via[has]])
                if owners is not None:
                    owners.append(via[has])
                latency_s[via[has]] = self.link_latency_s[hit]
            via = via[~has]
        if len(via):
            up, down = self.access(True), self.access(False)
            u, d = self._endpoints(src[via], dst[via], salt)
            for table, rows in ((up, u), (down, d)):
                flat = table.links[rows].ravel()
                on = flat >= 0
                parts.append(flat[on])
                weights.append(np.repeat(weight[via], table.links.shape[1])[on])
                if owners is not None:
                    owners.append(np.repeat(via, table.links.shape[1])[on])
            latency_s[via] = up.latency_s[u] + down.latency_s[d]
            a, b = up.switch[u], down.switch[d]
            cross = np.flatnonzero(a != b) if core else _NO_LINKS
            if adaptive and len(cross):
                self._sprayed(via[cross], a[cross], b[cross], weight[via[cross]],
                              None if part is None else part[via[cross]], parts, weights, owners, latency_s,
                              float(weight.sum()))
            elif len(cross):
                walks = [self._walk(int(a[c]), int(b[c]), (int(src[via[c]]), int(dst[via[c]]), int(salt)))
                         for c in cross.tolist()]
                flat = np.fromiter((k for w in walks for k in w), dtype=np.int64)
                parts.append(flat)
                owner = np.repeat(cross, [len(w) for w in walks])
                weights.append(weight[via[owner]])
                if owners is not None:
                    owners.append(via[owner])
                latency_s[via] += np.bincount(owner, weights=self.link_latency_s[flat], minlength=len(via))
        if owners is not None:
            return (*loads_by_part(part, _concat(owners), _concat(parts), _concat(weights, float), links),
                    latency_s)
        if not parts:
            return _NO_LINKS, np.zeros(0), latency_s
        used, load = summed(np.concatenate(parts), np.concatenate(weights), links)
        if not adaptive:
            load = np.rint(load).astype(np.int64)   # whole flows
        return used, load, latency_s

    def _sprayed(self, pair: np.ndarray, a: np.ndarray, b: np.ndarray, flows: np.ndarray, part: np.ndarray | None,
                 parts: list, weights: list, owners: list | None, latency_s: np.ndarray, total: float) -> None:
        """The core segments of pairs ``pair[i]`` from core switch a[i] to b[i] (a != b), ``flows[i]`` flows each,
        sprayed (``_spray_to``); appends their links and loads to ``parts``/``weights`` (and the pair standing
        for each entry's part to ``owners``) and adds the slowest sprayed path to ``latency_s``. ``total``: the flows
        of every entry the loads are summed with (``_gathered_sprays``).

        Flows are grouped by (part, destination switch): a part's load, not a pair's, is kept. A group of few
        source switches takes the per switch-pair sprays, cached across calls (rings, pipeline sends and
        data-parallel groups revisit the same switch pairs with different GPU pairs), gathered for all such groups
        at once (``_gathered_sprays``); a larger group (e.g. a random permutation) is spread in one pass, which costs
        about as much as one cached spray.
        """
        m = len(self.core_ids)
        group_key = b if part is None else np.asarray(part, dtype=np.int64) * m + b
        # (group, source switch) triples with their flows
        key = group_key * m + a
        triple, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        triple_flows = np.bincount(inverse, weights=flows, minlength=len(triple))
        triple_group = triple // m
        group, group_of = np.unique(triple_group, return_inverse=True)
        sources = np.bincount(group_of, minlength=len(group))
        cached = sources[group_of] <= _CACHED_SPRAY_SOURCES
        triple_a, triple_b = a[first], b[first]
        slowest_s = np.empty(len(triple))
        spread = []                            # the larger groups' (links, loads, pair standing for the part)
        group_ptr = np.concatenate(([0], np.cumsum(sources)))   # triples are sorted by group
        for g in np.flatnonzero(sources > _CACHED_SPRAY_SOURCES).tolist():
            at = np.arange(group_ptr[g], group_ptr[g + 1])
            core_links, core_load, slowest_s[at] = self._spray_to(int(triple_b[at[0]]), triple_a[at],
                                                                  triple_flows[at])
            spread.append((core_links, core_load, pair[first[at[0]]]))
        if cached.any():
            at = np.flatnonzero(cached)
            # sums of whole flows times the spread loads and spray fractions are exact when all are multiples of
            # one power of two (``_exact_scale``): then twins' sprays may share their middle links
            scale = 0 if np.array_equal(flows, np.floor(flows)) else None
            for _, load, _ in spread:
                scale = _larger_scale(scale, _dyadic_exponent(load))
            slowest_s[at] = self._gathered_sprays(triple_a[at], triple_b[at], triple_flows[at], pair[first[at]],
                                                  None if part is None else triple_group[at] // m, scale, total,
                                                  parts, weights, owners)
        for core_links, core_load, owner in spread:
            parts.append(core_links)
            weights.append(core_load)
            if owners is not None:  # any pair of the part stands for it
                owners.append(np.full(len(core_links), owner))
        latency_s[pair] += slowest_s[inverse]

    def _gathered_sprays(self, a: np.ndarray, b: np.ndarray, flows: np.ndarray, owner: np.ndarray,
                         part: np.ndarray | None, scale: int | None, total: float, parts: list, weights: list,
                         owners: list | None) -> np.ndarray:
        """The cached sprays (``sprays``) of switch pairs a[i] -> b[i], ``flows[i]`` flows each (``owner[i]``: a pair
        of their part ``part[i]``), appended to ``parts``/``weights``/``owners``; returns each one's slowest path.

        A spray moved between twins (``sprays``) differs from its base's only in its first and last links, so when
        the sums come out the same in any order its middle links are not copied per switch pair: they are counted
        once per (part, base) with the flows of all its switch pairs (``_factored``), and only the moved ends per
        switch pair (8,320 route entries between two pods of a 131,072-GPU rail-optimised fat-tree, 128 of them
        ends). That holds when every load is a multiple of 2**-k for one k (``_dyadic_exponent``: fat-trees of
        power-of-two radix) with the flows' total below 2**(53-k): every product and partial sum is then exact.
        ``scale``: that k for the other loads summed with these (None: not so), ``total`` their flows."""
        m = len(self.core_ids)
        switch_pair, pair_of = np.unique(b * m + a, return_inverse=True)
        x, y = switch_pair % m, switch_pair // m
        if scale is not None:
            key = None
            if part is None:    # the same switch pairs and flows (a ring's steps from every pipeline stage)
                key = (a.tobytes(), b.tobytes(), flows.tobytes())
                kept = self._core_loads.get(key)
                if kept is not None and total * 2.0 ** max(scale, kept[3]) < 2.0**53:
                    self._core_loads.move_to_end(key)
                    parts.append(kept[0])
                    weights.append(kept[1])
                    return kept[2]
            factored = self._factored(x, y, pair_of, flows, owner, part, scale, total)
            if factored is not None:
                pieces, slowest_of, k = factored
                if key is not None and sum(len(piece[0]) for piece in pieces) >= _KEPT_CORE_MIN_ENTRIES:
                    # exact sums: the loads summed per link now are the same as summed later with the rest
                    used, load = summed(_concat([piece[0] for piece in pieces]),
                                        _concat([piece[1] for piece in pieces], float), len(self.link_latency_s))
                    pieces = [(used, load, None)]
                    self._keep_core_loads(key, (used, load, slowest_of[pair_of], k))
                for piece in pieces:
                    parts.append(piece[0])
                    weights.append(piece[1])
                    if owners is not None:
                        owners.append(piece[2])
                return slowest_of[pair_of]
        sprays = self.sprays(x, y)
        slowest_of = np.array([spray[2] for spray in sprays])
        links, fractions, owned = self._whole(sprays, pair_of, flows, owner)
        parts.append(links)
        weights.append(fractions)
        if owners is not None:
            owners.append(owned)
        return slowest_of[pair_of]

    @staticmethod
    def _whole(sprays: list, pair_of: np.ndarray, flows: np.ndarray, owner: np.ndarray):
        """(links, loads, owner of each entry) of the sprays ``sprays[pair_of[i]]`` carrying flows[i] each, copied
        whole."""
        lengths = np.array([len(spray[0]) for spray in sprays], dtype=np.int64)
        ptr = np.zeros(len(sprays) + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        spray_links = _concat([spray[0] for spray in sprays])
        spray_fractions = _concat([spray[1] for spray in sprays], float)
        entries = _ranges(ptr, pair_of)
        per = lengths[pair_of]
        return spray_links[entries], spray_fractions[entries] * np.repeat(flows, per), np.repeat(owner, per)

    def _factored(self, x: np.ndarray, y: np.ndarray, pair_of: np.ndarray, flows: np.ndarray, owner: np.ndarray,
                  part: np.ndarray | None, scale: int, total: float):
        """``_gathered_sprays`` with the middle links of moved sprays counted once per (part, base): (pieces of
        (links, loads, owners), slowest path per switch pair, ``_dyadic_exponent`` of the sprays' fractions), or None
        when the sums would not be exact."""
        m = len(self.core_ids)
        base_x, base_y = self.twin[x], self.twin[y]
        same = base_x == base_y
        base_y[same] = self._second_twin()[base_x[same]]
        moved = np.flatnonzero((base_x != x) | (base_y != y))
        base_key, base_of = np.unique(base_x[moved] * m + base_y[moved], return_inverse=True)
        bases = [self._cached_spray(k // m, k % m) for k in base_key.tolist()]
        # ends (links out of the source, then into the destination) and middles of every base
        ends = [np.concatenate(spray[3]) if spray[3] is not None else _NO_LINKS for spray in bases]
        into = [np.arange(len(e)) >= len(spray[3][0]) if spray[3] is not None else np.zeros(0, dtype=bool)
                for e, spray in zip(ends, bases, strict=True)]
        middle = []
        for e, spray in zip(ends, bases, strict=True):
            keep = np.ones(len(spray[0]), dtype=bool)
            keep[e] = False
            middle.append(np.flatnonzero(keep))
        usable = np.array([spray[3] is not None for spray in bases], dtype=bool)
        end_ptr = np.zeros(len(bases) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in ends], out=end_ptr[1:])
        end_links = _concat([spray[0][e] for e, spray in zip(ends, bases, strict=True)])
        end_fractions = _concat([spray[1][e] for e, spray in zip(ends, bases, strict=True)], float)
        end_into = np.concatenate(into) if into else np.zeros(0, dtype=bool)
        # the moved ends of every switch pair whose base has ends, as ``_moved_spray`` moves them
        cand = moved[usable[base_of]]
        cand_base = base_of[usable[base_of]]
        entries = _ranges(end_ptr, cand_base)
        per = end_ptr[cand_base + 1] - end_ptr[cand_base]
        which = np.repeat(np.arange(len(cand)), per)
        base_links, side = end_links[entries], end_into[entries]
        px, py = x[cand][which], y[cand][which]
        out_moved = (~side) & (px != base_x[cand][which])
        in_moved = side & (py != base_y[cand][which])
        links = base_links.copy()
        if out_moved.any():
            links[out_moved] = self._core_link_of(px[out_moved], self._link_dst[base_links[out_moved]])
        if in_moved.any():
            links[in_moved] = self._core_link_of(self._link_src[base_links[in_moved]], py[in_moved])
        differs = np.bincount(which, weights=self.link_latency_s[links] != self.link_latency_s[base_links],
                              minlength=len(cand)) > 0
        # switch pairs copied whole: not moved, no ends (one hop), or moved ends of other latencies
        factored = np.zeros(len(x), dtype=bool)
        factored[cand[~differs]] = True
        whole = np.flatnonzero(~factored)
        pair_base = np.full(len(x), -1, dtype=np.int64)
        pair_base[moved] = base_of
        sprays = [self._cached_spray(int(x[i]), int(y[i]), (int(base_x[i]), int(base_y[i]))) for i in whole.tolist()]
        k = 0   # of these sprays' fractions
        for spray in [*sprays, *(bases[j] for j in np.unique(pair_base[factored]).tolist())]:
            k = _larger_scale(k, spray[4])
        if k is None or total * 2.0 ** max(k, scale) >= 2.0**53:
            return None
        slowest_of = np.empty(len(x))
        slowest_of[whole] = [spray[2] for spray in sprays]
        slowest_of[factored] = [bases[j][2] for j in pair_base[factored].tolist()]
        pieces = []
        whole_of = np.full(len(x), -1, dtype=np.int64)
        whole_of[whole] = np.arange(len(whole))
        alone = np.flatnonzero(whole_of[pair_of] >= 0)
        if len(alone):
            pieces.append(self._whole(sprays, whole_of[pair_of[alone]], flows[alone], owner[alone]))
        shared = np.flatnonzero(factored[pair_of])
        if len(shared):
            # ends per (triple of a factored switch pair)
            keep = ~differs[which]
            pair_ptr = np.zeros(len(x) + 1, dtype=np.int64)
            np.cumsum(np.bincount(cand[which[keep]], minlength=len(x)), out=pair_ptr[1:])
            pair_links, pair_fractions = links[keep], end_fractions[entries[keep]]
            at = _ranges(pair_ptr, pair_of[shared])
            count = pair_ptr[pair_of[shared] + 1] - pair_ptr[pair_of[shared]]
            pieces.append((pair_links[at], pair_fractions[at] * np.repeat(flows[shared], count),
                           np.repeat(owner[shared], count)))
            # middles per (part, base) with the flows of all its switch pairs
            base_of_triple = pair_base[pair_of[shared]]
            group = base_of_triple if part is None else part[shared] * len(bases) + base_of_triple
            groups, first, inverse = np.unique(group, return_index=True, return_inverse=True)
            group_flows = np.bincount(inverse, weights=flows[shared], minlength=len(groups))
            group_base = base_of_triple[first]
            mid_ptr = np.zeros(len(bases) + 1, dtype=np.int64)
            np.cumsum([len(mid) for mid in middle], out=mid_ptr[1:])
            mid_links = _concat([spray[0][mid] for mid, spray in zip(middle, bases, strict=True)])
            mid_fractions = _concat([spray[1][mid] for mid, spray in zip(middle, bases, strict=True)], float)
            at = _ranges(mid_ptr, group_base)
            count = mid_ptr[group_base + 1] - mid_ptr[group_base]
            pieces.append((mid_links[at], mid_fractions[at] * np.repeat(group_flows, count),
                           np.repeat(owner[shared][first], count)))
        return pieces, slowest_of, k

    def _keep_core_loads(self, key: tuple, kept: tuple) -> None:
        """Keep summed core loads (``_gathered_sprays``), up to ``_KEPT_CORE_ENTRIES`` links in all (least recently
        used first out)."""
        cache = self._core_loads
        cache[key] = kept
        self._core_load_entries += len(kept[0])
        while self._core_load_entries > _KEPT_CORE_ENTRIES and len(cache) > 1:
            _, dropped = cache.popitem(last=False)
            self._core_load_entries -= len(dropped[0])

def _dyadic_exponent(values: np.ndarray) -> int | None:
    """The least k >= 0 such that every values[i] * 2**k is a whole number (0 for no values), None when values are
    not all finite."""
    values = np.abs(np.asarray(values, dtype=float))
    values = values[values != 0]
    if not len(values):
        return 0
    if not np.isfinite(values).all():
        return None
    mantissa, exponent = np.frexp(values)              # values = mantissa * 2**exponent, 0.5 <= mantissa < 1
    whole = np.ldexp(mantissa, 53).astype(np.int64)    # values = whole * 2**(exponent - 53), whole < 2**53 exactly
    trailing = np.log2(whole & -whole).astype(np.int64)   # zeros below whole's lowest set bit (a power of two)
    return max(0, int((53 - exponent - trailing).max()))


def _larger_scale(k: int | None, other: int | None) -> int | None:
    """The larger of two ``_dyadic_exponent``s (None when either is None)."""
    return None if k is None or other is None else max(k, other)


def _concat(arrays: list[np.ndarray], dtype=np.int64) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype=dtype)


def summed(ids: np.ndarray, weights: np.ndarray, links: int) -> tuple[np.ndarray, np.ndarray]:
    """(link ids with a load > 0, sorted; their loads): ``weights`` summed per link id ``ids`` (< ``links``), each in
    the order given. A dense count over all links when the entries are many, else over the distinct ids only (the
    same sums, without touching an array of every link)."""
    if len(ids) * _SPARSE_SUM_RATIO >= links:
        load = np.bincount(ids, weights=weights, minlength=links)
        used = np.flatnonzero(load > 0)
        return used, load[used]
    used, inverse = np.unique(ids, return_inverse=True)
    load = np.bincount(inverse, weights=weights, minlength=len(used))
    positive = load > 0
    return (used, load) if positive.all() else (used[positive], load[positive])


def loads_by_part(part: np.ndarray, owner: np.ndarray, ids: np.ndarray, weights: np.ndarray,
                  links: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Route entries (pair ``owner[i]`` puts ``weights[i]`` on link ``ids[i]``) summed per (part of the pair,
    link): (part, link id, load) sorted by part then link."""
    key = np.asarray(part, dtype=np.int64)[owner]   # a new array: the key is made in place (millions of entries)
    key *= links
    key += ids
    top = int(key.max()) if len(key) else 0
    # few parts: a dense count beats sorting millions of entries, unless the entries are few against the keys' range
    # (a class of a few hundred pairs on a large fabric would count into, then scan, an array of millions of zeros)
    if len(key) and top < _DENSE_PART_KEYS and len(key) * _SPARSE_SUM_RATIO > top:
        load = np.bincount(key, weights=weights)
        key = np.flatnonzero(load)
        load = load[key]
    else:
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.empty(len(key), dtype=bool)
        first[:1] = True
        np.not_equal(key[1:], key[:-1], out=first[1:])
        if first.all():   # each (part, link) once (a symmetry check's rings): its load is its weight
            load = np.asarray(weights, dtype=float)[order]
        else:   # np.unique's inverse, and the sums in entry order
            inverse = np.empty(len(key), dtype=np.int64)
            inverse[order] = np.cumsum(first) - 1
            key = key[first]
            load = np.bincount(inverse, weights=weights, minlength=len(key))
        if top < _DENSE_PART_KEYS and not load.all():   # as the dense count: keys whose load sums to zero left out
            kept = load != 0
            key, load = key[kept], load[kept]
    return key // links, key % links, load


def _unique_inverse(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(key, return_index=True, return_inverse=True, return_counts=True)`` of integer keys, by one
    stable argsort: the same arrays (first occurrences, as np.unique's stable sort gives), 3-4 times faster on
    numpy 2 for millions of keys (4.5 million: 0.12 s, not 0.45 s)."""
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    first = np.empty(len(key), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    inverse = np.empty(len(key), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    return ordered[starts], order[starts], inverse, np.diff(starts, append=len(key))


class TorusRouter:
    """Dimension-order routing on a k-ary n-cube: each dimension in turn, the short way round.

    Every such path is a shortest path; the order of the dimensions (a rotation) and the direction when both
    ways are equally short are chosen by hash((src, dst, salt)), spreading flows over the equal-cost paths.
    """

    def __init__(self, dims: tuple[int, ...], plus_link: np.ndarray, minus_link: np.ndarray):
        self.dims = dims
        self.plus_link = plus_link    # [gpu, dim] -> link id to the +1 neighbour (-1: dimension 1 wide)
        self.minus_link = minus_link
        self.strides = [int(np.prod(dims[d + 1:])) for d in range(len(dims))]
        self._paths: dict[tuple[int, int, int], np.ndarray] = {}

    def path(self, src: int, dst: int, salt: int = 0) -> np.ndarray:
        """Directed link ids of the route GPU ``src`` -> GPU ``dst`` (cached)."""
        key = (src, dst, salt)
        cached = self._paths.get(key)
        if cached is not None:
            return cached
        h = hash(key)
        ndims = len(self.dims)
        links, here = [], src
        for step in range(ndims):
            d = (step + h) % ndims
            size, stride = self.dims[d], self.strides[d]
            here_c, dst_c = (here // stride) % size, (dst // stride) % size
            ahead = (dst_c - here_c) % size
            forward = ahead < size - ahead or (ahead == size - ahead and (h >> (8 + d)) & 1 == 0)
            hops = ahead if forward else size - ahead
            table, sign = (self.plus_link, 1) if forward else (self.minus_link, -1)
            coord = here_c
            for _ in range(hops):
                links.append(int(table[here, d]))
                step_c = (coord + sign) % size
                here += (step_c - coord) * stride
                coord = step_c
        assert here == dst
        result = np.array(links, dtype=np.int64)
        self._paths[key] = result
        return result
