"""A fabric as compact tables, and the NetworkX graph made from them on demand.

``FabricTables`` holds a fabric's nodes (names, roles, traversal latencies, a few integer or text attributes) and its
directed links (ends, bytes/s, latency, kind, an optional own class), as numpy arrays indexed by node order and by
link id. The builders fill it in bulk; routing, link classes, the bill of materials and the engine read it. Per-node
and per-edge Python dicts, which a NetworkX graph keeps for every node and edge (a built and routed rail-optimised
fat-tree took 7.9 KB per GPU with them, 3.3 KB without: ``benchmarks/fabric_memory.py``), are made only when someone
asks for the graph.

``TableGraph`` is that graph (its class made on first use: networkx is imported only when a graph is asked for):
a real ``networkx.DiGraph`` whose node attribute dicts are made one node at a time on
lookup (all of them on iteration) and whose adjacency is made in one pass on its first use, in the same node, edge
and attribute order as a graph built edge by edge. Once made it is an ordinary DiGraph (mutable; changes do not flow
back into the tables, as changes to a graph never flowed into a built ``Fabric``'s link arrays).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import networkx as nx

# Integer node attributes (rank, server, rail, pod, plane) are stored with this value where a node has none.
ABSENT = -1


@dataclass(eq=False)
class FabricTables:
    """Nodes in node order and directed links by link id (module docstring).

    ``node_attrs`` maps an attribute name to one value per node: int64 arrays (``ABSENT`` where a node has none),
    bool arrays (``transit``: only True is an attribute) or object arrays (None where absent). ``own_class`` maps a
    link id to the class a file or builder gave it. ``graph_attrs`` are the graph's own attributes (name, routing,
    gpu_transit, ...). ``gpu_index`` is the node index of every GPU, in rank order."""

    nodes: list
    role: list
    node_latency_s: np.ndarray
    node_attrs: dict
    src: np.ndarray
    dst: np.ndarray
    bytes_per_s: np.ndarray
    latency_s: np.ndarray
    kind: list
    own_class: dict
    graph_attrs: dict
    gpu_index: np.ndarray
    _index: dict | None = field(default=None, repr=False)
    _graph: nx.DiGraph | None = field(default=None, repr=False)
    _edge_order: np.ndarray | None = field(default=None, repr=False)   # a given graph's own edge order
    # ``kind`` as (the distinct kinds in the order links first name them, each link's index in them), when known
    kind_codes: tuple | None = field(default=None, repr=False)

    @property
    def links(self) -> int:
        return len(self.src)

    @property
    def index(self) -> dict:
        """Node name -> node index (made on first use)."""
        if self._index is None:
            self._index = {name: i for i, name in enumerate(self.nodes)}
        return self._index

    @property
    def gpu_nodes(self) -> list:
        return [self.nodes[i] for i in self.gpu_index.tolist()]

    def edge_order(self) -> np.ndarray:
        """Link ids in the order the NetworkX graph lists its edges: by source node, then by creation (link id); a
        given graph's own order (``of_graph``)."""
        if self._edge_order is None:
            self._edge_order = np.argsort(self.src, kind="stable")
        return self._edge_order

    def node_attr(self, name: str, default=None) -> np.ndarray | None:
        """One attribute of every node (``node_attrs``), or None when no node has it."""
        return self.node_attrs.get(name, default)

    def attrs_of(self, i: int) -> dict:
        """The attribute dict of node ``i``, as a graph built node by node holds it."""
        out = {"role": self.role[i], "latency_s": float(self.node_latency_s[i])}
        for key, values in self.node_attrs.items():
            value = values[i]
            if values.dtype == bool:
                if value:
                    out[key] = True
            elif values.dtype == object:
                if value is not None:
                    out[key] = value
            elif value != ABSENT:
                out[key] = int(value)
        return out

    @property
    def graph(self) -> nx.DiGraph:
        """The fabric as a NetworkX graph (``TableGraph``), made once and shared by every view of the fabric."""
        if self._graph is None:
            self._graph = table_graph_class()(self)
        return self._graph

    @classmethod
    def of_graph(cls, graph: nx.DiGraph, gpu_nodes: list) -> FabricTables:
        """Tables of a graph whose edges carry bytes_per_s, latency_s, kind and link_id 0..E-1 (the graph is kept as
        the tables' graph)."""
        nodes = list(graph.nodes)
        index = {name: i for i, name in enumerate(nodes)}
        role, latency, attrs = [], [], {}
        for i, (_, d) in enumerate(graph.nodes(data=True)):
            role.append(d.get("role"))
            latency.append(d.get("latency_s", 0.0))
            for key, value in d.items():
                if key not in ("role", "latency_s"):
                    attrs.setdefault(key, {})[i] = value
        n, e = len(nodes), graph.number_of_edges()
        src, dst = np.zeros(e, dtype=np.int64), np.zeros(e, dtype=np.int64)
        bytes_per_s, latency_s, kind, own = np.zeros(e), np.zeros(e), [""] * e, {}
        order = []
        for u, out in graph.adjacency():
            iu = index[u]
            for v, d in out.items():
                k = d["link_id"]
                order.append(k)
                src[k], dst[k], bytes_per_s[k], latency_s[k], kind[k] = iu, index[v], d["bytes_per_s"], \
                    d["latency_s"], d["kind"]
                if d.get("link_class"):
                    own[k] = d["link_class"]
        assert all(kind), "link ids must be 0..E-1"
        columns = {key: attr_column([(list(values), list(values.values()))], n) for key, values in attrs.items()}
        tables = cls(nodes, role, np.asarray(latency, dtype=float), columns, src, dst, bytes_per_s, latency_s, kind,
                     own, graph.graph,
                     np.array([index[g] for g in gpu_nodes], dtype=np.int64), index, graph,
                     np.array(order, dtype=np.int64))
        return tables


def attr_column(entries: list, n: int) -> np.ndarray:
    """One node attribute over ``n`` nodes from (node indices, values) entries, later ones winning: an int64 array
    (``ABSENT`` where missing) when every value is an int >= 0, a bool array when every value is a bool, else an object
    array (None where missing) (``FabricTables.node_attrs``)."""
    arrays = [vs for _, vs in entries if isinstance(vs, np.ndarray)]
    if arrays and len(arrays) == len(entries):     # a builder's arrays: their dtypes tell, without a look at each value
        if all(vs.dtype == bool for vs in arrays):
            column = np.zeros(n, dtype=bool)
        elif all(vs.dtype.kind in "iu" and (not len(vs) or vs.min() >= 0) for vs in arrays):
            column = np.full(n, ABSENT, dtype=np.int64)
        else:
            return attr_column([(indices, np.asarray(vs).tolist()) for indices, vs in entries], n)
        for indices, vs in entries:
            column[np.asarray(indices, dtype=np.int64)] = vs
        return column
    entries = [(indices, vs.tolist() if isinstance(vs, np.ndarray) else vs) for indices, vs in entries]
    values = [v for _, vs in entries for v in vs]
    if all(isinstance(v, bool) for v in values):
        column = np.zeros(n, dtype=bool)
    elif all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 0 for v in values):
        column = np.full(n, ABSENT, dtype=np.int64)
    else:
        column = np.full(n, None, dtype=object)
    for indices, vs in entries:
        if column.dtype == object:
            for i, v in zip(np.asarray(indices).tolist(), vs, strict=True):
                column[i] = v
        else:
            column[np.asarray(indices, dtype=np.int64)] = vs
    return column


class _LazyNodes(MutableMapping):
    """A graph's node -> attribute dict mapping, each dict made on its first lookup; iterating, sizing after a change
    or changing it makes every dict first (in node order), after which it is a plain dict underneath."""

    def __init__(self, tables: FabricTables):
        self._tables = tables
        self._made: dict = {}
        self._whole = False

    def _fill(self) -> dict:
        if not self._whole:
            tables, made = self._tables, self._made
            self._made = {name: made[name] if name in made else tables.attrs_of(i)
                          for i, name in enumerate(tables.nodes)}
            self._whole = True
        return self._made

    def __getitem__(self, node):
        d = self._made.get(node)
        if d is None and not self._whole:
            d = self._made[node] = self._tables.attrs_of(self._tables.index[node])
        elif d is None:
            raise KeyError(node)
        return d

    def __contains__(self, node) -> bool:
        if self._whole:
            return node in self._made
        try:
            return node in self._made or node in self._tables.index
        except TypeError:   # unhashable
            return False

    def __iter__(self):
        return iter(self._fill())

    def __len__(self) -> int:
        return len(self._made) if self._whole else len(self._tables.nodes)

    def __setitem__(self, node, value):
        self._fill()[node] = value

    def __delitem__(self, node):
        del self._fill()[node]


class _MadeOnUse:
    """Data descriptor of one of a ``TableGraph``'s dicts: made by ``fill`` on first read; set as networkx sets it."""

    def __init__(self, key: str, fill: str, base):
        self.key, self.fill, self.base = key, fill, base

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        od = obj.__dict__
        if self.key not in od:
            getattr(obj, self.fill)()
        return od[self.key]

    def __set__(self, obj, value):
        self.base.__set__(obj, value)


@cache
def table_graph_class() -> type:
    """``TableGraph``, made on first use so that networkx is imported only by what asks for a graph."""
    import networkx as nx

    class TableGraph(nx.DiGraph):
        """The NetworkX DiGraph of a ``FabricTables``, its dicts made on first use (module docstring)."""

        _node = _MadeOnUse("_node", "_make_nodes", nx.Graph.__dict__["_node"])
        _adj = _MadeOnUse("_adj", "_make_adjacency", nx.DiGraph.__dict__["_adj"])
        _succ = _MadeOnUse("_succ", "_make_adjacency", nx.DiGraph.__dict__["_succ"])
        _pred = _MadeOnUse("_pred", "_make_adjacency", nx.DiGraph.__dict__["_pred"])

        def __init__(self, tables: FabricTables | None = None, **attr):
            if tables is None:   # networkx makes empty graphs of a graph's class (copy, subgraph, reverse ...)
                super().__init__(**attr)
                return
            self._tables = tables
            self.graph = tables.graph_attrs   # one dict: the builder's, the tables' and the graph's attributes
            self.__networkx_cache__ = {}

        def __reduce__(self):   # pickled (and deep-copied) as the plain DiGraph it stands for
            return nx.DiGraph, (), self.__getstate__()

        def __getstate__(self):
            return {"graph": self.graph, "_node": dict(self._node), "_adj": self._adj, "_succ": self._adj,
                    "_pred": self._pred, "__networkx_cache__": {}}

        def _make_nodes(self):
            self._node = _LazyNodes(self._tables)

        def _make_adjacency(self):
            tables = self._tables
            names = tables.nodes
            succ = {name: {} for name in names}
            pred = {name: {} for name in names}
            bytes_per_s, latency_s, kind, own = (tables.bytes_per_s.tolist(), tables.latency_s.tolist(), tables.kind,
                                                 tables.own_class)
            for k, (u, v) in enumerate(zip(tables.src.tolist(), tables.dst.tolist(), strict=True)):
                d = {"bytes_per_s": bytes_per_s[k], "latency_s": latency_s[k], "kind": kind[k], "link_id": k}
                if k in own:
                    d["link_class"] = own[k]
                succ[names[u]][names[v]] = d
                pred[names[v]][names[u]] = d
            self._adj = succ
            self._pred = pred

    TableGraph.__qualname__ = "TableGraph"
    return TableGraph


def __getattr__(name: str):
    if name == "TableGraph":
        return table_graph_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
