"""Collective algorithms as steps of point-to-point transfers (pure: numpy arrays of GPU pairs, no time).

A ``Step`` is a set of transfer classes that run together and end together; ``repeat`` says how many identical
steps follow each other. Every step of a ring sends between the same pairs (only the chunk index rotates), so
a 16,384-GPU ring allreduce is one ``Step`` repeated 32,766 times, and a network model solves it once.

Each builder takes the group laid out by node (``layout``: one array of fabric GPU indices per node, in group
order) and returns steps; sizes follow nccl-tests conventions (allreduce/broadcast: the buffer;
reduce-scatter: the input; all-gather: the output; all-to-all: what one rank sends in total).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simcluster.collectives.nccl import (
    constants,
    min_slice_bytes,
    nvls_bytes,
    ring_latency_s,
    ring_steps,
    sharp_bytes,
    sharp_latency_s,
    slices_per_chunk,
    tree_latency_s,
)
from simcluster.core.token_routing import TokenRouting
from simcluster.network.base import TransferClass
from simcluster.spec.hardware import GpuSpec, NicSpec
from simcluster.workload import interference


@dataclass(frozen=True, eq=False)
class Step:
    """Transfers that start together after ``overhead_s`` of software latency; the step ends when all end.

    ``repeat``: this step is followed by ``repeat - 1`` identical ones (same pairs, same sizes). A step
    without transfers is a pure delay (NCCL's per-collective launch latency). ``hidden_s``: the part of each
    repeat's latency (software and path) that runs behind the previous repeat's transfer, so every repeat after
    the first takes that much less (a Simple ring's sliced chunks, ``ring``); never more than the latency.
    """

    transfers: tuple[TransferClass, ...]
    repeat: int = 1
    overhead_s: float = 0.0
    label: str = ""
    hidden_s: float = 0.0

    def __post_init__(self):
        assert self.repeat >= 1 and self.overhead_s >= 0 and self.hidden_s >= 0

    @property
    def classes(self) -> tuple[TransferClass, ...]:
        return self.transfers


def delay(seconds: float, label: str = "latency") -> Step:
    return Step(transfers=(), overhead_s=seconds, label=label)


def _cyclic(order: np.ndarray) -> np.ndarray:
    """Pairs (order[i], order[i+1]) around the cycle."""
    return np.stack([order, np.roll(order, -1)], axis=1)


def uniform(layout: list[np.ndarray]) -> bool:
    """Every node holds the same number of the group's GPUs."""
    return len({len(gpus) for gpus in layout}) == 1


def ring_transfers(layout: list[np.ndarray], step_bytes: float) -> tuple[TransferClass, ...]:
    """One ring step in which every rank sends ``step_bytes`` to its successor, over NCCL-style channels.

    Inside one node a single ring carries the load (all rotations load each GPU's NVLink the same). Across
    nodes with m GPUs each, NCCL runs m channels, one per NIC rail, and keeps the network hop on its rail
    (PXN, NCCL 2.12+): channel c enters node k at local c, visits c+1, ..., c-1, and local c-1 hands the data
    over NVLink to local c, whose NIC sends it to local c of node k+1. Over the m channels every local NVLink
    successor pair (c-1 -> c) carries step_bytes (each channel moves step_bytes/m per hop, m hops per node),
    and every NIC one channel, step_bytes/m, to the same rail of the next node.
    """
    if len(layout) == 1 or not uniform(layout) or len(layout[0]) == 1:
        order = np.concatenate(layout)
        return (TransferClass(_cyclic(order), step_bytes, "ring"),)
    grid = np.stack(layout)  # nodes x m
    m = grid.shape[1]
    intra = np.stack([grid.ravel(), np.roll(grid, -1, axis=1).ravel()], axis=1)
    inter = np.stack([grid.ravel(), np.roll(grid, -1, axis=0).ravel()], axis=1)
    return (
        TransferClass(intra, step_bytes, "ring nvlink"),
        TransferClass(inter, step_bytes / m, "ring network"),
    )


def ring(op: str, layout: list[np.ndarray], size_bytes: float, protocol: str,
         step_transfer_s: float = 0.0, nic: NicSpec | None = None, gpu: GpuSpec | None = None) -> list[Step]:
    """Ring allreduce (reduce-scatter then all-gather, 2(n-1) steps), or ring reduce-scatter/all-gather (n-1).

    Each step every rank sends S/n (Patarasuk & Yuan 2009; nccl-tests PERFORMANCE.md). ``step_transfer_s``: the
    time one step's transfer takes alone (c). A protocol that cuts a step's chunk into s slices (Simple: 2,
    ``nccl.slices_per_chunk``) forwards slice k while slice k+1 is still arriving, so a step of the chain takes
    max(c, latency + c/s): up to c (s-1)/s of each step's latency runs behind the transfer (``ring_hidden_s``).
    Each channel (``ring_channels``; ``nic`` and ``gpu`` for a ring across nodes) carries its share of a step.
    """
    n = sum(len(gpus) for gpus in layout)
    base_s, per_step_s = ring_latency_s(op, n, len(layout), protocol)
    transfers = ring_transfers(layout, size_bytes / n)
    chunk_bytes = size_bytes / n / ring_channels(layout, nic, gpu)
    return [
        delay(base_s),
        Step(transfers, repeat=ring_steps(op, n), overhead_s=per_step_s, label=f"ring {op}",
             hidden_s=ring_hidden_s(per_step_s, step_transfer_s, protocol, chunk_bytes)),
    ]


def ring_channels(layout: list[np.ndarray], nic: NicSpec | None = None, gpu: GpuSpec | None = None) -> int:
    """Channels a ring step's bytes are split over (each channel moves its chunk, 1/channels of the step), which set
    the slice size ``ring_hidden_s`` hides latency with.

    Across nodes, given the NIC and the GPU: the channels NCCL launches, one CTA each (``interference.ctas`` of a
    network ring: ``network_ring_channels`` from search.cc / connect.cc, at most ``ctas.network``), the count whose
    SMs the data-parallel ring holds beside compute; one count for both. 2 at one 200 Gb/s port, 4 at one 400 Gb/s
    port (Hopper), 16 at eight 400 Gb/s ports a node. Without them, and inside one node (NVSwitch rings): the
    group's GPUs a node, ``ring_transfers``' one channel per rail (NCCL's NVSwitch rings run at least that many:
    24 on an 8x H100, 32 on NVLink 5, interference.yaml; not counted: fewer channels cut larger chunks, which hide
    more, the fast side, and only where a channel's chunk at NCCL's count falls below 2 x 32 KiB).
    """
    members = max(1, min(len(gpus) for gpus in layout))
    if len(layout) > 1 and nic is not None and gpu is not None:
        return interference.ctas("network", gpu, (members, nic))
    return members


def ring_hidden_s(latency_s: float, step_transfer_s: float, protocol: str, chunk_bytes: float = math.inf) -> float:
    """The part of a ring step's ``latency_s`` hidden behind its sliced transfer of ``step_transfer_s``.

    NCCL's ring kernels move each chunk as SlicePerChunk slices (CHUNKSTEPS / SLICESTEPS = 4 / 2 for ring
    allreduce, reduce-scatter and all-gather on Simple, src/include/collectives.h; prims_simple.h ``genericOp``
    cuts a chunk of nelem into slices of divUp(nelem, 16 SlicePerChunk) x 16 elements and posts each as soon as
    it is written). Rank r's step j needs slice k of rank r-1's step j-1, which arrives one hop latency L after it
    left; the first slice of a step waits L + c/s, the others arrive behind it, so the chain advances one step
    per max(c, L + c/s) and c + L - that = min(L, c (s-1)/s) of every step's L is hidden. LL and LL128 send
    a chunk as one piece (s = 1) through the network proxy (one step posted at a time): nothing hidden.
    A slice is at least ``min_slice_bytes`` (Simple: 32 KiB, genericOp's sliceSize/32 floor): the first slice of a
    channel's ``chunk_bytes`` is min(chunk, max(chunk/s, floor)), and the hidden part min(L, c (1 - first/chunk)):
    nothing at chunks up to the floor, c - c floor/chunk between one and s floors, c (s-1)/s above.
    """
    slices = slices_per_chunk(protocol)
    if slices <= 1 or chunk_bytes <= 0:
        return 0.0
    first = min(chunk_bytes, max(chunk_bytes / slices, min_slice_bytes(protocol)))
    return min(latency_s, step_transfer_s * (1.0 - first / chunk_bytes))


def hierarchical(layout: list[np.ndarray], size_bytes: float, protocol: str) -> list[Step]:
    """Allreduce in three phases: intra-node reduce-scatter, inter-node allreduce of the shard among the GPUs
    of the same local rank (m rings in parallel, one per rail), intra-node all-gather.

    Time = 2(m-1) a_nvl + 2(m-1)/m S/B_nvl + 2(N-1) a_net + 2(N-1)/N (S/m)/B_nic (m GPUs per node, N nodes).
    Falls back to the flat ring when nodes hold different numbers of the group's GPUs.
    """
    if len(layout) == 1 or len(layout[0]) == 1 or not uniform(layout):
        return ring("allreduce", layout, size_bytes, protocol)
    proto = constants()["protocols"][protocol]
    grid = np.stack(layout)
    nodes, m = grid.shape
    intra = TransferClass(
        np.stack([grid.ravel(), np.roll(grid, -1, axis=1).ravel()], axis=1), size_bytes / m, "intra-node ring"
    )
    inter = TransferClass(
        np.stack([grid.ravel(), np.roll(grid, -1, axis=0).ravel()], axis=1),
        size_bytes / (m * nodes),
        "inter-node ring",
    )
    return [
        delay(proto["base_latency_s"]),
        Step((intra,), repeat=m - 1, overhead_s=proto["nvlink_step_latency_s"], label="intra reduce-scatter"),
        Step(
            (inter,),
            repeat=2 * (nodes - 1),
            overhead_s=proto["network_step_latency_s"],
            label="inter allreduce",
        ),
        Step((intra,), repeat=m - 1, overhead_s=proto["nvlink_step_latency_s"], label="intra all-gather"),
    ]


def nvls(layout: list[np.ndarray], size_bytes: float, gpu=None) -> list[Step]:
    """NVLink SHARP allreduce: the NVSwitch reduces and multicasts, one step.

    Per GPU and direction the NVLink carries S(n+1)/n (up: S read by the switch's reduction + the S/n shard
    stored for multicast; down: the reduced S/n + S multicast in). A shift permutation i -> i+1 of that size
    puts exactly this load on every GPU's uplink and downlink, which is all the switch sees. Above the measured
    group size NCCL's per-GPU NVLS rate, not the links, binds (``nccl.nvls_bytes``).
    """
    order = np.concatenate(layout)
    n = len(order)
    transfer = TransferClass(_cyclic(order), nvls_bytes(size_bytes, n, gpu), "nvls")
    return [delay(constants()["nvls_latency_s"]), Step((transfer,), label="nvls allreduce")]


def sharp(op: str, layout: list[np.ndarray], size_bytes: float, uses_nvls: bool, gpu=None) -> list[Step]:
    """In-network (IB SHARP) allreduce, reduce-scatter or all-gather over nodes holding m GPUs of the group each:
    one step in which the NVLink exchange inside the nodes and the SHARP trees stream concurrently (NCCL
    pipelines them chunk by chunk), ended when both have moved their bytes (``nccl.sharp_bytes``).

    The trees are real transfers on the fabric. Local GPU c of every node sits on rail c and feeds that rail's
    tree; its NIC sends S/m up and receives S/m back. A cycle over the rail's GPUs in node order, node k -> node
    k+1, each sending S/m, loads the links exactly as the tree does: every NIC uplink and downlink once, and,
    because the nodes under one switch are consecutive, every switch's uplinks to the next tier once per
    direction in total (the one pair that leaves its subtree and the one that enters it), up to the top of the
    tree, whose crossing is the class's longest path: the tree's depth is the latency, not the number of nodes.
    Simplification: with adaptive routing the up-link bytes are spread over all uplinks instead of the one
    toward the tree's root; for reduce-scatter (all-gather) the down (up) direction carries S/m instead of S/n.
    Inside the node a shift permutation of the NVLink bytes loads every GPU's NVLink as the exchange does.
    """
    grid = np.stack(layout)  # nodes x m (uniform layouts only: schedule checks)
    m = grid.shape[1]
    nvlink_bytes, nic_bytes = sharp_bytes(op, size_bytes, m, uses_nvls, gpu)
    transfers = [TransferClass(np.stack([grid.ravel(), np.roll(grid, -1, axis=0).ravel()], axis=1), nic_bytes,
                               "sharp network")]
    if m > 1:
        intra = np.stack([grid.ravel(), np.roll(grid, -1, axis=1).ravel()], axis=1)
        transfers.append(TransferClass(intra, nvlink_bytes, "nvls" if uses_nvls else "sharp nvlink"))
    name = "nvls+sharp" if uses_nvls else "sharp"
    return [Step(tuple(transfers), overhead_s=sharp_latency_s(m, uses_nvls), label=f"{name} {op}")]


def balanced_tree_parents(count: int) -> np.ndarray:
    """Parent of each of ``count`` units in the in-order binary tree of Sanders, Speck & Traff 2009 (root -1).

    With 1-based labels, label x with lowest set bit b has children x - b/2 and x + b/2 (the right one moved
    down while it exceeds ``count``): leaves are the odd labels, so mirroring the labels of an even count
    turns every leaf into an inner node, which is what makes two such trees a *double* binary tree.
    """
    parents = np.full(count, -1, dtype=np.int64)
    if count == 0:
        return parents
    root = 1 << (count.bit_length() - 1)
    stack = [root]
    while stack:
        x = stack.pop()
        half = (x & -x) // 2
        if half == 0:
            continue
        left, step = x - half, half
        while step and x + step > count:
            step //= 2
        for child in (left, x + step) if step else (left,):
            parents[child - 1] = x - 1
            stack.append(child)
    return parents


def _depth(parents: np.ndarray) -> int:
    depth = 0
    for unit in range(len(parents)):
        d, node = 0, unit
        while parents[node] >= 0:
            node, d = parents[node], d + 1
        depth = max(depth, d)
    return depth


def pipeline_chunks(payload_bytes: float, fill_steps: int, bytes_per_s: float, latency_s: float) -> int:
    """Chunks of a pipelined algorithm: the optimum sqrt(fill * S / (B * a)) of T = (K + fill)(a + S/(K B)),
    no finer than the smallest chunk NCCL pipelines with (nccl.yaml ``min_pipelined_bytes``), at least one."""
    finest = max(1, math.ceil(payload_bytes / constants()["min_pipelined_bytes"]))
    if fill_steps <= 0 or latency_s <= 0 or bytes_per_s <= 0:
        return finest
    best = math.sqrt(fill_steps * payload_bytes / (bytes_per_s * latency_s))
    return int(min(max(1, round(best)), finest))


def tree(
    layout: list[np.ndarray], size_bytes: float, protocol: str, bytes_per_s: float, latency_s: float
) -> list[Step]:
    """Double binary tree allreduce (Sanders, Speck & Traff 2009; NCCL 2.4): two trees each reduce then
    broadcast half the data, pipelined in K chunks; a rank that is a leaf in one tree is inner in the other.

    As in NCCL, the trees span nodes and each node hangs its GPUs as a chain below its head; with m GPUs per
    node NCCL runs the trees on m channels, channel c with tree A's head at local c and tree B's at local c +
    m/2, so every NIC carries 1/m of the data. Inside one node the trees span GPUs. Every pipelined step moves
    one chunk over every edge, up and down, in both trees of every channel; the pipeline takes K + 2 depth - 1
    steps of one chunk each, which is the bytes the step sends per edge.

    Latency, once per collective: NCCL's, base + 2((m-1) a_nvl + log2(N) a_net) (``nccl.tree_latency_s``), the
    hops of the first chunk up and down the depth, hardware included (``schedule`` keeps as software latency
    what exceeds the fabric path the step's class crosses). The pipeline's steps are one step, not K + 2 depth
    - 1 steps each charged the class's longest path: a chunk is not held for its predecessor's, so the wire
    latency of a hop is paid once along the depth (by NCCL's latency), not at every pipelined chunk, and the
    fill's NVLink hops are not charged the network's path (the class's longest). That was a double charge:
    NCCL's 25.2 us at 128 B on 2 x 8 H100 (its own tuning log, NVIDIA/nccl#1453) came out at 91 us. K is still
    ``pipeline_chunks``' (the chunking that would balance a per-chunk path latency against the fill), which keeps
    the pipeline's bandwidth as it was; NCCL's own chunk sizing is not modelled.
    """
    multi_node = len(layout) > 1 and uniform(layout)
    units = layout if multi_node else [np.array([g]) for g in np.concatenate(layout)]
    grid = np.stack(units)
    count, m = grid.shape
    parents_a = balanced_tree_parents(count)
    # tree B: mirror of A for an even count, shift by one for an odd count (leaves of A become inner nodes)
    relabel = (count - 1 - np.arange(count)) if count % 2 == 0 else (np.arange(count) + 1) % count
    parents_b = np.full(count, -1, dtype=np.int64)
    for unit in range(count):
        parent = parents_a[unit]
        if parent >= 0:
            parents_b[relabel[unit]] = relabel[parent]
    edges = []
    children_a, children_b = np.flatnonzero(parents_a >= 0), np.flatnonzero(parents_b >= 0)
    for channel in range(m):
        for parents, children, head in (
            (parents_a, children_a, channel),
            (parents_b, children_b, channel + m // 2),
        ):
            chain = np.roll(grid, -(head % m), axis=1)  # chain[u, 0] is the head of unit u
            edges.append(np.stack([chain[children, 0], chain[parents[children], 0]], axis=1))
            if m > 1:
                edges.append(np.stack([chain[:, 1:].ravel(), chain[:, :-1].ravel()], axis=1))
    up = np.concatenate(edges)
    pairs = np.concatenate([up, up[:, ::-1]])
    depth = (m - 1) + _depth(parents_a)
    fill = 2 * depth - 1
    payload = size_bytes / 2 / m  # per tree and channel
    chunks = pipeline_chunks(payload, fill, bytes_per_s, latency_s)
    transfer = TransferClass(pairs, payload / chunks * (chunks + fill), "double binary tree")
    local = m if multi_node else len(grid)  # one node: NCCL's chain model, ppn = group size
    return [Step((transfer,), overhead_s=tree_latency_s(local, len(layout), protocol),
                 label=f"tree allreduce, {chunks} chunks + {fill} pipeline fill")]


def pipeline(
    op: str,
    layout: list[np.ndarray],
    size_bytes: float,
    protocol: str,
    root: int,
    bytes_per_s: float,
    latency_s: float,
) -> list[Step]:
    """Broadcast (root -> chain) or reduce (chain -> root) pipelined in K chunks along the ring order:
    K + n - 2 steps of S/K; the limit is S/B, hence nccl-tests' busbw factor 1."""
    order = np.concatenate(layout)
    order = np.roll(order, -root)
    n = len(order)
    pairs = np.stack([order[:-1], order[1:]], axis=1)
    if op == "reduce":
        pairs = pairs[::-1, ::-1]
    base_s, per_step_s = ring_latency_s("broadcast", n, len(layout), protocol)
    chunks = pipeline_chunks(size_bytes, n - 2, bytes_per_s, latency_s)
    transfer = TransferClass(pairs, size_bytes / chunks, op)
    return [delay(base_s + per_step_s), Step((transfer,), repeat=chunks + n - 2, label=f"pipelined {op}")]


# Up to this many ranks an all-to-all is one step of n(n-1) transfers (as NCCL posts them all at once);
# beyond, n-1 shift steps (rank i sends to i+k at step k), which bounds the pairs per step by n.
ALLTOALL_ONE_STEP_MAX_RANKS = 256


def alltoall(layout: list[np.ndarray], size_bytes: float, protocol: str) -> list[Step]:
    """All-to-all: every rank sends S/n to every other rank."""
    order = np.concatenate(layout)
    n = len(order)
    base_s, per_step_s = ring_latency_s("alltoall", n, len(layout), protocol)
    if n <= ALLTOALL_ONE_STEP_MAX_RANKS:
        src, dst = np.meshgrid(order, order, indexing="ij")
        mask = ~np.eye(n, dtype=bool)
        pairs = np.stack([src[mask], dst[mask]], axis=1)
        return [
            delay(base_s),
            Step((TransferClass(pairs, size_bytes / n, "alltoall"),), overhead_s=per_step_s),
        ]
    steps = [delay(base_s)]
    for shift in range(1, n):
        pairs = np.stack([order, np.roll(order, -shift)], axis=1)
        steps.append(
            Step((TransferClass(pairs, size_bytes / n, f"alltoall shift {shift}"),), overhead_s=per_step_s)
        )
    return steps


def alltoall_hierarchical(layout: list[np.ndarray], size_bytes: float, protocol: str,
                          routing: TokenRouting | None = None) -> list[Step]:
    """All-to-all across nodes in two phases, as DeepEP's internode kernels route tokens (DeepSeek-AI 2025,
    DeepEP README; DeepSeek-V3 report, section 3.2.2): over the network to the GPU of the same local rank on each
    other node (one rail), then over NVLink from that GPU to its node peers. DeepEP pipelines the two in chunks (its
    RDMA senders, NVLink forwarders and receivers are concurrent warps, csrc/kernels/internode.cu): one step in which
    both phases stream at once, after both hops' latencies (the first chunk's), and the slower ends it (pipeline
    fill and drain of the other phase's last chunk neglected). Falls back to the direct all-to-all on nodes holding
    different numbers of the group's GPUs, and inside one node unless ``routing`` is given.

    Without ``routing`` every copy travels, S sent per GPU: rank i of node a sends node b's share for all its m GPUs,
    m S/n = S/N, then each GPU passes its node peers what the node's N nodes hold for them, N S/n = S/m: per GPU
    (N-1)/N S on its NIC, as the direct all-to-all, and (m-1)/m S on NVLink.

    With ``routing`` (the tokens' expert choice, ``token_routing.TokenRouting``; S counts top_k copies of each
    token, S/k bytes a token) a token crosses to each destination node once and to each destination GPU once
    (DeepEP's dispatch; its combine reduces per GPU and per node on the way back, the same bytes): per pair of
    nodes S/k x P(token reaches the node) x the node's load over the GPU's S carries (``network_load``: a network
    receiver takes its node's tokens), per NVLink pair N S/k x P(token reaches the GPU) (the forwarder passes on
    the tokens of all N nodes, its own included); inside one node (DeepEP's intranode kernels) per pair
    S/k x P(token reaches the GPU).
    """
    dedup = routing is not None and uniform(layout) and routing.divides(len(layout), len(layout[0]))
    if len(layout) == 1 and dedup and len(layout[0]) > 1:
        n = len(layout[0])
        return alltoall(layout, size_bytes * n * routing.gpu_hit(1, n) / routing.top_k * routing.intranode_slowdown(n),
                        protocol)   # DeepEP's SM-bound intranode rate (collectives/deepep.py)
    if len(layout) == 1 or len(layout[0]) == 1 or not uniform(layout):
        return alltoall(layout, size_bytes, protocol)
    proto = constants()["protocols"][protocol]
    grid = np.stack(layout)
    nodes, m = grid.shape
    if dedup:
        token = size_bytes / routing.top_k
        network_bytes = token * routing.node_hit(nodes) * routing.network_load(nodes, m)  # received per node
        network_bytes *= routing.internode_slowdown()   # DeepEP's measured NIC rate (collectives/deepep.py)
        nvlink_bytes = token * nodes * routing.gpu_hit(nodes, m)
    else:
        network_bytes, nvlink_bytes = size_bytes / nodes, size_bytes / m
    inter = np.concatenate([np.stack([grid.ravel(), np.roll(grid, -shift, axis=0).ravel()], axis=1)
                            for shift in range(1, nodes)])
    intra = np.concatenate([np.stack([grid.ravel(), np.roll(grid, -shift, axis=1).ravel()], axis=1)
                            for shift in range(1, m)])
    return [
        delay(proto["base_latency_s"]),
        Step((TransferClass(inter, network_bytes, "alltoall network"),
              TransferClass(intra, nvlink_bytes, "alltoall nvlink")),
             overhead_s=proto["network_step_latency_s"] + proto["nvlink_step_latency_s"],
             label="alltoall across nodes (one rail) and inside the node, pipelined"),
    ]


def sendrecv(layout: list[np.ndarray], size_bytes: float, protocol: str) -> list[Step]:
    """Point-to-point: the group's first GPU sends S to its second."""
    order = np.concatenate(layout)
    proto = constants()["protocols"][protocol]
    hop = "network_step_latency_s" if len(layout) > 1 else "nvlink_step_latency_s"
    transfer = TransferClass(order[None, :2], size_bytes, "sendrecv")
    return [delay(proto["base_latency_s"]), Step((transfer,), overhead_s=proto[hop])]
