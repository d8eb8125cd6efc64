"""Speed and memory of `simcluster run` end to end (issue 19's targets), each printed with its measured value and
PASS/FAIL.

Every point runs `python -m simcluster.cli run SCENARIO --json --out TMP` in its own process: imports, building
the fabric and the plan, the simulation and writing summary, events, links and the trace all count. Wall time is
measured around the process, peak memory is the process's resident set (``os.wait4``'s ru_maxrss); CPU time (user
+ system) is printed too, since wall time on a shared machine includes waiting for a core (the load average is
printed first). Where main's step time is known (recorded before issue 19's changes, see ``MAIN_STEP_S``), the
result must equal it (rel 1e-9): speed work must not move a result.

Targets (2-core machine): fixed cost of a command (``--help``, a run of 8 GPUs) <= 1 s; collapsed runs of Llama 3
405B: 16,384 H100 <= 2 s, 131,072 H100 <= 10 s and <= 2 GB, ZeRO-3 with pipelining on 16,384 H100 <= 20 s, the
interleaved scenario ``llama3-405b-16k-h100`` <= 5 s; expanded (``--expand``, every GPU an agent) 16,384 GPUs one
step <= 60 s and <= 4 GB; wall time and memory growing no faster than linearly in the GPU count from 64 to
131,072 (each point's ratio to the 64-GPU point at most the ratio of GPU counts).

Run: .venv/bin/python benchmarks/engine.py [--quick]   (--quick: fixed cost, the 16,384-GPU collapsed run and the
scaling up to 16,384 GPUs; a few minutes)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

GIB = 2**30
# Address space a measured process may take: twice the largest memory target; a run needing more fails its target
# anyway, and on a shared machine must not push others into swap
MEMORY_LIMIT_BYTES = 8 * GIB
# Switch radix of the rail-optimised fat-tree beyond 65,536 GPUs: three tiers of 64-port switches hold 65,536 NDR
# GPUs (NVIDIA QM9700 datasheet: 64 NDR ports); 131,072 need 128 ports (NDR200 ports of the same switch, or
# Quantum-X800's 144 XDR ports).
RADIX_131K = 128
# step_time_s of these runs, so that speed work is seen to keep results: on main before issue 19 (commit 3d21988)
# they were 16.031249312879176 and 8.248137156169491 s, unchanged by the speed work; the kernel-level compute model
# of issue 15 (power-capped clock, host overheads) then moved them on purpose (to 13.889193671408636 and
# 7.138880871506181 s), and its round 5 host model (a block takes the longer of device and host time; the per-kernel
# gap refitted from 36 to 40 us, the pipeline step from 480 to 340 us, scripts/fit_host_overheads.py) again, by +0.2%
# and -0.3%, to the values below (simulate() of the same scenarios on the tree of that change)
MAIN_STEP_S = {"llama3-405b-16384": 13.916905671408651, "llama3-405b-16k-h100": 7.119382362516214,
               # one agent per GPU equals the collapsed run on this symmetric fabric (the summary's symmetry check)
               "llama3-405b-16384-expanded": 13.916905671408651}


@dataclass
class Measured:
    wall_s: float
    cpu_s: float
    rss_bytes: int
    summary: dict | None
    error: str = ""


def llama405b(gpus: int, zero_stage: int = 1, name: str | None = None) -> dict:
    """Llama 3 405B as Llama 3 trained it (tp 8, pp 16; dp from the GPU count), 16 sequences per replica, full
    recompute (the layout fits in 80 GB with it), on a rail-optimised fat-tree of H100 and ConnectX-7."""
    dp = gpus // 128
    cluster = {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": gpus // 8, "nic": "connectx-7",
               "topology": "rail-fat-tree"}
    if gpus > 65536:
        cluster["topology_options"] = {"radix": RADIX_131K}
    return {"name": name or f"llama3-405b-{gpus}", "cluster": cluster, "model": "llama3-405b",
            "training": {"seq_len": 8192, "global_batch_size": 16 * dp, "micro_batch_size": 1,
                         "activation_recompute": "full"},
            "parallelism": {"tp": 8, "pp": 16, "dp": dp, "zero_stage": zero_stage}}


def scaling_point(gpus: int) -> dict:
    """GPT-3 175B (tp 8, pp 8, dp from the GPU count, 16 microbatches per replica) from 64 GPUs up."""
    dp = gpus // 64
    cluster = {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": gpus // 8, "nic": "connectx-7",
               "topology": "rail-fat-tree"}
    if gpus > 65536:
        cluster["topology_options"] = {"radix": RADIX_131K}
    return {"name": f"gpt3-175b-{gpus}", "cluster": cluster, "model": "gpt3-175b",
            "training": {"seq_len": 2048, "global_batch_size": 16 * dp, "micro_batch_size": 1,
                         "activation_recompute": "selective"},
            "parallelism": {"tp": 8, "pp": 8, "dp": dp, "zero_stage": 1}}


TINY = {"name": "tiny", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "nic": "connectx-7",
                                    "topology": "rail-fat-tree"},
        "model": "llama3-8b", "training": {"seq_len": 4096, "global_batch_size": 16, "micro_batch_size": 1},
        "parallelism": {"tp": 8, "pp": 1, "dp": 1}}


def _limit_memory() -> None:
    """In the child: no more than ``MEMORY_LIMIT_BYTES`` of address space (a shared machine must not swap)."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def run_process(args: list[str], timeout_s: float = 600) -> Measured:
    """Wall time, CPU time and peak resident memory of one process running ``python -m simcluster.cli ARGS``
    (``os.wait4``: the figures of that child alone); killed after ``timeout_s``."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "simcluster.cli", *args], stdout=out, stderr=err,
                                   text=True, preexec_fn=_limit_memory)
        watchdog = threading.Timer(timeout_s, process.kill)
        watchdog.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall_s = time.perf_counter() - started
        watchdog.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    summary, error = None, ""
    if wall_s >= timeout_s:
        error = f"killed after {timeout_s:.0f} s"
    elif process.returncode == 0 and stdout.strip().startswith("{"):
        summary = json.loads(stdout)
    elif process.returncode != 0:
        error = (stderr.strip().splitlines() or [f"exit code {process.returncode}"])[-1]
    return Measured(wall_s, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, summary, error)


def run_scenario(data: dict, folder: Path, *extra: str, timeout_s: float = 600) -> Measured:
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return run_process(["run", str(path), "--json", "--no-memory-check", "--out", str(folder / data["name"]),
                        *extra], timeout_s)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(label: str, measured: Measured, max_s: float | None = None, max_bytes: float | None = None) -> bool:
    """Print one target with its measured values; check the step time against main's where known."""
    ok = not measured.error
    parts = [f"wall {measured.wall_s:7.2f} s", f"cpu {measured.cpu_s:7.2f} s"]
    if max_s is not None:
        ok &= measured.wall_s <= max_s
        parts[0] += f" (<= {max_s:g} s)"
    if max_bytes is not None:
        ok &= measured.rss_bytes <= max_bytes
        parts.append(f"peak {measured.rss_bytes / GIB:5.2f} GiB (<= {max_bytes / GIB:g} GiB)")
    if measured.summary is not None:
        name, step_s = measured.summary["name"], measured.summary["step_time_s"]
        parts.append(f"step {step_s:.6g} s")
        if name in MAIN_STEP_S:
            same = abs(step_s - MAIN_STEP_S[name]) <= 1e-9 * MAIN_STEP_S[name]
            ok &= same
            parts.append("= main" if same else f"!= main's {MAIN_STEP_S[name]!r}")
    if measured.error:
        parts.append(f"error: {measured.error}")
    print(f"{verdict(ok)}  {label:<52} " + ", ".join(parts), flush=True)
    return ok


def main() -> int:
    quick = "--quick" in sys.argv
    print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs "
          "(wall times include waiting for a core)", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results.append(report("fixed cost: simcluster --help", run_process(["--help"]), max_s=1.0))
        results.append(report("fixed cost: simcluster run, 8 GPUs", run_scenario(TINY, folder), max_s=1.0))
        results.append(report("run llama3-405b 16,384 H100 collapsed", run_scenario(llama405b(16384), folder),
                              max_s=2.0))
        results.append(report("run llama3-405b-16k-h100 (interleaved)",
                              run_process(["run", "llama3-405b-16k-h100", "--json", "--out",
                                           str(folder / "interleaved")]), max_s=5.0))
        if not quick:
            results.append(report("run llama3-405b 131,072 H100 collapsed",
                                  run_scenario(llama405b(131072), folder), max_s=10.0, max_bytes=2 * GIB))
            results.append(report("run llama3-405b 16,384 H100 ZeRO-3, pp 16",
                                  run_scenario(llama405b(16384, zero_stage=3, name="llama3-405b-16384-zero3"),
                                               folder, timeout_s=300), max_s=20.0))
            results.append(report("run llama3-405b 16,384 H100 expanded, one step",
                                  run_scenario(llama405b(16384, name="llama3-405b-16384-expanded"), folder,
                                               "--expand", "--steps", "1"), max_s=60.0, max_bytes=4 * GIB))
        print("scaling (GPT-3 175B, tp 8, pp 8, 16 microbatches per replica, collapsed):", flush=True)
        points = []
        for gpus in (64, 1024, 16384) if quick else (64, 1024, 16384, 131072):
            measured = run_scenario(scaling_point(gpus), folder)
            points.append((gpus, measured))
            print(f"      {gpus:>7} GPUs  wall {measured.wall_s:7.2f} s  cpu {measured.cpu_s:7.2f} s  peak "
                  f"{measured.rss_bytes / GIB:5.2f} GiB {measured.error}", flush=True)
        base_gpus, base = points[0]
        linear_time = all(m.cpu_s / base.cpu_s <= gpus / base_gpus and not m.error for gpus, m in points[1:])
        linear_memory = all(m.rss_bytes / base.rss_bytes <= gpus / base_gpus for gpus, m in points[1:])
        print(f"{verdict(linear_time)}  CPU time no worse than linear in GPUs from {base_gpus} to {points[-1][0]} "
              f"(x{points[-1][1].cpu_s / base.cpu_s:.1f} for x{points[-1][0] // base_gpus} GPUs)")
        print(f"{verdict(linear_memory)}  peak memory no worse than linear from {base_gpus} to {points[-1][0]} "
              f"(x{points[-1][1].rss_bytes / base.rss_bytes:.1f})")
        results += [linear_time, linear_memory]
    print(f"{sum(results)} of {len(results)} targets hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
