"""What a kernel launch costs when the C++ of one call queues it behind the call's previous launch, against launches
from separate calls, in a Kineto trace of training: the measurement behind ``Op.no_work``'s queued-launch latency
(efficiency.yaml launch_overhead_s; docs/calibration/round-32.md "Round 32: what a launch queued inside one C++ call
costs").

    python scripts/kineto_call_launches.py ../shared/traces/kineto/a100-2rank-allreduce.rank0.json.gz [more]

Each launch (cudaLaunchKernel, cudaLaunchKernelExC, cuLaunchKernel) is placed in the CPU ops (``cpu_op`` events)
that contain it on its thread. Two consecutive launches of a thread are "one call" when the same innermost op holds
both (one C++ function launched them, no op boundary between: ``aten::convolution_backward``'s cuDNN kernels,
fbgemm's, a ``_foreach_`` op's), "one top-level op" when only the outermost op is shared (a C++ composite or an
autograd node running several ops), else "separate ops" (the host went back to Python or the autograd engine).
A "one call" pair whose op is a torch.compile graph (``CompiledFunction``, ``CompiledFunctionBackward``) is "one
compiled graph" instead: Inductor's Python wrapper launches its Triton kernels one by one with no op of their own,
so the op is not one C++ call (round-32 review: 205 of a100-16rank-sendrecv's 369 queued "one call" pairs).
Printed per relation: the host's launch-to-launch interval (no blocking call between, below 1 ms:
scripts/kineto_launch_intervals.py), and the stream's idle before the second kernel when both ran on one stream,
split by whether its launch had returned before the first kernel ended ("queued": the host was ahead) or not
("host-bound"), as scripts/kineto_kernel_gaps.py does.
"""

from __future__ import annotations

import collections
import sys

import numpy as np
from kineto_kernel_gaps import KERNEL_CATEGORIES, MAX_GAP_US, trace_events  # this folder's siblings
from kineto_launch_intervals import BLOCKING_CALLS, BLOCKING_MARKER, LAUNCH_MARKER, MAX_INTERVAL_US, RUNTIME_CATEGORIES

RELATIONS = ("one call", "one compiled graph", "one top-level op", "separate ops")
COMPILED_GRAPH_OPS = ("CompiledFunction",)   # torch.compile's autograd nodes (and their ...Backward): Python launches


def enclosing_ops(ops: list[dict], launches: list[dict]) -> dict[int, tuple[int | None, int | None]]:
    """Per launch (by ``id``), the index into ``ops`` of the innermost and of the outermost CPU op of its thread that
    contain it (None, None: outside every op). ``ops`` and ``launches`` are complete events of one thread; Kineto's
    CPU ops nest, so a stack sweep in time order finds them."""
    order = sorted(range(len(ops)), key=lambda i: (ops[i]["ts"], -ops[i]["dur"]))
    out: dict[int, tuple[int | None, int | None]] = {}
    stack: list[int] = []
    events = [(ops[i]["ts"], 0, i) for i in order] + [(launch["ts"], 1, n) for n, launch in enumerate(launches)]
    for ts, is_launch, index in sorted(events, key=lambda e: (e[0], e[1])):
        while stack and ops[stack[-1]]["ts"] + ops[stack[-1]]["dur"] < ts:
            stack.pop()
        if not is_launch:
            stack.append(index)
            continue
        launch = launches[index]
        end = launch["ts"] + launch["dur"]
        holding = [i for i in stack if ops[i]["ts"] + ops[i]["dur"] >= end]
        out[id(launch)] = (holding[-1], holding[0]) if holding else (None, None)
    return out


def relation(first: tuple[int | None, int | None], second: tuple[int | None, int | None]) -> str:
    """How two launches' (innermost, outermost) ops relate (module docstring)."""
    if first[0] is not None and first[0] == second[0]:
        return "one call"
    if first[1] is not None and first[1] == second[1]:
        return "one top-level op"
    return "separate ops"


def _relation(place: dict, compiled: set[int], first: dict, second: dict) -> str:
    """``relation`` of two launches, a "one call" pair inside a torch.compile graph told apart (module docstring)."""
    found = relation(place[id(first)], place[id(second)])
    return "one compiled graph" if found == "one call" and id(first) in compiled else found


def measure(events: list[dict]) -> tuple[dict[str, list[float]], dict[tuple[str, bool], list[float]]]:
    """Host launch-to-launch intervals per relation, and stream gaps per (relation, queued) (module docstring)."""
    by_thread: dict[object, list[dict]] = collections.defaultdict(list)
    ops_by_thread: dict[object, list[dict]] = collections.defaultdict(list)
    for event in events:
        if event.get("cat") in RUNTIME_CATEGORIES:
            by_thread[event["tid"]].append(event)
        elif event.get("cat") == "cpu_op":
            ops_by_thread[event["tid"]].append(event)
    place: dict[int, tuple[int | None, int | None]] = {}
    compiled: set[int] = set()   # launches (by id) whose innermost op is a torch.compile graph
    launch_of: dict[object, dict] = {}
    intervals: dict[str, list[float]] = collections.defaultdict(list)
    for tid, calls in by_thread.items():
        calls.sort(key=lambda e: e["ts"])
        launches = [c for c in calls if LAUNCH_MARKER in c.get("name", "")]
        thread_place = enclosing_ops(ops_by_thread.get(tid, []), launches)
        place.update(thread_place)
        compiled.update(key for key, (inner, _) in thread_place.items() if inner is not None
                        and ops_by_thread[tid][inner].get("name", "").startswith(COMPILED_GRAPH_OPS))
        for launch in launches:
            launch_of[launch.get("args", {}).get("correlation")] = launch
        last, blocked = None, False
        for call in calls:
            name = call.get("name", "")
            if LAUNCH_MARKER in name:
                if last is not None and not blocked and call["ts"] - last["ts"] < MAX_INTERVAL_US:
                    intervals[_relation(place, compiled, last, call)].append(call["ts"] - last["ts"])
                last, blocked = call, False
            elif BLOCKING_MARKER in name or name in BLOCKING_CALLS:
                blocked = True
    gaps: dict[tuple[str, bool], list[float]] = collections.defaultdict(list)
    streams: dict[tuple, list[dict]] = collections.defaultdict(list)
    for event in events:
        if event.get("cat") in KERNEL_CATEGORIES:
            streams[(event["pid"], event["tid"])].append(event)
    for stream in streams.values():
        stream.sort(key=lambda k: k["ts"])
        for before, after in zip(stream, stream[1:], strict=False):
            end = before["ts"] + before["dur"]
            gap = after["ts"] - end
            first = launch_of.get(before.get("args", {}).get("correlation"))
            second = launch_of.get(after.get("args", {}).get("correlation"))
            if not 0 <= gap <= MAX_GAP_US or first is None or second is None or first["tid"] != second["tid"]:
                continue
            queued = second["ts"] + second["dur"] <= end
            gaps[(_relation(place, compiled, first, second), queued)].append(gap)
    return intervals, gaps


def _summary(values: list[float]) -> str:
    v = np.array(values)
    return (f"n={len(v):5d}  median {np.median(v):6.1f} us  p25 {np.percentile(v, 25):6.1f}  "
            f"p75 {np.percentile(v, 75):6.1f}  mean {v.mean():6.1f}")


def report(path: str) -> None:
    intervals, gaps = measure(trace_events(path))
    print(path)
    for rel in RELATIONS:
        if intervals.get(rel):
            print(f"  host launch to launch, {rel:18s} {_summary(intervals[rel])}")
    for rel in RELATIONS:
        for queued in (True, False):
            if gaps.get((rel, queued)):
                print(f"  stream gap, {rel:18s} {'queued' if queued else 'host-bound':10s} "
                      f"{_summary(gaps[(rel, queued)])}")


def main(argv: list[str]) -> int:
    for path in argv:
        report(path)
    return 0


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, words=(1, None), usage="TRACE [TRACE ...]"))
