"""Compute slowed by communication kernels running beside it on the same GPU.

A communication kernel takes SMs (NCCL: one CTA per channel, each holding its SM alone) and HBM bandwidth (the
bytes it receives are written, read back and written again). While one runs, the compute stream's kernels get the
rest:

    slowdown = (1 - m) * SMs / (SMs - CTAs) + m * B / (B - r * w)

where m is the share of the compute's time in HBM-bound kernels (the roofline of ``kernels``), B the achievable HBM
bandwidth, w the collective's wire rate per direction of the GPU's port and r the HBM bytes per wire byte: the
compute-bound kernels run on fewer SMs, the memory-bound ones on less bandwidth. Constants: data/interference.yaml
(CTAs per collective from NCCL's maintainers and Transformer Engine's defaults), SMs from efficiency.yaml.
The SM share ignores wave quantisation (a one-wave GEMM pushed into a second wave can take twice as long), so the
model is a lower bound of measured slowdowns (interference.yaml, ctas_source).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from simcluster.core import catalog
from simcluster.spec.hardware import GpuSpec
from simcluster.workload import kernels
from simcluster.workload.ops import Op

TRANSPORTS = ("nvlink", "network", "userbuffers")


@cache
def constants() -> dict:
    return catalog.load("interference")


@dataclass(frozen=True)
class CommKernel:
    """A communication kernel running beside the compute: the SMs it holds and its wire rate (bytes/s per
    direction of the GPU's port)."""

    ctas: int
    wire_bytes_per_s: float


def comm_kernel(transport: str, wire_bytes_per_s: float) -> CommKernel:
    """The kernel of a collective on ``transport`` (``TRANSPORTS``: an NVLink ring, a ring across nodes, Transformer
    Engine's userbuffers) moving ``wire_bytes_per_s`` per direction."""
    assert transport in TRANSPORTS, transport
    return CommKernel(constants()["ctas"][transport], wire_bytes_per_s)


def memory_bound_share(ops: list[Op], gpu: GpuSpec, precision: str) -> float:
    """Share of the time of ``ops`` (run back to back) spent in kernels bound by HBM bandwidth."""
    bound = total = 0.0
    for op in ops:
        compute_s, memory_s = kernels.roofline_s(op, gpu, precision)
        total += max(compute_s, memory_s)
        bound += memory_s if memory_s > compute_s else 0.0
    return bound / total if total > 0 else 0.0


def slowdown(gpu: GpuSpec, kernel: CommKernel, memory_share: float) -> float:
    """How many times longer compute takes while ``kernel`` runs beside it (>= 1); ``memory_share`` is the share of
    the compute's time in HBM-bound kernels (``memory_bound_share``)."""
    sms = kernels.sm_count(gpu.name)
    ctas = min(kernel.ctas, sms - 1)
    hbm_bytes_per_s = gpu.hbm_bandwidth * kernels.hbm_fraction()
    taken_bytes_per_s = constants()["hbm_bytes_per_wire_byte"] * kernel.wire_bytes_per_s
    assert taken_bytes_per_s < hbm_bytes_per_s, "a collective cannot move more than the GPU's HBM bandwidth"
    sm_factor = sms / (sms - ctas)
    hbm_factor = hbm_bytes_per_s / (hbm_bytes_per_s - taken_bytes_per_s)
    return (1.0 - memory_share) * sm_factor + memory_share * hbm_factor


def overlapped_s(compute_s: float, comm_s: float, factor: float) -> float:
    """Duration of ``compute_s`` of compute when a kernel of ``comm_s`` starts with it and slows it by ``factor``
    while it runs: the compute progresses at 1/factor until the kernel ends, then at full speed.

    compute_s * factor when the kernel outlasts the slowed compute, else comm_s + (compute_s - comm_s / factor).
    """
    return compute_s + min(comm_s, compute_s * factor) * (1.0 - 1.0 / factor)
