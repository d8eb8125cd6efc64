"""Sweep speed and shape: GPT-3 175B from 64 to 8,192 H100 on a non-blocking rail-optimised fat-tree and on a
4:1 oversubscribed leaf-spine, through `simcluster sweep` with its default local process pool.

Target (issue 6): under 2 minutes on a 2-core machine, and the expected shapes: scaling efficiency falls with
scale, and falls faster on the oversubscribed fabric. Prints the time and the efficiencies; exits 1 on a miss.
Run: .venv/bin/python benchmarks/sweep.py [--out DIR]   (plots: DIR/scaling.png, DIR/time_and_cost.png)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from simcluster.cli import main as simcluster
from simcluster.core import script_entry

TARGET_S = 120.0
FABRICS = ("rail-fat-tree", "leaf-spine:oversubscription=4")


def main(argv: list[str] | None = None) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/sweep"), help="output folder of the sweep")
    out = parser.parse_args(argv).out
    args = ["sweep", "gpt3-175b-1024-h100", "--gpus", "64,128,...,8192", "--fresh", "--out", str(out)]
    for fabric in FABRICS:
        args += ["--topology", fabric]
    started = time.perf_counter()
    code = simcluster(args)
    elapsed_s = time.perf_counter() - started
    if code != 0:
        print(f"sweep failed with exit code {code}")
        return 1
    report = json.loads((out / "sweep.json").read_text())
    efficiency = {g["label"]: {r["gpus"]: r["efficiency"] for r in g["rows"]} for g in report["series"]}
    print(f"\nGPT-3 175B, 64..8,192 GPUs x {len(FABRICS)} fabrics: {report['executed']} runs in {elapsed_s:.1f} s "
          f"(target < {TARGET_S:.0f} s)")
    rail, oversubscribed = (efficiency[label] for label in FABRICS)
    for gpus in sorted(rail):
        print(f"  {gpus:>6,} GPUs  efficiency {rail[gpus]:6.1%} rail-fat-tree   {oversubscribed[gpus]:6.1%} "
              f"leaf-spine 4:1")
    largest = max(rail)
    checks = {
        f"finishes in < {TARGET_S:.0f} s": elapsed_s < TARGET_S,
        "efficiency falls with scale on both fabrics": rail[largest] < 1.0 and oversubscribed[largest] < 1.0,
        "falls faster on the oversubscribed fabric": all(oversubscribed[n] <= rail[n] for n in rail)
        and oversubscribed[largest] < rail[largest],
    }
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
