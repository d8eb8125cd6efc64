"""Time of a kernel on a GPU: a roofline with shape-dependent efficiencies plus a launch overhead.

    time = max(executed FLOP / (peak FLOP/s * flop fraction),
               HBM bytes / (HBM bandwidth * bandwidth fraction)) + launch overhead

The fractions come from ``simcluster/data/efficiency.yaml``, where each one carries its source: the large-GEMM
ceiling is calibrated on a measured 8192^3 bf16 GEMM on H100 (0.81 of peak), copies reach 0.9 of HBM
bandwidth, small or skinny GEMMs lose to tile and wave quantisation (NVIDIA, Matrix Multiplication Background
User's Guide) and to the fixed cost of each output tile, and fused attention follows FlashAttention-2/3
measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simcluster.core import catalog
from simcluster.spec.hardware import GpuSpec
from simcluster.workload.ops import HIGH_PRECISION, Op


@dataclass(frozen=True)
class Efficiency:
    """Achievable fractions of a GPU's peaks for one op."""

    flop_fraction: float        # of the dense peak FLOP/s, applied to the executed FLOP
    bandwidth_fraction: float   # of the datasheet HBM bandwidth
    executed_flop_ratio: float = 1.0  # executed / counted FLOP (causal flash attention skips masked tiles)


def _table() -> dict:
    return catalog.load("efficiency")


def gemm_efficiency(m: int, n: int, k: int, gpu_name: str, batch: int = 1) -> float:
    """Achievable fraction of peak of a (m x k)(k x n) GEMM repeated ``batch`` times, from efficiency.yaml.

    ceiling * best over cuBLAS-like tiles of [relative tile throughput * useful/provisioned MACs] * k/(k + k0)
    models tile and wave quantisation (NVIDIA Matrix Multiplication Background User's Guide, sections 3.1 and
    3.2) and a fixed per-tile prologue/epilogue equivalent to k0 reduction elements.
    """
    table = _table()["gemm"]
    if min(m, n, k, batch) <= 0:
        return table["ceiling"]
    sms = sm_count(gpu_name)
    best = 0.0
    for tile_m, tile_n, relative in table["tiles"]:
        tiles = batch * math.ceil(m / tile_m) * math.ceil(n / tile_n)
        waves = math.ceil(tiles / sms)
        useful = batch * m * n / (waves * sms * tile_m * tile_n)
        best = max(best, relative * useful)
    depth = k / (k + table["k_overhead"])
    return table["ceiling"] * best * depth


def hbm_fraction() -> float:
    """Achievable fraction of the datasheet HBM bandwidth (efficiency.yaml, bandwidth_fraction)."""
    return _table()["bandwidth_fraction"]


def sm_count(gpu_name: str) -> int:
    """Streaming multiprocessors of a GPU (efficiency.yaml, gemm.sms; GPUs not listed take ``default``)."""
    table = _table()["gemm"]["sms"]
    return table.get(gpu_name, table["default"])


def attention_efficiency(op: Op, gpu_name: str) -> tuple[float, float]:
    """(achievable fraction of peak on executed FLOP, executed/counted FLOP) of a fused attention kernel.

    A saturating function of the key/value length n fitted to FlashAttention-3 measurements on H100
    (efficiency.yaml, attention.source); the backward kernel is the one named ``*_backward``.
    """
    table = _table()["attention"]
    curve = table.get(gpu_name, table["default"])
    backward = op.name.endswith("backward")
    peak_fraction = curve["backward_max" if backward else "forward_max"]
    saturation = op.n / (op.n + curve["kv_tokens_half"]) if op.n > 0 else 1.0
    executed = table["executed_fraction"]["backward" if backward else "forward"]
    return peak_fraction * saturation, executed


def efficiency(op: Op, gpu: GpuSpec) -> Efficiency:
    """Achievable fractions of peak FLOP/s and HBM bandwidth for ``op`` on ``gpu`` (data: efficiency.yaml)."""
    bandwidth_fraction = hbm_fraction()
    if op.kind == "gemm":
        return Efficiency(gemm_efficiency(op.m, op.n, op.k, gpu.name, op.batch), bandwidth_fraction)
    if op.kind == "attention":
        fraction, executed = attention_efficiency(op, gpu.name)
        return Efficiency(fraction, bandwidth_fraction, executed)
    assert op.kind == "memory", op.kind
    # Elementwise kernels run on the CUDA cores, far above what their bytes allow: bandwidth-bound everywhere.
    return Efficiency(_table()["gemm"]["ceiling"], bandwidth_fraction)


def sustained_fraction(gpu_name: str) -> float:
    """Tensor-core throughput sustained in training relative to a short benchmark, per GPU generation
    (efficiency.yaml, sustained_fraction; GPUs not listed take ``default``)."""
    table = _table()["sustained_fraction"]
    return table.get(gpu_name, table["default"])


def launch_overhead_s() -> float:
    """Per-kernel launch cost (efficiency.yaml, launch_overhead_source)."""
    return _table()["launch_overhead_s"]


def op_time_s(op: Op, gpu: GpuSpec, precision: str, sustained: bool = True) -> float:
    """Roofline time of one kernel: max(compute time, HBM time) + launch overhead.

    ``sustained`` (training): compute throughput is scaled by ``sustained_fraction``; False gives the time of the
    kernel in a short benchmark, which is what the GEMM ceiling was measured as.
    """
    return max(roofline_s(op, gpu, precision, sustained)) + launch_overhead_s()


def roofline_s(op: Op, gpu: GpuSpec, precision: str, sustained: bool = True) -> tuple[float, float]:
    """(compute time, HBM time) of one kernel at its achievable fractions; the larger one binds."""
    eff = efficiency(op, gpu)
    # FP8 recipes (Transformer Engine's default) run attention and elementwise kernels in 16-bit; GEMMs in fp8
    op_precision = op.precision or (precision if op.kind == "gemm" else HIGH_PRECISION.get(precision, precision))
    compute_s = 0.0
    if op.flop > 0:
        peak_flop_per_s = gpu.peak_flop_per_s(op_precision)
        compute_s = op.flop * eff.executed_flop_ratio / (peak_flop_per_s * eff.flop_fraction
                                                       * (sustained_fraction(gpu.name) if sustained else 1.0))
    memory_s = op.hbm_bytes / (gpu.hbm_bandwidth * eff.bandwidth_fraction)
    return compute_s, memory_s


def ops_time_s(ops: list[Op], gpu: GpuSpec, precision: str) -> float:
    """Kernels run back to back on one stream: the sum of their times."""
    return sum(op_time_s(op, gpu, precision) for op in ops)


def achieved_flop_per_s(op: Op, gpu: GpuSpec, precision: str) -> float:
    """Counted FLOP over roofline time: what a short benchmark of this kernel would report."""
    return op.flop / op_time_s(op, gpu, precision, sustained=False)
