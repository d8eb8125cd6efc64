"""Replay speed and memory: wall time and peak Python memory of replaying a trace at 1k, 4k and 16k ranks.

Two ways to reach a large world (issue 13): the real 16-rank A100 trace (HolisticTraceAnalysis) grown with
``--scale-dp`` (weak scaling), and one Chakra file per rank of a 24-layer data-parallel step as ASTRA-sim's
text converter writes it (timestamp-less; files written to a temporary folder, not timed). Ranks running the same
recorded program are one replay agent, so both should grow about linearly with the ranks (the network's ring
schedules do; the plan and the events do not grow at all). Each point runs in its own process, whose peak
resident memory (``resource.getrusage``, ru_maxrss) is reported with the wall time of the replay (reading the
trace included, writing the Chakra files not). Run: .venv/bin/python benchmarks/replay.py [--quick]
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simcluster.replay.formats.synthetic import data_parallel_chakra
from simcluster.studies.replay import replay_traces

# Switch radix of the rail-optimised fat-tree at every scale: the default (40 ports, HDR InfiniBand) holds at
# most 16,000 GPUs in three tiers; NDR Quantum-2 switches have 64 ports (NVIDIA QM9700 datasheet).
FAT_TREE_RADIX = 64
TRACE = Path(__file__).parents[1] / "tests" / "data" / "kineto" / "a100-16rank-sendrecv.rank0.json.gz"


def measure(kind: str, ranks: int, model: str) -> None:
    """One point, in this process: replay, then print wall time, agents, peak RSS and the step."""
    with tempfile.TemporaryDirectory() as folder:
        if kind == "kineto":
            label = f"a100-16rank-sendrecv --scale-dp {ranks // 16} ({model})"
            args, options = [TRACE], {"scale_dp": ranks // 16}
        else:
            label = f"chakra data-parallel, {ranks} files ({model})"
            # 24 layers, 1 ms forward, weight- and input-gradient compute each, a 10 MB all-reduce per layer
            args = data_parallel_chakra(Path(folder), ranks, 24, 1000, 1000, 1000, 10_000_000)
            options = {"gpu_name": "a100-80gb-sxm"}
        started = time.perf_counter()
        outcome = replay_traces(args, network_model=model, topology_name="rail-fat-tree",
                                topology_options={"radix": FAT_TREE_RADIX}, **options)
        wall_s = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    step = outcome.steps[-1]
    print(f"{label:<50} {outcome.plan.world_size:>6} ranks {outcome.plan.agents:>3} agents {wall_s:7.2f} s  "
          f"peak RSS {peak_mib:7.0f} MiB  step {step['replayed_step_s'] * 1e3:8.2f} ms", flush=True)


def main(quick: bool) -> None:
    counts = [1024, 4096] if quick else [1024, 4096, 16384]
    points = [("kineto", n, model) for model in ("analytic", "flow") for n in counts]
    points += [("chakra", n, "flow") for n in counts]
    print("the 16-rank A100 trace (Kineto) grown with --scale-dp; a 24-layer data-parallel Chakra step, one file "
          "per rank:", flush=True)
    for kind, ranks, model in points:
        subprocess.run([sys.executable, __file__, "--one", kind, str(ranks), model], check=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        measure(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main(quick="--quick" in sys.argv)
