"""Throughput lost to data-parallel width at a fixed global batch, series by series (issue 15;
docs/calibration/round-24.md "Round 24: throughput lost to data-parallel width").

    PYTHONPATH=. python scripts/dp_width_terms.py [--series NAME ...] [--summaries FILE.jsonl]

For each held-out series that widens data parallelism at a fixed global batch (Narayanan et al. 2021 Table 2's 175B and
530B, MegaScale's Megatron-LM baseline at batch 768, MT-NLG 530B on DeepSpeed's PipelineEngine at 280 / 350 / 420 nodes:
docs/calibration/round-35.md "Round 35: the 2021-2022 A100 pipeline rows") and for Nemotron-4 15B's batch ramp (its
per-GPU work per step fixed instead), it prints per row the layout facts (DP ranks, nodes, microbatches per pipeline m,
the bubble's share (p - 1) / (v m), gradient bytes per GPU), the engine's step split (compute, bubble, exposed
communication per parallelism, interference) and the published step (``studies.validation.published_step_s``). Then it
asks what extra time the published steps imply: it fits, per series and by least squares, published = a x simulated + c
x f for each candidate shape f of a missing per-step cost:

- ``const``: one fixed cost a step (optimizer, host, synchronisation, a bubble the model prices too small: all
  independent of m at a fixed per-microbatch time);
- ``dp exposed``: the simulated exposed data-parallel time scaled (the DP collective's achieved bandwidth lower than
  modelled);
- ``grad ring``: 2 (n - 1) / n x gradient bytes per GPU, the ring all-reduce's bytes on a NIC (bandwidth shortfall
  without the model's overlap);
- ``log2 n`` and ``n``: ring/tree latency or straggler growth with the data-parallel ranks;
- ``bubble``: the simulated bubble scaled.

A cost shrinking as 1/n (a ZeRO-1 shard's optimizer update) is not a shape here: at a fixed global batch the
per-microbatch work is itself close to 1/n, so its fit is degenerate with the rate factor a.

a is a per-series rate factor (the per-microbatch error the series has anyway). With three rows a series has one
degree of freedom left; MegaScale's four rows leave two. ``--summaries`` reads engine summaries cached as JSON lines
({scenario: {step_time_s, compute_s, pipeline_bubble_s, comm_interference_s, exposed: {...}}}) instead of simulating
(each 175B / 530B row takes minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from simcluster.core import inputs, script_entry
from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.studies import validation

SERIES = {
    "narayanan2021-t2 175B": [f"narayanan2021-t2-174.6b-{g}-a100" for g in (384, 768, 1536)],
    "narayanan2021-t2 530B": [f"narayanan2021-t2-529.6b-{g}-a100" for g in (560, 1120, 2240)],
    "megascale2024 batch 768": [f"megascale2024-megatron-175b-{g}-a100" for g in (256, 512, 768, 1024)],
    "nemotron4-15b (batch ramp)": [f"nemotron4-15b-{g}-h100" for g in (768, 1536, 2304)],
    "smith2022 MT-NLG 530B": [f"smith2022-mtnlg-530b-{n}-a100" for n in (280, 350, 420)],
}
SHAPES = ("const", "dp exposed", "grad ring", "log2 n", "n", "bubble")


SUMMARY_TERMS = ("step_time_s", "compute_s", "pipeline_bubble_s", "comm_interference_s")


def engine_summary(name: str, cache: dict) -> dict:
    """The engine's step split for ``name``: from the cache if there, else simulated."""
    if name not in cache:
        s = simulate(config.load(name)).summary
        cache[name] = {**{k: float(s[k]) for k in SUMMARY_TERMS},
                       "exposed": {k: float(v) for k, v in s["exposed_comm_by_parallelism_s"].items()}}
    return cache[name]


def read_summaries(path: str) -> dict:
    """The cached engine summaries of ``--summaries`` (JSON lines, each {scenario: {SUMMARY_TERMS..., exposed:
    {parallelism: s}}}, the form ``engine_summary`` keeps): a file that cannot be read, a line that is not such an
    object or a term that is not a finite number >= 0 is a ScenarioError naming --summaries and the line."""
    try:   # a folder, a FIFO without a writer, a binary or huge file: refused in one line
        text = inputs.read_text(Path(path), inputs.MAX_JSON_BYTES, "JSON lines file")
    except ScenarioError as exc:
        raise ScenarioError("--summaries", str(exc)) from None
    cache: dict = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            entries = json.loads(line)
        except ValueError as exc:
            raise ScenarioError("--summaries", f"{where}: not JSON ({exc})") from None
        if not isinstance(entries, dict):
            raise ScenarioError("--summaries", f"{where}: expected an object {{scenario: summary}}")
        for name, summary in entries.items():
            exposed = summary.get("exposed") if isinstance(summary, dict) else None
            if not isinstance(exposed, dict) or not all(
                    _seconds(v) for v in [summary.get(k) for k in SUMMARY_TERMS] + list(exposed.values())):
                raise ScenarioError("--summaries", f"{where}: {name}: expected {{{', '.join(SUMMARY_TERMS)}, exposed:"
                                                   " {parallelism: s}}, each a finite number >= 0")
        cache.update(entries)
    return cache


def _seconds(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def row_facts(name: str, summary: dict) -> dict:
    """Layout facts, the published step and the engine's split of one row."""
    scenario = config.load(name)
    case = validation.named_case(name)
    p, t = scenario.parallelism, scenario.training
    m = scenario.microbatches
    stage_params = max(memory.stage_params(scenario.model, p.tp, p.pp, s, p.virtual_stages) for s in range(p.pp))
    grad_bytes = stage_params * memory.BYTES_PER_ELEMENT[p.grad_reduce_dtype]
    return {"name": name, "dp": p.dp, "gpus": scenario.cluster.gpus, "batch": t.global_batch_size,
            "nodes": scenario.cluster.gpus // scenario.cluster.gpus_per_node,
            "m": m, "bubble share": (p.pp - 1) / (p.virtual_stages * m), "grad GB": grad_bytes / 1e9,
            "published": validation.published_step_s(case, scenario), "sim": summary["step_time_s"],
            "compute": summary["compute_s"], "bubble": summary["pipeline_bubble_s"],
            "interference": summary["comm_interference_s"], "dp exposed": summary["exposed"].get("dp", 0.0),
            "tp exposed": summary["exposed"].get("tp", 0.0), "pp exposed": summary["exposed"].get("pp", 0.0)}


def shape_value(shape: str, row: dict) -> float:
    n = row["dp"]
    return {"const": 1.0, "dp exposed": row["dp exposed"], "grad ring": 2 * (n - 1) / n * row["grad GB"],
            "log2 n": math.log2(n), "n": float(n), "bubble": row["bubble"]}[shape]


def fit(rows: list[dict], shape: str) -> tuple[float, float, float]:
    """Least squares published = a x simulated + c x f(shape): (a, c, the largest |residual| / published)."""
    x = np.array([[r["sim"], shape_value(shape, r)] for r in rows])
    y = np.array([r["published"] for r in rows])
    (a, c), *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(a), float(c), float(np.max(np.abs(x @ np.array([a, c]) - y) / y))


def series_report(label: str, rows: list[dict]) -> list[str]:
    lines = [f"== {label}: per-GPU throughput first to last, published {_throughput_change(rows, 'published'):+.1%},"
             f" simulated {_throughput_change(rows, 'sim'):+.1%}",
             f"  {'row':<40} {'dp':>3} {'nodes':>5} {'m':>5} {'(p-1)/vm':>8} {'gradGB':>6} {'published':>9} {'sim':>8}"
             f" {'compute':>8} {'bubble':>7} {'dp exp':>7} {'tp exp':>7} {'pp exp':>7} {'interf':>7}"
             f" {'pub-sim':>8}"]
    for r in rows:
        lines.append(f"  {r['name']:<40} {r['dp']:>3} {r['nodes']:>5} {r['m']:>5} {r['bubble share']:>8.2%}"
                     f" {r['grad GB']:>6.2f} {r['published']:>9.3f} {r['sim']:>8.3f} {r['compute']:>8.3f}"
                     f" {r['bubble']:>7.3f} {r['dp exposed']:>7.3f} {r['tp exposed']:>7.3f} {r['pp exposed']:>7.3f}"
                     f" {r['interference']:>7.3f} {r['published'] - r['sim']:>+8.3f}")
    lines.append("  fits published = a x simulated + c x f:")
    for shape in SHAPES:
        if shape in ("dp exposed", "bubble") and min(r[shape] for r in rows) <= 0:
            continue   # a term the series does not have (no pipeline: no bubble)
        a, c, resid = fit(rows, shape)
        implied = ", ".join(f"{c * shape_value(shape, r):.3f}" for r in rows)
        lines.append(f"    {shape:<11} a {a:6.4f}  c {c:+9.4f}  max residual {resid:6.2%}  c x f a row (s): {implied}")
    return lines


def _throughput_change(rows: list[dict], key: str) -> float:
    """Per-GPU throughput of the last row over the first, less one: work per GPU (global batch / GPUs) over the step
    ``key`` (published or sim)."""
    first, last = rows[0], rows[-1]
    return (last["batch"] / last["gpus"] / last[key]) / (first["batch"] / first["gpus"] / first[key]) - 1


def main(argv: list[str] | None = None) -> int:
    parser = script_entry.Parser(description=__doc__, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", nargs="+", choices=list(SERIES), default=list(SERIES), metavar="NAME",
                        help="series to report, quoted (default all): " + "; ".join(SERIES))
    parser.add_argument("--summaries", metavar="FILE.jsonl", help="cached engine summaries, JSON lines (above)")
    args = parser.parse_args(argv)
    if repeated := sorted({s for s in args.series if args.series.count(s) > 1}):
        parser.error(f"--series: {repeated[0]!r} given twice; each series is reported once")
    cache = read_summaries(args.summaries) if args.summaries else {}
    for label in args.series:
        rows = [row_facts(name, engine_summary(name, cache)) for name in SERIES[label]]
        print("\n".join(series_report(label, rows)))
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
