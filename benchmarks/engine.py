"""Engine speed: wall time and events per second of one simulated step at several scales (issue 4 targets).

Targets on a 2-core machine: Llama-3-405B on 16,384 H100 in <= 10 s; GPT-3 175B on 1,024 GPUs in <= 1 s collapsed and
<= 60 s fully expanded; wall time growing no faster than linearly in the GPU count from 64 to 16,384 GPUs.
Run: .venv/bin/python benchmarks/engine.py [--quick]
"""

from __future__ import annotations

import sys
import time

from simcluster.engine import Simulation
from simcluster.engine.simulation import run_expanded
from simcluster.spec import config


def llama405b(nodes: int, dp: int, gbs: int) -> config.Scenario:
    return config.from_dict({
        "name": f"llama3-405b-{nodes * 8}",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": nodes, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "model": "llama3-405b",
        "training": {"seq_len": 8192, "global_batch_size": gbs, "micro_batch_size": 1,
                     "activation_recompute": "full"},
        "parallelism": {"tp": 8, "pp": 16, "dp": dp, "virtual_stages": 1, "zero_stage": 1},
    })


def gpt3(nodes: int, dp: int) -> config.Scenario:
    data = config.load(config.DEFAULT_SCENARIO).model_dump(mode="json")
    return config.from_dict({
        "name": f"gpt3-175b-{nodes * 8}", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": nodes,
                                                     "nic": "connectx-7", "topology": "rail-fat-tree"},
        "model": "gpt3-175b", "training": {**data["training"], "global_batch_size": 16 * dp * 6},
        "parallelism": {"tp": 8, "pp": 8, "dp": dp, "zero_stage": 1},
    })


def measure(label: str, scenario, expand: bool = False) -> float:
    started = time.perf_counter()
    if expand:  # as --expand runs it: merged where proven exact, else every call its own class
        built_s = 0.0
        result = run_expanded(lambda merge: Simulation(scenario, expand=True, merge=merge))
    else:
        sim = Simulation(scenario)
        built_s = time.perf_counter() - started
        result = sim.run()
    wall_s = time.perf_counter() - started
    events = result.summary["events"]
    print(f"{label:<44} {scenario.cluster.gpus:>6} GPUs  build {built_s:6.2f} s  total {wall_s:6.2f} s  "
          f"{events:>8} events  {events / max(wall_s, 1e-9):>9.0f} ev/s  step {result.summary['step_time_s']:.3f} s",
          flush=True)
    return wall_s


def main() -> None:
    quick = "--quick" in sys.argv
    print("scaling (GPT-3 175B, tp8 pp8, 16 microbatches x 6 per replica, flow network):")
    for nodes in (8, 32, 128) if quick else (8, 32, 128, 512, 2048):
        measure("gpt3-175b collapsed", gpt3(nodes, nodes * 8 // 64))
    measure("gpt3-175b 1,024 GPUs collapsed", gpt3(128, 16))
    if not quick:
        measure("gpt3-175b 1,024 GPUs expanded", gpt3(128, 16), expand=True)
    measure("llama3-405b 16,384 H100 (tp8 pp16 dp128)", llama405b(2048, 128, 2048))


if __name__ == "__main__":
    main()
