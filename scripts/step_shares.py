"""What the signed error tracks on today's model, by the parts of each row's simulated step (issue 15;
docs/calibration/round-30.md "Round 30: what the held-out error tracks, by the parts of the step"). Analysis only:
nothing here moves a constant.

    PYTHONPATH=. python scripts/step_shares.py CAL.json HO.json [--csv OUT] [--plot PNG]
                                               [--cache /tmp/step_shares_cache.json] [--limit-s 20]
                                               [--only SUBSTR,...] [--budget]

The two JSON files are ``simcluster validate --json`` and ``simcluster validate --held-out --json`` outputs; each
row's signed error (published step / simulated step - 1: positive = simulated too fast) is read from them, never
recomputed. Each bundled scenario is simulated once, in this process, one after another (cached by name in
``--cache``); a row whose simulation takes over ``--limit-s`` seconds is skipped and named.

Per row (``step_parts``), a partition of the simulated step (engine summary: step = compute + exposed
communication + bubble) with the compute split by the plan's streams (``kernels.StreamTime``) over the blocks one
rank runs (m microbatches x its chunks, forward and backward):

- ``tc``: the compute-bound (tensor-core: GEMM, attention) kernels' roofline time (``clock_s``);
- ``hbm``: the HBM-bound kernels' roofline time (``device_s - clock_s``);
- ``gap``: the fitted gap per kernel (``kernel_gap_s``; queued kernels at ``queued_gap_s``), fill and host-sync
  stalls included (``device_bound_s - device_s``);
- ``host``: what the host's dispatch adds beyond the device side in host-bound blocks;
- ``pipe``: the fitted host time per pipeline step (pp > 1), on every block;
- ``interference``: what overlapped collectives take from the compute (summary ``comm_interference_s``);
- ``other``: the rest of compute_s (optimizer step, block terms the streams do not carry);
- ``exp_tp``, ``exp_cp``, ``exp_pp``, ``exp_dp``, ``exp_ep``: exposed communication (``exposed_comm_by_parallelism_s``);
- ``bubble``: the pipeline bubble.

Their shares (``*_share``) add up to 1. Besides: the overlapped tensor-parallel collectives' time alone on the
fabric (``overlap_tp_share``, 0 without ``tp_comm_overlap``), host-bound share (of the rank's blocks' time, the part
in blocks whose host side is the longer), mean kernel duration, attention / GEMM / memory shares of one dense layer
(``residuals.op_shares``), the critical-path gap and pipeline-step shares of round 17 (``residuals``), GPU, GPU
generation, precision, stack family (``spec.stack``), validation source, micro batch, microbatches per replica.

``--only`` keeps the rows whose scenario name contains one of the comma-separated substrings (only those are
simulated). ``--budget`` prints, instead of the analysis, what each row's published step leaves for the fitted
terms (``fitted_allowance``; docs/calibration/round-31.md "Round 31: the Mixtral rows against what their published steps
leave"): the published step less the tensor-core roofline and every part that is not fitted (HBM-bound kernels, the
host's measured dispatch, interference, ``other``, exposed communication, bubble), against the fitted gap and
pipeline-step terms the model charges; their ratio is the share of the calibrated fitted terms the published step
has room for if every other part is right (1: as calibrated; below 1: less room; negative: slow with no fitted term).

Analysis: Spearman's rho of the signed error with each share on all rows, dense rows, and within H100, A100 and
Blackwell separately, with the within-stack-family rho (``error_features.within_family_rho``); 1-3 feature
least-squares fits scored leave-one-family-out (``error_features.leave_one_family_out``) on all rows and on the dense
rows.
"""

from __future__ import annotations

import itertools
import json
import math
import signal
import sys
import time
from pathlib import Path

import error_features
import numpy as np
import residuals
from accuracy_tables import InputError

from simcluster.core import outputs, script_entry
from simcluster.core.errors import ScenarioError
from simcluster.engine.simulation import Simulation
from simcluster.spec import config
from simcluster.spec.stack import family as stack_family
from simcluster.workload import kernels

# the partition of the step (module doc), in this order
FITTED = ("gap", "pipe")  # the parts that stand on the two fitted numbers (efficiency.yaml host_overhead)
PARTS = (
    "tc",
    "hbm",
    "gap",
    "host",
    "pipe",
    "interference",
    "other",
    "exp_tp",
    "exp_cp",
    "exp_pp",
    "exp_dp",
    "exp_ep",
    "bubble",
)
# numeric features ranked and fitted
NUMERIC = (
    *(f"{p}_share" for p in PARTS),
    "exposed_share",
    "overlap_tp_share",
    "host_bound_share",
    "mean_kernel_us",
    "attention_share",
    "gemm_share",
    "memory_share",
    "crit_gap_share",
    "crit_pipe_share",
    "gpus",
    "micro_batch",
    "microbatches",
    "fp8",
    "moe",
    "generation",
)
LOG_SCALED = {"mean_kernel_us", "gpus", "micro_batch", "microbatches"}
CSV_KEYS = ("scenario", "set", "gpu", "gpu_gen", "precision", "stack", "release", "error", *NUMERIC)
# the subsets the rho is taken on
SUBSETS = {
    "all": lambda r: True,
    "dense": lambda r: not r["moe"],
    "H100": lambda r: r["gpu"] == "h100-sxm",
    "A100": lambda r: r["gpu_gen"] == "Ampere",
    "Blackwell": lambda r: r["gpu_gen"] == "Blackwell",
}
TOP = 8  # features entering the 1-3 feature fits, by |rho| on all rows


def step_parts(scenario, sim: Simulation, summary: dict) -> dict:
    """The partition of one simulated step (seconds, module doc) and the per-row quantities beside it."""
    plan, host = sim.plan, kernels.host_model()
    pp, m = plan.layout.pp, plan.microbatches
    step = float(summary["step_time_s"])
    parts = dict.fromkeys(PARTS, 0.0)
    blocks_s = host_bound_s = kernels_run = device_s = overlap_tp_s = 0.0
    for chunk in plan.chunks:  # every chunk's blocks, m times; a rank holds 1 / pp of the chunks
        for stream, block_s, tp_s in (
            (chunk.forward_stream, chunk.forward_compute_s, chunk.forward_tp_comm_s),
            (chunk.backward_stream, chunk.backward_compute_s, chunk.backward_tp_comm_s),
        ):
            w = m / pp
            device, hosted = stream.device_bound_s(host), stream.host_bound_s(host)
            parts["tc"] += w * stream.clock_s
            parts["hbm"] += w * (stream.device_s - stream.clock_s)
            parts["gap"] += w * (device - stream.device_s)
            parts["host"] += w * max(0.0, hosted - device)
            pipe = host.pipeline_step_s if pp > 1 else 0.0
            parts["pipe"] += w * pipe
            parts["other"] += w * (block_s - stream.elapsed_s(host) - pipe)
            blocks_s += w * block_s
            host_bound_s += w * block_s * (hosted > device)
            kernels_run += w * stream.kernels
            device_s += w * stream.device_s
            overlap_tp_s += w * tp_s * bool(scenario.parallelism.tp_comm_overlap)
    compute = float(summary["compute_s"])
    parts["interference"] = float(summary["comm_interference_s"])
    parts["other"] += compute - sum(parts[k] for k in ("tc", "hbm", "gap", "host", "pipe", "interference", "other"))
    for axis, seconds in summary["exposed_comm_by_parallelism_s"].items():
        parts[f"exp_{axis}"] = float(seconds)
    parts["bubble"] = float(summary["pipeline_bubble_s"])
    out = {f"{k}_share": v / step for k, v in parts.items()}
    t = scenario.training
    out.update(
        {
            "step_s": step,
            "parts_s": parts,
            "exposed_share": float(summary["exposed_comm_s"]) / step,
            "overlap_tp_share": overlap_tp_s / step,
            "host_bound_share": host_bound_s / blocks_s if blocks_s else 0.0,
            "mean_kernel_us": device_s / kernels_run * 1e6 if kernels_run else math.nan,
            "gpu": scenario.cluster.gpu.name,
            "precision": t.precision,
            "gpus": scenario.cluster.gpus,
            "micro_batch": t.micro_batch_size,
            "microbatches": m,
            "fp8": float(t.precision == "fp8"),
            "moe": float(scenario.model.moe is not None),
            "stack": stack_family(scenario),
            "generation": float(scenario.cluster.gpu.nvlink_generation),
            "gpu_gen": error_features.GENERATION.get(scenario.cluster.gpu.nvlink_generation, "other"),
        }
    )
    crit = residuals._row_features(scenario, sim, summary)  # round 17's critical-path shares and layer op shares
    out.update(
        {
            "crit_gap_share": crit["gap_share"],
            "crit_pipe_share": crit["pipe_share"],
            **{k: crit[k] for k in ("attention_share", "gemm_share", "memory_share")},
        }
    )
    return out


def fitted_allowance(row: dict) -> dict:
    """What a row's published step leaves for the fitted terms (module doc, ``--budget``), in seconds: the published
    step (the simulated one times 1 + signed error), the tensor-core roofline, the sourced rest (every part but
    ``tc`` and ``FITTED``), the fitted terms charged, the allowance (published - tc - sourced) and its ratio to the
    fitted terms charged."""
    parts, step = row["parts_s"], row["step_s"]
    published = step * (1.0 + row["error"])
    fitted = sum(parts[k] for k in FITTED)
    sourced = step - parts["tc"] - fitted
    allowance = published - parts["tc"] - sourced
    return {
        "published_s": published,
        "step_s": step,
        "tc_s": parts["tc"],
        "sourced_s": sourced,
        "fitted_s": fitted,
        "allowance_s": allowance,
        "ratio": allowance / fitted if fitted else math.nan,
    }


def budget_report(rows: list[dict]) -> list[str]:
    """``fitted_allowance`` of every row, one line each, largest ratio first."""
    lines = [
        f"{'scenario':46s} {'error':>7s} {'published':>9s} {'simulated':>9s} {'tc':>8s} {'sourced':>8s} "
        f"{'fitted':>7s} {'room':>8s} {'room/fitted':>11s}"
    ]
    for row in sorted(rows, key=lambda r: -np.nan_to_num(fitted_allowance(r)["ratio"], nan=-np.inf)):
        b = fitted_allowance(row)
        lines.append(
            f"{row['scenario']:46s} {100 * row['error']:+6.1f}% {b['published_s']:9.3f} {b['step_s']:9.3f} "
            f"{b['tc_s']:8.3f} {b['sourced_s']:8.3f} {b['fitted_s']:7.3f} {b['allowance_s']:8.3f} "
            f"{b['ratio']:11.2f}"
        )
    return lines


class TooSlow(Exception):
    pass


def _alarm(signum, frame):
    raise TooSlow


def simulate(name: str, limit_s: float) -> dict | None:
    """``step_parts`` of the bundled scenario ``name`` (no memory check), None past ``limit_s`` seconds."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        scenario = config.load(name)
        sim = Simulation(scenario, check_memory=False)
        summary = sim.run(None).summary
        return step_parts(scenario, sim, summary)
    except TooSlow:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def load(
    cal_json: Path, ho_json: Path, cache: Path, limit_s: float, only: tuple[str, ...] = ()
) -> tuple[list[dict], list[str]]:
    """Every row with its error and ``step_parts`` (with ``only``, the rows whose name contains one of its
    substrings); and the scenarios skipped as too slow."""
    for path in (cal_json, ho_json):  # both before simulating (round 32: the second was read after the first's rows)
        error_features.check_cases(path)
    cached = residuals.read_cache(cache, (cal_json, ho_json))
    rows, skipped = [], []
    for label, path in (("cal", cal_json), ("ho", ho_json)):
        for case in json.loads(path.read_text())["cases"]:
            name = case["scenario"]
            if only and not any(part in name for part in only):
                continue
            if name not in cached:
                started = time.perf_counter()
                cached[name] = simulate(name, limit_s)
                print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
                outputs.write_text(cache, json.dumps(cached))  # atomic: a Ctrl-C leaves the last whole cache
            if cached[name] is None:
                skipped.append(name)
                continue
            row = {"scenario": name, "set": label, "release": case["source"], "error": case["error"], **cached[name]}
            if abs(row["step_s"] - case["step_time_s"]) > 1e-6 * case["step_time_s"]:
                print(
                    f"warning: {name} simulates {row['step_s']:.4f} s, the JSON says {case['step_time_s']:.4f} s "
                    "(a different model version)",
                    file=sys.stderr,
                )
            rows.append(row)
    return rows, skipped


# ---- analysis on plain rows ----


def rho_table(rows: list[dict], features: tuple[str, ...] = NUMERIC) -> list[dict]:
    """Per feature: Spearman rho with the signed error on each subset (``SUBSETS``) and within stack families;
    strongest on all rows first."""
    out = []
    for key in features:
        entry = {"feature": key}
        for label, keep in SUBSETS.items():
            part = [r for r in rows if keep(r)]
            entry[label] = residuals.spearman(residuals.column(part, key), residuals.column(part, "error"))
        entry["within"], entry["families"], entry["agree"] = error_features.within_family_rho(rows, key)
        out.append(entry)
    return sorted(out, key=lambda c: -abs(np.nan_to_num(c["all"])))


def fits(rows: list[dict], ranked: list[dict], top: int = TOP) -> list[dict]:
    """Leave-one-family-out fits (by stack family) of every 1-3 feature set among the ``top`` ranked, best first."""
    names = [c["feature"] for c in ranked[:top]]
    sets = [s for k in (1, 2, 3) for s in itertools.combinations(names, k)]
    found = [error_features.leave_one_family_out(rows, s, log=LOG_SCALED) for s in sets]
    return sorted(found, key=lambda f: f["lofo"])


def _f(x: float) -> str:
    return "  nan" if not np.isfinite(x) else f"{x:+.2f}"


def report(rows: list[dict], skipped: list[str]) -> list[str]:
    err = residuals.column(rows, "error")
    lines = [
        f"{len(rows)} rows ({sum(r['set'] == 'cal' for r in rows)} calibration, "
        f"{sum(r['set'] == 'ho' for r in rows)} held-out); skipped (> limit): {', '.join(skipped) or 'none'}",
        f"signed error median {np.median(err):+.1%}, median |error| {np.median(np.abs(err)):.1%}",
        "",
        "median share of the step (all rows / dense / MoE):",
    ]
    for key in PARTS:
        values = [
            np.median(residuals.column([r for r in rows if keep(r)], f"{key}_share"))
            if any(keep(r) for r in rows)
            else math.nan
            for keep in (lambda r: True, SUBSETS["dense"], lambda r: r["moe"])
        ]
        lines.append(f"  {key:13s} " + "  ".join(f"{100 * v:5.1f}%" for v in values))
    ranked = rho_table(rows)
    counts = {label: sum(keep(r) for r in rows) for label, keep in SUBSETS.items()}
    lines += [
        "",
        "Spearman rho of the signed error with each quantity (n: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + "; within: n-weighted rho inside stack families)",
        f"  {'feature':18s} " + " ".join(f"{k:>9s}" for k in SUBSETS) + "   within (same sign)",
    ]
    for c in ranked:
        lines.append(
            f"  {c['feature']:18s} "
            + " ".join(f"{_f(c[k]):>9s}" for k in SUBSETS)
            + f"   {_f(c['within'])} ({c['agree']}/{c['families']})"
        )
    for label, keep in (("all rows", SUBSETS["all"]), ("dense rows", SUBSETS["dense"])):
        part = [r for r in rows if keep(r)]
        found = fits(part, rho_table(part))
        base = found[0]["lofo_baseline"] if found else math.nan
        lines += [
            "",
            f"leave-one-stack-family-out fits, {label} ({len(part)}): median |left-out residual| "
            f"(intercept only {base:.1%}); coefficients: error per standard deviation",
        ]
        for f in found[:8]:
            coef = ", ".join(f"{k} {100 * c:+.1f}" for k, c in zip(f["keys"], f["coef"][1:], strict=True))
            lines.append(f"  {f['lofo']:.1%} (in sample {f['in_sample']:.1%}, n {f['rows']}): {coef}")
    return lines


def write_csv(rows: list[dict], path: Path) -> None:
    residuals.write_csv(rows, path, CSV_KEYS)


def plot(rows: list[dict], features: list[str], path: Path) -> None:
    """Signed error against each feature, coloured by GPU generation; filled: calibration, hollow: held-out."""
    from matplotlib.figure import Figure

    colours = {"Ampere": "C0", "Hopper": "C1", "Blackwell": "C2"}
    fig = Figure(figsize=(4.2 * len(features), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(features)))
    for ax, key in zip(axes, features, strict=True):
        for r in rows:
            colour = colours.get(r["gpu_gen"], "k")
            ax.scatter(
                r[key],
                100 * r["error"],
                s=22,
                marker="o" if r["set"] == "cal" else ("^" if r["moe"] else "s"),
                color=colour,
                facecolors=colour if r["set"] == "cal" else "none",
                linewidths=1.0,
            )
        rho = residuals.spearman(residuals.column(rows, key), residuals.column(rows, "error"))
        ax.set_title(f"{key}: rho {rho:+.2f}", fontsize=9)
        ax.axhline(0, color="0.5", lw=0.8)
        if key in LOG_SCALED:
            ax.set_xscale("log")
        ax.set_ylabel("signed error (%): + simulated fast")
    handles = [axes[0].scatter([], [], color=c, label=g) for g, c in colours.items()]
    handles += [
        axes[0].scatter([], [], marker="o", color="k", label="calibration"),
        axes[0].scatter([], [], marker="s", facecolors="none", edgecolors="k", label="held-out dense"),
        axes[0].scatter([], [], marker="^", facecolors="none", edgecolors="k", label="held-out MoE"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=6, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str]) -> int:
    parser = error_features.residual_parser(__doc__, 3, Path("/tmp/step_shares_cache.json"))
    parser.add_argument("--limit-s", type=float, default=20.0, help="skip a row whose simulation takes longer")
    parser.add_argument("--only", help="comma-separated substrings: keep rows whose name has one")
    parser.add_argument("--budget", action="store_true", help="what each published step leaves for the fitted terms")
    args = parser.parse_args(argv)
    if not 0 < args.limit_s < 1e6:  # NaN and inf too: setitimer raised on them (round 31)
        print(f"error: --limit-s: expected seconds in (0, 1e6), got {args.limit_s}", file=sys.stderr)
        return 2
    only = tuple(part for part in (args.only or "").split(",") if part)
    if args.only is not None and not only:  # "" or ",": every row, hours of simulation nobody asked for (round 32)
        print(f"error: --only: expected comma-separated substrings of scenario names, got {args.only!r}",
              file=sys.stderr)
        return 2
    try:
        residuals.refuse_overwriting((args.cal_json, args.ho_json), csv=args.csv, plot=args.plot)
        rows, skipped = load(args.cal_json, args.ho_json, args.cache, args.limit_s, only)
    except (InputError, ScenarioError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if only and not rows:
        print(f"error: --only: no simulated row matches {args.only!r}", file=sys.stderr)
        return 2
    if args.budget:
        print("\n".join(budget_report(rows)))
        if skipped:
            print(f"skipped (> limit): {', '.join(skipped)}")
        return 0
    print("\n".join(report(rows, skipped)))
    if args.csv:
        write_csv(rows, args.csv)
    if args.plot:
        return error_features.plot_chosen(
            rows, args.plot_features, [c["feature"] for c in rho_table(rows)[:3]], NUMERIC, plot, args.plot
        )
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))  # Ctrl-C: one line, exit 130
