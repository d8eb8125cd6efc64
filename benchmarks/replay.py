"""Replay speed and memory against the targets of issues 13 and 19, each figure printed next to its target.

Points (each in its own process, so its peak resident memory, ``ru_maxrss``, is its own):
- files: one Chakra file per rank of a 24-layer data-parallel step as ASTRA-sim's text converter writes it
  (timestamp-less; ``replay.formats.synthetic``), 1,024 / 4,096 / 16,384 ranks; the files are written to a
  temporary folder beforehand, not timed;
- --scale-dp: the real 16-rank A100 trace (HolisticTraceAnalysis, Kineto) grown to 1,024 / 4,096 / 16,384 ranks;
- end to end: ``simcluster replay`` of the 64-rank data-parallel Chakra trace, the whole command (process start,
  imports, reading, replay, report) as a user runs it.
Replay points time reading the trace, planning, building the default-sized fabric (rail-optimised fat-tree) and
the replay with the default network model (flow).

Targets: a replay of up to 16,384 ranks <= 10 s and <= 2 GB (issue 19: "16,384 ranks (symmetric) <= 10 s"; issue
13: "well under 2 GB"); the 64-rank end to end <= 1 s. Times are judged on the process's CPU time (user + system):
a replay runs on one core, so on an idle machine its wall time is its CPU time, while on a shared machine the wall
time also counts the other processes' turns (the load average is printed; the wall time is shown alongside).

The package's bytecode is compiled first (``compileall``, as ``pip install`` does), so that a process started with
PYTHONDONTWRITEBYTECODE set does not compile every module from source.

Run: .venv/bin/python benchmarks/replay.py [--quick]   (--quick: 1,024 and 4,096 ranks only)
"""

from __future__ import annotations

import compileall
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simcluster.replay.formats.synthetic import data_parallel_chakra

TRACE = Path(__file__).parents[1] / "tests" / "data" / "kineto" / "a100-16rank-sendrecv.rank0.json.gz"
TARGET_S = 10.0          # a replay of up to 16,384 ranks (issue 19)
TARGET_BYTES = 2 * 2**30  # issue 13: "well under 2 GB"
TARGET_END_TO_END_S = 1.0  # the 64-rank data-parallel Chakra trace, the whole command (issue 19)
# the 24-layer data-parallel step: 1 ms forward, weight- and input-gradient compute each, a 10 MB all-reduce
LAYERS, LAYER_US, GRAD_BYTES = 24, 1000, 10_000_000


def chakra_files(folder: Path, ranks: int) -> list[Path]:
    return data_parallel_chakra(folder, ranks, LAYERS, LAYER_US, LAYER_US, LAYER_US, GRAD_BYTES)


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "FAIL"


def measure(kind: str, ranks: int) -> None:
    """One replay point, in this process: print wall and CPU time, peak RSS and the step, with the verdicts."""
    from simcluster.studies.replay import replay_traces

    with tempfile.TemporaryDirectory() as folder:
        if kind == "scale-dp":
            label, args, options = f"16-rank Kineto trace --scale-dp {ranks // 16}", [TRACE], {"scale_dp": ranks // 16}
        else:
            label, args, options = f"{ranks} Chakra files", chakra_files(Path(folder), ranks), {}
        wall, cpu = time.perf_counter(), time.process_time()
        outcome = replay_traces(args, **options)
        wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    step_ms = outcome.steps[-1]["replayed_step_s"] * 1e3
    print(f"{label:<38} {outcome.plan.world_size:>6} ranks {outcome.plan.agents:>3} agent(s)  "
          f"CPU {cpu_s:6.2f} s <= {TARGET_S:g} s {verdict(cpu_s, TARGET_S)} (wall {wall_s:6.2f} s)  "
          f"peak {peak / 2**20:5.0f} MiB <= {TARGET_BYTES / 2**30:g} GB {verdict(peak, TARGET_BYTES)}  "
          f"step {step_ms:7.2f} ms", flush=True)


def child_seconds(command: list[str]) -> tuple[float, float]:
    """(CPU, wall) seconds of running ``command`` as a subprocess, its output discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall_s = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall_s


def end_to_end(ranks: int) -> None:
    """``simcluster replay`` of a ``ranks``-file data-parallel Chakra trace as a subprocess, whole command, and
    how much of it is starting Python and importing the command (the same for every command)."""
    with tempfile.TemporaryDirectory() as folder:
        files = [str(p) for p in chakra_files(Path(folder), ranks)]
        cpu_s, wall_s = child_seconds([sys.executable, "-m", "simcluster.cli", "replay", *files, "--json"])
    import_s, _ = child_seconds([sys.executable, "-c", "import simcluster.cli"])
    label = f"simcluster replay, {ranks} Chakra files"
    print(f"{label:<38} end to end  CPU {cpu_s:6.2f} s <= {TARGET_END_TO_END_S:g} s "
          f"{verdict(cpu_s, TARGET_END_TO_END_S)} (wall {wall_s:6.2f} s; of the CPU time, {import_s:.2f} s is "
          "starting Python and importing simcluster.cli)", flush=True)


def main(quick: bool) -> None:
    import simcluster

    compileall.compile_dir(Path(simcluster.__file__).parent, quiet=1)  # as installed: each module compiled once
    counts = [1024, 4096] if quick else [1024, 4096, 16384]
    print(f"replay targets: <= {TARGET_S:g} s and <= {TARGET_BYTES / 2**30:g} GB per replay, <= "
          f"{TARGET_END_TO_END_S:g} s end to end for 64 ranks; judged on CPU time (load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores while measuring)", flush=True)
    for kind in ("files", "scale-dp"):
        for ranks in counts:
            subprocess.run([sys.executable, __file__, "--one", kind, str(ranks)], check=True)
    end_to_end(64)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        measure(sys.argv[2], int(sys.argv[3]))
    else:
        from simcluster.core.script_entry import run

        sys.exit(run(lambda argv: main(quick="--quick" in argv), sys.argv[1:], __doc__, ["--quick"],
                     words=(0, 0)))
