"""Shortest-path routing with ECMP over a fabric graph, computed lazily and cached.

A route from GPU ``src`` to GPU ``dst`` is split in three: an *access* segment from the GPU through its
host-side nodes (PCIe switch, NIC) up to a network switch, a *core* segment between network switches, and an
access segment down to ``dst``. Access segments are found once per GPU; core distances are found once per
destination switch by a breadth-first search vectorised with numpy (a few milliseconds on a 16k-GPU fabric),
and cached. Among equal-cost core paths the next hop at every switch is chosen by a deterministic hash of
(src, dst, salt, hop), as hash-based ECMP does in real switches (RFC 2992 describes hash-threshold next-hop
selection).

Cost is the hop count (the usual metric of fat-tree ECMP); a direct GPU-GPU link is always taken when it
exists. GPUs are never transit nodes unless the fabric says so (``gpu_transit``: torus fabrics, where chips
route).
"""

from __future__ import annotations

import networkx as nx
import numpy as np

# Roles of nodes that forward traffic between GPUs (the routing core). Host-side nodes carry one GPU's traffic
# only.
CORE_ROLES = frozenset({"nvswitch", "leaf", "spine", "core", "switch"})
HOST_ROLES = frozenset({"pcie", "nic"})

_NO_LINKS = np.zeros(0, dtype=np.int64)


def _csr(n: int, src: np.ndarray, dst: np.ndarray, link: np.ndarray):
    """Compressed adjacency: neighbours of node i are nbr[ptr[i]:ptr[i+1]], reached over link[...]."""
    order = np.argsort(src, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(ptr, src + 1, 1)
    return np.cumsum(ptr), dst[order], link[order]


def _ranges(ptr: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Concatenated index ranges ptr[i]:ptr[i+1] for every i in ``nodes`` (vectorised)."""
    starts, ends = ptr[nodes], ptr[nodes + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return _NO_LINKS
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return offsets + np.arange(total)


class Router:
    """Routes between the GPUs of one fabric graph. Pure: the same (src, dst, salt) always gives the same
    path."""

    def __init__(self, graph: nx.DiGraph, gpu_nodes: list, link_latency_s: np.ndarray):
        nodes = list(graph.nodes)
        index = {node: i for i, node in enumerate(nodes)}
        self.nodes = nodes
        roles = [graph.nodes[node]["role"] for node in nodes]
        gpu_transit = bool(graph.graph.get("gpu_transit", False))
        core_roles = CORE_ROLES | ({"gpu"} if gpu_transit else set())
        self.is_core = np.array([role in core_roles for role in roles], dtype=bool)
        self.is_host = np.array([role in HOST_ROLES for role in roles], dtype=bool)
        self.gpu_index = np.array([index[node] for node in gpu_nodes], dtype=np.int64)
        edges = [(index[u], index[v], d["link_id"]) for u, v, d in graph.edges(data=True)]
        n = len(nodes)
        src, dst, link = (np.array(col, dtype=np.int64) for col in zip(*edges, strict=True)) if edges else (
            _NO_LINKS, _NO_LINKS, _NO_LINKS)
        is_gpu = np.zeros(n, dtype=bool)
        is_gpu[self.gpu_index] = True
        direct = is_gpu[src] & is_gpu[dst]
        self.edge_link = {(int(u), int(v)): int(k) for u, v, k in zip(src[direct], dst[direct], link[direct],
                                                                        strict=True)}
        self.out_ptr, self.out_nbr, self.out_link = _csr(n, src, dst, link)
        self.in_ptr, self.in_nbr, self.in_link = _csr(n, dst, src, link)
        # the core graph in compact numbering (core node i <-> graph node core_ids[i]) keeps BFS arrays small
        self.core_ids = np.flatnonzero(self.is_core)
        self.core_pos = np.full(n, -1, dtype=np.int64)
        self.core_pos[self.core_ids] = np.arange(len(self.core_ids))
        both = self.is_core[src] & self.is_core[dst]
        csrc, cdst = self.core_pos[src[both]], self.core_pos[dst[both]]
        m = len(self.core_ids)
        self.core_ptr, self.core_nbr, self.core_link = _csr(m, csrc, cdst, link[both])
        self.rcore_ptr, self.rcore_nbr, _ = _csr(m, cdst, csrc, link[both])
        self.link_latency_s = link_latency_s
        self._up: dict[int, list] = {}
        self._down: dict[int, list] = {}
        self._dist: dict[int, np.ndarray] = {}
        self._paths: dict[tuple[int, int, int], np.ndarray] = {}
        self._lists: dict | None = None

    # ---- access segments -------------------------------------------------------------------------------
    def _access(self, gpu: int, upward: bool) -> list[tuple[int, int, tuple[int, ...]]]:
        """(switch, hops, links in travel order) for each network switch nearest to ``gpu`` via its host
        side."""
        cache = self._up if upward else self._down
        if gpu in cache:
            return cache[gpu]
        node = int(self.gpu_index[gpu])
        if self.is_core[node]:
            cache[gpu] = [(int(self.core_pos[node]), 0, ())]
            return cache[gpu]
        if self._lists is None:  # plain lists: scalar indexing in this loop is ~10x faster than on arrays
            self._lists = {name: getattr(self, name).tolist() for name in (
                "out_ptr", "out_nbr", "out_link", "in_ptr", "in_nbr", "in_link", "is_core", "is_host", "core_pos")}
        lists = self._lists
        ptr, nbr, lnk = (lists["out_ptr"], lists["out_nbr"], lists["out_link"]) if upward else (
            lists["in_ptr"], lists["in_nbr"], lists["in_link"])
        is_core, is_host, core_pos = lists["is_core"], lists["is_host"], lists["core_pos"]
        found: list[tuple[int, int, tuple[int, ...]]] = []
        seen = {node}
        frontier = [(node, ())]
        while frontier:
            nxt = []
            for here, links in frontier:
                for k in range(ptr[here], ptr[here + 1]):
                    there = nbr[k]
                    if there in seen:
                        continue
                    seen.add(there)
                    path = links + (lnk[k],) if upward else (lnk[k],) + links
                    if is_core[there]:
                        found.append((core_pos[there], len(path), path))
                    elif is_host[there]:
                        nxt.append((there, path))
            frontier = nxt
        cache[gpu] = found
        return found

    # ---- core distances ---------------------------------------------------------------------------------
    def _dist_to(self, switch: int) -> np.ndarray:
        """Hop distance from every core node to core node ``switch`` over core links (-1: unreachable);
        cached."""
        dist = self._dist.get(switch)
        if dist is not None:
            return dist
        dist = np.full(len(self.core_ids), -1, dtype=np.int32)
        dist[switch] = 0
        frontier = np.array([switch], dtype=np.int64)
        level = 0
        while frontier.size:
            level += 1
            preds = self.rcore_nbr[_ranges(self.rcore_ptr, frontier)]
            preds = np.unique(preds[dist[preds] < 0])
            dist[preds] = level
            frontier = preds
        self._dist[switch] = dist
        return dist

    def _walk(self, a: int, b: int, dist: np.ndarray, key: tuple[int, int, int]) -> list[int]:
        """Links of one shortest core path a -> b; at each hop the next switch is picked by hash (ECMP)."""
        links = []
        here, hop = a, 0
        while here != b:
            lo, hi = self.core_ptr[here], self.core_ptr[here + 1]
            nbrs = self.core_nbr[lo:hi]
            ok = np.flatnonzero(dist[nbrs] == dist[here] - 1)
            pick = ok[hash((*key, hop)) % len(ok)] if len(ok) > 1 else ok[0]
            links.append(int(self.core_link[lo + pick]))
            here = int(nbrs[pick])
            hop += 1
        return links

    # ---- public --------------------------------------------------------------------------------------
    def path(self, src: int, dst: int, salt: int = 0) -> np.ndarray:
        """Directed link ids of the route GPU ``src`` -> GPU ``dst`` (cached); raises KeyError when
        unreachable."""
        key = (src, dst, salt)
        cached = self._paths.get(key)
        if cached is not None:
            return cached
        if src == dst:
            result = _NO_LINKS
        else:
            direct = self.edge_link.get((int(self.gpu_index[src]), int(self.gpu_index[dst])))
            result = (np.array([direct], dtype=np.int64) if direct is not None
                      else self._via_core(src, dst, key))
        self._paths[key] = result
        return result

    def _via_core(self, src: int, dst: int, key: tuple[int, int, int]) -> np.ndarray:
        ups, downs = self._access(src, True), self._access(dst, False)
        candidates = sorted(((u[1] + d[1] + (u[0] != d[0]), i, j) for i, u in enumerate(ups)
                             for j, d in enumerate(downs)))
        best, ties = None, []
        for bound, i, j in candidates:
            if best is not None and bound > best:
                break
            (a, up_hops, _), (b, down_hops, _) = ups[i], downs[j]
            core_hops = self._dist_to(b)[a] if a != b else 0
            if core_hops < 0:
                continue
            cost = up_hops + int(core_hops) + down_hops
            if best is None or cost < best:
                best, ties = cost, [(i, j)]
            elif cost == best:
                ties.append((i, j))
        if best is None:
            raise KeyError(f"no route from GPU {src} to GPU {dst}")
        i, j = ties[hash(key) % len(ties)] if len(ties) > 1 else ties[0]
        (a, _, up_links), (b, _, down_links) = ups[i], downs[j]
        core = self._walk(a, b, self._dist_to(b), key) if a != b else []
        return np.array([*up_links, *core, *down_links], dtype=np.int64)


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
