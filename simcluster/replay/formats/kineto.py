"""Import PyTorch-profiler (Kineto) traces, one JSON file per rank, into a ``RecordedRun``.

What is read (Chrome trace format written by ``torch.profiler``; ``ts``/``dur`` in microseconds):
- GPU operations: ``ph: "X"`` events of category ``kernel``, ``gpu_memcpy``, ``gpu_memset``; ``tid`` is the
  CUDA stream. Memory copies and sets are kept as compute (local work that occupies the stream).
- NCCL kernels (``ncclKernel_*``, ``ncclDevKernel_*``): what they communicate comes from the first source that
  has it: (1) the kernel's own args ("Collective name", "In msg nelems", "Out msg nelems", "dtype",
  "Group size", "Process Group Ranks"); (2) the ``record_param_comms`` CPU op that launched it (same fields);
  (3) older traces: the ``nccl:<collective>`` annotation and the ``c10d::`` op around the launch, whose
  "Input Dims"/"Input type" give the tensors; (4) the kernel name alone (collective known, size unknown).
  A kernel is tied to its CPU side through the ``cudaLaunchKernel`` runtime event of the same correlation id.
- Cross-stream dependencies: with CUDA sync events (``cuda_sync`` "Stream Wait Event", recorded when the
  profiler runs with ``enable_cuda_sync_events``; what ``kineto_writer`` writes), exactly: each names the
  stream and the ``cudaEventRecord`` call it waits for, so an op may wait for several. Else the
  ``cudaStreamWaitEvent`` calls make the next kernel launched from that CPU thread wait for the most recently
  launched kernel of another stream. Traces recorded without runtime events fall back to timing: a kernel
  that started within ``WAIT_MATCH_WINDOW_S`` after an op of another stream ended, after an idle gap, is taken
  to have waited for it.
- Point-to-point peers: a send or receive whose process group has two ranks (as PyTorch's p2p communicators
  do) is with the other one; otherwise the peer is unknown.
- ``ProfilerStep#N`` annotations: step boundaries; each GPU op belongs to the step it was launched in.
- ``distributedInfo``: rank, world size, process groups (``pg_config``); ``deviceProperties``: GPU name.

Whatever is missing is stated in ``RecordedRun.assumptions``; unreadable files raise ``ScenarioError``.
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simcluster.core import inputs, units
from simcluster.core.errors import ScenarioError, shown
from simcluster.replay.recorded import (
    COLLECTIVE,
    COMPUTE,
    MAX_TRACE_BYTES,
    MAX_WORLD_SIZE,
    RECV,
    SEND,
    SENDRECV,
    UNKNOWN_COLLECTIVE,
    RecordedOp,
    RecordedRun,
    RecordedStep,
    check_world_size,
    describe_files,
    describe_ranges,
    mirror_missing_ranks,
    read_trace_bytes,
    summarize_notes,
)

US = 1e-6  # Kineto timestamps and durations are microseconds

# Names in the Chrome-trace JSON torch.profiler (Kineto) writes, shared by this reader and ``kineto_writer``.
# Event categories and names (PyTorch profiler output; CUDA sync events: libkineto CudaSyncActivity, written
# when the profiler runs with ``enable_cuda_sync_events``).
CAT_KERNEL, CAT_RUNTIME, CAT_SYNC, CAT_ANNOTATION = "kernel", "cuda_runtime", "cuda_sync", "user_annotation"
LAUNCH_KERNEL, STREAM_WAIT_EVENT, EVENT_RECORD = "cudaLaunchKernel", "cudaStreamWaitEvent", "cudaEventRecord"
SYNC_STREAM_WAIT = "Stream Wait Event"  # the cuda_sync event of a cudaStreamWaitEvent, on the waiting stream
STEP_PREFIX = "ProfilerStep#"
# Args: of every GPU event and runtime call; of NCCL kernels and record_param_comms (c10d ParamCommsUtils);
# of a "Stream Wait Event" (the stream whose event it waits for, and the correlation id of the cudaEventRecord).
ARG_CORRELATION, ARG_STREAM = "correlation", "stream"
ARG_COLLECTIVE, ARG_DTYPE = "Collective name", "dtype"
ARG_IN_NELEMS, ARG_OUT_NELEMS = "In msg nelems", "Out msg nelems"
ARG_GROUP_SIZE, ARG_GROUP_RANKS, ARG_GROUP_NAME = "Group size", "Process Group Ranks", "Process Group Name"
ARG_WAIT_ON_STREAM, ARG_WAIT_ON_RECORD = "wait_on_stream", "wait_on_cuda_event_record_corr_id"

# Timing fallback for cross-stream waits. In the HolisticTraceAnalysis A100 traces (tests/data), kernels whose
# wait was established from cudaStreamWaitEvent started a few microseconds after the op they waited for
# (CUDA event signalling is on-GPU); 20 us keeps such waits while rejecting unrelated ops.
WAIT_MATCH_WINDOW_S = 20e-6

# Bytes per element of the dtypes Kineto writes ("Float", "c10::BFloat16", "unsigned char", ...), keyed in
# lower case without the "c10::" prefix. Source: PyTorch torch.dtype.itemsize of the same types.
DTYPE_BYTES: dict[str, int] = {
    "float": 4, "float32": 4, "double": 8, "float64": 8, "half": 2, "float16": 2, "bfloat16": 2,
    "long": 8, "int64": 8, "int": 4, "int32": 4, "short": 2, "int16": 2, "char": 1, "signed char": 1,
    "int8": 1, "byte": 1, "unsigned char": 1, "uint8": 1, "bool": 1, "complexfloat": 8, "complexdouble": 16,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1,
}

# Collective spellings (args "Collective name", "nccl:" annotations, kernel names) -> simcluster names.
_COLLECTIVE_ALIASES = {
    "allreduce": "allreduce", "allgather": "allgather", "reducescatter": "reduce_scatter",
    "alltoall": "alltoall", "alltoallv": "alltoall", "broadcast": "broadcast", "reduce": "reduce",
    "gather": "gather", "scatter": "scatter", "barrier": "barrier", "send": "send", "recv": "recv",
    "sendrecv": "sendrecv",
}
_NCCL_KERNEL = re.compile(r"^nccl(?:Dev)?Kernel_([A-Za-z]+)")
_STEP = re.compile(rf"^{STEP_PREFIX}(\d+)$")
_RANK_IN_NAME = re.compile(r"rank[_-]?(\d+)", re.IGNORECASE)
_GPU_CATEGORIES = {CAT_KERNEL, "gpu_memcpy", "gpu_memset"}


def normalize_collective(text: str) -> str:
    """'nccl:_all_gather_base', 'allgather_into_tensor_coalesced', 'AllGather' -> 'allgather'."""
    key = text.lower().removeprefix("nccl:").strip("_")
    for suffix in ("_coalesced", "_base", "_into_tensor", "_tensor", "_single"):
        key = key.replace(suffix, "")
    key = key.replace("_", "").replace(" ", "")
    return _COLLECTIVE_ALIASES.get(key, UNKNOWN_COLLECTIVE)


def dtype_bytes(dtype: str) -> int | None:
    return DTYPE_BYTES.get(dtype.lower().removeprefix("c10::").strip())


def load_json(path: Path) -> dict:
    """The parsed trace file (plain or gzip JSON); ScenarioError with one line when it cannot be."""
    raw = read_trace_bytes(path)
    if raw[:2] == b"\x1f\x8b":
        try:
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw_text = inflate.decompress(raw, MAX_TRACE_BYTES + 1)
        except zlib.error as err:
            raise ScenarioError(str(path), f"corrupt or truncated gzip data ({err})") from None
        if len(raw_text) > MAX_TRACE_BYTES or inflate.unconsumed_tail:
            raise ScenarioError(str(path), f"decompresses to more than {MAX_TRACE_BYTES // 2**20} MiB, the largest "
                                           "trace the reader accepts (profile fewer steps)")
        if not inflate.eof:
            raise ScenarioError(str(path), "corrupt or truncated gzip data (the stream ends early)")
        raw = raw_text
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise ScenarioError(str(path), "not a text JSON file (binary data)") from None
    except json.JSONDecodeError as err:
        raise ScenarioError(str(path), f"not valid JSON, truncated or corrupt? ({err.msg} at line "
                                       f"{err.lineno}, column {err.colno})") from None
    except RecursionError:  # the decoder recurses once per level of nesting
        raise ScenarioError(str(path), "not a Kineto trace: its JSON nests too deeply to be read") from None
    except ValueError as err:  # an integer of more than 4,300 digits (round 31: a traceback)
        raise ScenarioError(str(path), inputs.unreadable_value(err)) from None
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise ScenarioError(str(path), "not a Kineto/PyTorch-profiler trace: no 'traceEvents' list")
    return data


@dataclass
class _GpuOp:
    """One GPU kernel/memcpy/memset while importing; becomes a RecordedOp."""

    ts_us: float
    dur_us: float
    stream: int | str
    name: str
    args: dict
    launch_ts_us: float | None = None
    launch_tid: object = None
    kind: str = COMPUTE
    collective: str = ""
    size_bytes: float | None = 0.0
    group: tuple[int, ...] = ()
    group_size: int | None = None
    peer: int | None = None
    step: int | None = None
    waits: set[int] = field(default_factory=set)
    is_wait_source: bool = False

    @property
    def end_us(self) -> float:
        return self.ts_us + self.dur_us


@dataclass
class _RankTrace:
    path: Path
    rank: int | None
    world_size: int | None
    pg_ranks: dict[str, tuple[int, ...]]
    gpu_name: str | None
    ops: list[_GpuOp]
    steps: list[tuple[int, float, float]]  # (N, ts_us, dur_us)
    notes: Counter


def _number(event: dict, key: str, path: Path) -> float:
    value = units.finite_float(event.get(key))
    if value is None:
        raise ScenarioError(str(path), f"GPU event {str(event.get('name', '?'))[:80]!r} has no numeric {key!r}")
    return value


def _duration(event: dict, path: Path, what: str = "GPU event") -> float:
    """A kernel's or a step's ``dur`` (us): a number >= 0. A negative one is a corrupt trace (clamping it to 0 would
    replay a kernel that took time as free), so it is refused naming the event."""
    value = _number(event, "dur", path)
    if value < 0:
        raise ScenarioError(str(path), f"{what} {str(event.get('name', '?'))[:80]!r} at ts {event.get('ts')} has a "
                            f"negative 'dur' ({value:g} us): a corrupt or hand-edited trace")
    return value


def _finite(value: object) -> float | None:
    """A finite number as float, else None (CPU-side events with a malformed time are ignored, not trusted)."""
    return units.finite_float(value)


def _key(value: object) -> object:
    """A thread, stream or correlation id usable as a dictionary key (a malformed list or object becomes text)."""
    return value if value is None or isinstance(value, int | float | str) else repr(value)


def _parse_ranks(value: object) -> tuple[int, ...] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:  # not JSON (JSONDecodeError), or an integer of more than 4,300 digits
            return None  # e.g. a truncated "[0, 1, ..., 127]"
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return None


def _tensor_bytes(dims: list, types: list) -> list[float]:
    """Bytes of each tensor input listed in a CPU op's "Input Dims"/"Input type" (scalars skipped)."""
    sizes = []
    for shape, dtype in zip(dims, types, strict=False):
        width = dtype_bytes(dtype) if isinstance(dtype, str) else None
        if width is None or not isinstance(shape, list) or not shape:
            continue
        sizes.append(float(math.prod(shape)) * width)
    return sizes


def _read_rank(path: Path) -> _RankTrace:
    data = load_json(path)
    info = data.get("distributedInfo") if isinstance(data.get("distributedInfo"), dict) else {}
    rank, world_size = (value if isinstance(value, int) and not isinstance(value, bool) else None
                        for value in (info.get("rank"), info.get("world_size")))
    pg_ranks = {}
    configs = info.get("pg_config")
    for pg in configs if isinstance(configs, list) else []:
        if isinstance(pg, dict) and (ranks := _parse_ranks(pg.get("ranks"))) is not None:
            pg_ranks[str(pg.get("pg_name"))] = ranks
    devices = data.get("deviceProperties")
    first_device = devices[0] if isinstance(devices, list) and devices else None
    gpu_name = first_device.get("name") if isinstance(first_device, dict) else None
    gpu_name = gpu_name if isinstance(gpu_name, str) else None

    ops: list[_GpuOp] = []
    runtime: dict[object, dict] = {}
    cpu_comm: dict[object, list[dict]] = defaultdict(list)
    waits: list[dict] = []
    syncs: list[dict] = []
    steps: list[tuple[int, float, float]] = []
    devices_seen: set = set()
    for event in data["traceEvents"]:
        if not isinstance(event, dict) or event.get("ph") != "X":
            continue
        cat = str(event.get("cat", "")).lower()
        name = str(event.get("name", ""))
        args = event.get("args") if isinstance(event.get("args"), dict) else {}
        if cat in _GPU_CATEGORIES:
            stream = _key(event.get("tid", args.get(ARG_STREAM)))
            devices_seen.add(_key(event.get("pid")))
            ops.append(_GpuOp(_number(event, "ts", path), _duration(event, path),
                              (_key(event.get("pid")), stream), name, args))
            continue
        # CPU-side events only place GPU ops (launches, waits, steps): one with a malformed time or id is skipped
        ts_us, dur_us = _finite(event.get("ts")), _finite(event.get("dur", 0.0))
        if ts_us is None or dur_us is None:
            continue
        event = {**event, "ts": ts_us, "dur": dur_us, "tid": _key(event.get("tid")), "args": args}
        if cat == CAT_SYNC:
            if name == SYNC_STREAM_WAIT:
                syncs.append(event)
        elif cat == CAT_RUNTIME:
            if ARG_CORRELATION in args:
                runtime[_key(args[ARG_CORRELATION])] = event
            if name == STREAM_WAIT_EVENT:
                waits.append(event)
        elif cat in ("cpu_op", CAT_ANNOTATION):
            if match := _STEP.match(name):
                steps.append((int(match.group(1)), ts_us, _duration(event, path, "profiler step")))
            elif name == "record_param_comms" or name.startswith(("nccl:", "c10d::")):
                cpu_comm[event["tid"]].append(event)
    if not ops:
        raise ScenarioError(str(path), "the trace has no GPU kernels (was it recorded with CUDA activities?)")
    one_device = len(devices_seen) == 1
    for op in ops:  # stream key: the CUDA stream id, or "device:stream" if one file holds several GPUs
        pid, stream = op.stream
        op.stream = stream if one_device else f"{pid}:{stream}"
    for sync in syncs:  # the waiting stream and the stream waited for, keyed as the ops' streams
        pid, args = _key(sync.get("pid")), sync["args"]
        sync["waiter"], sync["source"] = ((stream if one_device else f"{pid}:{stream}") for stream in
                                          (sync["tid"], _key(args.get(ARG_WAIT_ON_STREAM))))
    for op in ops:
        if (launch := runtime.get(_key(op.args.get(ARG_CORRELATION)))) is not None:
            op.launch_ts_us, op.launch_tid = float(launch.get("ts", 0.0)), launch.get("tid")
    ops.sort(key=lambda o: (o.ts_us, o.end_us))
    steps = sorted({s[0]: s for s in steps}.values(), key=lambda s: s[1])
    trace = _RankTrace(path, rank, world_size, pg_ranks, gpu_name, ops, steps, Counter())
    if not one_device:
        trace.notes["several devices in one file"] += 1
    _classify_communication(trace, cpu_comm)
    _assign_steps(trace)
    _infer_waits(trace, waits, cpu_comm, syncs)
    return trace


def _containing(cpu_comm: dict[object, list[dict]], asked: list[tuple[object, float | None]]) -> list[list[dict]]:
    """For each (CPU thread, time) asked, the CPU comm ops (record_param_comms, nccl:*, c10d::*) of that thread
    around the time (start <= time <= end), by start, innermost last (a time of None: none). One sweep per thread over
    its ops by start and the times in order, the ops under way in a heap by end: a search of every op for every time
    took hours for a trace of 30,000 collectives (round 36)."""
    found: list[list[dict]] = [[] for _ in asked]
    by_thread: dict[object, list[tuple[float, int]]] = defaultdict(list)
    for n, (thread, at) in enumerate(asked):
        if at is not None and cpu_comm.get(thread):
            by_thread[thread].append((at, n))
    for thread, times in by_thread.items():
        events = cpu_comm[thread]
        by_start = sorted(range(len(events)), key=lambda i: events[i]["ts"])
        times.sort()
        under_way: dict[int, dict] = {}
        ends: list[tuple[float, int]] = []
        k = 0
        for at, n in times:
            while k < len(by_start) and events[by_start[k]]["ts"] <= at:
                i = by_start[k]
                under_way[i] = events[i]
                heapq.heappush(ends, (events[i]["ts"] + events[i]["dur"], i))
                k += 1
            while ends and ends[0][0] < at:
                del under_way[heapq.heappop(ends)[1]]
            found[n] = [under_way[i] for i in sorted(under_way, key=lambda i: (events[i]["ts"], i))]
    return found


def _classify_communication(trace: _RankTrace, cpu_comm: dict[object, list[dict]]) -> None:
    kernels = [(op, match) for op in trace.ops if (match := _NCCL_KERNEL.match(op.name))]
    around = _containing(cpu_comm, [(op.launch_tid, op.launch_ts_us) for op, _ in kernels])
    for (op, match), outer in zip(kernels, around, strict=True):
        from_kernel = normalize_collective(match.group(1))
        meta = op.args if ARG_COLLECTIVE in op.args else None
        if meta is None:
            meta = next((e["args"] for e in reversed(outer) if e.get("name") == "record_param_comms"
                         and ARG_COLLECTIVE in e.get("args", {})), None)
        if meta is not None:
            name = normalize_collective(str(meta[ARG_COLLECTIVE]))
            width = dtype_bytes(str(meta.get(ARG_DTYPE, "")))
            in_n, out_n = meta.get(ARG_IN_NELEMS), meta.get(ARG_OUT_NELEMS)
            if width is not None and isinstance(in_n, int):
                in_b, out_b = in_n * width, (out_n if isinstance(out_n, int) else in_n) * width
                op.size_bytes = float(in_b if name in ("alltoall", "send") else
                                      out_b if name == "recv" else max(in_b, out_b))
            else:
                op.size_bytes = None
                trace.notes["size unknown (no dtype/nelems)"] += 1
            op.group = _parse_ranks(meta.get(ARG_GROUP_RANKS)) or \
                trace.pg_ranks.get(str(meta.get(ARG_GROUP_NAME)), ())
            size = meta.get(ARG_GROUP_SIZE)
            op.group_size = size if isinstance(size, int) else (len(op.group) or None)
            trace.notes["metadata from NCCL args"] += 1
        elif annotation := next((e for e in reversed(outer) if e.get("name", "").startswith("nccl:")), None):
            name = normalize_collective(annotation["name"])
            args = annotation.get("args", {})
            sizes = _tensor_bytes(args.get("Input Dims", []), args.get("Input type", []))
            op.size_bytes = sum(sizes) if sizes else None
            c10d = next((e for e in reversed(outer) if e.get("name", "").startswith("c10d::")), None)
            if c10d is not None and name in ("allgather", "reduce_scatter"):
                # c10d::_allgather_base_ / _reduce_scatter_base_ list (output, input): the larger is the whole
                # buffer (nccl-tests size) and the ratio is the group size.
                cargs = c10d.get("args", {})
                tensors = _tensor_bytes(cargs.get("Input Dims", []), cargs.get("Input type", []))
                if len(tensors) >= 2 and min(tensors) > 0:
                    op.size_bytes = max(tensors)
                    ratio = max(tensors) / min(tensors)
                    op.group_size = round(ratio) if abs(ratio - round(ratio)) < 1e-9 else None
            if op.size_bytes is None:
                trace.notes["size unknown (annotation without tensor shapes)"] += 1
            trace.notes["metadata from CPU annotations"] += 1
        else:
            name = from_kernel
            op.size_bytes = None
            trace.notes[f"{match.group(1)} kernels without metadata: size unknown"] += 1
        if name == "sendrecv" or (name == UNKNOWN_COLLECTIVE and from_kernel == "sendrecv"):
            op.kind, op.collective = SENDRECV, "sendrecv"
        elif name in ("send", "recv"):
            op.kind, op.collective = (SEND if name == "send" else RECV), name
        else:
            op.kind, op.collective = COLLECTIVE, name
            if name == UNKNOWN_COLLECTIVE:
                trace.notes["collective of unknown type"] += 1


def _assign_steps(trace: _RankTrace) -> None:
    """Each op belongs to the ProfilerStep in which its kernel was launched (by GPU start when no launch)."""
    if not trace.steps:
        return
    starts = [s[1] for s in trace.steps]
    for op in trace.ops:
        at = op.launch_ts_us if op.launch_ts_us is not None else op.ts_us
        i = bisect.bisect_right(starts, at) - 1
        if i >= 0 and at <= trace.steps[i][1] + trace.steps[i][2]:
            op.step = trace.steps[i][0]


def _is_comm_call(event: dict) -> bool:
    """A communication call's own CPU op (record_param_comms, nccl:*), not the c10d:: op around it."""
    return event.get("name") == "record_param_comms" or event.get("name", "").startswith("nccl:")


def _infer_waits(trace: _RankTrace, waits: list[dict], cpu_comm: dict[object, list[dict]],
                 syncs: list[dict]) -> None:
    """Cross-stream waits of every op: from the CUDA sync events when the trace has them (each names the event
    record it waits for), else from the ``cudaStreamWaitEvent`` calls, else from timing; the ops waited for are
    marked (a compute segment never merges across one)."""
    if syncs and _waits_from_sync_events(trace, syncs):
        trace.notes["cross-stream waits from CUDA sync events (Stream Wait Event)"] += \
            sum(len(o.waits) for o in trace.ops)
    elif waits:
        _waits_from_launches(trace, waits, cpu_comm)
        trace.notes["cross-stream waits from cudaStreamWaitEvent"] += sum(len(o.waits) for o in trace.ops)
    else:
        _waits_from_timing(trace.ops)
        trace.notes["cross-stream waits from timing (no cudaStreamWaitEvent records)"] += \
            sum(len(o.waits) for o in trace.ops)
    for op in trace.ops:
        for j in op.waits:
            trace.ops[j].is_wait_source = True


def _waits_from_launches(trace: _RankTrace, waits: list[dict], cpu_comm: dict[object, list[dict]]) -> None:
    """Replay the CPU launch order: a cudaStreamWaitEvent makes the next kernel launched from its thread wait for
    the most recently launched op of another stream (where the event was recorded). Waits issued inside a
    communication call (NCCL's own stream juggling) only bind its NCCL kernel."""
    ops = trace.ops
    around = _containing(cpu_comm, [(w.get("tid"), w.get("ts", 0.0)) for w in waits])
    timeline: list[tuple[float, int, object, int]] = [
        (w["ts"], 0, w.get("tid"), int(any(_is_comm_call(e) for e in calls)))
        for w, calls in zip(waits, around, strict=True)]
    timeline += [(op.launch_ts_us, 1, op.launch_tid, i) for i, op in enumerate(ops)
                 if op.launch_ts_us is not None]
    timeline.sort(key=lambda t: (t[0], t[1]))
    last_launched: dict[object, int] = {}
    pending: dict[object, bool] = {}  # CPU thread -> the pending wait binds communication kernels only
    for _ts, is_launch, tid, i in timeline:
        if not is_launch:
            pending[tid] = pending.get(tid, True) and bool(i)
            continue
        op = ops[i]
        if tid in pending:
            comm_only = pending.pop(tid)
            if comm_only and op.kind == COMPUTE:
                last_launched[op.stream] = i
                continue
            others = [j for s, j in last_launched.items() if s != op.stream]
            if others:
                source = max(others, key=lambda j: ops[j].launch_ts_us)
                if ops[source].end_us <= op.ts_us + 1e-3:  # a wait must agree with the recorded times
                    op.waits.add(source)
                else:
                    trace.notes["waits dropped: source ended after the waiter started"] += 1
        last_launched[op.stream] = i


def _waits_from_sync_events(trace: _RankTrace, syncs: list[dict]) -> int:
    """Each "Stream Wait Event" makes the first op launched on its stream after the ``cudaStreamWaitEvent`` call
    (the event's own correlation id) wait for the last op launched on ``wait_on_stream`` before the
    ``cudaEventRecord`` it names (``wait_on_cuda_event_record_corr_id``): CUDA correlation ids number the runtime
    calls of a process in call order, so they order launches, records and waits exactly. Returns how many waits
    were placed (none: the events lack their record ids, and the caller falls back to the launch order)."""
    ops = trace.ops
    placed = 0
    launched: dict[object, list[tuple[float, int]]] = defaultdict(list)  # stream -> (launch correlation, op)
    for i, op in enumerate(ops):
        if (correlation := _finite(op.args.get(ARG_CORRELATION))) is not None:
            launched[op.stream].append((correlation, i))
    for entries in launched.values():
        entries.sort()
    for sync in syncs:
        record = _finite(sync["args"].get(ARG_WAIT_ON_RECORD))
        wait = _finite(sync["args"].get(ARG_CORRELATION))
        producers, consumers = launched.get(sync["source"], []), launched.get(sync["waiter"], [])
        k = bisect.bisect_left(producers, (record, -1)) - 1 if record is not None and record >= 0 else -1
        m = bisect.bisect_right(consumers, (wait, math.inf)) if wait is not None else len(consumers)
        if k < 0 or m >= len(consumers):
            trace.notes["stream waits whose event record or waiting op is not in the trace"] += 1
            continue
        source, waiter = producers[k][1], consumers[m][1]
        if ops[source].end_us <= ops[waiter].ts_us + 1e-3:  # a wait must agree with the recorded times
            ops[waiter].waits.add(source)
            placed += 1
        else:
            trace.notes["waits dropped: source ended after the waiter started"] += 1
    return placed


def _waits_from_timing(ops: list[_GpuOp]) -> None:
    """Without launch records: an op that starts within ``WAIT_MATCH_WINDOW_S`` after an op of another stream
    ended, after an idle gap on its own stream, waited for the latest such op.

    The latest op of another stream ended by the op's start is found in one list of every op's end, walked down from
    the start past the op's own stream only: among equal ends the stream seen first wins, then the op listed last,
    as a search stream by stream chose. That search cost ops x streams: a trace of 200,000 one-kernel streams ran
    for hours (round 36)."""
    window_us = WAIT_MATCH_WINDOW_S / US
    order: dict[object, int] = {}
    for op in ops:
        order.setdefault(op.stream, len(order))
    ends = sorted((op.end_us, -order[op.stream], i) for i, op in enumerate(ops))
    prev_end: dict[object, float] = {}
    for op in ops:
        idle_from = prev_end.get(op.stream, -math.inf)
        prev_end[op.stream] = op.end_us
        own = -order[op.stream]
        k = bisect.bisect_right(ends, (op.ts_us + 1e-3, math.inf)) - 1
        while k >= 0:
            end, stream, j = ends[k]
            if end <= idle_from or op.ts_us - end > window_us:  # no earlier end can qualify either
                break
            if stream != own:
                op.waits.add(j)
                break
            k -= 1


def _short_name(name: str) -> str:
    cut = min((i for i in (name.find("("), name.find("<")) if i > 0), default=len(name))
    return name[:cut].removeprefix("void ").strip() or name


def _to_recorded(trace: _RankTrace, rank: int, origin_us: float, merge_compute: bool) -> list[RecordedOp]:
    """Kernels -> RecordedOps: compute kernels merged into segments unless a wait starts or ends inside."""
    ops = trace.ops
    groups: list[list[int]] = []
    open_segment: dict[object, list[int]] = {}
    for i, op in enumerate(ops):
        current = open_segment.get(op.stream)
        joinable = (merge_compute and current is not None and op.kind == COMPUTE and not op.waits
                    and ops[current[-1]].kind == COMPUTE and not ops[current[-1]].is_wait_source
                    and ops[current[-1]].step == op.step)
        if joinable:
            current.append(i)
        else:
            open_segment[op.stream] = [i]
            groups.append(open_segment[op.stream])
    groups.sort(key=lambda g: (ops[g[0]].ts_us, g[0]))
    position = {i: n for n, g in enumerate(groups) for i in g}
    recorded = []
    for members in groups:
        first = ops[members[0]]
        start_us, end_us = first.ts_us, max(ops[i].end_us for i in members)
        kind = first.kind
        name = first.collective if kind != COMPUTE else (
            first.name if len(members) == 1 else f"{_short_name(first.name)} +{len(members) - 1} kernels")
        busy_us = sum(ops[i].dur_us for i in members)
        duration_us = end_us - start_us if len(members) > 1 else first.dur_us
        recorded.append(RecordedOp(
            rank=rank, stream=first.stream, kind=kind, name=name, started_at_s=(start_us - origin_us) * US,
            duration_s=duration_us * US, size_bytes=first.size_bytes if kind != COMPUTE else 0.0,
            group=first.group, group_size=first.group_size, peer=first.peer, step=first.step,
            waits_for=tuple(sorted(position[j] for j in first.waits)), kernels=len(members),
            busy_s=busy_us * US if len(members) > 1 else None))
    return recorded


def read_kineto(paths: Sequence[str | Path], *, merge_compute: bool = True) -> RecordedRun:
    """Import one Kineto trace per rank (``.json`` or ``.json.gz``) as a RecordedRun.

    ``merge_compute`` fuses consecutive compute kernels of a stream into segments (far fewer events to
    replay); segments never hide a cross-stream wait. Missing ranks are assumed to mirror recorded ones.
    """
    if not paths:
        raise ScenarioError("trace", "no trace files given")
    traces = [_read_rank(Path(p)) for p in paths]
    assumptions: list[str] = []
    ranks: dict[int, _RankTrace] = {}
    for position, trace in enumerate(traces):
        rank = trace.rank
        if rank is None:
            match = _RANK_IN_NAME.search(trace.path.name)
            rank = int(match.group(1)) if match else position
            assumptions.append(f"{trace.path.name}: no distributedInfo rank; taken as rank {rank} "
                               f"({'from the file name' if match else 'from the file order'})")
        if rank in ranks:
            raise ScenarioError(str(trace.path), f"rank {rank} appears twice (also {ranks[rank].path.name})")
        ranks[rank] = trace
    sizes = {t.world_size for t in traces if t.world_size is not None}
    if len(sizes) > 1:
        raise ScenarioError(str(traces[0].path), f"the files disagree on the world size ({sorted(sizes)})")
    # Without a recorded world size, the ranks the process groups name are ranks of the world too (a lone rank-0
    # file of a 2-rank all-reduce names rank 1 in its group): the world spans them (check_ranks refuses a bad one).
    named = max((r for t in traces for op in t.ops for r in op.group if 0 <= r < MAX_WORLD_SIZE), default=0)
    world_size = check_world_size(sizes.pop() if sizes else max(len(traces), max(ranks) + 1, named + 1),
                                  str(traces[0].path))
    if not any(t.world_size for t in traces):
        widened = " and their process groups" if named >= max(len(traces), max(ranks) + 1) else ""
        assumptions.append(f"no distributedInfo: world size assumed to be {world_size} (the ranks given{widened})")
    if max(ranks) >= world_size:
        raise ScenarioError(str(ranks[max(ranks)].path), f"rank {shown(max(ranks))} outside world size {world_size}")
    if min(ranks) < 0:  # distributedInfo's rank -1 was replayed as a rank of its own (round 31)
        raise ScenarioError(str(ranks[min(ranks)].path), f"rank {shown(min(ranks))} is negative: ranks run from 0 to "
                            f"world size - 1 ({world_size - 1})")
    gpu_names = {t.gpu_name for t in traces if t.gpu_name}
    gpu_name = sorted(gpu_names)[0] if gpu_names else None
    if gpu_name is None:
        assumptions.append("no deviceProperties: GPU model unknown")
    elif len(gpu_names) > 1:
        assumptions.append(f"ranks ran on different GPUs ({', '.join(sorted(gpu_names))}); using {gpu_name}")
    if len(traces) > 1:
        assumptions.append("the rank files are assumed to share one clock (timestamps compared across ranks)")
    origin_us = min(min(t.ops[0].ts_us, *(s[1] for s in t.steps)) if t.steps else t.ops[0].ts_us
                    for t in traces)

    recorded: dict[int, list[RecordedOp]] = {}
    steps: list[RecordedStep] = []
    for rank, trace in sorted(ranks.items()):
        for op in trace.ops:
            if op.kind != COMPUTE and not op.group and op.kind == COLLECTIVE:
                if op.group_size in (None, world_size):
                    if op.group_size is None:
                        trace.notes["process group unknown: assumed to span all ranks"] += 1
                    op.group, op.group_size = tuple(range(world_size)), world_size
                else:
                    trace.notes["process group members unknown (only its size)"] += 1
            elif op.kind in (SEND, RECV, SENDRECV):
                if len(op.group) == 2 and rank in op.group:  # a two-rank group: the peer is the other one
                    op.peer = op.group[1 - op.group.index(rank)]
                    trace.notes["peer of send/recv: the other rank of its two-rank process group"] += 1
                else:
                    trace.notes["peer rank of send/recv unknown"] += 1
        recorded[rank] = _to_recorded(trace, rank, origin_us, merge_compute)
        steps += [RecordedStep(n, rank, (ts - origin_us) * US, dur * US) for n, ts, dur in trace.steps]
        if not trace.steps:
            assumptions.append(f"rank {rank}: no ProfilerStep#N annotations: step boundaries unknown")
    assumptions += summarize_notes({rank: t.notes for rank, t in ranks.items()}, "GPU ops")
    mirrored = mirror_missing_ranks(list(recorded), world_size)
    if mirrored:
        missing = sorted(mirrored)
        label = f"rank{'s' if len(missing) > 1 else ''} {describe_ranges(missing)}"
        rule = f"recorded rank {min(recorded)}" if len(recorded) == 1 else \
            f"recorded ranks {describe_ranges(sorted(recorded))} (r mirrors the (r mod {len(recorded)})-th)"
        assumptions.append(f"{label} missing (world size {world_size}): assumed to mirror {rule}")
    steps.sort(key=lambda s: (s.step, s.rank))
    return RecordedRun(ranks=recorded, world_size=world_size, gpu_name=gpu_name, steps=steps,
                       assumptions=assumptions, source="kineto: " + describe_files(t.path for t in traces),
                       mirrored=mirrored)
