"""Two host costs of an MoE layer's launches, measured in a Kineto trace of training (docs/calibration/round-28.md,
"Round 28: the MoE layer's zero-work launches at their measured cost and its host side"): how long after the GPU's last
activity a blocking sync returns to the host (the device-to-host syncs of dropless routing), and the host time of
each c10d collective call (the token dispatcher's ``all_to_all_single`` is ``c10d::alltoall_base_``).

    python scripts/kineto_host_calls.py ../shared/traces/kineto/a100-16rank-sendrecv.rank0.json.gz [more]

Per trace: for each ``cudaStreamSynchronize`` / ``cudaEventSynchronize`` / ``cudaDeviceSynchronize`` /
synchronous ``cudaMemcpy`` that waited on the GPU (a kernel, copy or memset of the trace ended inside the call), the
time from that end to the call's return; the device-to-host copies' lengths; and per c10d or NCCL host op
(``c10d::...``, ``nccl:...`` CPU ops and annotations) its duration, the host time of the call.
"""

from __future__ import annotations

import bisect
import collections
import sys

import numpy as np
from kineto_kernel_gaps import KERNEL_CATEGORIES, trace_events  # this folder's sibling: the checked events

SYNC_CALLS = ("cudaStreamSynchronize", "cudaEventSynchronize", "cudaDeviceSynchronize", "cudaMemcpy")
HOST_OP_CATEGORIES = ("cpu_op", "user_annotation")
COLLECTIVE_PREFIXES = ("c10d::", "nccl:")


def sync_returns(calls: list[tuple[float, float]], gpu_ends: list[float]) -> list[float]:
    """For each blocking call (start, duration, us) that waited on the GPU (the last GPU end before the call's end
    falls inside the call), the time from that GPU end to the call's return."""
    ends = sorted(gpu_ends)
    out = []
    for start, duration in calls:
        end = start + duration
        index = bisect.bisect_right(ends, end) - 1
        if index >= 0 and ends[index] >= start:
            out.append(end - ends[index])
    return out


def collective_host_times(ops: list[tuple[str, float]]) -> dict[str, list[float]]:
    """Durations (us) of the c10d and NCCL host ops (name, duration), by name."""
    out: dict[str, list[float]] = collections.defaultdict(list)
    for name, duration in ops:
        if name.startswith(COLLECTIVE_PREFIXES):
            out[name].append(duration)
    return dict(out)


def _summary(values) -> str:
    v = np.array(values)
    return (f"n={len(v)} median {np.median(v):.1f} us, p25 {np.percentile(v, 25):.1f}, "
            f"p75 {np.percentile(v, 75):.1f}, min {v.min():.1f}")


def report(path: str) -> None:
    events = trace_events(path)
    gpu = [e for e in events if e.get("cat") in KERNEL_CATEGORIES]
    gpu_ends = [e["ts"] + e["dur"] for e in gpu]
    print(path)
    for name in SYNC_CALLS:
        calls = [(e["ts"], e["dur"]) for e in events if e.get("cat") == "cuda_runtime" and e.get("name") == name]
        returns = sync_returns(calls, gpu_ends)
        if returns:
            print(f"  {name}: {len(calls)} calls, {len(returns)} waited on the GPU; return after its last "
                  f"activity: {_summary(returns)}")
    copies = [e["dur"] for e in gpu if e.get("cat") == "gpu_memcpy" and "DtoH" in e.get("name", "")]
    if copies:
        print(f"  device-to-host copies: {_summary(copies)}")
    ops = [(e.get("name", ""), e["dur"]) for e in events if e.get("cat") in HOST_OP_CATEGORIES]
    for name, values in sorted(collective_host_times(ops).items(), key=lambda kv: -len(kv[1])):
        print(f"  {name}: host time {_summary(values)}")


def main(argv: list[str]) -> int:
    for path in argv:
        report(path)
    return 0


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, words=(1, None), usage="TRACE [TRACE ...]"))
