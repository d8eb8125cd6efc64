"""Closed-form collective costs: the alpha-beta oracle of the tests, and nccl-tests' bandwidth conventions.

Bus-bandwidth factors are those of nccl-tests (doc/PERFORMANCE.md, copied in data/nccl.yaml):
busbw = algbw * factor(n), algbw = S / t.
"""

from __future__ import annotations

import math

from simcluster.collectives.schedule import ALIASES
from simcluster.core.token_routing import TokenRouting


def busbw_factor(op: str, n: int) -> float:
    """nccl-tests' bus-bandwidth factor (doc/PERFORMANCE.md; data/nccl.yaml ``busbw_factor``)."""
    op = ALIASES.get(op, op)
    if op == "allreduce":
        return 2 * (n - 1) / n
    if op in ("reduce_scatter", "all_gather", "alltoall"):
        return (n - 1) / n
    return 1.0


def algbw_bytes_per_s(size_bytes: float, time_s: float) -> float:
    return size_bytes / time_s if time_s > 0 else math.inf


def busbw_bytes_per_s(op: str, n: int, size_bytes: float, time_s: float) -> float:
    return algbw_bytes_per_s(size_bytes, time_s) * busbw_factor(op, n)


def alpha_beta_time_s(
    op: str, algorithm: str, n: int, size_bytes: float, alpha_s: float, bus_bytes_per_s: float
) -> float:
    """Closed-form time of a collective with per-step latency alpha and per-rank link bandwidth B.

    ring allreduce 2(n-1) a + 2(n-1)/n S/B; ring reduce-scatter / all-gather (n-1) a + (n-1)/n S/B (Thakur,
    Rabenseifner & Gropp 2005, sec. 4; Patarasuk & Yuan 2009); direct all-to-all a + (n-1)/n S/B; pipelined
    broadcast/reduce, large-message limit (n-1) a + S/B; double binary tree 2 log2(n) a + 2 S/B (each rank
    sends S up and S down across its two trees); NVLS a + (n+1)/n S/B (see algorithms.nvls);
    point-to-point a + S/B.
    """
    op = ALIASES.get(op, op)
    s, b = size_bytes, bus_bytes_per_s
    if n < 2:
        return 0.0
    if algorithm in ("ring", "auto") and op in ("allreduce", "reduce_scatter", "all_gather"):
        steps = 2 * (n - 1) if op == "allreduce" else n - 1
        return steps * alpha_s + busbw_factor(op, n) * s / b
    if algorithm == "tree":
        return 2 * math.ceil(math.log2(n)) * alpha_s + 2 * s / b
    if algorithm == "nvls":
        return alpha_s + (n + 1) / n * s / b
    if op == "alltoall":
        return alpha_s + (n - 1) / n * s / b
    if op in ("broadcast", "reduce"):
        return (n - 1) * alpha_s + s / b
    if op == "sendrecv":
        return alpha_s + s / b
    raise ValueError(f"no closed form for {op} with {algorithm}")


def hierarchical_alltoall_bytes(nodes: int, local: int, size_bytes: float,
                                 routing: TokenRouting | None = None) -> tuple[float, float]:
    """Bytes one GPU sends (network, NVLink) in the two-phase all-to-all (``algorithms.alltoall_hierarchical``) over
    ``nodes`` nodes of ``local`` GPUs, S sent per GPU counting top_k copies of each token.

    Every copy: (N-1)/N S and (m-1)/m S. With ``routing`` (DeepEP: a token once per destination node, then once
    per destination GPU), S/k a token: (N-1) S/k P(node) on the NIC times the node's over the GPU's load
    (``TokenRouting.network_load``), (m-1) N S/k P(GPU) on NVLink (the forwarder
    passes on the tokens of all N nodes); inside one node (N = 1) (m-1) S/k P(GPU) on NVLink, nothing on the NIC.
    """
    n, m, s = nodes, local, size_bytes
    if routing is None:
        return (n - 1) / n * s, (m - 1) / m * s
    token = s / routing.top_k
    return ((n - 1) * token * routing.node_hit(n) * routing.network_load(n, m),
            (m - 1) * n * token * routing.gpu_hit(n, m))


def hierarchical_alltoall_time_s(nodes: int, local: int, size_bytes: float, alpha_s: float,
                                  nvlink_bytes_per_s: float, network_bytes_per_s: float,
                                  routing: TokenRouting | None = None) -> float:
    """Closed-form time of the two-phase all-to-all (``algorithms.alltoall_hierarchical``) over ``nodes`` nodes of
    ``local`` GPUs each, S sent per GPU: a + max(network bytes / B_net (one rail), NVLink bytes / B_nvl), the phases
    pipelined, bytes per GPU from ``hierarchical_alltoall_bytes`` (every copy: (N-1)/N S and (m-1)/m S)."""
    network_bytes, nvlink_bytes = hierarchical_alltoall_bytes(nodes, local, size_bytes, routing)
    return alpha_s + max(network_bytes / network_bytes_per_s, nvlink_bytes / nvlink_bytes_per_s)


def in_network_time_s(
    op: str,
    local: int,
    size_bytes: float,
    alpha_s: float,
    nvlink_bytes_per_s: float,
    network_bytes_per_s: float,
    *,
    nvls: bool = False,
    nvlink_latency_s: float = 0.0,
    network_latency_s: float = 0.0,
) -> float:
    """Closed-form time of an in-network (IB SHARP) reduction over nodes of ``local`` GPUs of the group each, every
    GPU with its own NIC: software latency alpha, then the NVLink exchange and the switch tree stream at once,
    each after its path latency (the tree's: up to its root and down), and the slower ends the collective.

    Bytes per GPU in the busier direction (Graham et al. 2016/2020; NCCL CollNetDirect and NVLS):
    NIC S/m for allreduce, reduce-scatter and all-gather alike (a ring allreduce moves 2(n-1)/n S/m);
    NVLink 2(m-1)/m S for allreduce (reduce-scatter + all-gather inside the node), (m+1)/m S with NVLink SHARP,
    (m-1)/m S for reduce-scatter and all-gather. The number of nodes enters only through the tree's depth.
    """
    op = ALIASES.get(op, op)
    m, s = local, size_bytes
    if op == "allreduce":
        nvlink_bytes = (m + 1) / m * s if nvls else 2 * (m - 1) / m * s
    elif op in ("reduce_scatter", "all_gather"):
        nvlink_bytes = (m - 1) / m * s
    else:
        raise ValueError(f"no in-network closed form for {op}")
    phases = [network_latency_s + s / m / network_bytes_per_s]
    if m > 1:
        phases.append(nvlink_latency_s + nvlink_bytes / nvlink_bytes_per_s)
    return alpha_s + max(phases)
