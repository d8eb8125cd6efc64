"""Held-out twins that differ only in their micro batch: what the published step difference says a cost per layer
and microbatch must be (issue 15; docs/calibration/round-22.md "Round 22: the A100 Megatron/DeepSpeed rows simulated
fast").

    PYTHONPATH=. python scripts/mbs_pairs.py HELD_OUT.json

``HELD_OUT.json`` is a ``simcluster validate --held-out --json`` output; each row's simulated step and error are
read from it (published step = simulated step x (1 + error), error = simulated / published throughput - 1). Two rows
are twins when their scenario names are equal but for ``-mbsN-`` (the BLOOM prequel rows) and their scenarios have the
same tp, pp and largest stage (the name carries the rest of the layout). For a cost of c seconds on every (layer,
microbatch) of every stage (a host or launch cost per kernel, the same kernels at either micro batch) a step of
(m + pp - 1) slots on stages of at most L layers grows by c L (m + pp - 1), so between the twins by
c L (m_small - m_large): what the model lacks between them,
(published_small - published_large) - (simulated_small - simulated_large), gives

    c = missing difference / (L (m_small - m_large)).

A cost that is one per kernel would be the same c on every pair of one stack; pairs that disagree in sign or size
rule it out. Nothing is fitted or written back.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

from accuracy_tables import InputError, load_cases

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.spec import config

MBS = re.compile(r"-mbs(\d+)-")


@dataclass(frozen=True)
class Row:
    name: str
    simulated_s: float
    published_s: float
    microbatches: int
    pp: int
    tp: int
    max_layers: int
    micro_batch: int


def row(case: dict) -> Row:
    """One held-out row with the layout of its bundled scenario."""
    name = case["scenario"]
    scenario = config.load(name)
    p, t = scenario.parallelism, scenario.training
    simulated = float(case["step_time_s"])
    layers = p.layers_per_stage or [scenario.model.layers / p.pp]
    return Row(name, simulated, simulated * (1.0 + float(case["error"])),
               t.global_batch_size // (p.dp * t.micro_batch_size), p.pp, p.tp, max(layers), t.micro_batch_size)


def name_twins(rows: list, token: re.Pattern, order: Callable, same: Callable | None = None) -> list[tuple]:
    """(first, second) in ``order`` for every pair of ``rows`` (anything with a ``name``) whose names are equal but
    for what ``token`` matches, and for which ``same(first, second)`` holds (any pair without it); rows whose name
    has no match are left out. Shared with seq_pairs.py."""
    by_key: dict[str, list] = {}
    for r in rows:
        if token.search(r.name):
            by_key.setdefault(token.sub("*", r.name), []).append(r)
    pairs = []
    for group in by_key.values():
        group.sort(key=order)
        pairs += [(a, b) for i, a in enumerate(group) for b in group[i + 1:] if same is None or same(a, b)]
    return pairs


def twins(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(smaller micro batch, larger) for every pair of rows whose names differ only in ``-mbsN-`` and whose layouts
    (pp, tp, largest stage) agree."""
    return name_twins(rows, MBS, lambda r: r.micro_batch, lambda small, large: (
        small.pp, small.tp, small.max_layers) == (large.pp, large.tp, large.max_layers))


def per_layer_microbatch_s(small: Row, large: Row) -> float:
    """The cost c on every (layer, microbatch) that would close the twins' missing difference (module doc)."""
    missing = (small.published_s - large.published_s) - (small.simulated_s - large.simulated_s)
    return missing / (small.max_layers * (small.microbatches - large.microbatches))


# the fields of a validate --json case this script reads, checked by accuracy_tables.load_cases
CASE_FIELDS = {"scenario": str, "error": (int, float), "step_time_s": (int, float)}


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("held_out_json", help="a simcluster validate --held-out --json output")
    args = parser.parse_args(argv)
    try:
        rows = [row(c) for c in load_cases(args.held_out_json, CASE_FIELDS) if MBS.search(c["scenario"])]
    except (InputError, ScenarioError) as err:
        print(f"mbs_pairs: {err}", file=sys.stderr)
        return 2
    print(f"{'twins (small / large micro batch)':64} {'tp':>3} {'L':>3} {'m':>9} {'published s':>17} "
          f"{'simulated s':>17} {'c ms':>7}")
    for small, large in twins(rows):
        c = per_layer_microbatch_s(small, large)
        print(f"{small.name:64} {small.tp:3d} {small.max_layers:3d} {small.microbatches:4d}/{large.microbatches:<4d} "
              f"{small.published_s:8.2f}/{large.published_s:<8.2f} {small.simulated_s:8.2f}/{large.simulated_s:<8.2f} "
              f"{1e3 * c:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
