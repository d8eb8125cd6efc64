"""Replay of a recorded run, pure side: a ``RecordedRun`` becomes per-rank replay programs; replayed events
become per-step figures and a side-by-side Perfetto trace.

The SimPy side is ``engine/replay.py``. Here is everything that can be decided without a clock:
- which catalog GPU and fabric the trace ran on (``infer_gpu``, ``default_fabric``), and why;
- what each recorded op becomes: compute kept as a timeout of its recorded duration (rescaled when the GPU
  changes, ``busy_rescaled``), communication re-simulated on the chosen fabric when the trace says what moved
  (collective type, bytes, group), else kept at its recorded duration;
- the dependencies (``RecordedRun``'s replay rule): an op starts at the latest of (end of the previous op on its
  stream + the idle gap recorded between them) and (end of each op it waits for + the lag recorded after it);
- how collectives are matched across ranks: the k-th collective of a group on every member (NCCL's ordering
  rule); a send with the receive of its peer by their order between the two ranks;
- ``--scale-dp K``: the recorded ranks repeated K times (weak scaling), collectives spanning the recorded world
  growing to span all replicas.

Every decision taken for missing data is a sentence in ``ReplayPlan.assumptions``.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pandas as pd

from simcluster.core.errors import ScenarioError
from simcluster.replay.recorded import COLLECTIVE, COMPUTE, RECV, SEND, RecordedRun, describe_ranges
from simcluster.spec.hardware import GpuSpec

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


def infer_gpu(device_name: str | None) -> tuple[str, str]:
    """(catalog GPU name, the sentence saying why) for a CUDA device name, or the fallback when unknown."""
    if device_name:
        for pattern, catalog_name, why in GPU_NAME_RULES:
            if re.search(pattern, device_name, re.IGNORECASE):
                return catalog_name, f"GPU: the trace ran on {device_name!r}, taken as {catalog_name} ({why})"
        return FALLBACK_GPU, (f"GPU: {device_name!r} is not in the catalog; assumed {FALLBACK_GPU} "
                              "(pass --gpu to choose)")
    return FALLBACK_GPU, f"GPU: the trace does not name its GPU; assumed {FALLBACK_GPU} (pass --gpu to choose)"


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
    other on the memory roof, by the HBM-bandwidth ratio.
    """
    peak = new.peak_flop_per_s(RESCALE_PRECISION) / old.peak_flop_per_s(RESCALE_PRECISION)
    if mode == "peak" or MATMUL_KERNEL.search(kernel_name):
        return peak
    return new.hbm_bandwidth / old.hbm_bandwidth


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
        by_stream: dict[object, tuple[list[float], list]] = {}
        if per_kernel:
            singles = sorted((k for k in kernels.ranks.get(rank, []) if k.kind == COMPUTE),
                             key=lambda k: k.started_at_s)
            for k in singles:
                starts, items = by_stream.setdefault(k.stream, ([], []))
                starts.append(k.started_at_s)
                items.append(k)
        for index, op in enumerate(ops):
            if op.kind != COMPUTE:
                continue
            starts, items = by_stream.get(op.stream, ([], []))
            lo = bisect.bisect_left(starts, op.started_at_s - 1e-9)
            hi = bisect.bisect_right(starts, op.ended_at_s + 1e-9)
            inside = [k for k in items[lo:hi] if k.ended_at_s <= op.ended_at_s + 1e-9]
            if inside:
                out[(rank, index)] = sum(k.kernel_s / kernel_speedup(k.name, old, new, mode) for k in inside)
            else:
                out[(rank, index)] = op.kernel_s / kernel_speedup(op.name, old, new, mode)
    peak = kernel_speedup("gemm", old, new, "peak")
    hbm = kernel_speedup("elementwise", old, new, "roofline")
    if mode == "peak":
        how = f"every kernel by the ratio of dense {RESCALE_PRECISION} peaks ({peak:.2f}x)"
    else:
        how = (f"roofline-consistent: GEMM/convolution/attention kernels by the ratio of dense "
               f"{RESCALE_PRECISION} peaks ({peak:.2f}x), all other kernels by the ratio of HBM bandwidths "
               f"({hbm:.2f}x)" + (", kernel by kernel" if per_kernel else
                                  ", a merged compute segment by the kernel it is named after"))
    return out, (f"compute rescaled from {old.name} to {new.name}, {how}; launch gaps inside compute "
                 "segments are CPU time and kept")


# ---- replay programs --------------------------------------------------------------------------------------

# simcluster.collectives op for each recorded collective name that can be re-simulated.
COLLECTIVE_OPS = {"allreduce": "allreduce", "allgather": "all_gather", "reduce_scatter": "reduce_scatter",
                  "alltoall": "alltoall", "broadcast": "broadcast", "reduce": "reduce", "barrier": "allreduce"}
# c10d's NCCL barrier is an allreduce of a one-element tensor (PyTorch ProcessGroupNCCL::barrier).
BARRIER_BYTES = 4.0


@dataclass
class ReplayOp:
    """One op of one replayed rank. ``collective`` set: re-simulated on the fabric over ``group`` (fabric GPU
    indices, = replayed ranks), rendezvous ``match`` shared by every member; else a timeout of ``duration_s``."""

    rank: int
    index: int
    stream: str
    kind: str
    name: str
    step: int | None
    recorded_start_s: float
    recorded_end_s: float
    duration_s: float
    busy_s: float
    gap_s: float
    waits: tuple[tuple[int, float], ...] = ()
    size_bytes: float = 0.0
    collective: str | None = None
    group: tuple[int, ...] = ()
    match: tuple | None = None

    @property
    def is_communication(self) -> bool:
        return self.kind != COMPUTE


@dataclass
class ReplayPlan:
    """Programs of every replayed rank (ops in recorded start order), and the sentences of what was assumed."""

    ops: dict[int, list[ReplayOp]]
    world_size: int
    recorded_world_size: int
    assumptions: list[str] = field(default_factory=list)

    def op_count(self) -> int:
        return sum(len(ops) for ops in self.ops.values())


def _unknown_group(rank: int, group_size: int, world: int) -> tuple[int, ...]:
    """Members of a group known by size only: the block of consecutive ranks holding ``rank``."""
    size = min(max(group_size, 1), world)
    base = rank // size * size
    return tuple(r for r in range(base, base + size) if r < world)


def build_plan(run: RecordedRun, scale_dp: int = 1,
               busy_s: dict[tuple[int, int], float] | None = None) -> ReplayPlan:
    """Replay programs of ``run`` (``scale_dp`` times its world), compute kernel time from ``busy_s`` when the
    GPU changes ({(recorded rank, op index): seconds}, see ``busy_rescaled``)."""
    if scale_dp < 1:
        raise ScenarioError("--scale-dp", f"expected an integer >= 1, got {scale_dp}")
    base_world = run.world_size
    world = base_world * scale_dp
    everyone = tuple(range(base_world))
    notes: Counter = Counter()
    plan = ReplayPlan({}, world, base_world)
    for replay_rank in range(world):
        source, replica = replay_rank % base_world, replay_rank // base_world
        recorded = run.ops_of(source)
        owner = source if source in run.ranks else run.mirrored[source]
        ops: list[ReplayOp] = []
        last_on_stream: dict[object, int] = {}
        for index, op in enumerate(recorded):
            previous = last_on_stream.get(op.stream)
            last_on_stream[op.stream] = index
            gap_s = 0.0 if previous is None else recorded[previous].ended_at_s
            gap_s = max(0.0, op.started_at_s - gap_s)
            waits = tuple((j, max(0.0, op.started_at_s - recorded[j].ended_at_s)) for j in op.waits_for)
            duration_s, busy = op.duration_s, op.kernel_s
            if busy_s is not None and op.kind == COMPUTE:
                new_busy = busy_s.get((owner, index), busy)
                duration_s, busy = max(0.0, op.duration_s - busy) + new_busy, new_busy
            ops.append(ReplayOp(rank=replay_rank, index=index, stream=str(op.stream), kind=op.kind, name=op.name,
                                step=op.step, recorded_start_s=op.started_at_s, recorded_end_s=op.ended_at_s,
                                duration_s=duration_s, busy_s=busy, gap_s=gap_s, waits=waits,
                                size_bytes=float(op.size_bytes or 0.0)))
            if op.is_communication:
                _plan_communication(ops[-1], op, source, replica, base_world, everyone, scale_dp, notes)
        plan.ops[replay_rank] = ops
    _match(plan, notes)
    plan.assumptions = [f"{note} ({count} ops over all replayed ranks)" for note, count in notes.items()]
    if scale_dp > 1:
        plan.assumptions.insert(0, (
            f"--scale-dp {scale_dp}: the {base_world} recorded ranks are repeated {scale_dp} times ({world} "
            f"ranks; replayed rank r behaves like recorded rank r mod {base_world}); weak scaling: every rank "
            "keeps its recorded work and message sizes; collectives over the whole recorded world grow to span "
            "all replicas (data-parallel gradients), smaller groups and point-to-point stay inside each replica"))
    return plan


def _plan_communication(target: ReplayOp, op, source: int, replica: int, base_world: int,
                        everyone: tuple[int, ...], scale_dp: int, notes: Counter) -> None:
    """Decide whether a communication op is re-simulated, over which group, with which rendezvous."""
    shift = replica * base_world
    if op.size_bytes is None and op.name != "barrier":
        notes["communication of unknown size kept at its recorded duration"] += 1
        return
    if op.kind == COLLECTIVE:
        if op.name not in COLLECTIVE_OPS:
            notes[f"{op.name} collectives (not modelled on the fabric) kept at their recorded duration"] += 1
            return
        group = tuple(op.group)
        if not group:
            group = _unknown_group(source, op.group_size or base_world, base_world)
            notes["process group known by size only: taken as the block of consecutive ranks holding the "
                  "rank"] += 1
        if set(group) == set(everyone) and scale_dp > 1:
            group = tuple(range(base_world * scale_dp))
        else:
            group = tuple(g + shift for g in group)
        target.collective = COLLECTIVE_OPS[op.name]
        target.group = group
        target.size_bytes = BARRIER_BYTES if op.name == "barrier" else float(op.size_bytes)
        target.match = ("collective", group)
        return
    if op.peer is None:
        notes[f"{op.kind} without a known peer kept at its recorded duration"] += 1
        return
    me, peer = source + shift, op.peer + shift
    target.collective = "sendrecv"
    if op.kind == RECV:
        target.group, target.match = (peer, me), ("p2p", peer, me)
    elif op.kind == SEND:
        target.group, target.match = (me, peer), ("p2p", me, peer)
    else:  # an NCCL SendRecv kernel: both ranks run one, each names the other
        pair = (min(me, peer), max(me, peer))
        target.group, target.match = pair, ("sendrecv", *pair)
    target.size_bytes = float(op.size_bytes)


def _match(plan: ReplayPlan, notes: Counter) -> None:
    """Number each rank's rendezvous by order (k-th collective of a group, k-th send between two ranks), keep
    those every member reaches, and give members of one rendezvous one size (the largest)."""
    members: dict[tuple, list[ReplayOp]] = defaultdict(list)
    for ops in plan.ops.values():
        counts: Counter = Counter()
        for op in ops:
            if op.match is not None:
                op.match = (*op.match, counts[op.match])
                counts[op.match[:-1]] += 1
                members[op.match].append(op)
    for key, ops in members.items():
        needed = len(ops[0].group) if key[0] == "collective" else 2
        if len(ops) < needed:
            notes["communication some member never reaches in the trace (unmatched at the end of the "
                  "profile) kept at its recorded duration"] += len(ops)
            for op in ops:
                op.collective, op.match = None, None
            continue
        if len({(op.collective, op.size_bytes) for op in ops}) > 1:
            notes["members disagree on a collective's type or size (matched by order): the largest size "
                  "is used"] += len(ops)
            size_bytes = max(op.size_bytes for op in ops)
            for op in ops:
                op.size_bytes = size_bytes
                op.collective = ops[0].collective


# ---- what a replay measured -------------------------------------------------------------------------------

def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        elif end > start:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in intervals)


def _clip(intervals: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo)]


def exposed_s(comm: list[tuple[float, float]], compute: list[tuple[float, float]]) -> float:
    """Time during which communication runs and no compute does: |union(comm) \\ union(compute)|."""
    comm, compute = _union(comm), _union(compute)
    return _length(comm) - _length(_union([(max(a, c), min(b, d)) for a, b in comm for c, d in compute
                                           if min(b, d) > max(a, c)]))


def step_report(run: RecordedRun, events: pd.DataFrame) -> list[dict]:
    """Per recorded step: recorded and replayed step time, compute and exposed communication (means over
    replayed ranks).

    ``recorded_step_s`` is the profiler's own figure (``RecordedRun.step_time_s``: the ProfilerStep span of the
    slowest rank). The replay moves it by what it changed on the GPU: a step's GPU work ends when the last op
    launched in it ends (on any rank), and ``replayed_step_s = recorded_step_s + shift(end of this step) -
    shift(end of the previous step)``, the shift being replayed minus recorded end (0 before the first step:
    the replay keeps the recorded time origin). A GPU-bound step's ops run after its CPU annotation ends, so
    GPU ends, not CPU annotations, mark what the replay moved. ``compute_s`` is the kernel time of the step's
    compute ops; ``exposed_comm_s`` the time, in the step's GPU window (previous step's end to this one's),
    during which a communication op runs and no compute segment does; ``recorded_exposed_comm_s`` the same
    measure on the recorded times. Without step annotations the whole trace is one step.
    """
    numbers = run.step_numbers()
    whole = not numbers or events["step"].isna().all()
    rows = []
    ranks = events["rank"].nunique()
    start_s = recorded_start_s = float(events["recorded_start_s"].min()) if whole else \
        min(s.started_at_s for s in run.steps)
    for number in [None] if whole else numbers:
        mine = events if number is None else events[events["step"] == number]
        if mine.empty:
            continue
        end_s, recorded_end_s = float(mine["end_s"].max()), float(mine["recorded_end_s"].max())
        if number is None:
            recorded_step_s = recorded_end_s - recorded_start_s
        else:
            recorded_step_s = run.step_time_s(number)
        exposed = {"replayed": 0.0, "recorded": 0.0}
        windows = {"replayed": (start_s, end_s, "start_s", "end_s"),
                   "recorded": (recorded_start_s, recorded_end_s, "recorded_start_s", "recorded_end_s")}
        for _rank, of_rank in events.groupby("rank"):
            is_comm = (of_rank["kind"] == "comm").tolist()
            for label, (lo, hi, start_col, end_col) in windows.items():
                spans = list(zip(of_rank[start_col], of_rank[end_col], strict=True))
                comm = _clip([s for s, c in zip(spans, is_comm, strict=True) if c], lo, hi)
                compute = _clip([s for s, c in zip(spans, is_comm, strict=True) if not c], lo, hi)
                exposed[label] += exposed_s(comm, compute) / ranks
        shift_s = (end_s - recorded_end_s) - (start_s - recorded_start_s)
        rows.append({"step": number, "recorded_step_s": recorded_step_s,
                     "replayed_step_s": recorded_step_s + shift_s,
                     "compute_s": float(mine.loc[mine["kind"] == "compute", "busy_s"].sum()) / ranks,
                     "exposed_comm_s": exposed["replayed"], "recorded_exposed_comm_s": exposed["recorded"]})
        start_s, recorded_start_s = end_s, recorded_end_s
    return rows


# ---- Perfetto: the recorded and the replayed timelines side by side ---------------------------------------

RECORDED_PID_OFFSET = 1_000_000  # recorded rank r is process RECORDED_PID_OFFSET + r in the Perfetto trace


def chrome_trace(events: pd.DataFrame, max_ranks: int) -> dict:
    """Chrome/Perfetto trace: replayed rank r is process r, its recorded twin RECORDED_PID_OFFSET + r; one
    thread per CUDA stream; times in microseconds. Only the first ``max_ranks`` ranks are written."""
    ranks = sorted(events["rank"].unique())[:max_ranks]
    kept = events[events["rank"].isin(ranks)]
    trace: list[dict] = []
    tids: dict[str, int] = {}
    for (rank, stream), _rows in kept.groupby(["rank", "cuda_stream"]):
        tid = tids.setdefault(stream, len(tids) + 1)
        for pid, label in ((int(rank), "replayed"), (RECORDED_PID_OFFSET + int(rank), "recorded")):
            trace.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                          "args": {"name": f"{label} rank {rank}"}})
            trace.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                          "args": {"sort_index": 2 * int(rank) + (label == "recorded")}})
            trace.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                          "args": {"name": f"stream {stream}"}})
    for row in kept.itertuples(index=False):
        args = {"bytes": float(row.bytes), "step": None if pd.isna(row.step) else int(row.step),
                "simulated": bool(row.simulated)}
        for pid, start, end in ((int(row.rank), row.start_s, row.end_s),
                                (RECORDED_PID_OFFSET + int(row.rank), row.recorded_start_s, row.recorded_end_s)):
            trace.append({"ph": "X", "name": row.name, "cat": row.op_kind, "pid": pid,
                          "tid": tids[row.cuda_stream], "ts": start * 1e6, "dur": max(0.0, (end - start) * 1e6),
                          "args": args})
    return {"traceEvents": trace, "displayTimeUnit": "ms"}


def recorded_view(events: pd.DataFrame) -> pd.DataFrame:
    """The events table with the recorded times in ``start_s``/``end_s`` (to plot the recording)."""
    view = events.copy()
    view["start_s"], view["end_s"] = events["recorded_start_s"], events["recorded_end_s"]
    return view


def describe_plan(plan: ReplayPlan) -> str:
    """One sentence: how many ops are replayed and how many of the communication ops are re-simulated."""
    comm = [op for ops in plan.ops.values() for op in ops if op.is_communication]
    simulated = [op for op in comm if op.collective is not None]
    kept = sorted({op.rank for op in comm if op.collective is None})
    tail = f"; kept at recorded duration on ranks {describe_ranges(kept)}" if kept else ""
    return (f"replayed {plan.op_count()} ops on {plan.world_size} ranks: {len(simulated)} of {len(comm)} "
            f"communication ops re-simulated on the fabric{tail}")


__all__ = ["COLLECTIVE_OPS", "RECORDED_PID_OFFSET", "ReplayOp", "ReplayPlan", "build_plan", "busy_rescaled",
           "chrome_trace", "default_fabric", "describe_plan", "exposed_s", "infer_gpu", "kernel_speedup",
           "recorded_view", "step_report"]
