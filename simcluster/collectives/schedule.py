"""A collective call and its schedule: NCCL's algorithms as steps of point-to-point transfers (pure, no time).

``schedule(Collective(op, group, size_bytes, algorithm), fabric)`` returns the steps (``Schedule``, a list of
``Step``; the builders are in ``algorithms``). ``algorithm="auto"`` picks the (algorithm, protocol) NCCL's tuning
model would (``nccl.choose``). ``merge`` stacks the same collective over disjoint groups into one schedule.
Timing the steps is ``timing``'s job; closed forms are in ``closed_form``.
"""

from __future__ import annotations

import functools
import math
import weakref
from dataclasses import dataclass

import numpy as np

from simcluster.collectives import algorithms, nccl
from simcluster.collectives.algorithms import Step
from simcluster.collectives.nccl import PROTOCOLS, choose, sharp_uses_nvls
from simcluster.core.errors import ScenarioError
from simcluster.core.token_routing import TokenRouting
from simcluster.fabric.tables import ABSENT
from simcluster.network.base import TransferClass, class_load

OPS = ("allreduce", "reduce_scatter", "all_gather", "alltoall", "broadcast", "reduce", "sendrecv")
ALGORITHMS = ("auto", "ring", "hierarchical", "tree", "nvls", "sharp", "pipeline", "direct")
ALIASES = {
    "all_reduce": "allreduce",
    "allgather": "all_gather",
    "reducescatter": "reduce_scatter",
    "all_to_all": "alltoall",
    "send_recv": "sendrecv",
    "p2p": "sendrecv",
}
# Algorithms each op can run ("auto" aside); the first is what NCCL uses when it has no choice.
_SUPPORTED = {
    "allreduce": ("ring", "tree", "nvls", "sharp", "hierarchical"),
    "reduce_scatter": ("ring", "sharp"),
    "all_gather": ("ring", "sharp"),
    "alltoall": ("direct", "hierarchical"),
    "broadcast": ("pipeline",),
    "reduce": ("pipeline",),
    "sendrecv": ("direct",),
}


def supports(op: str, algorithm: str) -> bool:
    """Whether ``op`` can run ``algorithm`` ("auto" always can)."""
    return algorithm == "auto" or algorithm in _SUPPORTED[ALIASES.get(op, op)]


@dataclass(frozen=True)
class Collective:
    """One collective call: ``op`` over ``group`` (fabric GPU indices, in rank order) of ``size_bytes``.

    ``root`` is a position in ``group`` (broadcast, reduce). ``sendrecv`` sends from group[0] to group[1].
    """

    op: str
    group: tuple[int, ...]
    size_bytes: float
    algorithm: str = "auto"
    protocol: str = "auto"
    root: int = 0
    routing: TokenRouting | None = None  # alltoall: the tokens' expert choice (hierarchical sends one copy per node)

    def __post_init__(self):
        op = ALIASES.get(self.op, self.op)
        if op not in OPS:
            raise ScenarioError("op", f"unknown collective {self.op!r} (known: {', '.join(OPS)})")
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "group", tuple(int(g) for g in self.group))
        if self.algorithm not in ALGORITHMS:
            raise ScenarioError(
                "algorithm", f"unknown algorithm {self.algorithm!r} (known: {', '.join(ALGORITHMS)})"
            )
        if self.algorithm != "auto" and self.algorithm not in _SUPPORTED[op]:
            raise ScenarioError("algorithm", f"{op} runs {', '.join(_SUPPORTED[op])}, not {self.algorithm!r}")
        if self.protocol != "auto" and self.protocol not in PROTOCOLS:
            raise ScenarioError(
                "protocol", f"unknown protocol {self.protocol!r} (known: {', '.join(PROTOCOLS)})"
            )
        if not self.size_bytes >= 0:
            raise ScenarioError("size", f"must be >= 0 bytes, got {self.size_bytes!r}")
        if len(set(self.group)) != len(self.group):
            raise ScenarioError("group", "lists a GPU twice")
        if op == "sendrecv" and len(self.group) != 2:
            raise ScenarioError(
                "group", f"sendrecv needs exactly 2 GPUs (source, destination), got {len(self.group)}"
            )
        if not 0 <= self.root < max(len(self.group), 1):
            raise ScenarioError("root", f"{self.root} is not a position in the group of {len(self.group)}")

    @property
    def n(self) -> int:
        return len(self.group)


class Schedule(list):
    """The steps of one collective (a list of ``Step``), with the algorithm and protocol behind them."""

    def __init__(self, steps, collective: Collective, algorithm: str, protocol: str, ppn: float | None = None):
        super().__init__(steps)
        self.collective = collective
        self.algorithm = algorithm
        self.protocol = protocol
        self.ppn = ppn  # the group's GPUs per node (ranks / nodes), which sets a ring's LL128 rate (nccl.yaml)

    @property
    def step_count(self) -> int:
        """Steps as the algorithm counts them (repeats expanded, delays not counted)."""
        return sum(step.repeat for step in self if step.transfers)


def _nodes(group: tuple[int, ...], fabric) -> list:
    """A number naming the node of each GPU of ``group`` (``_node_codes``): equal for two GPUs exactly when they sit
    on one node."""
    codes = _node_codes(fabric)
    if codes is None:
        per_node = max(int(getattr(getattr(fabric, "raw", fabric), "gpus_per_node", 1)), 1)
        return [gpu // per_node for gpu in group]
    return codes[list(group)].tolist()


def _node_codes(fabric) -> np.ndarray | None:
    """Per GPU of the fabric, a number naming its node: its fabric node's ``server`` attribute (set by the builders),
    else i // gpus_per_node (topology.build numbers GPUs node by node), numbered in order of first appearance (two GPUs
    get one number exactly when those are equal); None for a fabric without node attributes (i // gpus_per_node)."""
    raw = getattr(fabric, "raw", fabric)
    if not hasattr(raw, "gpu_attr"):
        return None
    codes = _SERVERS.get(raw)
    if codes is None:
        # every GPU's node, read from the fabric's tables once per fabric (tens of thousands of groups ask)
        per_node = max(int(getattr(raw, "gpus_per_node", 1)), 1)
        column = raw.gpu_attr("server")
        servers = [None] * raw.gpus if column is None else column.tolist()
        names: dict = {}
        codes = _SERVERS[raw] = np.fromiter(
            (names.setdefault(gpu // per_node if server is None or server == ABSENT else server, len(names))
             for gpu, server in enumerate(servers)), dtype=np.int64, count=len(servers))
    return codes


_SERVERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _layout(group: tuple[int, ...], fabric, nodes: list | None = None) -> list[np.ndarray]:
    """The group split by node, in group order within each node, nodes in order of first appearance; ``nodes``:
    the group's ``_nodes`` when known."""
    by_node: dict[int, list[int]] = {}
    for gpu, node in zip(group, _nodes(group, fabric) if nodes is None else nodes, strict=True):
        by_node.setdefault(node, []).append(gpu)
    return [np.asarray(gpus, dtype=np.int64) for gpus in by_node.values()]


def _sample_path(fabric, layout: list[np.ndarray], across_nodes: bool) -> tuple[float, float]:
    """(bottleneck line rate, latency) of one path inside a node or across nodes; (0, 0) if none."""
    if across_nodes:
        if len(layout) < 2:
            return 0.0, 0.0
        src, dst = int(layout[0][0]), int(layout[1][0])
    else:
        node = next((gpus for gpus in layout if len(gpus) > 1), None)
        if node is None:
            return 0.0, 0.0
        src, dst = int(node[0]), int(node[1])
    return _path(fabric, src, dst)


def _path(fabric, src: int, dst: int) -> tuple[float, float]:
    """(bottleneck line rate, latency) of the path ``src`` -> ``dst``."""
    raw = getattr(fabric, "raw", fabric)
    links = raw.path_links(src, dst)
    rate = float(np.asarray(raw.link_bytes_per_s)[links].min()) if len(links) else math.inf
    if type(raw).path_latency_s is _fabric_path_latency_s():   # the sum over those links: no second routing
        return rate, float(raw.link_latency_s[links].sum())
    return rate, float(raw.path_latency_s(src, dst))


@functools.cache
def _fabric_path_latency_s():
    from simcluster.fabric.topology import Fabric  # loaded with any fabric
    return Fabric.path_latency_s


def _gpu_spec(fabric, gpu):
    """``gpu``, else the fabric's GPUs (``Fabric.gpu``), else None."""
    return gpu if gpu is not None else getattr(getattr(fabric, "raw", fabric), "gpu", None)


def _gpu_has_nvls(fabric, gpu) -> bool:
    return bool(getattr(_gpu_spec(fabric, gpu), "nvls", False))


def _fabric_has_sharp(fabric) -> bool:
    return bool(getattr(getattr(fabric, "raw", fabric), "sharp", False))


def _check_sharp(layout: list[np.ndarray], fabric):
    """Refuse a forced in-network reduction where it cannot run, naming why."""
    if not _fabric_has_sharp(fabric):
        raise ScenarioError("algorithm", "sharp needs InfiniBand switches with SHARP (cluster.sharp: auto or on, on "
                            "an InfiniBand fabric); this fabric offers none")
    if len(layout) < 2:
        raise ScenarioError("algorithm", "sharp reduces across nodes: the group must span at least two nodes")
    if not algorithms.uniform(layout):
        raise ScenarioError("algorithm", "sharp needs the same number of the group's GPUs on every node "
                            f"(got {sorted({len(gpus) for gpus in layout})})")


def schedule(collective: Collective, fabric, gpu=None) -> Schedule:
    """The steps of ``collective`` on ``fabric`` (``_steps``), each step's latency net of the fabric's path latency
    (``_net_of_fabric_latency``)."""
    steps = _steps(collective, fabric, gpu)
    return Schedule([_net_of_fabric_latency(step, fabric) for step in steps], collective, steps.algorithm,
                    steps.protocol, steps.ppn)


def _steps(collective: Collective, fabric, gpu=None) -> Schedule:
    """The steps of ``collective`` on ``fabric``, with NCCL's whole per-step latencies; ``gpu`` (GpuSpec) tells
    whether NVLS exists, the fabric's ``sharp`` whether its switches reduce (IB SHARP).

    ``algorithm``/``protocol`` "auto" are resolved as NCCL would (``nccl.choose``). An in-network reduction
    reports itself as "sharp" (CollNetDirect) or "nvls_sharp" (NVLink SHARP inside the nodes).
    """
    c = collective
    layout = _layout(c.group, fabric)
    n, nodes = c.n, len(layout)
    nvl_rate, nvl_latency = _sample_path(fabric, layout, across_nodes=False)
    net_rate, net_latency = _sample_path(fabric, layout, across_nodes=True)
    local = max(len(gpus) for gpus in layout) if layout else 0
    ppn = n / nodes if nodes else None
    has_nvls = _gpu_has_nvls(fabric, gpu)
    if c.algorithm == "nvls":
        if not has_nvls:
            raise ScenarioError("algorithm", "nvls needs a GPU with NVLink SHARP (gpu.nvls)")
        if nodes > 1:
            raise ScenarioError(
                "algorithm", "nvls needs the whole group inside one NVSwitch domain (one node)"
            )
    if c.algorithm == "sharp":
        _check_sharp(layout, fabric)
    has_sharp = _fabric_has_sharp(fabric) and nodes > 1 and algorithms.uniform(layout)
    algorithm, protocol = choose(
        c.op,
        c.size_bytes,
        n=n,
        nodes=nodes,
        local=local,
        nvls=has_nvls,
        nvlink_bytes_per_s=nvl_rate if nvl_rate else net_rate,
        network_bytes_per_s=net_rate if net_rate else nvl_rate,
        algorithm=c.algorithm if c.algorithm != "auto" else "auto",
        protocol=c.protocol,
        sharp=has_sharp,
        gpu=_gpu_spec(fabric, gpu),
    )
    if algorithm == "auto" or algorithm not in _SUPPORTED[c.op]:
        algorithm = _SUPPORTED[c.op][0]
    if n < 2 or c.size_bytes == 0:
        return Schedule([], c, algorithm, protocol, ppn)
    rate = min(r for r in (nvl_rate, net_rate, math.inf) if r) if nodes == 1 else (net_rate or nvl_rate)
    latency_s = max(nvl_latency, net_latency)
    if c.op == "alltoall":
        steps = (algorithms.alltoall_hierarchical(layout, c.size_bytes, protocol, c.routing)
                 if algorithm == "hierarchical" else algorithms.alltoall(layout, c.size_bytes, protocol))
    elif algorithm == "ring":
        steps = algorithms.ring(c.op, layout, c.size_bytes, protocol,
                                _ring_step_transfer_s(layout, c.size_bytes, nvl_rate, net_rate,
                                                      _gpu_spec(fabric, gpu), ppn),
                                getattr(getattr(fabric, "raw", fabric), "nic", None), _gpu_spec(fabric, gpu))
    elif algorithm == "hierarchical":
        steps = algorithms.hierarchical(layout, c.size_bytes, protocol)
    elif algorithm == "nvls":
        steps = algorithms.nvls(layout, c.size_bytes, _gpu_spec(fabric, gpu))
    elif algorithm == "sharp":
        uses_nvls = sharp_uses_nvls(c.op, has_nvls, local)
        steps = algorithms.sharp(c.op, layout, c.size_bytes, uses_nvls, _gpu_spec(fabric, gpu))
        algorithm = "nvls_sharp" if uses_nvls else "sharp"
    elif algorithm == "tree":
        steps = algorithms.tree(layout, c.size_bytes, protocol, rate, latency_s)
    elif algorithm == "pipeline":
        steps = algorithms.pipeline(c.op, layout, c.size_bytes, protocol, c.root, rate, latency_s)
    else:
        steps = algorithms.sendrecv(layout, c.size_bytes, protocol)
    return Schedule(steps, c, algorithm, protocol, ppn)


def _ring_step_transfer_s(layout: list[np.ndarray], size_bytes: float, nvl_rate: float, net_rate: float, gpu,
                          ppn: float | None) -> float:
    """Time one ring step's transfer takes alone at the ring/Simple calibrated rates (what the network model
    charges it on an idle fabric): S/n over the slower of the step's NVLink hop and its network hop, which
    carries S/(n m) per NIC when the m GPUs of a node each drive a rail (``algorithms.ring_transfers``)."""
    step = size_bytes / sum(len(gpus) for gpus in layout)

    def over(bytes_, rate, family):
        return bytes_ / (rate * nccl.efficiency("ring", "Simple", family, gpu, ppn)) if rate else 0.0

    if len(layout) == 1:
        return over(step, nvl_rate, "nvlink")
    if len(layout[0]) == 1 or not algorithms.uniform(layout):
        return over(step, net_rate, "network")
    return max(over(step, nvl_rate, "nvlink"), over(step / len(layout[0]), net_rate, "network"))


def _net_of_fabric_latency(step: Step, fabric) -> Step:
    """NCCL's per-step latencies are totals measured on real fabrics, hardware included; the network models
    charge the path latency themselves, so the step keeps only the software remainder (never below zero)."""
    if not step.transfers or step.overhead_s == 0:
        return step
    path_s = max(class_load(getattr(fabric, "raw", fabric), t)[2] for t in step.transfers)
    return Step(step.transfers, step.repeat, max(0.0, step.overhead_s - path_s), step.label, step.hidden_s)


def schedules_over_groups(collective: Collective, groups, fabric) -> list[Schedule]:
    """``collective`` (its group aside) over every group of ``groups`` (disjoint, equal sizes): one ``Schedule`` per
    kind of group, holding the steps of all its groups as ``merge`` would (one part per group).

    Groups are of one kind when their GPUs sit alike (GPU i and j on one node in both, in the same order) and the
    paths ``schedule`` samples to choose the algorithm have the same rate and latency: the algorithm then builds the
    same steps with GPU i of one group in place of GPU i of the other, so one group's steps are built and moved to
    the others (tens of thousands of tensor-parallel groups at 16k GPUs). Each step's latency is then net of each
    group's own path latency (``_net_of_fabric_latency``), the largest remainder kept, as ``merge`` keeps it.
    """
    raw = getattr(fabric, "raw", fabric)
    out = []
    kinds = _kinds(groups, fabric)
    for matrix in kinds:                                                   # groups x members
        template = _steps(Collective(collective.op, tuple(matrix[0].tolist()), collective.size_bytes,
                                     collective.algorithm, collective.protocol, collective.root,
                                     collective.routing), fabric)
        position = np.zeros(int(matrix[0].max()) + 1, dtype=np.int64)
        position[matrix[0]] = np.arange(matrix.shape[1])
        steps = []
        for step in template:
            transfers = tuple(_moved(tc, matrix, position) for tc in step.transfers)
            overhead_s = step.overhead_s
            if transfers and overhead_s:
                path_s = np.max([_pair_latencies_s(raw, tc.pairs, len(kinds) == 1).reshape(len(matrix), -1)
                                 .max(axis=1) if tc.members else np.zeros(len(matrix)) for tc in transfers], axis=0)
                overhead_s = float(np.max(np.maximum(0.0, step.overhead_s - path_s)))
            steps.append(Step(transfers, step.repeat, overhead_s, step.label, step.hidden_s))
        out.append(Schedule(steps, template.collective, template.algorithm, template.protocol, template.ppn))
    return out


def _pair_latencies_s(raw, pairs: np.ndarray, sent: bool) -> np.ndarray:
    """Path latency of each pair (``Fabric.pair_latencies_s``). ``sent``: the class of ``pairs`` is sent as it is
    (one kind of group: ``merge`` joins nothing, and ``timing`` scales its bytes only), so the network model routes
    these very pairs (``class_load``, when every pair leaves its GPU); the latencies are then read from their route
    set, made now and cached (``Fabric.route_set_of``), rather than from a latency-only pass made before the same
    pairs are routed (the 4.2 million pairs of the gradient-norm all-reduce on 131,072 GPUs: 0.4 s). The same floats
    either way (tests/unit/test_fabric_tables.py). A job sharing a cluster (``engine.jobs``) is the exception: its
    network model routes the pairs moved to the shared fabric's GPUs, so the route set made here on the job's placed
    fabric serves only ``timing``'s repeated steps (round 32 review, two data-parallel jobs on a rail fat-tree: 22
    route sets instead of 18 and 8 latency-only passes, 0.008 s of routing instead of 0.009 s; the same results)."""
    route_set_of = getattr(raw, "route_set_of", None)
    if sent and route_set_of is not None and len(pairs) > 0 and bool((pairs[:, 0] != pairs[:, 1]).all()):
        return route_set_of(pairs)[2]
    return raw.pair_latencies_s(pairs)


def _kinds(groups, fabric) -> list[np.ndarray]:
    """``groups`` sorted into kinds (``schedules_over_groups``), in order of first appearance, each as a matrix (its
    groups x their members). Cached per fabric and groups: a run's collectives of every size and op go over the same
    few sets of groups.

    All groups of one size at once (``_kind_keys``, ``_sample_pairs``): what tells kinds apart is, per group, where
    each member's node first appears in the group (the pattern of nodes), and the rate and latency of the paths
    ``_steps`` samples, whose ends follow from the pattern."""
    cache = _KINDS.setdefault(getattr(fabric, "raw", fabric), {})  # weak on the fabric
    key = tuple(map(tuple, groups))   # numpy integers hash and compare as the ints they hold
    kinds = cache.get(key)
    if kinds is None:
        by_size: dict[int, list[int]] = {}   # groups of different sizes are of different kinds (their patterns differ)
        for index, group in enumerate(key):
            by_size.setdefault(len(group), []).append(index)
        of_group: list = [None] * len(key)   # (matrix of its size, its row there, its kind's key)
        for size, indices in by_size.items():
            matrix = np.array([key[i] for i in indices], dtype=np.int64).reshape(len(indices), size)
            for row, kind in enumerate(_kind_keys(matrix, fabric)):
                of_group[indices[row]] = (matrix, row, kind)
        by_key: dict[tuple, list] = {}
        for matrix, row, kind in of_group:
            by_key.setdefault(kind, [matrix, []])[1].append(row)
        kinds = cache[key] = [matrix[rows] for matrix, rows in by_key.values()]
        if len(cache) > _KINDS_KEPT:
            del cache[next(iter(cache))]
    return kinds


def _kind_keys(matrix: np.ndarray, fabric) -> list[tuple]:
    """What tells the kinds of the groups ``matrix`` (groups x members, one size) apart, per group: the pattern of its
    nodes and the (rate, latency) of the paths ``_steps`` samples inside and across nodes."""
    count, size = matrix.shape
    if size == 0:
        return [(size, b"", (0.0, 0.0), (0.0, 0.0))] * count
    codes = _node_codes(fabric)
    if codes is None:
        nodes = matrix // max(int(getattr(getattr(fabric, "raw", fabric), "gpus_per_node", 1)), 1)
    else:
        nodes = codes[matrix]
    first, inside, across = _sample_pairs(nodes)
    rows = np.arange(count)
    inside_gpus = np.column_stack((matrix[rows, inside[0]], matrix[rows, inside[1]])).tolist()
    across_gpus = np.column_stack((matrix[:, 0], matrix[rows, across])).tolist()
    inside_at, across_at = (inside[0] >= 0).tolist(), (across >= 0).tolist()
    return [(size, pattern.tobytes(),
             _path(fabric, *inside_gpus[row]) if inside_at[row] else (0.0, 0.0),
             _path(fabric, *across_gpus[row]) if across_at[row] else (0.0, 0.0)) for row, pattern in enumerate(first)]


_KINDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_KINDS_KEPT = 256  # sets of groups per fabric: a run's TP, CP, DP and step-collective groups, per stage


def _sample_pairs(nodes: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """For groups whose members sit on ``nodes`` (groups x members, a number per node): (per member, the position
    of the first member on its node: the pattern of nodes; per group, the positions of the first two members of the
    first node, in order of appearance, holding two or more, -1 where none does: the path ``_sample_path`` samples
    inside a node; per group, the position of the first member of the second node, -1 where there is one node: the
    path it samples across nodes, from member 0)."""
    count, size = nodes.shape
    order = np.argsort(nodes, axis=1, kind="stable")            # by node, members of a node in group order
    by_node = np.take_along_axis(nodes, order, axis=1)
    column = np.arange(size)
    starts = np.ones(nodes.shape, dtype=bool)
    starts[:, 1:] = by_node[:, 1:] != by_node[:, :-1]
    run_start = np.maximum.accumulate(np.where(starts, column, 0), axis=1)
    first_sorted = np.take_along_axis(order, run_start, axis=1)  # the first position of each member's node
    first = np.empty_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    inside_src = np.full(count, -1, dtype=np.int64)
    inside_dst = np.full(count, -1, dtype=np.int64)
    across = np.full(count, -1, dtype=np.int64)
    if size >= 2:
        second = ~starts & (run_start == column - 1)               # the second member of a node
        candidate = np.where(second, first_sorted, size)
        slot = candidate.argmin(axis=1)
        rows = np.arange(count)
        found = candidate[rows, slot] < size
        inside_src[found] = first_sorted[rows, slot][found]
        inside_dst[found] = order[rows, slot][found]
        later = np.where(starts & (first_sorted > 0), first_sorted, size).min(axis=1)
        across[later < size] = later[later < size]
    return first, (inside_src, inside_dst), across


def _moved(transfers: TransferClass, matrix: np.ndarray, position: np.ndarray) -> TransferClass:
    """A template group's class of transfers repeated for every group (row) of ``matrix``, one part per group."""
    count = len(matrix)
    if count == 1:   # the template group itself
        return transfers
    local = position[transfers.pairs]                                   # positions in the template group
    pairs = matrix[:, local].reshape(-1, 2)
    per_part = transfers.part_count
    inner = np.zeros(transfers.members, dtype=np.int64) if transfers.parts is None else transfers.parts
    parts = (np.arange(count, dtype=np.int64)[:, None] * per_part + inner[None, :]).reshape(-1)
    return TransferClass(pairs, transfers.size_bytes, transfers.label, parts)


def merge(schedules: list[list[Step]]) -> list[Step]:
    """Several schedules with the same shape (the same collective over disjoint groups) as one: step k of the
    result holds step k of every schedule, transfer class j concatenating the pairs of every class j, each
    schedule's pairs one part of it (``TransferClass.parts``: the groups progress independently)."""
    schedules = [list(s) for s in schedules if len(s)]
    if len(schedules) <= 1:
        return schedules[0] if schedules else []
    shape = [(len(step.transfers), step.repeat) for step in schedules[0]]
    assert all([(len(step.transfers), step.repeat) for step in s] == shape for s in schedules), (
        "same shape only"
    )
    merged = []
    for steps in zip(*schedules, strict=True):
        first = steps[0]
        transfers = tuple(
            TransferClass.joined([step.transfers[j] for step in steps], first.transfers[j].size_bytes,
                                 first.transfers[j].label)
            for j in range(len(first.transfers))
        )
        merged.append(
            Step(
                transfers, repeat=first.repeat, overhead_s=max(s.overhead_s for s in steps), label=first.label,
                hidden_s=min(s.hidden_s for s in steps),
            )
        )
    return merged
