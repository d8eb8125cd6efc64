"""Which run features the signed error tracks, across calibration and held-out rows (issue 15;
docs/calibration/round-22.md "Round 22: what the held-out error tracks"). Analysis only: nothing here moves a constant.

    PYTHONPATH=. python scripts/error_features.py CAL.json HO.json [--csv OUT] [--plot PNG]
                                                  [--cache /tmp/error_features_cache.json]

The two JSON files are ``simcluster validate --json`` and ``simcluster validate --held-out --json`` outputs; each
row's signed error (simulated / published throughput - 1: positive = simulated too fast) is read from them. Each
bundled scenario is simulated once for the engine-side features (``residuals.features``: critical path, fitted gap
and pipeline-step shares, bubble, exposed communication per parallelism, one dense layer's op shares; cached by name
in ``--cache``). On top of those, from the scenario alone (``derived``):

- the stack family (``simcluster/spec/stack.py``), from the config, not the row's name: DeepSpeed's pipeline
  engine; Megatron-LM 2020 / 2021 (its fp16 optimizer wrapper, ``training.optimizer``); llm-foundry FSDP (ZeRO 3,
  Composer's decoupled AdamW); torchtitan (``logits_memory: torch_fp32``); flash-attention's GPT (PyTorch AdamW
  outside Megatron-Core); Megatron-LM 2022-23 (Megatron-Core code paths with its unfused attention, A100);
  Megatron-Core / NeMo with Transformer Engine 1.x or 2.x (``parallelism.te_version``). The finer release is the
  validation source;
- the GPU generation (NVLink generation: 3 Ampere, 4 Hopper, 5 Blackwell), precision, dense / MoE;
- the year of the run, read from the validation source (a year in its key, NeMo's container YY.MM, else the first
  year its description names; NaN when it names none);
- per-GPU GEMM shape: rows (tokens a microbatch: sequence x micro batch / cp), hidden / tp, ffn / tp (the expert ffn
  for MoE), and the MLP up-projection's arithmetic intensity 2MNK / (bytes (MK + KN + MN)) at the precision's
  operand bytes (1 fp8, 2 otherwise);
- the pipeline's analytic bubble fraction (pp - 1) / (m v) beside the simulated bubble share;
- model size (parameters; active parameters for MoE);
- how close the plan's busiest block comes to host-bound (``host_ratio``: the largest host side / device side of
  any chunk's forward or backward stream, ``kernels.StreamTime``; >= 1 means host-bound).

Analysis (``analyse``; every function takes plain rows, so the tests feed synthetic ones): Spearman's rho of the
signed error with each numeric feature on all rows, calibration, held-out and within stack families (the n-weighted
mean of the rho inside each family of >= ``MIN_FAMILY`` rows whose feature varies, with how many families share the
overall sign), the median signed error per bin (quantile bins whose edges never split tied values) overall and per
family, the median per level of each categorical feature, and least-squares fits of the error on 1-3 standardised
features scored leave-one-family-out (fit on every other family, predict the family left out) against the
intercept-only model under the same protocol: a feature that only separates families (a confound) does not lower
the left-out error; one that acts within families does.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from pathlib import Path

import numpy as np
import residuals
from accuracy_tables import InputError, load_cases

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.engine.simulation import Simulation
from simcluster.spec import config
from simcluster.spec.stack import family as stack_family
from simcluster.studies import validation

# GPU generation by NVLink generation (GpuSpec.nvlink_generation: A100 3, H100/H200 4, B200/GB200/GB300 5)
GENERATION = {3: "Ampere", 4: "Hopper", 5: "Blackwell"}
# operand bytes of the GEMMs per training precision (fp8 GEMMs read 1-byte operands)
OPERAND_BYTES = {"fp8": 1.0}
DEFAULT_OPERAND_BYTES = 2.0
MIN_FAMILY = 5        # rows a family needs to enter the within-family rho (spearman needs 5 pairs)
BINS = 4              # quantile bins per numeric feature
# numeric features analysed (the engine-side ones from residuals.py, then this script's); log-scaled in the fits
NUMERIC = ("stack_calibrated", "year", "generation", "fp8", "moe", "tp", "pp", "vp", "cp", "dp", "ep", "gpus",
           "micro_batch", "tokens_per_microbatch", "gemm_hidden_tp", "gemm_ffn_tp", "mlp_intensity", "microbatches",
           "bubble_fraction", "bubble_share", "kernels_per_block", "mean_kernel_us", "gap_share", "pipe_share",
           "exposed_share", "exposed_tp_share", "exposed_dp_share", "exposed_pp_share", "exposed_ep_share",
           "interference_share", "attention_share", "gemm_share", "memory_share", "params_b", "active_params_b",
           "host_ratio", "step_s")
LOG_SCALED = {"tp", "pp", "vp", "cp", "dp", "ep", "gpus", "micro_batch", "tokens_per_microbatch", "gemm_hidden_tp",
              "gemm_ffn_tp", "mlp_intensity", "microbatches", "kernels_per_block", "mean_kernel_us", "params_b",
              "active_params_b", "host_ratio", "step_s"}
CATEGORICAL = ("stack", "release", "gpu_gen", "precision", "set")
CSV_KEYS = ("scenario", "set", "stack", "release", "gpu_gen", "precision", "error", *NUMERIC)


def run_year(source: str, sources: dict[str, str]) -> float:
    """The year of a validation source: a year in its key, else NeMo's container YY.MM, else the first year its
    description names; NaN if none."""
    text = sources.get(source, "")
    for pattern, where, scale in ((r"(20[12]\d)", source, 0), (r"_(2\d)\d\d$", source, 2000),
                                  (r"container (2\d)\.\d\d", text, 2000), (r"\b(20[12]\d)\b", text, 0)):
        found = re.search(pattern, where)
        if found:
            return float(int(found.group(1)) + scale)
    return math.nan


def mlp_intensity(m: float, n: float, k: float, operand_bytes: float) -> float:
    """Arithmetic intensity (FLOP per byte) of an m x n x k GEMM reading A, B and writing C once."""
    return 2.0 * m * n * k / (operand_bytes * (m * k + k * n + m * n))


def host_ratio(scenario) -> float:
    """The largest host side / device side of any chunk's forward or backward stream in the scenario's plan (the
    plan only: no simulation)."""
    plan = Simulation(scenario, check_memory=False).plan
    return max(stream.host_bound_s() / stream.device_bound_s() for chunk in plan.chunks
               for stream in (chunk.forward_stream, chunk.backward_stream) if stream.device_bound_s() > 0)


def derived(scenario, source: str, sources: dict[str, str]) -> dict:
    """The features read from the scenario itself (see the module doc)."""
    p, t, model = scenario.parallelism, scenario.training, scenario.model
    rows = t.seq_len * t.micro_batch_size / p.cp
    ffn = model.moe.ffn_hidden if model.moe else model.ffn
    gen = scenario.cluster.gpu.nvlink_generation
    return {
        "stack": stack_family(scenario), "release": source, "year": run_year(source, sources),
        "gpu_gen": GENERATION.get(gen, f"nvlink{gen}"), "generation": float(gen),
        "gemm_hidden_tp": model.hidden / p.tp, "gemm_ffn_tp": ffn / p.tp,
        "mlp_intensity": mlp_intensity(rows, ffn / p.tp, model.hidden,
                                       OPERAND_BYTES.get(t.precision, DEFAULT_OPERAND_BYTES)),
        "params_b": model.params / 1e9, "active_params_b": model.active_params / 1e9,
        "host_ratio": host_ratio(scenario),
    }


def load(cal_json: Path, ho_json: Path, cache: Path) -> list[dict]:
    """Every row of the two outputs with the engine-side features (simulated once, cached) and ``derived``."""
    rows = residuals.load_rows(cal_json, ho_json, cache)
    sources = validation.sources()
    for row in rows:
        row.update(derived(config.load(row["scenario"]), row["source"], sources))
        row["bubble_fraction"] = (row["pp"] - 1) / (row["microbatches"] * row["vp"])
    return mark_coverage(rows)


def mark_coverage(rows: list[dict]) -> list[dict]:
    """``stack_calibrated``: 1 when the row's stack family has a calibration row (the fitted constants saw it)."""
    calibrated = {r["stack"] for r in rows if r["set"] == "cal"}
    for r in rows:
        r["stack_calibrated"] = float(r["stack"] in calibrated)
    return rows


# ---- analysis on plain rows (dicts with "error", "set", "stack" and the features) ----

column = residuals.column
spearman = residuals.spearman


def families(rows: list[dict], key: str = "stack") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out


def within_family_rho(rows: list[dict], feature: str, family_key: str = "stack") -> tuple[float, int, int]:
    """(n-weighted mean Spearman rho inside the families with >= MIN_FAMILY rows where the feature varies, families
    counted, of them with the sign of the all-rows rho)."""
    overall = spearman(column(rows, feature), column(rows, "error"))
    weighted, weights, agree, count = 0.0, 0, 0, 0
    for group in families(rows, family_key).values():
        if len(group) < MIN_FAMILY:
            continue
        rho = spearman(column(group, feature), column(group, "error"))
        if math.isnan(rho):
            continue
        weighted += len(group) * rho
        weights += len(group)
        count += 1
        agree += int(np.sign(rho) == np.sign(overall))
    return (weighted / weights if weights else math.nan), count, agree


def bin_edges(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Upper edges of up to ``bins`` quantile bins of the finite values; an edge is a value of the data, so a tied
    value always falls in one bin (fewer bins when ties leave fewer distinct edges)."""
    finite = np.sort(values[np.isfinite(values)])
    if finite.size == 0:
        return np.array([])
    edges = [finite[min(finite.size - 1, math.ceil(q * finite.size) - 1)] for q in np.arange(1, bins + 1) / bins]
    return np.unique(edges)


def bin_medians(rows: list[dict], feature: str, bins: int = BINS) -> list[tuple[str, int, float]]:
    """(label, rows, median signed error) per quantile bin of the feature (``bin_edges``; a bin is (previous edge,
    edge], the first from the minimum); rows whose feature is NaN are left out."""
    x, err = column(rows, feature), column(rows, "error")
    out, low = [], -math.inf
    for edge in bin_edges(x, bins):
        inside = np.isfinite(x) & (x > low) & (x <= edge)
        first = x[inside].min()
        label = f"{first:.4g}" if first == edge else f"{first:.4g}..{edge:.4g}"
        out.append((label, int(inside.sum()), float(np.median(err[inside]))))
        low = edge
    return out


def level_medians(rows: list[dict], key: str) -> list[tuple[str, int, float, float]]:
    """(level, rows, median, mean signed error) per level of a categorical feature, by median."""
    return sorted(((level, len(group), float(np.median(column(group, "error"))),
                    float(np.mean(column(group, "error"))))
                   for level, group in families(rows, key).items()), key=lambda t: t[2])


def design(rows: list[dict], keys: tuple[str, ...], log: set[str]) -> np.ndarray:
    """The features as columns (log10 of the ``log`` ones)."""
    cols = [np.log10(column(rows, k)) if k in log else column(rows, k) for k in keys]
    return np.column_stack(cols) if cols else np.empty((len(rows), 0))


def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares y ~ a + sum b_k z_k on standardised columns z; returns (coefficients [a, b...], mean, std)."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = np.column_stack([np.ones(len(y)), (x - mean) / std])
    coef, *_ = np.linalg.lstsq(z, y, rcond=None)
    return coef, mean, std


def predict(coef: np.ndarray, mean: np.ndarray, std: np.ndarray, x: np.ndarray) -> np.ndarray:
    return coef[0] + ((x - mean) / std) @ coef[1:]


def leave_one_family_out(rows: list[dict], keys: tuple[str, ...], family_key: str = "stack",
                         log: set[str] = frozenset()) -> dict:
    """Fit the error on ``keys`` over every family but one and predict the one left out, for each family; rows with a
    NaN feature are dropped first. Returns the median |left-out residual|, the same for the intercept-only model under
    the same protocol, the in-sample fit on all rows (coefficients in error per standard deviation) and rows used."""
    x, y = design(rows, keys, log), column(rows, "error")
    keep = np.all(np.isfinite(x), axis=1) & np.isfinite(y)
    kept = [r for r, k in zip(rows, keep, strict=True) if k]
    x, y = x[keep], y[keep]
    labels = np.array([r[family_key] for r in kept])
    residual, baseline = np.full(len(y), np.nan), np.full(len(y), np.nan)
    for family in np.unique(labels):
        out = labels == family
        if out.all():
            continue
        coef, mean, std = fit(x[~out], y[~out])
        residual[out] = y[out] - predict(coef, mean, std, x[out])
        baseline[out] = y[out] - y[~out].mean()
    coef, _, _ = fit(x, y)
    scored = np.isfinite(residual)
    return {"keys": keys, "rows": int(keep.sum()), "coef": coef,
            "lofo": float(np.median(np.abs(residual[scored]))) if scored.any() else math.nan,
            "lofo_baseline": float(np.median(np.abs(baseline[scored]))) if scored.any() else math.nan,
            "in_sample": float(np.median(np.abs(y - predict(*fit(x, y), x)))) if len(y) else math.nan}


def correlations(rows: list[dict], features: tuple[str, ...] = NUMERIC) -> list[dict]:
    """Per feature: rho on all rows, calibration, held-out, within stack families; strongest overall first."""
    out = []
    for key in features:
        parts = {label: [r for r in rows if r["set"] == label] for label in ("cal", "ho")}
        within, count, agree = within_family_rho(rows, key)
        out.append({"feature": key, "all": spearman(column(rows, key), column(rows, "error")),
                    "cal": spearman(column(parts["cal"], key), column(parts["cal"], "error")),
                    "ho": spearman(column(parts["ho"], key), column(parts["ho"], "error")),
                    "within": within, "families": count, "agree": agree})
    return sorted(out, key=lambda c: -abs(np.nan_to_num(c["all"])))


# feature sets fitted besides the combinations of the strongest: the coverage flag and the features whose within-family
# rho keeps its sign in most families (docs/calibration/round-22.md "Round 22: what the held-out error tracks")
NAMED_FITS = (("stack_calibrated",), ("params_b",), ("pp",), ("exposed_tp_share",), ("stack_calibrated", "params_b"),
              ("stack_calibrated", "pp"), ("stack_calibrated", "params_b", "exposed_tp_share"))


def candidate_fits(rows: list[dict], ranked: list[dict], top: int = 7,
                   named: tuple[tuple[str, ...], ...] = NAMED_FITS) -> list[dict]:
    """Leave-one-family-out fits of every 1-, 2- and 3-feature set among the ``top`` features by |rho| and of the
    ``named`` sets, best first."""
    names = [c["feature"] for c in ranked[:top]]
    sets = [s for k in (1, 2, 3) for s in itertools.combinations(names, k)]
    sets += [s for s in named if s not in sets and all(k in rows[0] for k in s)] if rows else []
    fits = [leave_one_family_out(rows, s, log=LOG_SCALED) for s in sets]
    return sorted(fits, key=lambda f: f["lofo"])


def report(rows: list[dict], strongest: int = 12) -> list[str]:
    err = column(rows, "error")
    lines = [f"{len(rows)} rows ({sum(r['set'] == 'cal' for r in rows)} calibration, "
             f"{sum(r['set'] == 'ho' for r in rows)} held-out); signed error median {np.median(err):+.1%}, "
             f"mean {err.mean():+.1%}, {int((err > 0).sum())} fast",
             "", "Median signed error per level (rows, median, mean):"]
    for key in CATEGORICAL:
        lines.append(f"  {key}: " + ", ".join(f"{lvl} {n} {med:+.1%} ({mean:+.1%})"
                                              for lvl, n, med, mean in level_medians(rows, key)))
    lines.append("  held-out rows by whether their stack has calibration rows (rows, median, mean, fast): " + ", ".join(
        f"{'calibrated' if flag else 'uncalibrated'} {len(g)} {np.median(column(g, 'error')):+.1%} "
        f"{np.mean(column(g, 'error')):+.1%} {int((column(g, 'error') > 0).sum())}"
        for flag, g in sorted(families([r for r in rows if r["set"] == "ho"], "stack_calibrated").items())))
    if all("gap_us_needed" in r for r in rows):
        lines.append("  per-kernel gap change that would zero each row alone (residuals.py gap_us_needed), quartiles "
                     "per stack: " + "; ".join(
                         f"{stack} " + "/".join(f"{q:+.0f}" for q in np.percentile(column(g, "gap_us_needed"),
                                                                                   [25, 50, 75])) + " us"
                         for stack, g in sorted(families(rows).items())))
    lines.append("  generation within stack (rows, median): " + "; ".join(
        f"{stack}: " + ", ".join(f"{lvl} {n} {med:+.1%}" for lvl, n, med, _ in level_medians(group, "gpu_gen"))
        for stack, group in sorted(families(rows).items())))
    ranked = correlations(rows)
    lines += ["", "Spearman rho of the signed error (all / calibration / held-out / within stack families, n-weighted;"
              " families with the overall sign of those counted):",
              f"  {'feature':<22} {'all':>6} {'cal':>6} {'ho':>6} {'within':>7}  sign"]
    for c in ranked:
        lines.append(f"  {c['feature']:<22} {c['all']:+6.2f} {c['cal']:+6.2f} {c['ho']:+6.2f} {c['within']:+7.2f}"
                     f"  {c['agree']}/{c['families']}")
    lines += ["", f"Median signed error per quantile bin (rows) of the {strongest} strongest features, all rows:"]
    for c in ranked[:strongest]:
        lines.append(f"  {c['feature']:<22} " + "  ".join(f"[{lab}] {n} {med:+.1%}"
                                                          for lab, n, med in bin_medians(rows, c["feature"])))
    lines += ["", "Within stack families (rows; median signed error per bin) for the same features:"]
    for c in ranked[:strongest]:
        lines.append(f"  {c['feature']}:")
        for stack, group in sorted(families(rows).items()):
            if len(group) >= MIN_FAMILY and np.ptp(np.nan_to_num(column(group, c["feature"]))) > 0:
                lines.append(f"    {stack:<20} {len(group):>3}: " + "  ".join(
                    f"[{lab}] {n} {med:+.1%}" for lab, n, med in bin_medians(group, c["feature"])))
    fits = candidate_fits(rows, ranked)
    base = fits[0]["lofo_baseline"] if fits else math.nan
    lines += ["", "Least squares of the signed error on standardised features (log10 of scale features), left out a "
              "stack family at a time: median |left-out residual| against the intercept-only model's "
              f"({base:.1%} on the rows all features cover), in-sample median |residual|, coefficients (error per SD);"
              " the best 12, then the named sets:"]
    named = [f for f in fits if f["keys"] in NAMED_FITS]
    for f in fits[:12] + named:
        coef = " ".join(f"{b:+.3f}" for b in f["coef"][1:])
        lines.append(f"  {' + '.join(f['keys']):<58} rows {f['rows']:>3} lofo {f['lofo']:.1%} (intercept-only "
                     f"{f['lofo_baseline']:.1%}) in-sample {f['in_sample']:.1%}  b {coef}")
    return lines


def write_csv(rows: list[dict], path: Path) -> None:
    residuals.write_csv(rows, path, CSV_KEYS)


def plot(rows: list[dict], features: list[str], path: Path) -> None:
    """Signed error against each feature; filled: calibration, hollow: held-out; colour: stack family."""
    from matplotlib.figure import Figure

    stacks = sorted({r["stack"] for r in rows})
    colours = {s: f"C{i % 10}" for i, s in enumerate(stacks)}
    fig = Figure(figsize=(4.2 * len(features), 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(features)))
    for ax, key in zip(axes, features, strict=True):
        if key in CATEGORICAL:   # a strip per level, levels by median error
            levels = [lvl for lvl, *_ in level_medians(rows, key)]
            jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(rows))
            for r, dx in zip(rows, jitter, strict=True):
                colour = colours[r["stack"]]
                ax.scatter(levels.index(r[key]) + dx, 100 * r["error"], s=22,
                           marker="o" if r["set"] == "cal" else "s", color=colour,
                           facecolors=colour if r["set"] == "cal" else "none", linewidths=1.0)
            ax.set_xticks(range(len(levels)), levels, rotation=35, ha="right", fontsize=7)
            ax.set_title(f"{key} (levels by median error)", fontsize=9)
            ax.axhline(0, color="0.5", lw=0.8)
            ax.set_ylabel("signed error (%): + simulated fast")
            continue
        for r in rows:
            colour = colours[r["stack"]]
            ax.scatter(r[key], 100 * r["error"], s=26, marker="o" if r["set"] == "cal" else "s", color=colour,
                       facecolors=colour if r["set"] == "cal" else "none", linewidths=1.0)
        within, count, agree = within_family_rho(rows, key)
        ax.set_title(f"{key}\nrho all {spearman(column(rows, key), column(rows, 'error')):+.2f}, "
                     f"within families {within:+.2f} ({agree}/{count} same sign)", fontsize=9)
        ax.axhline(0, color="0.5", lw=0.8)
        if key in LOG_SCALED:
            ax.set_xscale("log")
        ax.set_ylabel("signed error (%): + simulated fast")
    handles = [axes[0].scatter([], [], color=colours[s], label=s) for s in stacks]
    handles += [axes[0].scatter([], [], marker="o", color="k", label="calibration (filled)"),
                axes[0].scatter([], [], marker="s", facecolors="none", edgecolors="k", label="held-out (hollow)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=6, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


# the fields of a validate --json case this script reads (residuals.load_rows), checked by accuracy_tables.load_cases
CASE_FIELDS = residuals.CASE_FIELDS


def residual_parser(doc: str, strongest: int, cache: Path) -> script_entry.Parser:
    """The arguments the residual scripts share: the two validate outputs, --csv, --plot, --plot-features, --cache."""
    parser = script_entry.Parser(description=doc.splitlines()[0])
    parser.add_argument("cal_json", type=Path)
    parser.add_argument("ho_json", type=Path)
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--plot-features", default="", help=f"comma-separated; default the {strongest} strongest")
    parser.add_argument("--cache", type=Path, default=cache)
    return parser


def plot_chosen(rows: list[dict], spec: str, default: list[str], known, draw, path: Path) -> int:
    """``--plot`` with ``--plot-features`` (comma-separated, else ``default``): an unknown feature is a one-line
    error (exit 2); else ``draw(rows, features, path)`` and 0. Shared by the residual scripts."""
    chosen = [k for k in spec.split(",") if k] or default
    unknown = [k for k in chosen if k not in known]
    if unknown:
        print(f"error: --plot-features: unknown feature {unknown[0]!r}", file=sys.stderr)
        return 2
    draw(rows, chosen, path)
    return 0


def check_cases(path: Path) -> None:
    """One-line error naming the field when a validate output lacks what this script reads."""
    load_cases(path, CASE_FIELDS)


def main(argv: list[str]) -> int:
    args = residual_parser(__doc__, 4, Path("/tmp/error_features_cache.json")).parse_args(argv)
    try:
        for path in (args.cal_json, args.ho_json):
            check_cases(path)
        residuals.refuse_overwriting((args.cal_json, args.ho_json), csv=args.csv, plot=args.plot)
        rows = load(args.cal_json, args.ho_json, args.cache)
    except (InputError, ScenarioError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(report(rows)))
    if args.csv:
        write_csv(rows, args.csv)
    if args.plot:
        return plot_chosen(rows, args.plot_features, [c["feature"] for c in correlations(rows)[:4]],
                           NUMERIC + CATEGORICAL, plot, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
