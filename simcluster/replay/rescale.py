"""The hardware a trace ran on, and its compute moved to another GPU.

Traces name their GPU (Kineto ``deviceProperties``) but never their fabric; a replay needs both. This module
decides them from what the trace does say (``infer_gpu``, ``default_fabric``), each decision with the sentence
that goes into the replay's assumptions. When the user replays on another GPU, compute keeps its recorded
structure and only its kernel time changes, by a roofline argument (``kernel_speedup``, ``busy_rescaled``).
"""

from __future__ import annotations

import bisect
import math
import re

from simcluster.core.errors import ScenarioError
from simcluster.fabric.builders import QUANTUM2_NDR_PORTS, QUANTUM_HDR_PORTS
from simcluster.replay.recorded import COMPUTE, RecordedOp, RecordedRun
from simcluster.spec.hardware import GpuSpec
from simcluster.workload.kernels import hbm_fraction

# ---- what the trace ran on --------------------------------------------------------------------------------

# CUDA device names (Kineto deviceProperties[].name) -> catalog GPU, first match wins, with the reason.
# "A100-PG509-200" is the HGX A100 board of Meta's HolisticTraceAnalysis traces: its deviceProperties report
# totalGlobalMem = 42.3e9 B, i.e. the 40 GB part. An A100 whose memory the name does not give is taken as the
# 80 GB SXM part: both have the same tensor-core peaks (NVIDIA A100 datasheet), only HBM bandwidth differs.
GPU_NAME_RULES: tuple[tuple[str, str, str], ...] = (
    (r"A100.*PG509-200", "a100-40gb-sxm", "the PG509-200 board reports 40 GB of HBM (deviceProperties)"),
    (r"A100.*40\s*GB", "a100-40gb-sxm", "the device name says 40 GB"),
    (r"A100.*80\s*GB", "a100-80gb-sxm", "the device name says 80 GB"),
    (r"A100", "a100-80gb-sxm", "an A100 of unstated memory (the 40 and 80 GB parts have the same peaks)"),
    (r"H200", "h200-sxm", "the device name says H200"),
    (r"H100", "h100-sxm", "the device name says H100 (the SXM part is assumed)"),
    (r"B200", "b200", "the device name says B200"),
    (r"MI300X", "mi300x", "the device name says MI300X"),
)
FALLBACK_GPU = "a100-80gb-sxm"  # the GPU of every real trace shipped with simcluster (shared/traces/README.md)

# Scale-out NIC of each GPU generation's reference server: DGX A100 has ConnectX-6 HDR 200 Gb/s adapters
# (NVIDIA DGX A100 datasheet); DGX H100/H200 and DGX B200 have ConnectX-7 400 Gb/s (their datasheets).
DEFAULT_NIC = {"a100-40gb-sxm": "connectx-6", "a100-80gb-sxm": "connectx-6"}
DEFAULT_NIC_OTHERWISE = "connectx-7"
# HGX/DGX servers hold 8 GPUs on one NVSwitch (the A100 traces' deviceProperties list 8 devices per host).
DEFAULT_GPUS_PER_NODE = 8
DEFAULT_NETWORK_MODEL = "flow"  # contention between concurrent collectives matters in a replay


def infer_gpu(device_name: str | None) -> tuple[str, str]:
    """(catalog GPU name, the sentence saying why) for a CUDA device name, or the fallback when unknown."""
    if device_name:
        for pattern, catalog_name, why in GPU_NAME_RULES:
            if re.search(pattern, device_name, re.IGNORECASE):
                return catalog_name, f"GPU: the trace ran on {device_name!r}, taken as {catalog_name} ({why})"
        return FALLBACK_GPU, (f"GPU: {device_name!r} is not in the catalog; assumed {FALLBACK_GPU} "
                              "(pass --gpu to choose)")
    return FALLBACK_GPU, f"GPU: the trace does not name its GPU; assumed {FALLBACK_GPU} (pass --gpu to choose)"


def rail_fat_tree_pods(gpus: int, gpus_per_node: int, radix: int) -> int:
    """Pods a three-tier rail-optimised fat-tree of ``radix``-port switches needs for ``gpus`` GPUs, as
    ``fabric/builders.rail_fat_tree`` wires it: a leaf per rail takes ``radix/2`` servers, a pod ``radix/2`` leaves;
    it holds at most ``radix`` pods (16,000 GPUs of 8 per node at 40 ports, 65,536 at 64)."""
    down = radix // 2
    servers = math.ceil(gpus / gpus_per_node)
    return math.ceil(math.ceil(servers / down) * min(gpus_per_node, gpus) / down)


def default_fabric_options(world_size: int, gpus_per_node: int) -> tuple[dict, str | None]:
    """Options of the default rail-optimised fat-tree and the sentence why, when its switches must be larger
    than the builder's default: a world beyond what 40-port HDR switches (NVIDIA Quantum QM8700, the default for
    a 200 Gb/s NIC) hold in three tiers gets 64-port Quantum-2 switches (QM9700 datasheet: 64 ports of 400 Gb/s,
    or 128 of 200 Gb/s, so 64 ports at an HDR NIC's rate is within what it offers), the next generation of the
    same family, which holds 65,536 GPUs (of 8 per node); beyond that the builder's own error stands."""
    pods = rail_fat_tree_pods(world_size, gpus_per_node, QUANTUM_HDR_PORTS)
    if pods <= QUANTUM_HDR_PORTS:
        return {}, None
    return {"radix": QUANTUM2_NDR_PORTS}, (
        f"fabric switches: {world_size} ranks ({gpus_per_node} per node) need {pods} pods of {QUANTUM_HDR_PORTS}-port "
        f"HDR switches, more than the {QUANTUM_HDR_PORTS} a three-tier fat-tree holds; {QUANTUM2_NDR_PORTS}-port "
        f"Quantum-2 switches assumed (radix {QUANTUM2_NDR_PORTS})")


def default_fabric(world_size: int, gpu_name: str, gpus_per_node: int) -> tuple[str, str, str]:
    """(topology, nic, sentence) assumed for the fabric a trace ran on, which traces do not record."""
    nic = DEFAULT_NIC.get(gpu_name, DEFAULT_NIC_OTHERWISE)
    if world_size <= gpus_per_node:
        return "nvswitch-node", nic, (f"fabric: the trace does not record it; {world_size} ranks fit one "
                                      f"{gpus_per_node}-GPU node, so one NVSwitch node (nvswitch-node) is assumed")
    return "rail-fat-tree", nic, (f"fabric: the trace does not record it; {world_size} ranks on "
                                  f"{math.ceil(world_size / gpus_per_node)} nodes of {gpus_per_node}: a "
                                  f"non-blocking rail-optimised fat-tree with {nic} (the reference server's NIC) "
                                  "is assumed")


# ---- compute on another GPU -------------------------------------------------------------------------------

# Kernels bound by tensor-core throughput: GEMMs and convolutions (cuBLAS/CUTLASS/cuDNN names), attention.
# Everything else (elementwise, normalisation, reductions, copies, optimizer) is taken as HBM-bound: their
# arithmetic intensity is far below the ridge point of recent GPUs (A100: 312 TFLOP/s / 2 TB/s = 156 FLOP/B).
MATMUL_KERNEL = re.compile(r"gemm|cutlass|xmma|cublas|conv|fprop|dgrad|wgrad|scudnn|flash|fmha|attn|attention",
                           re.IGNORECASE)
RESCALE_MODES = ("roofline", "peak")
RESCALE_PRECISION = "bf16"  # dense peaks compared (fp16/tf32 ratios are the same for every NVIDIA pair listed)


def kernel_speedup(kernel_name: str, old: GpuSpec, new: GpuSpec, mode: str = "roofline") -> float:
    """How much faster one kernel runs on ``new`` than on ``old``.

    ``peak``: the ratio of dense bf16 peaks for every kernel. ``roofline``: a kernel takes
    max(FLOP / peak, bytes / HBM bandwidth) (Williams, Waterman & Patterson 2009, "Roofline", eq. 1); a
    tensor-core kernel (``MATMUL_KERNEL``) sits on the compute roof, so it speeds up by the peak ratio, any
    other on the memory roof, by the ratio of achievable HBM bandwidths: datasheet times ``kernels.hbm_fraction``
    of each GPU, the bandwidth the simulator's own memory-bound kernels run at (efficiency.yaml
    bandwidth_fraction; equal fractions cancel to the datasheet ratio).
    """
    peak = new.peak_flop_per_s(RESCALE_PRECISION) / old.peak_flop_per_s(RESCALE_PRECISION)
    if mode == "peak" or MATMUL_KERNEL.search(kernel_name):
        return peak
    return (new.hbm_bandwidth * hbm_fraction(new.name)) / (old.hbm_bandwidth * hbm_fraction(old.name))


def busy_rescaled(run: RecordedRun, old: GpuSpec, new: GpuSpec, mode: str = "roofline",
                  kernels: RecordedRun | None = None) -> tuple[dict[tuple[int, int], float], str]:
    """Kernel time of every compute op of ``run`` on ``new``: {(rank, op index): busy seconds}, and a sentence.

    A merged compute segment mixes kernels; ``kernels`` (the same trace imported with ``merge_compute=False``)
    gives each of them, found by stream and time inside the segment, so each is rescaled by its own roof.
    Without it a segment is rescaled by the speedup of the kernel it is named after.
    """
    if mode not in RESCALE_MODES:
        raise ScenarioError("--gpu-scaling", f"expected one of {', '.join(RESCALE_MODES)}, got {mode!r}")
    out: dict[tuple[int, int], float] = {}
    per_kernel = kernels is not None and mode == "roofline"
    for rank, ops in run.ranks.items():
        by_stream = _kernels_by_stream(kernels.ranks.get(rank, [])) if per_kernel else {}
        for index, op in enumerate(ops):
            if op.kind == COMPUTE:
                out[(rank, index)] = _segment_busy_s(op, by_stream, old, new, mode)
    return out, _rescale_sentence(old, new, mode, per_kernel)


def _kernels_by_stream(ops: list[RecordedOp]) -> dict[object, tuple[list[float], list[RecordedOp]]]:
    """One rank's single compute kernels per stream in start order, with their starts alongside (to bisect)."""
    by_stream: dict[object, tuple[list[float], list[RecordedOp]]] = {}
    for k in sorted((k for k in ops if k.kind == COMPUTE), key=lambda k: k.started_at_s):
        starts, items = by_stream.setdefault(k.stream, ([], []))
        starts.append(k.started_at_s)
        items.append(k)
    return by_stream


def _segment_busy_s(op: RecordedOp, by_stream: dict[object, tuple[list[float], list[RecordedOp]]],
                    old: GpuSpec, new: GpuSpec, mode: str) -> float:
    """Kernel time of one compute segment on ``new``: the kernels found inside it (same stream, within its
    span, 1 ns of rounding allowed) each by its own speedup, else the segment by the kernel it is named after."""
    starts, items = by_stream.get(op.stream, ([], []))
    lo = bisect.bisect_left(starts, op.started_at_s - 1e-9)
    hi = bisect.bisect_right(starts, op.ended_at_s + 1e-9)
    inside = [k for k in items[lo:hi] if k.ended_at_s <= op.ended_at_s + 1e-9]
    if inside:
        return sum(k.kernel_s / kernel_speedup(k.name, old, new, mode) for k in inside)
    return op.kernel_s / kernel_speedup(op.name, old, new, mode)


def _rescale_sentence(old: GpuSpec, new: GpuSpec, mode: str, per_kernel: bool) -> str:
    """The assumption that says how compute was moved from ``old`` to ``new``, with the two ratios used."""
    peak = kernel_speedup("gemm", old, new, "peak")
    hbm = kernel_speedup("elementwise", old, new, "roofline")
    if mode == "peak":
        how = f"every kernel by the ratio of dense {RESCALE_PRECISION} peaks ({peak:.2f}x)"
    else:
        how = (f"roofline-consistent: GEMM/convolution/attention kernels by the ratio of dense "
               f"{RESCALE_PRECISION} peaks ({peak:.2f}x), all other kernels by the ratio of achievable HBM "
               f"bandwidths ({hbm:.2f}x)" + (", kernel by kernel" if per_kernel else
                                  ", a merged compute segment by the kernel it is named after"))
    return (f"compute rescaled from {old.name} to {new.name}, {how}; launch gaps inside compute "
            "segments are CPU time and kept")


__all__ = ["DEFAULT_GPUS_PER_NODE", "GPU_NAME_RULES", "MATMUL_KERNEL", "RESCALE_MODES", "busy_rescaled",
           "default_fabric", "default_fabric_options", "infer_gpu", "kernel_speedup", "rail_fat_tree_pods"]
