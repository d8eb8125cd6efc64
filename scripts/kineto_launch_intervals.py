"""The host's time per kernel launch in a Kineto trace of training: the interval between consecutive kernel launch
calls on a host thread, the measurement to hold efficiency.yaml host_overhead.dispatch_s (a microbenchmark's 13.5 us)
against.

    python scripts/kineto_launch_intervals.py ../shared/traces/kineto/a100-16rank-sendrecv.rank0.json.gz [more]

Per trace, for the host threads that launch the most kernels (the forward's Python thread, autograd's backward
thread): the launch-to-launch interval (cudaLaunchKernel, cudaLaunchKernelExC, cudaGraphLaunch), kept only where the
thread made no blocking runtime call in between (a stream, event or device synchronize, a synchronous copy: the host
then waits on the GPU, which is not its cost per launch) and below 1 ms (phase boundaries, data loading). Where the
host is ahead of the GPU (scripts/kineto_kernel_gaps.py: "queued" kernels), the interval is the host's time per launch
in that workload.
"""

from __future__ import annotations

import collections
import sys

import numpy as np
from kineto_kernel_gaps import trace_events  # this folder's sibling: the checked events

MAX_INTERVAL_US = 1000.0
RUNTIME_CATEGORIES = ("cuda_runtime", "cuda_driver")  # Kineto files driver-API launches (cuLaunchKernel: Triton) apart
LAUNCH_MARKER = "Launch"       # cudaLaunchKernel, cudaLaunchKernelExC, cudaGraphLaunch, cuLaunchKernel
BLOCKING_MARKER = "Synchronize"  # cudaStreamSynchronize, cudaEventSynchronize, cudaDeviceSynchronize
BLOCKING_CALLS = ("cudaMemcpy",)  # the synchronous copy (cudaMemcpyAsync is not)


def intervals(calls: list[tuple[float, str]]) -> np.ndarray:
    """Launch-to-launch intervals (us) of one thread's runtime calls (start time, name), sorted in time, without a
    blocking call in between."""
    out, last, blocked = [], None, False
    for start, name in sorted(calls):
        if LAUNCH_MARKER in name:
            if last is not None and not blocked:
                out.append(start - last)
            last, blocked = start, False
        elif BLOCKING_MARKER in name or name in BLOCKING_CALLS:
            blocked = True
    values = np.array(out)
    return values[values < MAX_INTERVAL_US]


def report(path: str, threads: int = 2) -> None:
    events = trace_events(path)
    per_thread: dict[int, list[tuple[float, str]]] = collections.defaultdict(list)
    for event in events:
        if event.get("cat") in RUNTIME_CATEGORIES and event.get("ph") == "X":
            per_thread[event["tid"]].append((float(event["ts"]), event.get("name", "")))
    launches = {tid: sum(LAUNCH_MARKER in name for _, name in calls) for tid, calls in per_thread.items()}
    print(path)
    for tid in sorted(launches, key=launches.get, reverse=True)[:threads]:
        values = intervals(per_thread[tid])
        if not len(values):
            continue
        print(f"  thread {tid}: {launches[tid]} launches, {len(values)} intervals: median {np.median(values):.1f} us, "
              f"mean {values.mean():.1f} us, p25 {np.percentile(values, 25):.1f}, p75 {np.percentile(values, 75):.1f}")


def main(argv: list[str]) -> int:
    for path in argv:
        report(path)
    return 0


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, words=(1, None), usage="TRACE [TRACE ...]"))
