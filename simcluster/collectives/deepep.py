"""DeepEP's all-to-all rates: intranode SM-bound copies, not NCCL's NVLink rate (data/moe.yaml ``deepep_intranode``);
internode its measured NIC rate (``deepep_internode``).

Inside one NVLink domain the flex dispatcher's DeepEP kernels copy every token row a rank receives (its own among
them) with the ``deepep_sms`` SMs they are given (Megatron-Core ``--moe-deepep-num-sms``, default 20), so on NVLink 4
they move fewer bytes a second than NCCL's all-to-all, which the simulator runs at NCCL's NVLink efficiency
(nccl.yaml, 370 of 450 GB/s on H100). DeepEP's kernels measured on 8 H100 at Megatron-Core's 20 SMs move 306.5 GB/s
of received rows, a dispatch and its combine together (tile-ai/tilescale PR #40; round 24: before it, DeepEP#16's
H20 figure at 24 SMs scaled to 20); scaled to the SMs given and to the remote share (ranks - 1)/ranks of the rows,
that is what the all-to-all's NVLink bytes move at. ``intranode_slowdown`` is the ratio the engine applies to the
intranode all-to-all's NVLink bytes of a group of ``ranks`` GPUs (``algorithms.alltoall_hierarchical``,
``TokenRouting.intranode_slowdown``): NCCL's rate over DeepEP's remote rate, at least 1 (where DeepEP is faster the
link binds, as on H800); it grows as the group shrinks (EP 8: 1.38, EP 4: 1.61, EP 2: 2.41 on H100). GPUs of an
NVLink generation without a measurement keep 1. Only the flex dispatcher (DeepEP) has it.

Across nodes (the hierarchical all-to-all) DeepEP's RDMA phase is NIC-bound, but below NCCL's NIC rate: its own
benchmark on 400 Gb/s ConnectX-7 moves 43.65 GB/s of the 50 on the NIC at EP 32 and 64 (data/moe.yaml
``deepep_internode``), where the simulator's network links run at nccl.yaml's 47. ``internode_ratio`` is that ratio
(1.077), which the engine applies to the network phase's bytes (``TokenRouting.internode_slowdown``); NICs without a
measurement (another model, or the measured model at another rate) keep 1.

``line_rate_floor_s`` is the least time one dispatch or combine can take on the links whatever the kernels: DeepEP's
own bytes (a token once per destination node on the NIC, once per destination GPU on NVLink; or every copy, for the
alltoall dispatcher), routing uniform (within the router's groups, if group-limited: ``TokenRouting.unit_hit``) and
balanced, both links at their line rate, the phases pipelined. A blocking
step's all-to-alls take at least that many times it, so a published step bounds from above what all its other work
took (docs/calibration/round-15.md, "Round 15: the MoE zoo's Qwen3 rows"; ``scripts/ep_floor.py``).
"""

from __future__ import annotations

import math

from simcluster.collectives import closed_form, nccl
from simcluster.core import catalog
from simcluster.core.token_routing import TokenRouting, deepep_slowdown
from simcluster.core.units import BYTES_PER_S, parse


def intranode_ratio(gpu) -> float:
    """NCCL's all-to-all rate on ``gpu``'s NVLink (nccl.yaml efficiency x line rate) over the rate at which DeepEP's
    intranode kernels copy received rows on Megatron-Core's default SMs (the benchmark's rate scaled to the SMs: every
    row, the rank's own among them); 0 without a measurement for the generation (``token_routing.deepep_slowdown``
    turns it into the slowdown of a group's remote bytes)."""
    table = catalog.load("moe")
    entry = table.get("deepep_intranode", {}).get(f"nvlink{int(getattr(gpu, 'nvlink_generation', 0) or 0)}")
    if entry is None or gpu is None:
        return 0.0
    received = parse(entry["received_bytes_per_s"], BYTES_PER_S) * int(table["ep_overlap"]["deepep_sms"]) / int(
        entry["sms"])
    return nccl.efficiency("direct", "Simple", "nvlink", gpu) * gpu.nvlink_bandwidth / received


def intranode_slowdown(gpu, ranks: int) -> float:
    """Time of DeepEP's intranode all-to-all over NCCL's on the same remote bytes on ``gpu``, a group of ``ranks``
    GPUs in one node (``token_routing.deepep_slowdown`` of ``intranode_ratio``); 1 without a measurement."""
    return deepep_slowdown(intranode_ratio(gpu), ranks)


def internode_nic_fraction(nic) -> float:
    """Fraction of ``nic``'s line rate DeepEP's internode kernels move on the NIC in their RDMA-bound cases
    (data/moe.yaml ``deepep_internode``, keyed by the NIC's name): each benchmark figure counts the token's own node
    among its destination nodes (DeepEP tests/test_internode.py ``num_rdma_token_sent``), so the NIC carries
    (nodes - 1) / nodes of it; the mean over the dispatch and combine figures, over the measured line rate. 0 without
    a measurement for the NIC: another name, or the name at another rate than the one measured (a scenario's own NIC
    spec, e.g. an effective per-GPU rate: DeepEP was not measured there)."""
    entry = catalog.load("moe").get("deepep_internode", {}).get(getattr(nic, "name", None))
    line_rate = parse(entry["line_rate"], BYTES_PER_S) if entry is not None else 0.0
    if entry is None or not math.isclose(getattr(nic, "rate", 0.0), line_rate, rel_tol=1e-9):
        return 0.0
    figures = [parse(rate, BYTES_PER_S) * (int(nodes) - 1) / int(nodes)
               for kernel in ("dispatch", "combine") for nodes, rate in entry[kernel]]
    return sum(figures) / len(figures) / line_rate


def internode_ratio(nic) -> float:
    """NCCL's all-to-all rate on ``nic`` (nccl.yaml's per-NIC efficiency, what the simulator's network phase runs
    at) over the rate DeepEP's internode kernels were measured to move on it (``internode_nic_fraction``); 0 without
    a measurement. The engine takes at least 1 (``TokenRouting.internode_slowdown``): where DeepEP is measured
    faster than NCCL, the link binds."""
    fraction = internode_nic_fraction(nic)
    return nccl.efficiency("direct", "Simple", "network") / fraction if fraction > 0 else 0.0


def line_rate_floor_s(nodes: int, local: int, tokens: float, token_bytes: float, experts: int, top_k: int,
                      nic_bytes_per_s: float, nvlink_bytes_per_s: float, deduplicated: bool = True,
                      groups: int | None = None, group_limit: int | None = None) -> float:
    """Least time of one dispatch (or combine: the same bytes back) of ``tokens`` token rows of ``token_bytes`` a
    GPU over ``nodes`` nodes of ``local`` GPUs, ``top_k`` of ``experts`` experts placed evenly, at the NIC's and
    NVLink's line rates, no latency, the two links at once (the slower binds). ``deduplicated`` (DeepEP): the bytes
    of ``closed_form.hierarchical_alltoall_bytes`` with uniform routing and no load spread (the busiest GPU and node
    carry the mean), a token once per destination node on the NIC and once per destination GPU on NVLink, those
    it reaches under group-limited routing (``groups`` / ``group_limit``: model.moe.groups / group_topk); otherwise
    (Megatron-Core's alltoall dispatcher, NCCL's direct all-to-all) every one of the top_k copies S goes straight to
    its GPU, (N-1)/N S over the NIC and (m-1)/(N m) S over NVLink. No kernel reaches it: a bound, not a time."""
    if min(nodes, local, experts, top_k) < 1 or tokens < 0 or token_bytes < 0:
        raise ValueError(f"need nodes {nodes}, local {local}, experts {experts}, top_k {top_k} >= 1, "
                         f"tokens {tokens} and token bytes {token_bytes} >= 0")
    if nic_bytes_per_s <= 0 or nvlink_bytes_per_s <= 0:
        raise ValueError(f"need line rates > 0, got NIC {nic_bytes_per_s}, NVLink {nvlink_bytes_per_s}")
    copies = tokens * top_k * token_bytes
    if deduplicated:
        routing = TokenRouting(experts, top_k, groups=groups, group_limit=group_limit)
        network, nvlink = closed_form.hierarchical_alltoall_bytes(nodes, local, copies, routing)
    else:
        network, nvlink = (nodes - 1) / nodes * copies, (local - 1) / (nodes * local) * copies
    return max(network / nic_bytes_per_s, nvlink / nvlink_bytes_per_s)
