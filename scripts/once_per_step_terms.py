"""Is the held-out fast trend a missing once-per-step cost? Series by series (issue 15; docs/calibration/round-35.md
"Round 35: a missing once-per-step cost? (a study)"). Analysis only: nothing here moves a constant.

    PYTHONPATH=. python scripts/once_per_step_terms.py CAL.json HO.json [--csv OUT]

The two JSON files are ``simcluster validate --json`` and ``simcluster validate --held-out --json`` outputs. Each row's
simulated step is the JSON's ``step_time_s``; its published step is that step x simulated / published TFLOP/s (one
FLOP count a step for both). A **series** is one recipe at several GPU counts or microbatch counts: the rows of both
files sharing ``studies.trends``' key (source, metric, model, per-replica layout), kept when at least two of them
differ in GPU count or in microbatches a replica m = global batch / (dp x micro batch). Unlike a trend series, rows
of one recipe at different global batches stay together (MegaScale's batch-256 row beside its batch-768 curve): a
once-per-step cost does not depend on the batch. Where two or more global batches each hold such rows (MegaScale's
768 and 6144 curves), each batch's rows are a series too.

Per series, with D = published - simulated (the time the model misses, seconds a step) and n rows, least squares:

- ``rate``: published = a x simulated (a per-run constant error; n - 1 degrees of freedom);
- ``const``: D = c (one missing cost a step, the same at every GPU count; n - 1);
- ``rate+const``: published = a x simulated + c (n - 2; needs two different m: at one m the simulated steps differ
  by communication only, and a and c trade off);
- ``c+b m``: D = c + b x m (a per-microbatch rate error b and a per-step cost c; n - 2; needs two different m).

Each fit's largest |residual| as a share of its row's published step. The simulated step is nearly all
per-microbatch work (the optimizer step and the exposed data-parallel reduction are ~0.1-4% of it), so
``rate+const`` and ``c+b m`` ask the same question in two units.

Then two tables. Where m varies: ``c+b m``'s c (s, share of the largest-GPU row's published step, and in that row's
microbatch slots: its simulated step / (m + (pp - 1) / vp); per pipeline hop), b per slot, and c per unit of each
candidate driver: parameters per GPU (the busiest pipeline stage's, routed experts included), parameters the
optimizer updates per GPU (/ dp under ZeRO >= 1), pipeline stages, gradient bytes per GPU (the reduce dtype's); with
Spearman's rho of c with each driver (``DRIVERS``; a recipe split into batch curves counted by its curves). Where m
is fixed a constant makes no trend, so: D's change per doubling of GPUs, the trend error (1 + error last) / (1 +
error first) - 1, and beside it ``straggler_trend``, what the sourced per-GPU speed spread alone would make.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys

import numpy as np
import residuals
from accuracy_tables import InputError, _refuse_overwriting_inputs, load_cases

from simcluster.core import script_entry
from simcluster.core.token_routing import expected_max_normal
from simcluster.parallel import memory
from simcluster.spec import config, stack, variability
from simcluster.studies import trends

FITS = ("rate", "const", "rate+const", "c+b m")
# the fields of a validate --json case this script reads (studies.trends keys series by family and metric; the
# published step is the simulated one x simulated / published TFLOP/s), checked by accuracy_tables.load_cases
CASE_FIELDS = {"scenario": str, "family": str, "step_time_s": (int, float), "published_tflops": (int, float),
               "simulated_tflops": (int, float)}


def row_of(case: dict, scenario: config.Scenario) -> dict:
    """One validated case (``validate --json``) with its scenario: steps, m and the driver facts."""
    p, t, model = scenario.parallelism, scenario.training, scenario.model
    sim = float(case["step_time_s"])
    stages = [memory.stage_params(model, p.tp, p.pp, s, p.virtual_stages)
              + memory.stage_expert_params(model, p.pp, s, p.ep, p.etp, p.virtual_stages) for s in range(p.pp)]
    params = max(stages)
    return {"scenario": case["scenario"], "gpus": scenario.cluster.gpus, "dp": p.dp, "pp": p.pp,
            "vp": p.virtual_stages, "tp": p.tp, "m": scenario.microbatches,
            "batch": t.global_batch_size, "seq": t.seq_len, "gpu": scenario.cluster.gpu.name,
            "stack": stack.family(scenario), "zero": p.zero_stage,
            "params B": params / 1e9, "grad GB": params * memory.BYTES_PER_ELEMENT[p.grad_reduce_dtype] / 1e9,
            "overlap": bool(p.overlap_grad_reduce), "opt params B": params / (p.dp if p.zero_stage >= 1 else 1) / 1e9,
            "bubble slots": (p.pp - 1) / p.virtual_stages, "sim": sim,
            "published": sim * float(case["simulated_tflops"]) / float(case["published_tflops"])}


def fit(rows: list[dict], form: str) -> dict | None:
    """Least squares of one form (module doc) over a series' rows: {a, c, b, residual, dof}; None when the form is
    not identifiable on these rows (fewer rows than unknowns, or a column without spread)."""
    sim = np.array([r["sim"] for r in rows])
    pub = np.array([r["published"] for r in rows])
    m = np.array([float(r["m"]) for r in rows])
    one = np.ones(len(rows))
    x, y, names = {"rate": ([sim], pub, ("a",)), "const": ([one], pub - sim, ("c",)),
                   "rate+const": ([sim, one], pub, ("a", "c")), "c+b m": ([one, m], pub - sim, ("c", "b"))}[form]
    x = np.column_stack(x)
    if form == "rate+const" and len(set(m)) < 2:
        return None   # at one m the simulated steps differ by communication only: a and c trade off
    if len(rows) < x.shape[1] or np.linalg.matrix_rank(x, tol=1e-9 * float(np.max(np.abs(x)))) < x.shape[1]:
        return None
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    predicted = x @ coef + (sim if form in ("const", "c+b m") else 0.0)
    out = {"a": 1.0, "c": 0.0, "b": 0.0, **dict(zip(names, (float(v) for v in coef), strict=True))}
    out["residual"] = float(np.max(np.abs(predicted - pub) / pub))
    out["dof"] = len(rows) - x.shape[1]
    return out


def series_of(cases: list[dict], load=config.load) -> list[list[dict]]:
    """The series (module doc) of the cases, each its rows sorted by GPU count then m."""
    runs, _ = trends.runs_of(cases, load)
    by_name = {c["scenario"]: c for c in cases}
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        case = by_name[run.scenario]
        groups.setdefault(run.key(), []).append({**row_of(case, load(run.scenario)),
                                                 "label": f"{run.family}/{run.model}"})
    out = []
    for rows in groups.values():
        if len({(r["gpus"], r["m"]) for r in rows}) < 2:
            continue
        out.append(sorted(rows, key=lambda r: (r["gpus"], r["m"])))
        batches: dict[int, list[dict]] = {}
        for r in rows:
            batches.setdefault(r["batch"], []).append(r)
        curves = [b for b in batches.values() if len({(r["gpus"], r["m"]) for r in b}) >= 2]
        if len(curves) >= 2:   # several strong-scaling curves of one recipe: each on its own too
            out += [sorted(({**r, "label": f"{r['label']} batch {r['batch']}"} for r in b),
                           key=lambda r: (r["gpus"], r["m"])) for b in curves]
    return out


def straggler_trend(gpus_first: int, gpus_last: int, cv: float | None = None) -> float:
    """The trend error a persistent per-GPU speed spread alone would make from ``gpus_first`` to ``gpus_last`` GPUs
    (every GPU waits for the slowest once a step or oftener): exp(cv x (E[max of N1] - E[max of N0])) - 1, cv the
    sourced ``gpu_speed_cv`` of data/variability.yaml (round 34: about 1 point a decade)."""
    cv = variability.measured()["gpu_speed_cv"] if cv is None else cv
    return math.exp(cv * (expected_max_normal(gpus_last) - expected_max_normal(gpus_first))) - 1


def series_summary(rows: list[dict]) -> dict:
    """A series' fits and its drivers (the busiest row's: the largest GPU count)."""
    last = rows[-1]
    fits = {form: fit(rows, form) for form in FITS}
    c = fits["const"]["c"]
    # one microbatch slot of the busiest row: its simulated step over m + (pp - 1) / vp slots (1F1B, interleaved)
    slot = last["sim"] / (last["m"] + last["bubble slots"])
    c_m = fits["c+b m"]["c"] if fits["c+b m"] else float("nan")
    curve = " batch " in rows[0]["label"]
    return {"series": f"{rows[0]['label']} ({rows[0]['scenario']})", "rows": len(rows), "fits": fits, "c": c,
            "short": rows[0]["scenario"] + (f" (batch {rows[0]['batch']})" if curve else ""), "curve": curve,
            "c of c+b m": c_m, "slot s": slot, "last published": last["published"], "c+b m slots": c_m / slot,
            "bubble slots": last["bubble slots"],
            "verdict": verdict(rows, fits),
            "trend": (rows[-1]["published"] / rows[-1]["sim"]) / (rows[0]["published"] / rows[0]["sim"]) - 1,
            "straggler": straggler_trend(rows[0]["gpus"], rows[-1]["gpus"]),
            "c share": c / float(np.mean([r["published"] for r in rows])),
            "D": [r["published"] - r["sim"] for r in rows], "m": [r["m"] for r in rows],
            "gpus": [r["gpus"] for r in rows], "error": [r["published"] / r["sim"] - 1 for r in rows],
            **{k: last[k] for k in ("params B", "grad GB", "overlap", "opt params B", "pp", "vp", "dp", "tp", "stack",
                                    "gpu", "seq", "zero")}}


def verdict(rows: list[dict], fits: dict) -> str:
    """Which form the series' rows favour: at one m, how D moves first to last (a constant cannot make a trend
    there); with m varying, the better of ``rate`` and ``const`` by max residual, and ``c+b m``'s c."""
    if fits["c+b m"] is None:
        first, last = rows[0]["published"] - rows[0]["sim"], rows[-1]["published"] - rows[-1]["sim"]
        return f"one m: D {first:+.3f} -> {last:+.3f} s"
    better = "const" if fits["const"]["residual"] < fits["rate"]["residual"] else "rate"
    return f"m varies: {better} fits better"


spearman = residuals.spearman   # ties averaged; NaN with fewer than 5 finite pairs or no spread


def report(summaries: list[dict]) -> list[str]:
    lines = ["== per series: D = published - simulated step (s) per row; fits (coefficients, max |residual| / "
             "published, degrees of freedom)"]
    for s in summaries:
        lines.append(f"-- {s['series']} ({s['rows']} rows; {s['stack']}, {s['gpu']}, tp {s['tp']} pp {s['pp']} "
                     f"vp {s['vp']}, seq {s['seq']})")
        lines.append("   gpus " + " ".join(f"{g:>7}" for g in s["gpus"]))
        lines.append("   m    " + " ".join(f"{m:>7}" for m in s["m"]))
        lines.append("   err  " + " ".join(f"{e:>+7.1%}" for e in s["error"]))
        lines.append("   D s  " + " ".join(f"{d:>+7.3f}" for d in s["D"]))
        lines.append(f"   verdict: {s['verdict']}; one microbatch slot {s['slot s']:.4f} s, bubble"
                     f" {s['bubble slots']:.2f} slots, c+b m's c {s['c+b m slots']:+.1f} slots")
        for form in FITS:
            f = s["fits"][form]
            if f is None:
                lines.append(f"   {form:<10} not identifiable")
                continue
            lines.append(f"   {form:<10} a {f['a']:.4f}  c {f['c']:+9.4f} s  b {f['b']:+.5f} s/mb  "
                         f"max resid {f['residual']:6.2%}  dof {f['dof']}")
    varying = [s for s in summaries if s["fits"]["c+b m"] is not None]
    fixed = [s for s in summaries if s["fits"]["c+b m"] is None]
    recipes = [s for s in summaries if not s["curve"]]
    rising = sum(s["error"][-1] > s["error"][0] for s in recipes)
    lines += ["", f"== the error rises first to last (by GPUs, then m) in {rising} of {len(recipes)} recipes"
              " (one batch's curve of a recipe not counted apart)",
              "", f"== m varies ({len(varying)} series): c and b of D = c + b m against candidate drivers",
              f"   {'series (first row)':<50} {'dof':>3} {'resid':>6} {'c s':>7} {'c/step':>7} {'b/slot':>7}"
              f" {'c slots':>7} {'(p-1)/v':>7} {'c/(p-1)':>7} {'par/GPU B':>9} {'opt B':>6} {'pp':>3} {'vp':>3}"
              f" {'dp':>5} {'ms/Bpar':>7} {'ms/stage':>8} {'grad GB':>7} {'s/GB':>6} {'trend':>6} {'straggler':>9}"
              "  stack, gpu"]
    for s in varying:
        f = s["fits"]["c+b m"]
        lines.append(f"   {s['short']:<50} {f['dof']:>3} {f['residual']:>6.2%} {f['c']:>+7.3f}"
                     f" {f['c'] / s['last published']:>+7.1%} {f['b'] / s['slot s']:>+7.1%} {s['c+b m slots']:>+7.1f}"
                     f" {s['bubble slots']:>7.2f} {s['c+b m slots'] / max(s['pp'] - 1, 1):>+7.2f}"
                     f" {s['params B']:>9.3f} {s['opt params B']:>6.3f} {s['pp']:>3} {s['vp']:>3} {s['dp']:>5}"
                     f" {f['c'] * 1e3 / s['params B']:>+7.0f} {f['c'] * 1e3 / s['pp']:>+8.0f}"
                     f" {s['grad GB']:>7.2f} {f['c'] / s['grad GB']:>+6.3f} {s['trend']:>+6.1%} {s['straggler']:>+9.1%}"
                     f"  {s['stack']}, {s['gpu']}"
                     f"{', DP overlapped' if s['overlap'] else ''}")
    # each recipe once: a recipe with several curves by its curves (their fits are the better), not as a whole
    split = {s["series"].split(" batch ")[0] for s in varying if s["curve"]}
    ranked = [s for s in varying if s["curve"] or s["series"].split(" (")[0] not in split]
    cs = [s["fits"]["c+b m"]["c"] for s in ranked]
    lines.append(f"   Spearman's rho of c over {len(ranked)} series with: " + ", ".join(
        f"{label} {spearman([key(s) for s in ranked], cs):+.2f}" for label, key in DRIVERS))
    lines += ["", f"== one m ({len(fixed)} series): a constant cannot make a trend; D's change per doubling of GPUs",
              f"   {'series (first row)':<50} {'gpus':>11} {'D first':>8} {'D last':>8} {'ms/doubling':>11}"
              f" {'of step':>7} {'err first':>9} {'err last':>8} {'trend':>6} {'straggler':>9}  stack, gpu"]
    for s in fixed:
        doublings = math.log2(s["gpus"][-1] / s["gpus"][0])
        per = (s["D"][-1] - s["D"][0]) / doublings
        lines.append(f"   {s['short']:<50} {s['gpus'][0]:>5}-{s['gpus'][-1]:<5} {s['D'][0]:>+8.3f}"
                     f" {s['D'][-1]:>+8.3f} {per * 1e3:>+11.1f} {per / s['last published']:>+7.2%}"
                     f" {s['error'][0]:>+9.1%} {s['error'][-1]:>+8.1%} {s['trend']:>+6.1%} {s['straggler']:>+9.1%}"
                     f"  {s['stack']}, {s['gpu']}")
    return lines


# the candidate drivers of c (Spearman's rho across the series where m varies)
DRIVERS = (("params/GPU", lambda s: s["params B"]), ("optimizer params/GPU", lambda s: s["opt params B"]),
           ("pp", lambda s: s["pp"]), ("pp x vp", lambda s: s["pp"] * s["vp"]),
           ("(pp-1)/vp", lambda s: s["bubble slots"]), ("dp", lambda s: s["dp"]), ("seq", lambda s: s["seq"]),
           ("gradient GB/GPU x [dp > 1]", lambda s: s["grad GB"] * (s["dp"] > 1)))


def main(argv: list[str] | None = None) -> int:
    parser = script_entry.Parser(description=__doc__, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cal", help="validate --json output")
    parser.add_argument("held_out", help="validate --held-out --json output")
    parser.add_argument("--csv", help="write one line a series (fits and drivers) here")
    args = parser.parse_args(argv)
    cases = []
    for label, path in (("cal", args.cal), ("held_out", args.held_out)):
        try:   # accuracy_tables' reader: a regular file, JSON, each case's fields present, finite and positive
            cases += load_cases(path, CASE_FIELDS)
        except InputError as err:
            parser.error(f"{label}: {err}")
    try:   # --csv CAL.json would replace the validate output with the table
        _refuse_overwriting_inputs((args.cal, args.held_out), csv=args.csv)
    except InputError as err:
        parser.error(str(err))
    summaries = [series_summary(rows) for rows in series_of(cases)]
    print("\n".join(report(summaries)))
    if args.csv:
        try:
            out = open(args.csv, "w", newline="")
        except OSError as exc:
            parser.error(f"--csv: cannot write {args.csv}: {exc.strerror}")
        with out:
            writer = csv.writer(out)
            writer.writerow(["series", "rows", *(f"{f} {k}" for f in FITS for k in ("a", "c", "b", "residual",
                                                                                     "dof")),
                             "c share", "params B", "opt params B", "pp", "vp", "dp", "stack", "gpu", "seq"])
            for s in summaries:
                writer.writerow([s["series"], s["rows"],
                                 *(("" if s["fits"][f] is None else s["fits"][f][k]) for f in FITS
                                   for k in ("a", "c", "b", "residual", "dof")),
                                 s["c share"], s["params B"], s["opt params B"], s["pp"], s["vp"], s["dp"],
                                 s["stack"], s["gpu"], s["seq"]])
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
