"""How much slack each llm-foundry (PyTorch FSDP1) row's simulated step leaves between a unit's compute and its
collectives, and how long the collectives would have to run for the published step (issue 15;
docs/calibration/round-31.md "Round 31: MPT-13B and MPT-70B on 32 against their siblings, unit by unit"). Analysis only:
nothing here moves a constant.

    PYTHONPATH=. python scripts/fsdp_unit_margin.py HELD_OUT.json [--prefix mpt-] [--baseline E] [--siblings] [--trend]

``HELD_OUT.json`` is a ``simcluster validate --held-out --json`` output; each row's simulated step and signed error
are read from it (published step = simulated step x (1 + error)). Each row whose scenario starts with ``--prefix``
is simulated once here for its parts, from rank 0's events: the median forward and backward compute block of a unit
(``T_f``, ``T_b``: one FSDP unit and microbatch, recompute included), the median all-gather and reduce-scatter of a
unit on the ``dp`` stream (``G``, ``R``: alone on the fabric), the optimizer step and the step's FSDP collective time.

FSDP1 as Composer runs it (parallel/fsdp_runtime.py) hides a unit's collectives while the unit next to it computes:
in the forward the all-gather of unit u+1 runs during unit u, in the backward the reduce-scatter of unit u+1 and then
the all-gather of unit u-1 (one NCCL stream) during unit u. The margins are ``T_f / G`` and ``T_b / (G + R)``: how
many times longer the collectives could run before the compute waits. If every such collective ran ``k`` times as
long as alone (NCCL slowed or delayed beside the compute), a step would grow by

    units x microbatches x [max(0, k G - T_f) + max(0, k (G + R) - T_b)]

(``exposure_s``); ``stretch_needed`` is the k at which that equals the published step less the simulated one (less
the simulated step x ``--baseline``, an error all rows would share from elsewhere), None where the published step
needs no exposure. One k serving every row would make such a stretch a candidate mechanism; k's that disagree rule
a single one out.

``--siblings``: the same table's rows at one micro batch and several GPU counts that are not held out (the README's
MPT-1B on 16 / 32 / 64 H100 at 20 x 1, MPT-3B on 32 / 64 H100 at 6 x 3, MPT-7B on 32 / 64 / 128 A100 40GB at
18 x 1), simulated as a bundled held-out scenario with only the node count, data-parallel size and global batch
changed (and for MPT-3B the shape and micro batch): published against simulated tokens/s per GPU, so the trend with
the GPU count is seen where FSDP's collectives are a small share.

``--trend``: each series of the prefix's rows (``studies.trends``' key, the one ``simcluster validate``'s trend
series hold fixed, and one accumulation: rows that differ in the GPU count alone, e.g. ``mpt-13b-{8,16,32,64}-h100``
at micro batch 2 x 1), its simulated step part by part
(``step_shares.step_parts``: tensor-core roofline, HBM-bound kernels, fitted gap, interference, ``other`` = the
optimizer step and block terms, exposed data-parallel time, ...) at each GPU count and each part's change from the
series' fewest GPUs, beside the published step's change (docs/calibration/round-35.md "Round 35: llm-foundry's MPT rows
on H100"). The parts partition the step, so their changes add up to the simulated step's change.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass

import yaml
from accuracy_tables import InputError, load_cases
from step_shares import PARTS, step_parts

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.engine.simulation import Simulation
from simcluster.spec import config
from simcluster.studies import trends

# the fields of a validate --json case this script reads (``--trend`` groups by studies.trends' key: source, metric and
# the TFLOP/s too), checked by accuracy_tables.load_cases
CASE_FIELDS = {"scenario": str, "error": (int, float), "step_time_s": (int, float), "family": str,
               "published_tflops": (int, float), "simulated_tflops": (int, float)}

# mosaicml/llm-foundry scripts/train/benchmarking/README.md at 061f2c7c: the rows at one micro batch and accumulation
# and several GPU counts (sequence 2048): (label, bundled scenario they are built from, changes to its model and
# training, {GPUs: tokens/s per GPU as "Throughput (T/s/GPU)" prints it}). Only mpt-1b-64-h100's 64-GPU row and
# mpt-7b-128-a100-40gb's 128-GPU row are held out; the others are the table's siblings. MPT-3B's shape is
# llm-foundry's mpt-3b.yaml (d_model 2560, 32 heads, 32 layers, expansion 4): 12 L d^2 + 13 L d + 2 d + V d + s d =
# the table's NumParams 2,651,837,440.
SIBLINGS = (
    ("MPT-1B, H100, 20 x 1", "mpt-1b-64-h100", {}, {16: 46037, 32: 45130, 64: 44402}),
    (
        "MPT-3B, H100, 6 x 3",
        "mpt-1b-64-h100",
        {
            "model": {"name": "mpt-3b", "layers": 32, "hidden": 2560, "heads": 32, "ffn_hidden": 10240},
            "training": {"micro_batch_size": 6, "accumulation": 3},
        },
        {32: 23021, 64: 22525},
    ),
    ("MPT-7B, A100 40GB, 18 x 1, PURE", "mpt-7b-128-a100-40gb", {}, {32: 3725, 64: 3665, 128: 3623}),
)


@dataclass(frozen=True)
class Unit:
    """One row's per-unit parts (seconds) and its step."""

    name: str
    units: int
    microbatches: int
    fwd_s: float
    bwd_s: float
    gather_s: float
    scatter_s: float
    optimizer_s: float
    collectives_s: float
    simulated_s: float
    published_s: float

    @property
    def fwd_margin(self) -> float:
        return self.fwd_s / self.gather_s

    @property
    def bwd_margin(self) -> float:
        return self.bwd_s / (self.gather_s + self.scatter_s)


def exposure_s(u: Unit, k: float) -> float:
    """Seconds a step would wait if each overlapped FSDP collective ran k times as long (module doc)."""
    per_unit = max(0.0, k * u.gather_s - u.fwd_s) + max(0.0, k * (u.gather_s + u.scatter_s) - u.bwd_s)
    return u.units * u.microbatches * per_unit


def stretch_needed(u: Unit, baseline: float = 0.0, k_max: float = 1e3) -> float | None:
    """The k >= 1 at which ``exposure_s`` equals the published step less the simulated step x (1 + baseline); None
    if that difference is not positive (or not reached by k_max). Exposure is piecewise linear and non-decreasing
    in k, so bisection finds it."""
    target = u.published_s - u.simulated_s * (1.0 + baseline)
    if target <= 0 or exposure_s(u, k_max) < target:
        return None
    lo, hi = 1.0, k_max
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if exposure_s(u, mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def unit_parts(name: str, scenario, simulated_s: float, published_s: float) -> Unit:
    """Simulate ``scenario`` once and read rank 0's per-unit parts."""
    result = simulate(scenario, check_memory=False)
    ev = result.events
    r0 = ev[ev["rank"] == ev["rank"].min()]
    comp, dp = r0[r0["stream"] == "compute"], r0[r0["stream"] == "dp"]
    dur = lambda frame: list(frame["end_s"] - frame["start_s"])  # noqa: E731
    fwd = dur(comp[comp["name"].str.startswith("forward")])
    bwd = dur(comp[comp["name"].str.startswith("backward")])
    gathers = dur(dp[dp["name"].str.contains("gather", case=False)])
    scatters = dur(dp[dp["name"].str.contains("scatter", case=False)])
    if not (fwd and bwd and gathers and scatters):
        raise ScenarioError(name, "no FSDP unit blocks or collectives in its events (not a ZeRO-3 row?)")
    microbatches = scenario.microbatches
    opt = comp[comp["name"] == "optimizer"]
    return Unit(
        name,
        round(len(scatters) / microbatches),
        microbatches,
        statistics.median(fwd),
        statistics.median(bwd),
        statistics.median(gathers),
        statistics.median(scatters),
        float((opt["end_s"] - opt["start_s"]).sum()),
        float(sum(gathers) + sum(scatters)),
        simulated_s,
        published_s,
    )


def sibling_scenario(name: str, gpus: int, changes: dict | None = None):
    """The bundled scenario ``name`` at ``gpus`` GPUs with ``changes`` (``model`` fields; ``training`` micro batch
    and ``accumulation``): nodes, dp and the global batch (GPUs x micro batch x accumulation) follow, nothing else
    changes."""
    changes = changes or {}
    data = yaml.safe_load(config.resolve_path(name).read_text())
    training, cluster = data["training"], data["cluster"]
    accumulation = training["global_batch_size"] // (data["parallelism"]["dp"] * training["micro_batch_size"])
    accumulation = changes.get("training", {}).get("accumulation", accumulation)
    data["model"].update(changes.get("model", {}))
    training["micro_batch_size"] = changes.get("training", {}).get("micro_batch_size", training["micro_batch_size"])
    data["name"] = f"{name}-at-{gpus}"
    cluster["nodes"] = gpus // cluster["gpus_per_node"]
    data["parallelism"]["dp"] = gpus
    training["global_batch_size"] = gpus * training["micro_batch_size"] * accumulation
    return config.from_dict(data, source=f"{name} at {gpus} GPUs")


def print_siblings() -> None:
    print(f"\n{'siblings (README 061f2c7c)':32} {'GPUs':>5} {'published t/s/GPU':>18} {'simulated':>10} {'error':>8}")
    for label, name, changes, rows in SIBLINGS:
        for gpus, published in rows.items():
            scenario = sibling_scenario(name, gpus, changes)
            step = simulate(scenario, check_memory=False).summary["step_time_s"]
            simulated = scenario.tokens_per_step / step / gpus
            print(f"{label:32} {gpus:5d} {published:18d} {simulated:10.0f} {100 * (simulated / published - 1):+7.1f}%")


@dataclass(frozen=True)
class TrendRow:
    """One row of a series: its GPU count, simulated step parts (seconds, a partition of ``simulated_s``) and
    published step."""

    gpus: int
    parts_s: dict
    simulated_s: float
    published_s: float


def trend_table(series: str, rows: list[TrendRow]) -> list[str]:
    """The series' parts in ms at each GPU count, and each one's change from the fewest GPUs (module doc)."""
    rows = sorted(rows, key=lambda r: r.gpus)
    base = rows[0]
    shown = [p for p in PARTS if any(abs(r.parts_s.get(p, 0.0)) > 5e-5 for r in rows)]
    lines = [f"\n{series}: ms at each GPU count (change from {base.gpus} GPUs)"]
    lines.append(f"{'part':18}" + "".join(f"{r.gpus:>19d}" for r in rows))
    entries = [(p, lambda r, p=p: r.parts_s.get(p, 0.0)) for p in shown] + [
        ("simulated step", lambda r: r.simulated_s),
        ("published step", lambda r: r.published_s),
        ("published - sim.", lambda r: r.published_s - r.simulated_s),
    ]
    for label, value in entries:
        cells = (f"{1e3 * value(r):9.1f} ({1e3 * (value(r) - value(base)):+6.1f})" for r in rows)
        lines.append(f"{label:18}" + "".join(f"{c:>19}" for c in cells))
    return lines


def trend_rows(cases: list[dict], load=config.load) -> dict[str, list[TrendRow]]:
    """Each case's step parts, grouped by series: ``studies.trends``' key (source, metric, model and per-replica
    layout: GPU, precision, parallelism, micro batch, sequence, recompute) and the microbatches a step, so rows that
    differ in the GPU count alone. A group at one GPU count is left out, and not simulated."""
    runs, _ = trends.runs_of(cases, load)
    error = {c["scenario"]: c["error"] for c in cases}
    groups: dict[tuple, list] = {}
    for run in runs:
        scenario = load(run.scenario)
        groups.setdefault((run.key(), scenario.microbatches), []).append((run, scenario))
    series: dict[str, list[TrendRow]] = {}
    for members in groups.values():
        if len({run.gpus for run, _ in members}) < 2:
            continue
        first, scenario = members[0]
        label = (f"{first.model} on {scenario.cluster.gpu.name} ({first.family}), micro batch "
                 f"{scenario.training.micro_batch_size} x {scenario.microbatches}")
        while label in series:   # two layouts of one model and GPU: told apart by their order
            label += "'"
        series[label] = []
        for run, scenario in members:
            sim = Simulation(scenario, check_memory=False)
            summary = sim.run(None).summary
            step = float(summary["step_time_s"])
            parts = step_parts(scenario, sim, summary)["parts_s"]
            series[label].append(TrendRow(run.gpus, parts, step, step * (1.0 + error[run.scenario])))
    return series


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(description=__doc__, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("held_out_json", help="a simcluster validate --held-out --json output")
    parser.add_argument("--prefix", default="mpt-", help="rows whose scenario name starts with this (default mpt-)")
    parser.add_argument(
        "--baseline",
        type=float,
        default=0.0,
        help="an error every row shares from elsewhere, left out of the exposure (e.g. 0.027)",
    )
    parser.add_argument("--siblings", action="store_true", help="also the table's GPU-count siblings (above)")
    parser.add_argument("--trend", action="store_true", help="also each series' step, part by part (above)")
    args = parser.parse_args(argv)
    if not -0.5 < args.baseline < 0.5:  # also refuses NaN
        parser.error(f"--baseline: expected a fraction between -0.5 and 0.5, got {args.baseline}")
    try:
        cases = [c for c in load_cases(args.held_out_json, CASE_FIELDS) if c["scenario"].startswith(args.prefix)]
        if not cases:
            raise InputError(f"{args.held_out_json}: no case whose scenario starts with {args.prefix!r}")
        rows = [
            unit_parts(
                c["scenario"], config.load(c["scenario"]), c["step_time_s"], c["step_time_s"] * (1.0 + c["error"])
            )
            for c in cases
        ]
    except (InputError, ScenarioError) as err:
        print(f"fsdp_unit_margin: {err}", file=sys.stderr)
        return 2
    print(
        f"{'row':24} {'err':>6} {'m':>3} {'T_f ms':>7} {'T_b ms':>7} {'G ms':>6} {'R ms':>6} {'fwd x':>6} "
        f"{'bwd x':>6} {'opt ms':>7} {'coll s':>7} {'missing s':>9} {'k':>6}"
    )
    for u in sorted(rows, key=lambda r: min(r.fwd_margin, r.bwd_margin)):
        k = stretch_needed(u, args.baseline)
        print(
            f"{u.name:24} {100 * (u.published_s / u.simulated_s - 1):+5.1f}% {u.microbatches:3d} "
            f"{1e3 * u.fwd_s:7.2f} {1e3 * u.bwd_s:7.2f} {1e3 * u.gather_s:6.2f} {1e3 * u.scatter_s:6.2f} "
            f"{u.fwd_margin:6.2f} {u.bwd_margin:6.2f} {1e3 * u.optimizer_s:7.1f} {u.collectives_s:7.3f} "
            f"{u.published_s - u.simulated_s:9.3f} {'-' if k is None else f'{k:6.2f}':>6}"
        )
    if args.siblings:
        print_siblings()
    if args.trend:
        for series, members in trend_rows(cases).items():
            print("\n".join(trend_table(series, members)))
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))  # Ctrl-C: one line, exit 130
