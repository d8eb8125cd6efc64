"""Diagnostic runs of the BLOOM prequel's tp 8 tables outside the held-out rows (issue 15; docs/calibration/round-22.md
"Round 22: the A100 Megatron/DeepSpeed rows simulated fast"). Nothing is fitted or written back; these runs are not
rows.

    PYTHONPATH=. python scripts/prequel_layouts.py

Published figures, bigscience-workshop/bigscience train/tr11-176B-ml/chronicles-prequel.md (stored at 053adafe), runs
of 02-21-2022 on Jean Zay's A100 80GB nodes, 14336 hidden, 64 heads, tp 8, sequence 2048, vocabulary 250k:
- "Max possible TFLOPs check": one node, pp 1, dp 1, 6 layers at micro batch 2 (two runs: 130.43 and 119.19 s) and
  10 layers at micro batch 1 (205.52 s); the table heads its GBS column 2048, its heading says GBS=512, and the
  TFLOPs column (Megatron-DeepSpeed's count with recompute) gives 512 samples (157.02 TFLOPs at 119.19 s);
- "48 node contenders": 72 layers on 48 nodes, pp 12 dp 4 at micro batch 1 / 2 / 4 / 8 (143.31 / 134.02 / 123.69 /
  129.26 s) and pp 6 dp 8 at 1 / 2 / 4 (139.82 / 131.02 / 121.48 s), global batch 2048.
They predate the BF16_Optimizer and the embedding partition of the held-out rows ("Rebalancing layers", 02-28: "from
now on the testing is happening with BF16 optimizer that was just written to accumulate gradients in fp32 ... compared
to fp16 which grad accumulates in fp16"): each is simulated as the held-out prequel row ``BASE`` is (DeepSpeed's
engine, naive attention, full recompute, Omni-Path) with 16-bit gradients (``grad_reduce_dtype: bf16``), its own shape
and layout, layers split evenly (one node: no network).
"""

from __future__ import annotations

import copy
import math
import sys

import yaml
from mbs_pairs import Row, per_layer_microbatch_s

from simcluster.core import script_entry
from simcluster.engine import simulate
from simcluster.spec import config

BASE = "bigscience-prequel-176b-h64-tp8-pp12-mbs2-a100"
# (label, layers, nodes, pp, dp, micro batch, global batch, published seconds a step)
RUNS = [
    ("one node", 6, 1, 1, 1, 2, 512, (130.43, 119.19)),
    ("one node", 10, 1, 1, 1, 1, 512, (205.52,)),
    ("48 nodes", 72, 48, 12, 4, 1, 2048, (143.31,)),
    ("48 nodes", 72, 48, 12, 4, 2, 2048, (134.02,)),
    ("48 nodes", 72, 48, 12, 4, 4, 2048, (123.69,)),
    ("48 nodes", 72, 48, 12, 4, 8, 2048, (129.26,)),
    ("48 nodes", 72, 48, 6, 8, 1, 2048, (139.82,)),
    ("48 nodes", 72, 48, 6, 8, 2, 2048, (131.02,)),
    ("48 nodes", 72, 48, 6, 8, 4, 2048, (121.48,)),
]


def scenario_dict(layers: int, nodes: int, pp: int, dp: int, micro_batch: int, batch: int) -> dict:
    """``BASE`` with the run's shape and layout."""
    with open(config.resolve_path(BASE)) as fh:
        d = copy.deepcopy(yaml.safe_load(fh))
    d["name"] = f"prequel-0221-{layers}l-pp{pp}-dp{dp}-mbs{micro_batch}"
    d["cluster"]["nodes"] = nodes
    d["model"]["layers"] = layers
    d["training"].update(micro_batch_size=micro_batch, global_batch_size=batch)
    p = d["parallelism"]
    p.update(pp=pp, dp=dp, grad_reduce_dtype="bf16")
    p.pop("layers_per_stage", None)
    return d


def main(argv: list[str]) -> int:
    script_entry.Parser(description=__doc__.splitlines()[0]).parse_args(argv)   # --help; no arguments
    rows: dict[tuple, list[Row]] = {}
    for label, layers, nodes, pp, dp, mbs, batch, published in RUNS:
        summary = simulate(config.from_dict(scenario_dict(layers, nodes, pp, dp, mbs, batch))).summary
        step = summary["step_time_s"]
        errors = " ".join(f"{100 * (p / step - 1):+5.1f}%" for p in published)
        print(f"{label} {layers:3d} layers pp {pp:2d} dp {dp} mbs {mbs}: published {published} s, simulated "
              f"{step:7.2f} s (compute {summary['compute_s']:.1f}, bubble {summary['pipeline_bubble_s']:.1f}), "
              f"error {errors}", flush=True)
        rows.setdefault((layers, pp, dp), []).append(
            Row(f"mbs {mbs}", step, min(published), batch // (dp * mbs), pp, 8, math.ceil(layers / pp), mbs))
    print("cost c per (layer, microbatch) that closes each step to the next micro batch (scripts/mbs_pairs.py):")
    for (layers, pp, dp), group in rows.items():
        for small, large in zip(group, group[1:], strict=False):
            c = per_layer_microbatch_s(small, large)
            print(f"  {layers} layers pp {pp} dp {dp}: {small.name} -> {large.name}: {1e3 * c:+6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
