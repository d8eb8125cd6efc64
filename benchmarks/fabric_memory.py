"""Memory of a fabric per GPU, for each builder: the figure behind ``core.limits.FABRIC_BYTES_PER_GPU``.

    python benchmarks/fabric_memory.py            # 8,192 and 32,768 GPUs
    python benchmarks/fabric_memory.py 131072     # other GPU counts

Each measurement runs in a fresh process: resident memory (VmRSS) after building the fabric and routing one pair,
minus before, divided by the GPU count.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILDERS = ("rail-fat-tree", "fat-tree", "leaf-spine", "torus")

_ONE = """
import sys, time
from simcluster.fabric import topology
from simcluster.spec import hardware

def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024

name, gpus = sys.argv[1], int(sys.argv[2])
gpu, nic = hardware.gpu('h100-sxm'), hardware.nic('connectx-7')
before, started = rss(), time.perf_counter()
fabric = topology.build(name, gpus=gpus, gpus_per_node=8, gpu=gpu, nic=nic, options={})
fabric.path_links(0, gpus - 1)
print((rss() - before) / gpus, time.perf_counter() - started, fabric.links)
"""


def main(argv: list[str]) -> None:
    from simcluster.core import script_entry
    from simcluster.core.errors import ScenarioError
    from simcluster.core.limits import FABRIC_BYTES_PER_GPU

    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("gpus", nargs="*", type=script_entry.count, default=[8192, 32768],
                        help="GPU counts to build each fabric at (default: 8192 32768)")
    counts = parser.parse_args(argv).gpus
    print(f"{'fabric':<15}{'GPUs':>9}{'bytes/GPU':>11}{'build s':>9}{'links':>10}")
    worst = 0.0
    for name in BUILDERS:
        for gpus in counts:
            done = subprocess.run([sys.executable, "-c", _ONE, name, str(gpus)], capture_output=True, text=True,
                                  cwd=ROOT)
            if done.returncode:  # the builder refused the count (above its limits) or ran out of memory
                last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
                raise ScenarioError("gpus", f"{name} at {gpus:,} GPUs: {last}")
            per_gpu, seconds, links = done.stdout.split()
            worst = max(worst, float(per_gpu))
            print(f"{name:<15}{gpus:>9,}{float(per_gpu):>11,.0f}{float(seconds):>9.1f}{int(links):>10,}")
    print(f"largest {worst:,.0f} bytes per GPU; core.limits.FABRIC_BYTES_PER_GPU = {FABRIC_BYTES_PER_GPU:,} "
          f"({'holds' if FABRIC_BYTES_PER_GPU >= worst else 'TOO LOW'})")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__))
