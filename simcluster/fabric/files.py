"""Import of a user's fabric from YAML or GraphML, validated into the same graph the builders produce.

The YAML format is documented in docs/topologies.md. Any problem is a ScenarioError whose field is
``<file>:<key>`` (``my.yaml:links[3].bandwidth``), so the CLI prints one line that says where to look.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from simcluster.core import inputs, units
from simcluster.core.errors import ScenarioError
from simcluster.fabric.builders import GraphBuilder

if TYPE_CHECKING:
    import networkx as nx

ROLES = ("gpu", "nvswitch", "pcie", "nic", "leaf", "spine", "core", "switch")
LINK_KINDS = ("nvlink", "pcie", "ib", "ethernet", "torus")

_TOP_KEYS = {"name", "gpus_per_node", "gpu_transit", "uplink_port", "defaults", "nodes", "links"}
_NODE_KEYS = {"role", "rank", "latency"}
_LINK_KEYS = {"ends", "bandwidth", "latency", "kind", "class", "directed", "count"}
_DEFAULT_KEYS = {"bandwidth", "latency", "kind"}
_EDGE_ATTRIBUTES = {"bandwidth", "latency", "kind", "class", "count"}  # GraphML
_CLASS_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def _check_keys(where: str, data: dict, allowed: set[str]):
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ScenarioError(f"{where}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


# Parallel cables one link entry may stand for: the largest switches have 512 ports (51.2 Tb/s at 100 Gb/s).
MAX_LINK_COUNT = 512


def _quantity(value, dimension: str, field: str, sign: str) -> float:
    """A unit string as an SI float: finite, and > 0 (bandwidths) or >= 0 (latencies) as ``sign`` says. A negative
    latency would run time backwards (the event loop never ends), a zero bandwidth divides by zero."""
    return units.parse_checked(value, dimension, sign, field=field)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def from_spec(data, source: str) -> tuple[GraphBuilder, int | None]:
    """Validate a parsed YAML fabric and build its graph; returns the builder and the file's gpus_per_node."""
    if not isinstance(data, dict):
        raise ScenarioError(source, "expected a mapping with keys nodes and links")
    _check_keys(source, data, _TOP_KEYS)
    for key in ("nodes", "links"):
        if key not in data:
            raise ScenarioError(f"{source}:{key}", "required key is missing")
    nodes, links = data["nodes"], data["links"]
    if not isinstance(nodes, dict) or not nodes:
        raise ScenarioError(f"{source}:nodes", "expected a mapping of node id -> {role: ...}")
    if not isinstance(links, list) or not links:
        raise ScenarioError(f"{source}:links", "expected a list of links {ends: [a, b], bandwidth: ...}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ScenarioError(f"{source}:defaults", "expected a mapping")
    _check_keys(f"{source}:defaults", defaults, _DEFAULT_KEYS)

    b = GraphBuilder(str(data.get("name", Path(source).stem)))
    gpu_transit = data.get("gpu_transit", False)
    if not isinstance(gpu_transit, bool):
        raise ScenarioError(f"{source}:gpu_transit", f"expected true or false, got {gpu_transit!r}")
    b.graph_attrs["gpu_transit"] = gpu_transit
    if data.get("uplink_port") is not None:   # switch-to-switch ports wider than the NICs' (fabric/bom.py)
        b.graph_attrs["uplink_port_bytes_per_s"] = _quantity(data["uplink_port"], units.BYTES_PER_S,
                                                             f"{source}:uplink_port", units.POSITIVE)
    gpus = []
    for node_id, attrs in nodes.items():
        where = f"{source}:nodes.{node_id}"
        attrs = {"role": attrs} if isinstance(attrs, str) else (attrs or {})
        if not isinstance(attrs, dict):
            raise ScenarioError(where, "expected {role: ..., latency: ...} or a role name")
        _check_keys(where, attrs, _NODE_KEYS)
        role = attrs.get("role")
        if role not in ROLES:
            raise ScenarioError(f"{where}.role",
                                f"unknown role {role!r} (expected one of: {', '.join(ROLES)})")
        latency_s = _quantity(attrs.get("latency", "0 s"), units.SECONDS, f"{where}.latency", units.NON_NEGATIVE)
        b.node(str(node_id), role, latency_s)
        if role == "gpu":
            gpus.append((attrs.get("rank"), len(gpus), str(node_id)))
    for i, link in enumerate(links):
        where = f"{source}:links[{i}]"
        if not isinstance(link, dict):
            raise ScenarioError(where, "expected a mapping {ends: [a, b], bandwidth: ...}")
        _check_keys(where, link, _LINK_KEYS)
        ends = link.get("ends")
        if not isinstance(ends, list) or len(ends) != 2:
            raise ScenarioError(f"{where}.ends", "expected two node ids [a, b]")
        for end in ends:
            if str(end) not in b:
                raise ScenarioError(f"{where}.ends", f"node {end!r} is not declared under nodes")
        if str(ends[0]) == str(ends[1]):
            raise ScenarioError(f"{where}.ends", "a link cannot join a node to itself")
        bandwidth = link.get("bandwidth", defaults.get("bandwidth"))
        if bandwidth is None:
            raise ScenarioError(f"{where}.bandwidth",
                                "missing bandwidth (e.g. '400 Gb/s'; or set defaults.bandwidth)")
        bytes_per_s = _quantity(bandwidth, units.BYTES_PER_S, f"{where}.bandwidth", units.POSITIVE)
        latency = link.get("latency", defaults.get("latency", "0 s"))
        latency_s = _quantity(latency, units.SECONDS, f"{where}.latency", units.NON_NEGATIVE)
        kind = link.get("kind", defaults.get("kind", "ethernet"))
        if kind not in LINK_KINDS:
            raise ScenarioError(f"{where}.kind",
                                f"unknown link kind {kind!r} (expected one of: {', '.join(LINK_KINDS)})")
        count = link.get("count", 1)
        if not _is_int(count) or not 1 <= count <= MAX_LINK_COUNT:
            raise ScenarioError(f"{where}.count", f"expected an integer from 1 to {MAX_LINK_COUNT} (cables of one "
                                f"switch), got {count!r}")
        link_class = link.get("class")
        if link_class is not None and not (isinstance(link_class, str) and _CLASS_NAME.fullmatch(link_class)):
            raise ScenarioError(f"{where}.class", f"expected a lower-case name such as leaf-spine, got {link_class!r}")
        add = b.link if link.get("directed", False) else b.cable
        add(str(ends[0]), str(ends[1]), bytes_per_s * count, kind, latency_s, link_class)
    _order_gpus(b, gpus, source)
    gpus_per_node = data.get("gpus_per_node")
    if gpus_per_node is not None and (not _is_int(gpus_per_node) or gpus_per_node < 1):
        raise ScenarioError(f"{source}:gpus_per_node", f"expected a positive integer, got {gpus_per_node!r}")
    validate_graph(b.graph, b.gpu_nodes, source)
    return b, gpus_per_node


def _order_gpus(b: GraphBuilder, gpus: list[tuple], source: str):
    """GPU rank order: the ``rank`` keys when given (all of them, 0..n-1), else order of declaration."""
    if not gpus:
        raise ScenarioError(f"{source}:nodes", "no node has role gpu")
    ranks = [rank for rank, _, _ in gpus]
    if all(rank is None for rank in ranks):
        b.gpu_nodes = [name for _, _, name in gpus]
        return
    if (any(rank is None or not _is_int(rank) for rank in ranks)
            or sorted(ranks) != list(range(len(gpus)))):
        raise ScenarioError(f"{source}:nodes", "GPU ranks must be given for all GPUs or none, and be 0..n-1")
    b.gpu_nodes = [name for _, _, name in sorted(gpus)]


def validate_graph(graph: nx.DiGraph, gpu_nodes: list, source: str):
    """Structural checks shared by YAML and GraphML imports: dangling GPUs and disconnected graphs."""
    import networkx as nx  # loaded by what needs a graph, not by every fabric
    for node in gpu_nodes:
        if graph.out_degree(node) == 0 or graph.in_degree(node) == 0:
            raise ScenarioError(f"{source}:nodes.{node}", "dangling GPU: it has no link in or out")
    if not nx.is_weakly_connected(graph):
        parts = sorted(nx.weakly_connected_components(graph), key=len)
        sample = sorted(map(str, parts[0]))[:3]
        raise ScenarioError(f"{source}:links",
                            f"the graph is disconnected: {len(parts)} parts; one of them holds "
                            f"only {', '.join(sample)}{' ...' if len(parts[0]) > 3 else ''}")


def from_graphml(path: Path) -> tuple[GraphBuilder, int | None]:
    """A GraphML fabric: node attribute ``role`` (optional ``rank``, ``latency``), edge attributes
    ``bandwidth`` and optional ``latency``, ``kind``, ``class`` as unit strings. An undirected graph's edges are
    full-duplex cables."""
    source = str(path)
    # size and text, before XML parsing; the text read is the one parsed (opened again by read_graphml, a file
    # replaced between the two reads was parsed unchecked; round 33 review)
    text = inputs.read_text(path, inputs.MAX_FABRIC_BYTES, "GraphML fabric file")
    import networkx as nx
    try:
        raw = nx.parse_graphml(text)
    except Exception as err:  # networkx raises several types (ParseError, NetworkXError, KeyError)
        raise ScenarioError(source, f"not a readable GraphML file: {err}") from None
    nodes = {}
    for node, attrs in raw.nodes(data=True):
        nodes[str(node)] = {key: value for key, value in attrs.items() if key in _NODE_KEYS | {"role"}}
        extra = set(attrs) - _NODE_KEYS
        if extra:
            raise ScenarioError(f"{source}:nodes.{node}.{sorted(extra)[0]}",
                                f"unknown node attribute (allowed: "
                                f"{', '.join(sorted(_NODE_KEYS))})")
    links = []
    for u, v, attrs in raw.edges(data=True):
        extra = set(attrs) - _EDGE_ATTRIBUTES - {"id"}
        if extra:
            raise ScenarioError(f"{source}:edge {u}-{v}.{sorted(extra)[0]}",
                                "unknown edge attribute (allowed: "
                                f"{', '.join(sorted(_EDGE_ATTRIBUTES))})")
        link = {"ends": [str(u), str(v)], "directed": raw.is_directed()}
        link.update({key: value for key, value in attrs.items() if key in _EDGE_ATTRIBUTES})
        links.append(link)
    data = {"name": raw.graph.get("name") or path.stem, "nodes": nodes, "links": links}
    for key in ("gpus_per_node", "gpu_transit", "uplink_port"):
        if key in raw.graph:
            data[key] = raw.graph[key]
    return from_spec(data, source)


def load(path: Path) -> tuple[GraphBuilder, int | None]:
    """Read a fabric file (.yaml/.yml or .graphml): size, text and YAML aliases bounded (``core.inputs``)."""
    if path.suffix.lower() == ".graphml":
        return from_graphml(path)
    return from_spec(inputs.load_yaml(path, inputs.MAX_FABRIC_BYTES, "fabric file"), str(path))
