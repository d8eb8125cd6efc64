"""Held-out twins that differ in their sequence length: the published step ratio (long over short) against the
simulated one, and the simulated ratio split into the terms of the bottleneck stage (issue 15;
docs/calibration/round-37.md "Round 37: what grows with the sequence on A100 (controlled pairs)").

    PYTHONPATH=. python scripts/seq_pairs.py HELD_OUT.json [--prefix vocabpar2024 --prefix dao2023]

``HELD_OUT.json`` is a ``simcluster validate --held-out --json`` output (published step = simulated step x (1 +
error)). Two rows are twins when their scenario names are equal but for the sequence token, ``-sN-`` (vocabpar2024)
or ``-Nk-`` (dao2023), among the rows whose names start with a ``--prefix``. A ratio of two steps of one run family
cancels what the twins share (host, clock, most of the GEMMs' efficiency); what is left is what grows with the
sequence. ``keys`` lists the scenario keys the twins differ in besides the sequence (a controlled pair has none).

Per pair, the last pipeline stage's slot (one microbatch's forward and backward on it: its layers and, on the last
stage, the final norm, output layer and loss), each kernel at its roofline plus the stream's gap before it, split into
terms: attention core (the fused kernel, or the unfused scores, softmax and dropout), layout copies (Transformer
Engine's and Megatron's q/k/v copies around flash-attn and the QKV split's backward), layer GEMMs, other memory-bound
kernels of the layer, the output GEMM, the output norm and loss, and the gaps. ``contribution`` is each term's
(long - 2 x short) over the short slot: they sum to the slot ratio less 2. ``attention x`` is the factor on the
simulated attention at the long sequence (the short one's kept) that would close the pair: the published excess at
the long sequence (published_long - simulated ratio x published_short) spread over the step's slots (microbatches +
pp - 1) over the slot's simulated attention. A diagnostic: nothing is fitted or written back.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import yaml
from accuracy_tables import InputError, load_cases
from mbs_pairs import name_twins
from scenario_walk import differences

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.parallel.layout import split_layers
from simcluster.spec import config
from simcluster.workload import kernels
from simcluster.workload.ops import layer_ops, output_ops, shard_for

SEQUENCE = re.compile(r"-(s\d+|\d+k)-")
PREFIXES = ("vocabpar2024", "dao2023")
TERMS = ("attention core", "layout copies", "layer GEMM", "layer memory-bound", "output GEMM", "output norm+loss",
         "gaps")
# the scenario sections whose settings a controlled pair shares, and the sequence's own keys (not counted)
SECTIONS = ("model", "training", "parallelism", "cluster")
SEQUENCE_KEYS = {"training.seq_len", "model.max_seq_len"}


@dataclass(frozen=True)
class Row:
    name: str
    simulated_s: float
    published_s: float


def layer_term(op) -> str:
    """The term a kernel of a transformer layer is counted under."""
    if op.kind == "attention" or op.name in ("softmax", "attention_dropout") or (
            op.kind == "gemm" and op.name.startswith("attention")):
        return "attention core"
    if op.name.startswith(("te_flash_layout", "qkv_split")):
        return "layout copies"
    return "layer GEMM" if op.kind == "gemm" else "layer memory-bound"


def slot_terms(name: str) -> dict[str, float]:
    """Seconds of the last stage's slot by term (module doc)."""
    scenario = config.load(name)
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    shard, host = shard_for(scenario), kernels.host_model()
    layers = split_layers(scenario.model.layers, scenario.parallelism.pp)[-1]
    terms = dict.fromkeys(TERMS, 0.0)
    for phase_ops in layer_ops(scenario.model, shard).values():
        for op in phase_ops:
            terms[layer_term(op)] += layers * max(*kernels.roofline_s(op, gpu, precision))
            terms["gaps"] += layers * host.gap_s(op)
    for phase_ops in output_ops(scenario.model, shard).values():
        for op in phase_ops:
            terms["output GEMM" if op.kind == "gemm" else "output norm+loss"] += max(*kernels.roofline_s(op, gpu,
                                                                                                        precision))
            terms["gaps"] += host.gap_s(op)
    return terms


def slots(name: str) -> int:
    """A 1F1B step's slots on its bottleneck stage: the microbatches plus the pipeline's fill (pp - 1)."""
    scenario = config.load(name)
    p, t = scenario.parallelism, scenario.training
    return t.global_batch_size // (p.dp * t.micro_batch_size) + p.pp - 1


def differing_keys(short: str, long: str) -> list[str]:
    """The settings (dotted paths of the model, training, parallelism and cluster sections, scenario_walk.py's
    ``differences``) in which two twins' scenario files differ, the sequence's own keys left out."""
    a, b = (yaml.safe_load(config.resolve_path(name).read_text()) for name in (short, long))
    return [path for path, _, _ in differences(a, b)
            if path.split(".")[0] in SECTIONS and path not in SEQUENCE_KEYS]


def sequence_of(name: str) -> int:
    token = SEQUENCE.search(name).group(1)
    return int(token[1:]) if token.startswith("s") else int(token[:-1]) * 1024


def twins(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(shorter, longer) for every pair of rows whose names differ only in the sequence token."""
    return name_twins(rows, SEQUENCE, lambda r: sequence_of(r.name))


@dataclass(frozen=True)
class Pair:
    short: Row
    long: Row
    published_ratio: float
    simulated_ratio: float
    slot_short: dict[str, float]
    slot_long: dict[str, float]
    attention_factor: float

    @property
    def contributions(self) -> dict[str, float]:
        """Each term's (long - 2 x short) over the short slot: they sum to the slot ratio less 2."""
        total = sum(self.slot_short.values())
        return {t: (self.slot_long[t] - 2.0 * self.slot_short[t]) / total for t in TERMS}


def pair(short: Row, long: Row) -> Pair:
    published, simulated = long.published_s / short.published_s, long.simulated_s / short.simulated_s
    slot_short, slot_long = slot_terms(short.name), slot_terms(long.name)
    excess_per_slot = (long.published_s - simulated * short.published_s) / slots(long.name)
    attention = slot_long["attention core"]
    factor = 1.0 + excess_per_slot / attention if attention > 0 else float("nan")
    return Pair(short, long, published, simulated, slot_short, slot_long, factor)


# the fields of a validate --json case this script reads, checked by accuracy_tables.load_cases
CASE_FIELDS = {"scenario": str, "error": (int, float), "step_time_s": (int, float)}


def report(pairs: list[Pair]) -> list[str]:
    lines = [f"{'pair (short -> long)':62} {'published':>9} {'simulated':>9} {'pub/sim':>7} {'attention x':>11}"]
    for p in pairs:
        lines.append(f"{p.short.name + ' -> ' + SEQUENCE.search(p.long.name).group(1):62} {p.published_ratio:9.3f} "
                     f"{p.simulated_ratio:9.3f} {p.published_ratio / p.simulated_ratio:7.3f} "
                     f"{p.attention_factor:11.2f}")
        lines.append("    slot ms short / long (x), contribution to slot ratio - 2: " + "; ".join(
            f"{t} {1e3 * p.slot_short[t]:.2f} / {1e3 * p.slot_long[t]:.2f} ({p.contributions[t]:+.3f})"
            for t in TERMS if p.slot_short[t] or p.slot_long[t]))
        keys = differing_keys(p.short.name, p.long.name)
        if keys:
            lines.append("    not controlled, also differ in: " + ", ".join(keys))
    return lines


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("held_out_json", help="a simcluster validate --held-out --json output")
    parser.add_argument("--prefix", action="append", default=None,
                        help=f"scenario name prefix of the families to pair (default: {', '.join(PREFIXES)})")
    args = parser.parse_args(argv)
    prefixes = tuple(args.prefix or PREFIXES)
    try:
        rows = [Row(c["scenario"], float(c["step_time_s"]), float(c["step_time_s"]) * (1.0 + float(c["error"])))
                for c in load_cases(args.held_out_json, CASE_FIELDS) if c["scenario"].startswith(prefixes)]
        pairs = [pair(short, long) for short, long in twins(rows)]
    except (InputError, ScenarioError) as err:
        print(f"seq_pairs: {err}", file=sys.stderr)
        return 2
    print("\n".join(report(pairs)))
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
