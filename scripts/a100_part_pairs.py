"""The A100 40GB against the A100 80GB on one stack: llm-foundry's own 8-GPU benchmark rows of the same MPT model and
sequence on both parts, published against simulated per-GPU throughput ratio (issue 15; docs/calibration/round-28.md
"Round 28: the A100 80GB rows against the A100 40GB, part or stack"). A diagnostic: nothing is fitted or written.

    PYTHONPATH=. python scripts/a100_part_pairs.py

The rows (``PAIRS``) are mosaicml/llm-foundry scripts/train/benchmarking/README.md, tables "A100 80GB with 1600 Gbps
node-node interconnect (RoCE)" and "A100 40GB with 1600 Gbps node-node interconnect (RoCE)": micro batch, gradient
accumulation, activation checkpointing and tokens/s/GPU of each 8-GPU row. Each row is simulated from the bundled
held-out scenario of its part (``TEMPLATE``: every stack setting, stated and sourced there) with the model, sequence
and batch of the row; MPT's shapes (``MODELS``) are llm-foundry's yamls (scripts/train/yamls/pretrain/mpt-*.yaml,
head dimension 128). The published ratio divides two measured throughputs of one code base on the two parts; the
simulated ratio the same two rows' simulated throughputs. If the model credited the 80GB part with speed it does not
have, the simulated ratio would sit above the published one on every pair. The two tables differ beyond the part
(the 40GB rows ran FSDP mixed precision PURE, the 80GB rows DEFAULT, and the micro batches differ): ``CLEAN`` are the
pairs with activation checkpointing the same on both parts.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml

from simcluster.core import script_entry
from simcluster.engine.simulation import Simulation
from simcluster.spec import config

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = {"80": ROOT / "scenarios/mpt-7b-8-a100-80gb.yaml", "40": ROOT / "scenarios/mpt-7b-128-a100-40gb.yaml"}
GPUS = 8
MODELS = {  # layers, d_model, heads (llm-foundry scripts/train/yamls/pretrain/mpt-*.yaml)
    "13b": (40, 5120, 40), "7b": (32, 4096, 32), "3b": (32, 2560, 20), "1b": (24, 2048, 16), "760m": (24, 1536, 12),
    "350m": (24, 1024, 16), "125m": (12, 768, 12)}
# (model, sequence): {part: (micro batch, gradient accumulation, activation checkpointing, published tokens/s/GPU)}
PAIRS = {
    ("13b", 2048): {"80": (2, 3, False, 2262), "40": (4, 16, True, 1668)},
    ("7b", 2048): {"80": (6, 2, False, 4641), "40": (12, 4, True, 3679)},
    ("7b", 4096): {"80": (16, 2, True, 3684), "40": (6, 4, True, 3366)},
    ("3b", 2048): {"80": (10, 2, False, 10811), "40": (5, 8, False, 10065)},
    ("3b", 4096): {"80": (5, 6, False, 9457), "40": (2, 8, False, 8777)},
    ("1b", 2048): {"80": (14, 4, False, 20513), "40": (8, 8, False, 19271)},
    ("1b", 4096): {"80": (7, 4, False, 17807), "40": (4, 8, False, 16856)},
    ("760m", 2048): {"80": (24, 2, False, 32434), "40": (12, 4, False, 30173)},
    ("760m", 4096): {"80": (12, 2, False, 27351), "40": (6, 4, False, 25863)},
    ("350m", 2048): {"80": (32, 2, False, 58782), "40": (16, 4, False, 55995)},
    ("125m", 2048): {"80": (40, 2, False, 142830), "40": (26, 3, False, 136334)},
}
CLEAN = tuple(k for k, v in PAIRS.items() if v["80"][2] == v["40"][2])


def scenario_dict(model: str, seq: int, part: str, mbs: int, accumulation: int, checkpointing: bool) -> dict:
    """The part's bundled MPT scenario with the row's model, sequence, batch and checkpointing, on one 8-GPU node."""
    d = yaml.safe_load(TEMPLATE[part].read_text())
    layers, hidden, heads = MODELS[model]
    d["name"] = f"llmfoundry-pair-mpt-{model}-{seq}-a100-{part}gb"
    d["cluster"].update(nodes=1, gpus_per_node=GPUS, topology="nvswitch-node")
    d["cluster"].pop("topology_options", None)   # the fabric's options (e.g. RoCE's protocol) name no NVSwitch node's
    d["model"].update(name=f"mpt-{model}", layers=layers, hidden=hidden, heads=heads, ffn_hidden=4 * hidden,
                      max_seq_len=seq)
    d["training"].update(seq_len=seq, micro_batch_size=mbs, global_batch_size=mbs * accumulation * GPUS,
                         activation_recompute="full" if checkpointing else "none")
    d["parallelism"]["dp"] = GPUS
    return d


def simulated_tokens_per_gpu(d: dict, workdir: Path) -> float:
    """Tokens a second per GPU of the scenario ``d`` (one simulated step)."""
    path = workdir / f"{d['name']}.yaml"
    path.write_text(yaml.safe_dump(d))
    step = Simulation(config.load(path), check_memory=False).run(None).summary["step_time_s"]
    return d["training"]["global_batch_size"] * d["training"]["seq_len"] / step / GPUS


def table(keys=tuple(PAIRS)) -> list[dict]:
    """Per pair: published and simulated tokens/s/GPU on each part, their errors, and the two 80GB / 40GB ratios."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, seq in keys:
            row = {"model": model, "seq": seq}
            for part in ("80", "40"):
                mbs, acc, ckpt, published = PAIRS[(model, seq)][part]
                sim = simulated_tokens_per_gpu(scenario_dict(model, seq, part, mbs, acc, ckpt), Path(tmp))
                row[part] = {"published": published, "simulated": sim, "error": sim / published - 1}
            row["published_ratio"] = row["80"]["published"] / row["40"]["published"]
            row["simulated_ratio"] = row["80"]["simulated"] / row["40"]["simulated"]
            row["ratio_error"] = row["simulated_ratio"] / row["published_ratio"] - 1
            out.append(row)
    return out


def main(argv: list[str]) -> int:
    print(f"{'model':6s} {'seq':>5s} {'ckpt 80/40':>10s} | {'err 80GB':>8s} {'err 40GB':>8s} | "
          f"{'pub 80/40':>9s} {'sim 80/40':>9s} {'sim/pub':>7s}")
    for r in table():
        ck = "/".join("y" if PAIRS[(r['model'], r['seq'])][p][2] else "n" for p in ("80", "40"))
        print(f"{r['model']:6s} {r['seq']:5d} {ck:>10s} | {r['80']['error']:+8.1%} {r['40']['error']:+8.1%} | "
              f"{r['published_ratio']:9.3f} {r['simulated_ratio']:9.3f} {r['ratio_error']:+7.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.run(main, sys.argv[1:], __doc__, words=(0, 0)))
