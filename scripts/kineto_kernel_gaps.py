"""The idle time of a GPU stream before each kernel in a Kineto trace, per kernel class, split by whether the host
had already queued the kernel: the measurement behind efficiency.yaml host_overhead.kernel_gap_s.

    python scripts/kineto_kernel_gaps.py ../shared/traces/kineto/a100-16rank-sendrecv.rank0.json.gz [more traces]

Per trace, for its busiest streams: the gap between a kernel's end and the next kernel's start on the same stream,
grouped by the next kernel's class (tensor-core: GEMM, cuBLAS/CUTLASS, attention; memory-bound: everything else;
copy: memcpy/memset; nccl) and by "queued": the launch call of the next kernel (its cuda_runtime event, by
correlation id) returned before the previous kernel ended, so the stream did not wait on the host. Gaps above
1 ms (phase boundaries, host-side waits) are left out. Kernel durations per class are printed too.
"""

from __future__ import annotations

import collections
import math
import numbers
import sys
from pathlib import Path

import numpy as np

from simcluster.core.errors import ScenarioError
from simcluster.replay.formats import kineto

MAX_GAP_US = 1000.0
TENSOR_CORE_MARKERS = ("gemm", "sm80_xmma", "sm90", "cutlass", "ampere_", "cublas", "matmul", "s16816", "h16816",
                       "flash", "fmha")
KERNEL_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def kernel_class(name: str) -> str:
    lower = name.lower()
    if "nccl" in lower:
        return "nccl"
    if any(marker in lower for marker in TENSOR_CORE_MARKERS):
        return "tensor-core"
    if "memcpy" in lower or "memset" in lower:
        return "copy"
    return "memory-bound"


def trace_events(path: str) -> list[dict]:
    """The complete ('X') events of a Kineto trace file, each checked for the fields these scripts read (numeric
    ts and dur, pid and tid, name text, args a mapping): a file that is no trace, or an event without them, is a
    one-line ScenarioError naming the file (replay's reader checks the file: replay.formats.kineto.load_json)."""
    events = kineto.load_json(Path(path))["traceEvents"]
    complete = [e for e in events if isinstance(e, dict) and e.get("ph") == "X"]
    for index, event in enumerate(complete):
        for key in ("ts", "dur"):
            value = event.get(key)
            # finite, and a duration not negative (round 33: NaN or Infinity, which Python's JSON reads, and a
            # negative duration were counted as intervals and gaps without a word), as replay's reader requires
            if (not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value)
                    or (key == "dur" and value < 0)):
                raise ScenarioError(path, f"complete event {index} ({event.get('name', '?')!r}): {key} is "
                                    f"{value!r}, not a {'duration' if key == 'dur' else 'number'} of microseconds")
        if not isinstance(event.get("pid"), (int, str)) or not isinstance(event.get("tid"), (int, str)):
            raise ScenarioError(path, f"complete event {index} ({event.get('name', '?')!r}): no pid/tid")
        if not isinstance(event.get("name", ""), str):
            raise ScenarioError(path, f"complete event {index}: name is {event['name']!r}, not text")
        if not isinstance(event.get("args", {}), dict):
            raise ScenarioError(path, f"complete event {index} ({event.get('name', '?')!r}): args is not a mapping")
        # the key that pairs a launch with its kernel (round 33: a list here was a TypeError traceback)
        correlation = event.get("args", {}).get("correlation")
        if correlation is not None and not isinstance(correlation, (int, str)):
            raise ScenarioError(path, f"complete event {index} ({event.get('name', '?')!r}): args.correlation is "
                                f"{correlation!r}, not an id")
    return complete


def gaps(path: str, streams: int = 2) -> None:
    events = trace_events(path)
    kernels = [e for e in events if e.get("cat") in KERNEL_CATEGORIES and e.get("ph") == "X"]
    launches = {e["args"].get("correlation"): e for e in events
                if e.get("cat") == "cuda_runtime" and e.get("ph") == "X" and "args" in e}
    print(path)
    for (pid, tid), count in collections.Counter((k["pid"], k["tid"]) for k in kernels).most_common(streams):
        stream = sorted((k for k in kernels if (k["pid"], k["tid"]) == (pid, tid)), key=lambda k: k["ts"])
        rows = collections.defaultdict(list)
        for before, after in zip(stream, stream[1:], strict=False):
            end = before["ts"] + before["dur"]
            gap = after["ts"] - end
            if not 0 <= gap <= MAX_GAP_US:
                continue
            launch = launches.get(after.get("args", {}).get("correlation"))
            queued = launch is not None and launch["ts"] + launch["dur"] <= end
            rows[(kernel_class(after.get("name", "")), queued)].append(gap)
        print(f"  stream {tid}: {count} kernels")
        for (klass, queued), values in sorted(rows.items()):
            v = np.array(values)
            print(f"    gap before {klass:12s} {'queued' if queued else 'host-bound':10s} n={len(v):5d}  median "
                  f"{np.median(v):6.1f} us  mean {v.mean():6.1f} us  p90 {np.percentile(v, 90):6.1f} us")
        durations = collections.defaultdict(list)
        for k in stream:
            durations[kernel_class(k.get("name", ""))].append(k["dur"])
        for klass, values in sorted(durations.items()):
            v = np.array(values)
            print(f"    duration {klass:12s} n={len(v):5d}  min {v.min():.1f} us  median {np.median(v):.1f} us")


def main(argv: list[str]) -> int:
    for path in argv:
        gaps(path)
    return 0


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, words=(1, None), usage="TRACE [TRACE ...]"))
