"""Compute slowed by communication kernels running beside it on the same GPU.

A communication kernel takes SMs (NCCL: one CTA per channel, each holding its SM alone) and HBM bandwidth (the
bytes it receives are written, read back and written again). While one runs, the compute stream's kernels get the
rest:

    slowdown = (1 - m) * SMs / (SMs - CTAs) + m * B / (B - r * w)        (proportional share)

where m is the share of the compute's time in HBM-bound kernels (the roofline of ``kernels``), B the achievable HBM
bandwidth, w the collective's wire rate per direction of the GPU's port and r the HBM bytes per wire byte: the
compute-bound kernels run on fewer SMs, the memory-bound ones on less bandwidth. Constants: data/interference.yaml
(CTAs per collective from NCCL's maintainers and Transformer Engine's defaults), SMs from efficiency.yaml.
Given the ops (``ComputeMix``), the compute-bound term is per kernel instead: a tensor-core kernel's waves of the
tile picked for all its SMs (flash attention: its blocks) over the SMs left, against its waves as launched
(``kernels.tensor_core_waves``): a one-wave GEMM pushed into a second wave takes twice as long, a many-wave one
tends to SMs / (SMs - CTAs). Checked against measured GEMM slowdowns beside NCCL (interference.yaml measurements,
tests/validation/test_interference_measured.py).
Persistent grids (round 18): on Hopper (interference.yaml ``persistent_grid_gpus``) cuBLAS/CUTLASS 3 GEMMs launch
min(tiles, SMs) CTAs that each walk a fixed share of the tiles; the CTAs whose SMs a communication kernel holds start
when the first ones end, so a GEMM takes about T + min(C, T) beside a kernel with C left to run
(``persistent_gemm_factor``: the static schedule, 2 for whole waves while the kernel outlasts it, less when the late
CTAs hold a tile fewer); not charged again for kernels whose cost to the grid is charged elsewhere (``CommKernel``
``persistent``: TE's userbuffers kernels, round 18's ``userbuffers.charged``); behind the switch
``persistent_grid_model``, off (rounds 18 and 19: calibration does not hold with it on, docs/calibration/round-19.md
"Round 19: persistent-grid interference, on or off"). The engine applies factors as rates
over the communication's window (``overlapped_s``), which charges the GEMM that straddles the kernel's end T + C / 2
instead of T + C: low by at most half a GEMM per window.
Signal-only kernels: Transformer Engine's ring exchange moves its data with cudaMemcpyAsync (copy engines) and the
receiver launches ``kuserbuffers_pushrecv<<<1, 1, 0, stream>>>``, which spins on the peer's flag until the copy
lands (NVIDIA/TransformerEngine transformer_engine/common/comm_gemm_overlap/userbuffers/userbuffers.cu,
``userbuffers_recv``): a one-thread block resident on one SM for the whole transfer, beside the chunk GEMM. Kept as
one CTA of the wave model (``userbuffers.collective_sms``): a GEMM CTA sized for all of an SM's shared memory
(CUTLASS sm90 auto stage counts fill it) cannot share that SM with the spinning block's reserved 1 KB; a GEMM
leaving that slack could, which the model does not know (open). PyTorch's async TP runs no kernel beside its
matmuls (copies on copy engines, barriers before and after the steps): no SM (``async_tp.comm_sms``, HBM only).
Simplification: the data-parallel, userbuffers and async-TP factors (``engine/overlap.py``) weigh the layer's ops
before Transformer Engine's and async TP's chunking (``layer_ops``), not the chunk GEMMs ``plan()`` times, while the
expert-parallel factor weighs the layer as launched. Weighing the chunk GEMMs (tried in round 16, not kept) moved
the small pinned cases by -9% to +1% and the default GPT-3 175B by +1.3% (its TP forward factor 1.013 -> 1.146: the
wave cliff per chunk GEMM, where the model already overshoots its one measurement by 18%), the calibration rows by
0.3 points at most; kept out until the wave model is checked on chunked GEMMs (docs/calibration/round-16.md, round 16).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import cache

from simcluster.core import catalog
from simcluster.spec.hardware import GpuSpec, NicSpec
from simcluster.workload import kernels
from simcluster.workload.ops import Op

TRANSPORTS = ("nvlink", "network", "userbuffers", "p2p_network")


@cache
def constants() -> dict:
    return catalog.load("interference")


@dataclass(frozen=True)
class CommKernel:
    """A communication kernel running beside the compute: the SMs it holds and its wire rate (bytes/s per
    direction of the GPU's port)."""

    ctas: int
    wire_bytes_per_s: float
    # Whether a persistent grid's CTAs whose SMs it holds wait for it (``persistent_gemm_factor``). False for a
    # kernel whose cost to a persistent grid is charged elsewhere: Transformer Engine's userbuffers kernels, which
    # ``userbuffers.charged`` times on Hopper (pipeline and bulk GEMMs at the SM margin, ring exchanges as
    # configured: data/userbuffers.yaml persistent_grid_methods, round 18).
    persistent: bool = True


def comm_kernel(transport: str, wire_bytes_per_s: float, gpu: GpuSpec, ring: tuple[int, NicSpec] | None = None
                ) -> CommKernel:
    """The kernel of a collective on ``transport`` (``TRANSPORTS``: an NVLink ring, a ring across nodes, Transformer
    Engine's userbuffers, a pipeline send or receive to a peer on another node) moving ``wire_bytes_per_s`` per
    direction on ``gpu``; ``ring``: for a ring across nodes, its GPUs a node and the NIC (``ctas``)."""
    return CommKernel(ctas(transport, gpu, ring), wire_bytes_per_s)


def ctas(transport: str, gpu: GpuSpec, ring: tuple[int, NicSpec] | None = None) -> int:
    """CTAs (each holding its SM) of a communication kernel on ``transport`` on ``gpu``: interference.yaml ``ctas``;
    an NVLink ring on a GPU of another NVLink generation takes ``nvlink_by_generation`` (NVLink 5: 32, NCCL's init
    log on a DGX B200) where listed. A ring across nodes with ``ring`` = (its GPUs a node, the NIC) launches NCCL's
    channel count (``network_ring_channels``), at most ``ctas.network``; without it (an all-to-all),
    ``ctas.network``."""
    assert transport in TRANSPORTS, transport
    if transport == "nvlink":
        by_generation = constants()["nvlink_by_generation"]
        if gpu.nvlink_generation in by_generation:
            return by_generation[gpu.nvlink_generation]
    if transport == "network" and ring is not None:
        return min(constants()["ctas"]["network"], network_ring_channels(*ring, gpu))
    return constants()["ctas"][transport]


def network_ring_channels(members_per_node: int, nic: NicSpec, gpu: GpuSpec) -> int:
    """NCCL's channels (one CTA each) of a ring whose group holds ``members_per_node`` GPUs on each node, over ``nic``
    (interference.yaml ``network_ring``: search.cc's search and ncclTopoDupChannels, connect.cc's ncclTopoPostset):
    one search channel a NIC rail at the speed of the GPU-NIC path, doubled at half the speed at >= 25 GB/s (not
    on Hopper and later under 50 GB/s above 4 channels), every channel twice, and twice again on Hopper and later
    above 45 GB/s under 16. One 200 Gb/s port: 2; one 400 Gb/s port: 4; eight 400 Gb/s ports: 16."""
    if members_per_node < 1:
        raise ValueError(f"a ring across nodes holds at least one GPU a node, got {members_per_node}")
    c = constants()["network_ring"]
    path_gb_s = min(nic.rate / 1e9, c["pcie_x16_gb_s"][nic.host])
    speed = next((s for s in c["search_speeds_gb_s"] if s <= path_gb_s), c["search_speeds_gb_s"][-1])
    hopper = gpu.nvlink_generation >= c["hopper_nvlink_generation"]
    channels = min(members_per_node, c["search_max_channels"])
    if speed >= c["dup_min_gb_s"] and not (
            hopper and speed < c["dup_skip_below_gb_s"] and channels > c["dup_skip_above_channels"]):
        channels, speed = min(2 * channels, c["search_max_channels"]), speed / 2  # ncclTopoDupChannels
    channels *= 2  # ncclTopoPostset
    if hopper and speed > c["compute_double_above_gb_s"] and channels < c["compute_double_below"]:
        channels *= 2  # "4 compute channels per search channel to reach peak BW on <8 PPN"
    return channels


class ComputeMix(float):
    """The compute a communication kernel runs beside: a float, the share of its time in HBM-bound kernels (what
    the proportional model needs), carrying each kernel's (op, compute time, HBM time) alone (``kernels.roofline_s``)
    so that ``slowdown`` can quantise each tensor-core kernel's waves on the SMs the communication leaves."""

    kernels: tuple[tuple[Op, float, float], ...]
    gpu_name: str

    def __new__(cls, ops: list[Op], gpu: GpuSpec, precision: str) -> ComputeMix:
        times = tuple((op, *kernels.roofline_s(op, gpu, precision)) for op in ops)
        total = sum(max(c, m) for _, c, m in times)
        bound = sum(m for _, c, m in times if m > c)
        mix = super().__new__(cls, bound / total if total > 0 else 0.0)
        mix.kernels, mix.gpu_name = times, gpu.name
        return mix

    def __reduce__(self):
        """Pickle and deepcopy as the share with its kernels (float's own would rebuild a bare share through
        ``__new__``'s signature). Equality and hashing stay a float's: two mixes of one share compare equal."""
        return _computed_mix, (float(self), self.kernels, self.gpu_name)


def _computed_mix(share: float, times: tuple, gpu_name: str) -> ComputeMix:
    mix = float.__new__(ComputeMix, share)
    mix.kernels, mix.gpu_name = times, gpu_name
    return mix


def memory_bound_share(ops: list[Op], gpu: GpuSpec, precision: str) -> ComputeMix:
    """Share of the time of ``ops`` (run back to back) spent in kernels bound by HBM bandwidth; the result carries
    the ops for ``slowdown``'s per-kernel wave quantisation (``ComputeMix``)."""
    return ComputeMix(ops, gpu, precision)


def slowdown(gpu: GpuSpec, kernel: CommKernel, memory_share: float) -> float:
    """How many times longer compute takes while ``kernel`` runs beside it (>= 1); ``memory_share`` is the share of
    the compute's time in HBM-bound kernels (``memory_bound_share``).

    Given a ``ComputeMix`` (its ops), each kernel alone taking max(c, b) (compute, HBM time) takes
    max(c * q, b * h) beside it: h the HBM factor, q for a tensor-core kernel its waves on the SMs left over its
    waves as launched (``kernels.tensor_core_waves``: the tile picked for all its SMs, or its attention blocks),
    SMs / (SMs - CTAs) for CUDA-core ones; with ``persistent_grid_model`` on, on GPUs whose GEMMs run persistent
    grids (``persistent_grid_gpus``), a GEMM's q is ``persistent_gemm_factor``. Given a bare float, the proportional
    share (1 - m) SMs / (SMs - CTAs) + m h (no shapes to quantise)."""
    sms = kernels.sm_count(gpu.name)
    ctas = min(kernel.ctas, sms - 1)
    hbm_bytes_per_s = gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)
    taken_bytes_per_s = constants()["hbm_bytes_per_wire_byte"] * kernel.wire_bytes_per_s
    assert taken_bytes_per_s < hbm_bytes_per_s, "a collective cannot move more than the GPU's HBM bandwidth"
    sm_factor = sms / (sms - ctas)
    hbm_factor = hbm_bytes_per_s / (hbm_bytes_per_s - taken_bytes_per_s)
    if not isinstance(memory_share, ComputeMix) or not memory_share.kernels:
        return (1.0 - memory_share) * sm_factor + memory_share * hbm_factor
    assert memory_share.gpu_name == gpu.name, (memory_share.gpu_name, gpu.name)
    persistent = kernel.persistent and constants()["persistent_grid_model"] and persistent_grid(gpu.name)
    alone = beside = 0.0
    for op, compute_s, memory_s in memory_share.kernels:
        waves = kernels.tensor_core_waves(op, gpu.name, sms - ctas)
        if persistent and waves and op.kind == "gemm":
            compute_factor = persistent_gemm_factor(op, gpu.name, ctas)
        else:
            compute_factor = waves[1] / waves[0] if waves else sm_factor
        alone += max(compute_s, memory_s)
        beside += max(compute_s * compute_factor, memory_s * hbm_factor)
    return beside / alone if alone > 0 else 1.0


def persistent_grid(gpu_name: str) -> bool:
    """Whether the GPU's cuBLAS/CUTLASS GEMMs launch persistent grids of one CTA per SM with a static tile schedule
    (data/interference.yaml persistent_grid_gpus: Hopper)."""
    return gpu_name in constants()["persistent_grid_gpus"]


def persistent_gemm_factor(op: Op, gpu_name: str, ctas: int) -> float:
    """Time of a persistent-grid GEMM (``persistent_grid_gpus``) beside a kernel holding ``ctas`` of the GPU's SMs
    for longer than the GEMM, over its time alone.

    The grid is g = min(tiles, SMs launched on) CTAs (``op.sms``: set_sm_margin's SM-count target); CTA j works the
    tiles j, j + g, j + 2g, ... (static schedule: CUTLASS sm90 ``PersistentTileSchedulerSm90``), so it runs
    ceil((tiles - j) / g) tiles, and the grid alone takes ceil(tiles / g) tile times. Beside the kernel the first
    SMs - ctas CTAs start; the block scheduler dispatches the others in blockIdx order, each to the first SM a CTA
    frees, where it runs its whole share. A grid that fits the SMs left loses nothing (1); a one-wave grid that does
    not takes 2; a grid of k full waves 2, of k waves and a part of r tiles 2k / (k + 1) when the late CTAs (the
    last ones, a tile fewer) fit the SMs the first short shares free (r <= SMs - 2 ctas), else up to
    (2k + 1) / (k + 1) (some start only when the long shares end)."""
    sms = kernels.sm_count(gpu_name)
    launched = min(op.sms, sms) if op.sms > 0 else sms
    tiles = kernels.gemm_tiles(op, gpu_name)
    grid = min(tiles, launched)
    resident = max(1, min(sms - ctas, launched))
    if grid <= resident:
        return 1.0
    share = [-(-(tiles - j) // grid) for j in range(grid)]
    free_at = sorted(share[:resident])  # a min-heap: when each resident CTA's SM frees, in tile times
    for j in range(resident, grid):
        heapq.heappush(free_at, heapq.heappop(free_at) + share[j])
    return max(free_at) / share[0]


def overlapped_s(compute_s: float, comm_s: float, factor: float) -> float:
    """Duration of ``compute_s`` of compute when a kernel of ``comm_s`` starts with it and slows it by ``factor``
    while it runs: the compute progresses at 1/factor until the kernel ends, then at full speed.

    compute_s * factor when the kernel outlasts the slowed compute, else comm_s + (compute_s - comm_s / factor).
    """
    return compute_s + min(comm_s, compute_s * factor) * (1.0 - 1.0 / factor)
