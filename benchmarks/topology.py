"""Wall time to build and route a 16,384-GPU rail-optimised fat-tree and to solve one flow step over it.

Runs once per routing policy (adaptive spraying, the InfiniBand default, and hash ECMP).
Targets (issue 3, 2-core machine): build + route < 10 s; one max-min rate solve well under 1 s; routing one
ring step (16,384 pairs) once the fabric is built well under 1 s.
Run: ``python benchmarks/topology.py [--gpus N] [--routing adaptive|ecmp] [--profile]``.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time

import numpy as np

from simcluster.core import script_entry
from simcluster.fabric import topology
from simcluster.network.base import TransferClass
from simcluster.network.flow import FlowNetwork
from simcluster.spec import hardware

BUILD_AND_ROUTE_TARGET_S = 10.0
SOLVE_TARGET_S = 1.0
ROUTE_TARGET_S = 1.0


def main(gpus: int, routing: str) -> dict[str, float]:
    gpu, nic = hardware.gpu("h100-sxm"), hardware.nic("connectx-7")
    t0 = time.perf_counter()
    fabric = topology.build("rail-fat-tree", gpus=gpus, gpus_per_node=8, gpu=gpu, nic=nic,
                            options={"routing": routing})
    t1 = time.perf_counter()
    ring = np.stack([np.arange(gpus), (np.arange(gpus) + 1) % gpus], axis=1)   # rank i -> i+1
    links, counts = fabric.links_of(ring)
    t2 = time.perf_counter()
    net = FlowNetwork(fabric)
    step_bytes = 2.0**30 / gpus                     # one ring-allreduce step of a 1 GiB buffer
    net.start(TransferClass(ring, step_bytes, "ring step"), 0.0)
    done_s = net.next_completion_s()                # solves the max-min rates once
    t3 = time.perf_counter()
    net.advance(done_s)
    t4 = time.perf_counter()
    ring_net, now_s = FlowNetwork(fabric), 0.0   # the whole allreduce: 2(n-1) steps, one event each
    step = TransferClass(ring, step_bytes, "ring step")
    for _ in range(2 * (gpus - 1)):
        ring_net.start(step, now_s)
        now_s = ring_net.next_completion_s()
        ring_net.advance(now_s)
    t5 = time.perf_counter()
    summary = fabric.summary()
    nodes = sum(summary["nodes"].values())
    print(f"fabric: {gpus} GPUs, {nodes} nodes {summary['nodes']}, {fabric.links} links, "
          f"routing {fabric.routing}")
    print(f"ring step: {len(ring)} pairs over {len(links)} links, at most {counts.max():g} pairs on one link; "
          f"simulated step {done_s * 1e6:.1f} us")
    print(f"ring allreduce of 1 GiB, {2 * (gpus - 1)} steps through the flow model: simulated "
          f"{now_s * 1e3:.1f} ms")
    times = {"build_s": t1 - t0, "route_s": t2 - t1, "solve_s": t3 - t2, "advance_s": t4 - t3,
             "allreduce_s": t5 - t4}
    for name, value in times.items():
        print(f"{name:>10}: {value:7.3f} s")
    build_route_s = times["build_s"] + times["route_s"]
    ok_build = build_route_s < BUILD_AND_ROUTE_TARGET_S
    ok_route = times["route_s"] < ROUTE_TARGET_S
    ok_solve = times["solve_s"] < SOLVE_TARGET_S
    print(f"build + route {build_route_s:.2f} s (target < {BUILD_AND_ROUTE_TARGET_S} s): "
          f"{'ok' if ok_build else 'SLOW'}; route {times['route_s']:.3f} s (target < {ROUTE_TARGET_S} s): "
          f"{'ok' if ok_route else 'SLOW'}; solve {times['solve_s']:.3f} s (target < {SOLVE_TARGET_S} s): "
          f"{'ok' if ok_solve else 'SLOW'}")
    return times


def cli(argv: list[str]) -> int:
    """The command line: --gpus, --routing (repeatable), --profile."""
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=16_384)
    parser.add_argument("--routing", choices=("adaptive", "ecmp"), action="append",
                        help="routing policy (repeatable; default: both)")
    parser.add_argument("--profile", action="store_true", help="print the top functions by cumulative time")
    args = parser.parse_args(argv)
    for policy in args.routing or ["adaptive", "ecmp"]:
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(main, args.gpus, policy)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)
        else:
            main(args.gpus, policy)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(cli, sys.argv[1:]))   # Ctrl-C: one line, exit 130
