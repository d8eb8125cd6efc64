"""What the fast bias correlates with, across every calibration and held-out row, one published series weighing as
much as another (issue 15; docs/calibration/round-34.md "Round 34: what the fast bias correlates with (a study)").
Analysis only: nothing here moves a constant, and held-out rows fit nothing in the model.

    PYTHONPATH=. python scripts/residual_features.py CAL.json HO.json [--csv /tmp/residual_features-CODE.csv]
        [--only SUBSTR,...] [--boot 1000] [--row NAME,...] [--plot PNG] [--plot-features a,b] [--simulate-only]
        [--what-if part=factor,... [--refit]]

The two JSON files are ``simcluster validate --json`` and ``simcluster validate --held-out --json`` outputs; each
row's signed error (simulated / published throughput - 1: positive = simulated too fast) and its series (``family``)
are read from them, never recomputed. Each bundled scenario is simulated once, one after another in this process, as
``validate`` runs it (``Simulation``, no link windows; the memory check off: features only), and its features are
written to ``--csv`` as they come; a rerun reads the rows already there and simulates only the missing ones (the CSV
is the cache; the script warns when a re-simulated step differs from the JSON's). Each cached row carries the
``code_key`` of the tree that simulated it (simcluster's code and data, the bundled scenarios, these scripts), and a
row of other code is simulated again; the default cache's name carries it too, so trees of one machine never share
one. A cache that is not a regular file, too large, binary, short of fields or holding a non-finite feature is
refused in one line naming ``--csv`` (exit 2), and fits need rows of at least ``MIN_SERIES`` series.

Features of the simulated step (``row_features``): the partition of ``step_shares.step_parts`` (tensor-core roofline
``tc``, HBM-bound ``hbm``, fitted gap, host beyond the device side, fitted pipeline step, interference, ``other``,
exposed TP / CP / PP / DP / EP, bubble: shares of the step that add to 1; besides, the overlapped TP collectives'
time alone on the fabric, ``overlap_tp``), with ``tc`` split into GEMM and attention by one dense layer's
device-time split (``residuals.op_shares``; NaN for MoE), the optimizer step's share (``plan.optimizer_s``, the mean
stage; inside ``other``), the fitted share (gap + pipeline step), kernels a rank launches per millisecond of step and
per microbatch, mean kernel duration, tokens a microbatch (sequence x micro batch / cp), the GEMM inner size
hidden / tp, microbatches per replica, GPUs, DP width, tp, pp, precision (fp8 or not), MoE, GPU generation;
categorical: GPU, stack family (``spec.stack``), series, set.

Analysis (``report``; every function takes plain rows): each row weighs 1 / (rows of its series), so every series
counts once. Per feature (standardised; log10 of the scale ones): the weighted least-squares slope of the error
(points per standard deviation) with a 90% cluster-bootstrap interval (series resampled with replacement); the same
slope within series (error and feature minus their series' weighted means), with how many series of >= 3 rows have
their own slope of that sign and the median of those own slopes (``own``); the slope inside stack family x GPU
generation (``in group``: what a feature explains beyond the stack and GPU levels rounds 22 and 25 found); the rank
correlation of the series means; the slope's range over leave-one-series-out refits and how many keep its sign, and
the weighted mean |error| of each left-out series predicted (against the intercept-only model's). Then multivariate
fits of chosen feature sets the same way, and where each ``--row`` sits on them (default the calibration's slowest,
megatron-16b-h100).

``--what-if part=factor,...`` prints instead each set's error statistics with those parts of every row's step
scaled, linearised (``what_if``): the step grows by (factor - 1) x the part's share, a part inside the pipeline's
blocks taking the bubble along. A screen for candidate terms, not a simulation: check a candidate with a real run.
With ``--refit`` the two fitted terms (gap, pipeline step) are then refit on the calibration rows as
``fit_host_overheads.py`` fits them (``refit``: the smallest mean |error| with no row beyond ``CAL_MAX_ERROR``, on a
linearised grid of factors), since a term re-priced on the calibration rows moves the fitted gap with it (round 36).

``report`` also prints the calibration's coverage of each share (``coverage``): its range over the calibration rows,
the held-out rows outside it with their mean error against the rows inside, and the held-out rows inside every
share's range at once (docs/calibration/round-36.md "Round 36: what the held-out error correlates with (a study)").
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import math
import sys
import tempfile
import time
from pathlib import Path

import error_features
import numpy as np
import residuals
import step_shares
from accuracy_tables import InputError, load_cases

from simcluster.core import inputs, script_entry
from simcluster.core.errors import ScenarioError
from simcluster.engine.simulation import Simulation
from simcluster.spec import config
from simcluster.studies import grid

CASE_FIELDS = {**residuals.CASE_FIELDS, "family": str}
SHARES = ("tc", "gemm", "attention", "hbm", "gap", "host", "pipe", "fitted", "interference", "optimizer", "other",
          "exp_tp", "exp_cp", "exp_pp", "exp_dp", "exp_ep", "exposed", "overlap_tp", "bubble")
NUMERIC = (*(f"{k}_share" for k in SHARES), "kernels_per_ms", "kernels_per_microbatch", "mean_kernel_us",
           "tokens_per_microbatch", "gemm_k", "microbatches", "gpus", "dp", "tp", "pp", "fp8", "moe", "generation")
LOG_SCALED = {"kernels_per_ms", "kernels_per_microbatch", "mean_kernel_us", "tokens_per_microbatch", "gemm_k",
              "microbatches", "gpus", "dp", "tp", "pp"}
CATEGORICAL = ("scenario", "set", "series", "gpu", "gpu_gen", "stack", "precision")
CSV_KEYS = (*CATEGORICAL, "error", "step_s", *NUMERIC, "code")
# feature sets fitted together (besides the strongest single features): the candidate mechanisms of the brief
MODELS = (("hbm_share", "fitted_share"), ("kernels_per_ms", "mean_kernel_us"), ("gemm_k", "tokens_per_microbatch"),
          ("dp", "exp_dp_share"), ("fitted_share", "generation"), ("hbm_share", "gemm_k", "fitted_share"))


def row_features(scenario, sim: Simulation, summary: dict) -> dict:
    """The features of one simulated step (module doc)."""
    parts = step_shares.step_parts(scenario, sim, summary)
    plan, step = sim.plan, parts["step_s"]
    m, pp = plan.microbatches, plan.layout.pp
    kernels_run = sum(m / pp * (c.forward_stream.kernels + c.backward_stream.kernels) for c in plan.chunks)
    layer = residuals.op_shares(scenario)  # one dense layer's device-time split; NaN for MoE
    tensor_core = layer["gemm_share"] + layer["attention_share"]
    p, t = scenario.parallelism, scenario.training
    out = {k: parts[k] for k in NUMERIC if k in parts}
    out.update({
        "gemm_share": parts["tc_share"] * layer["gemm_share"] / tensor_core,
        "attention_share": parts["tc_share"] * layer["attention_share"] / tensor_core,
        "fitted_share": parts["gap_share"] + parts["pipe_share"],
        "optimizer_share": float(np.mean(plan.optimizer_s)) / step,
        "kernels_per_ms": kernels_run / step / 1e3,
        "kernels_per_microbatch": kernels_run / m,
        "tokens_per_microbatch": t.seq_len * t.micro_batch_size / p.cp,
        "gemm_k": scenario.model.hidden / p.tp,
        "dp": plan.layout.dp, "tp": p.tp, "pp": pp,
        "gpu": parts["gpu"], "gpu_gen": parts["gpu_gen"], "stack": parts["stack"], "precision": parts["precision"],
        "step_s": step,
    })
    return out


def simulate(name: str) -> dict:
    scenario = config.load(name)
    sim = Simulation(scenario, check_memory=False, link_windows=False)
    return row_features(scenario, sim, sim.run(None).summary)


# A cache of the 231 rows is ~0.2 MB; 16 MiB (the JSON inputs' bound, ``inputs.MAX_JSON_BYTES``) is far above it.
MAX_CSV_BYTES = inputs.MAX_JSON_BYTES
# the features ``row_features`` leaves NaN on valid rows: the GEMM / attention split of an MoE model
# (``residuals.op_shares``) and the mean kernel of a step without kernels (``step_shares.step_parts``)
MAY_BE_NAN = {"gemm_share", "attention_share", "mean_kernel_us"}
CACHE_FIELD = "code"   # the column holding ``code_key()`` of the tree that simulated the row


@functools.lru_cache(maxsize=1)
def code_key() -> str:
    """16 hex digits of what decides a row's features: simcluster's code and data (``grid.code_digest``), its
    bundled scenarios and the scripts computing the features (this folder)."""
    root = Path(config.__file__).resolve().parents[1]
    parts = (grid.code_digest(), grid.tree_digest(root / "data" / "scenarios"),
             grid.tree_digest(Path(__file__).resolve().parent))
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


def default_csv() -> Path:
    """The default cache: one per code (``code_key``), so two trees of a machine never share rows."""
    return Path(tempfile.gettempdir()) / f"residual_features-{code_key()}.csv"


def _number(text: str, key: str, where: str) -> float:
    """One cached feature as a float: finite, or NaN for a key of ``MAY_BE_NAN`` (written ``nan`` or empty)."""
    try:
        value = float(text) if text.strip() else math.nan
    except ValueError:
        raise ScenarioError("--csv", f"{where}: {key} {text[:40]!r} is not a number") from None
    if math.isnan(value) and key in MAY_BE_NAN:
        return value
    if not math.isfinite(value):
        raise ScenarioError("--csv", f"{where}: {key} {text[:40]!r} is not a finite number")
    return value


def read_csv(path: Path) -> dict[str, dict]:
    """The rows cached in ``path`` by scenario ({} when absent), numbers as floats, rows simulated by other code
    (another ``code_key``, or none: a cache of before round 34's review) left out with a warning, to be simulated
    again. A cache that is not a regular file (a FIFO, a device, a folder), is too large, binary or not UTF-8, has a
    row shorter or longer than its header, or a feature that is not a finite number (NaN only where ``MAY_BE_NAN``)
    is refused in one line naming --csv."""
    if not path.exists():
        return {}
    if not path.is_file():   # read and rewritten: a pipe or a device cannot be the cache
        raise ScenarioError("--csv", f"{str(path)!r} is not a regular file (a pipe, a device or a folder?)")
    try:
        text = inputs.read_text(path, MAX_CSV_BYTES, "residual_features CSV")
    except ScenarioError as err:
        raise ScenarioError("--csv", f"{err.field}: {err.message}") from None
    out, stale = {}, 0
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = sorted(set(CSV_KEYS) - set(reader.fieldnames or ()))
    if missing and missing != [CACHE_FIELD]:
        raise ScenarioError("--csv", f"{str(path)!r} is not a residual_features CSV (no column {missing[0]})")
    for row in reader:
        where = f"{path} line {reader.line_num}"
        if None in row:
            raise ScenarioError("--csv", f"{where}: the row has more fields than the header: remove the cache")
        if None in row.values():
            raise ScenarioError("--csv", f"{where}: the row has fewer fields than the header: a cache cut short? "
                                "remove it")
        if row.get(CACHE_FIELD) != code_key():
            stale += 1
            continue
        if not row["scenario"]:
            raise ScenarioError("--csv", f"{where}: no scenario name")
        parsed = {k: (v if k in CATEGORICAL or k == CACHE_FIELD else _number(v, k, where)) for k, v in row.items()}
        if not parsed["step_s"] > 0:
            raise ScenarioError("--csv", f"{where}: step_s {row['step_s']!r} is not above 0")
        out[row["scenario"]] = parsed
    if stale:
        print(f"warning: --csv: {stale} row(s) of {path} were simulated by other code (not {code_key()}): "
              "simulating them again", file=sys.stderr)
    return out


def write_csv(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_KEYS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**row, CACHE_FIELD: code_key()} for row in rows)
    tmp.replace(path)  # atomic: a Ctrl-C leaves the last whole file


def load(cal_json: Path, ho_json: Path, cache: Path, only: tuple[str, ...] = ()) -> list[dict]:
    """Every row (with ``only``, those whose name has one of its substrings) with its error, series and features;
    simulated rows are written to ``cache`` as they come."""
    sets = [(label, load_cases(path, CASE_FIELDS)) for label, path in (("cal", cal_json), ("ho", ho_json))]
    cached = read_csv(cache)
    rows = []
    for label, cases in sets:
        for case in cases:
            name = case["scenario"]
            if only and not any(part in name for part in only):
                continue
            if name not in cached:
                started = time.perf_counter()
                cached[name] = {"scenario": name, **simulate(name)}
                print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
            row = {**cached[name], "scenario": name, "set": label, "series": case["family"], "error": case["error"]}
            if abs(row["step_s"] - case["step_time_s"]) > 1e-6 * case["step_time_s"]:
                print(f"warning: {name} simulates {row['step_s']:.4f} s, the JSON says {case['step_time_s']:.4f} s "
                      "(a different model version)", file=sys.stderr)
            cached[name] = row
            rows.append(row)
            write_csv(list(cached.values()), cache)
    return rows


# ---- analysis on plain rows ----


def values(rows: list[dict], key: str) -> np.ndarray:
    x = residuals.column(rows, key)
    if key in LOG_SCALED:
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)
    return x


def series_weights(labels: np.ndarray) -> np.ndarray:
    """1 / (rows of the row's series): every series weighs 1."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares y ~ a + x b (x: columns); returns [a, b...]."""
    z = np.column_stack([np.ones(len(y)), x])
    s = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(z * s[:, None], y * s, rcond=None)
    return coef


def demean(v: np.ndarray, labels: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``v`` minus its series' weighted mean (a fixed effect per series)."""
    out = v.astype(float).copy()
    for label in np.unique(labels):
        inside = labels == label
        out[inside] -= np.average(v[inside], weights=w[inside])
    return out


class Design:
    """The rows with every feature of ``keys`` finite: standardised columns (weighted mean and sd), error in points,
    series labels and weights."""

    def __init__(self, rows: list[dict], keys: tuple[str, ...]):
        x = np.column_stack([values(rows, k) for k in keys]) if keys else np.empty((len(rows), 0))
        y = 100 * residuals.column(rows, "error")
        keep = np.all(np.isfinite(x), axis=1) & np.isfinite(y)
        self.rows = [r for r, k in zip(rows, keep, strict=True) if k]
        self.labels = np.array([r["series"] for r in self.rows])
        self.groups = np.array([f"{r['stack']}/{r['gpu_gen']}" for r in self.rows])
        self.w = series_weights(self.labels)
        x, self.y = x[keep], y[keep]
        self.mean = np.average(x, axis=0, weights=self.w) if len(self.y) else np.zeros(len(keys))
        sd = np.sqrt(np.average((x - self.mean) ** 2, axis=0, weights=self.w)) if len(self.y) else np.ones(len(keys))
        self.sd = np.where(sd > 0, sd, 1.0)
        self.z = (x - self.mean) / self.sd
        self.keys = keys

    def subset(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.z[keep], self.y[keep], series_weights(self.labels[keep])


def bootstrap(d: Design, fitter, draws: int, seed: int = 0) -> np.ndarray:
    """``fitter(z, y, w, labels, groups)`` on ``draws`` cluster resamples (series drawn with replacement, each copy of
    a series its own cluster); rows: draws, columns: the fitter's outputs."""
    rng = np.random.default_rng(seed)
    names = np.unique(d.labels)
    index = {n: np.flatnonzero(d.labels == n) for n in names}
    out = []
    for _ in range(draws):
        picked = rng.choice(names, size=len(names), replace=True)
        rows = np.concatenate([index[n] for n in picked])
        labels = np.concatenate([[f"{n}#{i}"] * len(index[n]) for i, n in enumerate(picked)])
        out.append(fitter(d.z[rows], d.y[rows], series_weights(labels), labels, d.groups[rows]))
    return np.array(out)


def _across(z, y, w, labels, groups=None):
    return wls(z, y, w)[1:]


def _in_groups(z, y, w, labels, groups):
    """The slope inside stack family x GPU generation (a fixed effect per group; series still weigh 1)."""
    return _within(z, y, w, groups)


def _within(z, y, w, labels, groups=None):
    zc = np.column_stack([demean(z[:, j], labels, w) for j in range(z.shape[1])])
    if not np.any(np.abs(zc) > 1e-12):
        return np.full(z.shape[1], np.nan)
    return wls(zc, demean(y, labels, w), w)[1:]


def series_means(d: Design, column: int = 0) -> tuple[np.ndarray, np.ndarray]:
    names = np.unique(d.labels)
    return (np.array([d.z[d.labels == n, column].mean() for n in names]),
            np.array([d.y[d.labels == n].mean() for n in names]))


def series_signs(d: Design, sign: float, min_rows: int = 3) -> tuple[int, int, float]:
    """(series of >= ``min_rows`` rows whose feature varies with their own slope of ``sign``, such series, the median
    of their own slopes in points per sd)."""
    agree = count = 0
    slopes = []
    for name in np.unique(d.labels):
        inside = d.labels == name
        x = d.z[inside, 0]
        if inside.sum() < min_rows or np.ptp(x) < 1e-9:
            continue
        slope = np.polyfit(x, d.y[inside], 1)[0]
        slopes.append(slope)
        count += 1
        agree += int(np.sign(slope) == np.sign(sign))
    return agree, count, float(np.median(slopes)) if slopes else math.nan


# series a fit needs: leave-one-series-out refits on the others and predicts the left-out one, and the cluster
# bootstrap resamples series, so with two series each refit is one series' own mean and with one there is no refit
MIN_SERIES = 3


def leave_one_series_out(d: Design) -> dict:
    """Refit without each series: the coefficients' range and sign agreement with the full fit, and the weighted mean
    |error| of the left-out series predicted by the fit against the intercept-only model's."""
    full = wls(d.z, d.y, d.w)
    coefs, err, base, weight = [], 0.0, 0.0, 0.0
    for name in np.unique(d.labels):
        out = d.labels == name
        if out.all():
            continue
        z, y, w = d.subset(~out)
        coef = wls(z, y, w)
        coefs.append(coef[1:])
        pred = coef[0] + d.z[out] @ coef[1:]
        err += np.mean(np.abs(d.y[out] - pred))
        base += np.mean(np.abs(d.y[out] - np.average(y, weights=w)))
        weight += 1
    coefs = np.array(coefs)
    return {"full": full, "low": coefs.min(axis=0), "high": coefs.max(axis=0),
            "agree": (np.sign(coefs) == np.sign(full[1:])).sum(axis=0), "series": len(coefs),
            "lofo": err / weight, "baseline": base / weight}


def feature_table(rows: list[dict], features: tuple[str, ...] = NUMERIC, draws: int = 1000) -> list[dict]:
    """Per feature (module doc): across and within slopes (points per sd) with 90% bootstrap intervals, series-mean
    rank correlation, leave-one-series-out range; by |across t| (slope / half-interval) first."""
    out = []
    for key in features:
        d = Design(rows, (key,))
        if len(np.unique(d.labels)) < MIN_SERIES or np.ptp(d.z[:, 0]) == 0:
            continue
        boot_a = bootstrap(d, _across, draws)[:, 0]
        boot_w = bootstrap(d, _within, draws)[:, 0]
        boot_g = bootstrap(d, _in_groups, draws)[:, 0]
        lo = leave_one_series_out(d)
        mx, my = series_means(d)
        within = _within(d.z, d.y, d.w, d.labels)[0]
        agree, varying, own = series_signs(d, within)
        out.append({"feature": key, "rows": len(d.y), "series": len(np.unique(d.labels)),
                    "across": lo["full"][1], "across_ci": np.nanpercentile(boot_a, [5, 95]),
                    "within": within, "within_agree": agree, "within_series": varying,
                    "own_median": own,
                    "within_ci": np.nanpercentile(boot_w, [5, 95]) if np.isfinite(boot_w).any() else (np.nan, np.nan),
                    "group": _within(d.z, d.y, d.w, d.groups)[0],
                    "group_ci": np.nanpercentile(boot_g, [5, 95]) if np.isfinite(boot_g).any() else (np.nan, np.nan),
                    "rho_means": residuals.spearman(mx, my), "lofo_low": lo["low"][0], "lofo_high": lo["high"][0],
                    "agree": int(lo["agree"][0]), "lofo_series": lo["series"], "lofo": lo["lofo"],
                    "baseline": lo["baseline"], "sd": d.sd[0], "mean": d.mean[0]})
    return sorted(out, key=lambda e: -abs(e["across"]) / max(1e-9, (e["across_ci"][1] - e["across_ci"][0]) / 2))


def model_fit(rows: list[dict], keys: tuple[str, ...], draws: int = 1000) -> dict:
    d = Design(rows, keys)
    boot = bootstrap(d, _across, draws) if draws else np.full((1, len(keys)), np.nan)
    lo = leave_one_series_out(d)
    pred = lo["full"][0] + d.z @ lo["full"][1:]
    return {"keys": keys, "design": d, "coef": lo["full"], "ci": np.percentile(boot, [5, 95], axis=0), **lo,
            "in_sample": float(np.average(np.abs(d.y - pred), weights=d.w)), "pred": pred}


def where_row(fit: dict, name: str) -> str:
    """A named row on a fit: its features in sds from the weighted mean, the fit's prediction and its residual."""
    d = fit["design"]
    found = [i for i, r in enumerate(d.rows) if r["scenario"] == name]
    if not found:
        return f"{name}: not among the fitted rows"
    i = found[0]
    zs = ", ".join(f"{k} {d.z[i, j]:+.2f} sd" for j, k in enumerate(d.keys))
    order = np.argsort(d.y)
    rank = int(np.flatnonzero(order == i)[0]) + 1
    return (f"{name}: error {d.y[i]:+.1f}% (rank {rank} of {len(d.y)} from the slowest); {zs}; "
            f"fit predicts {fit['pred'][i]:+.1f}%, residual {d.y[i] - fit['pred'][i]:+.1f} points")


def _ci(pair) -> str:
    return f"[{pair[0]:+.2f}, {pair[1]:+.2f}]"


def report(rows: list[dict], draws: int, named: tuple[str, ...]) -> list[str]:
    y = 100 * residuals.column(rows, "error")
    labels = np.array([r["series"] for r in rows])
    w = series_weights(labels)
    lines = [f"{len(rows)} rows ({sum(r['set'] == 'cal' for r in rows)} calibration, "
             f"{sum(r['set'] == 'ho' for r in rows)} held-out) in {len(np.unique(labels))} series",
             f"signed error: mean {y.mean():+.2f}%, series-weighted mean {np.average(y, weights=w):+.2f}%, "
             f"median {np.median(y):+.2f}%, fast {int((y > 0).sum())}",
             f"share of the error's variance the series means explain: {series_variance_share(y, labels):.0%}", "",
             "per feature (points of error per sd of the feature, series-weighted; 90% cluster-bootstrap intervals;"
             " log10 for scale features):",
             f"  {'feature':22s} {'rows':>4s} {'ser':>3s} {'sd':>7s} {'across':>7s} {'interval':>16s} {'within':>7s} "
             f"{'interval':>16s} {'agree':>5s} {'own':>6s} {'in group':>8s} {'interval':>16s} {'rho(means)':>10s} "
             f"{'lofo range':>16s} {'sign':>6s} {'lofo|e|':>7s} {'base':>5s}"]
    table = feature_table(rows, draws=draws)
    for e in table:
        lines.append(f"  {e['feature']:22s} {e['rows']:4d} {e['series']:3d} {e['sd']:7.3g} {e['across']:+7.2f} "
                     f"{_ci(e['across_ci']):>16s} {e['within']:+7.2f} {_ci(e['within_ci']):>16s} "
                     f"{e['within_agree']:2d}/{e['within_series']:<2d} {e['own_median']:+6.2f} "
                     f"{e['group']:+8.2f} {_ci(e['group_ci']):>16s} "
                     f"{e['rho_means']:+10.2f} {_ci((e['lofo_low'], e['lofo_high'])):>16s} "
                     f"{e['agree']:3d}/{e['lofo_series']:<2d} {e['lofo']:7.2f} {e['baseline']:5.2f}")
    lines += coverage_lines(rows)
    top = [e["feature"] for e in table[:4]]
    models = (*MODELS, tuple(top[:2]), tuple(top[:3]))
    lines += ["", "multivariate series-weighted fits (coefficient per sd [90% interval] {leave-one-series-out range, "
              "sign kept}); lofo|e| = weighted mean |error| of each left-out series predicted, base = intercept only"]
    fits, skipped = [], []
    for keys in dict.fromkeys(k for k in models if k):
        if len(np.unique(Design(rows, keys).labels)) < MIN_SERIES:
            skipped.append(keys)
        else:
            fits.append(model_fit(rows, keys, draws))
    for f in sorted(fits, key=lambda f: f["lofo"]):
        terms = "; ".join(f"{k} {f['coef'][j + 1]:+.2f} {_ci(f['ci'][:, j])} {{{f['low'][j]:+.2f}..{f['high'][j]:+.2f},"
                          f" {f['agree'][j]}/{f['series']}}}" for j, k in enumerate(f["keys"]))
        lines.append(f"  lofo|e| {f['lofo']:.2f} (base {f['baseline']:.2f}, in sample {f['in_sample']:.2f}, "
                     f"n {len(f['design'].y)}): intercept {f['coef'][0]:+.2f}; {terms}")
    for keys in skipped:
        lines.append(f"  {', '.join(keys)}: skipped, its rows with finite features are in fewer than {MIN_SERIES} "
                     "series")
    if not fits:
        return lines
    best = min(fits, key=lambda f: f["lofo"])
    lines += ["", f"named rows on the best fit ({', '.join(best['keys'])}) and on each single feature of the top 4:"]
    for name in named:
        lines.append("  " + where_row(best, name))
        for key in top:
            lines.append("    " + where_row(model_fit(rows, (key,), 0), name))
    return lines


def series_variance_share(y: np.ndarray, labels: np.ndarray) -> float:
    """The share of the error's (unweighted) variance the series means explain."""
    means = {n: y[labels == n].mean() for n in np.unique(labels)}
    fitted = np.array([means[n] for n in labels])
    total = ((y - y.mean()) ** 2).sum()
    return float(((fitted - y.mean()) ** 2).sum() / total) if total else math.nan


# the parts of the step inside the pipeline's blocks: scaling one scales the bubble (idle time of block length) with it
BLOCK_PARTS = ("tc", "hbm", "gap", "host", "pipe")
SCALABLE = ("tc", "gemm", "attention", "hbm", "gap", "pipe", "interference", "optimizer", "exp_tp", "exp_pp", "exp_dp",
            "exp_ep", "bubble")


def what_if(row: dict, factors: dict[str, float]) -> float:
    """The row's signed error with each named part of its step scaled by its factor, linearised: the step grows by
    sum (factor - 1) x share, a part inside the blocks (``BLOCK_PARTS``, or the GEMM / attention split of ``tc``)
    taking the bubble along in proportion (the bubble is idle time of block length). Exact for a part on the critical
    path; an upper bound for one partly hidden."""
    block = sum(row[f"{k}_share"] for k in BLOCK_PARTS)
    grow = 0.0
    for part, factor in factors.items():
        share = row[f"{part}_share"]
        if not np.isfinite(share):
            share = 0.0   # MoE rows carry no GEMM / attention split: left unchanged
        inside = part in BLOCK_PARTS or part in ("gemm", "attention")
        grow += (factor - 1.0) * share * (1.0 + (row["bubble_share"] / block if inside and block else 0.0))
    return (1.0 + row["error"]) / (1.0 + grow) - 1.0


def parse_what_if(text: str) -> dict[str, float]:
    """'part=factor,...' (parts: ``SCALABLE``); ScenarioError naming --what-if otherwise."""
    out = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        part, sep, value = item.partition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if not sep or part not in SCALABLE or not 0 <= factor < 100:
            raise ScenarioError("--what-if", f"expected part=factor with part in {', '.join(SCALABLE)} and a factor "
                                f"in [0, 100), got {item!r}")
        out[part] = factor
    if not out:
        raise ScenarioError("--what-if", "expected part=factor pairs, got none")
    return out


def stats_line(errors: np.ndarray) -> str:
    e = 100 * errors
    return (f"median |e| {np.median(np.abs(e)):.2f}%, max |e| {np.max(np.abs(e)):.2f}%, mean {e.mean():+.2f}%, "
            f"fast {int((e > 0).sum())}/{len(e)}")


def what_if_report(rows: list[dict], factors: dict[str, float], named: tuple[str, ...]) -> list[str]:
    lines = [f"what-if (linearised, module doc): {', '.join(f'{k} x{v:g}' for k, v in factors.items())}"]
    for label in ("cal", "ho"):
        part = [r for r in rows if r["set"] == label]
        if part:
            before = np.array([r["error"] for r in part])
            after = np.array([what_if(r, factors) for r in part])
            lines += [f"  {label} before: {stats_line(before)}", f"  {label} after:  {stats_line(after)}"]
    for r in rows:
        if r["scenario"] in named:
            lines.append(f"  {r['scenario']}: {100 * r['error']:+.2f}% -> {100 * what_if(r, factors):+.2f}%")
    return lines


# issue 15's bound on every calibration row (fit_host_overheads.MAX_ERROR), the constraint of its objective
CAL_MAX_ERROR = 0.10
# the linearised refit's grid of factors on the fitted gap and pipeline step (x0 to x2)
REFIT_GAP = np.round(np.arange(0.0, 2.0001, 0.02), 2)
REFIT_PIPE = np.round(np.arange(0.0, 2.0001, 0.05), 2)


def refit(rows: list[dict], factors: dict[str, float]) -> tuple[float, float]:
    """The factors on the fitted gap and pipeline step that fit_host_overheads.py's objective picks on the calibration
    rows once ``factors`` are applied (linearised, ``what_if``): the smallest mean |error| among the pairs with no row
    beyond ``CAL_MAX_ERROR`` (else among those with the smallest maximum, to 0.1 point); ties go to the pair nearest
    (1, 1). A factor on "gap" or "pipe" itself is replaced by the refit."""
    cal = [r for r in rows if r["set"] == "cal"]
    if not cal:
        raise ScenarioError("--refit", "no calibration row to refit on")
    best = None
    for gap in REFIT_GAP:
        for pipe in REFIT_PIPE:
            e = np.abs([what_if(r, {**factors, "gap": gap, "pipe": pipe}) for r in cal])
            worst = 0.0 if e.max() <= CAL_MAX_ERROR else round(float(e.max()), 3)   # 0.1 point beyond the bound
            key = (worst, e.mean(), abs(gap - 1) + abs(pipe - 1))
            if best is None or key < best[0]:
                best = (key, float(gap), float(pipe))
    return best[1], best[2]


def refit_report(rows: list[dict], factors: dict[str, float], named: tuple[str, ...]) -> list[str]:
    gap, pipe = refit(rows, factors)
    return [f"refit on the calibration rows (linearised): gap x{gap:g}, pipeline step x{pipe:g}",
            *what_if_report(rows, {**factors, "gap": gap, "pipe": pipe}, named)]


# the shares the coverage table reads (the step's partition and the overlapped TP time alone)
COVERAGE = ("tc_share", "hbm_share", "gap_share", "pipe_share", "bubble_share", "interference_share", "optimizer_share",
            "exp_tp_share", "exp_pp_share", "exp_dp_share", "exp_ep_share", "overlap_tp_share")


def coverage(rows: list[dict], features: tuple[str, ...] = COVERAGE) -> tuple[list[dict], list[dict]]:
    """Per feature: the calibration rows' range, the held-out rows outside it and the mean error (points) of the
    held-out rows inside and outside; then the held-out rows inside every feature's range. Empty without rows of
    both sets."""
    cal = [r for r in rows if r["set"] == "cal"]
    held = [r for r in rows if r["set"] == "ho"]
    if not cal or not held:
        return [], []
    table, inside_all = [], held
    for key in features:
        lo, hi = min(r[key] for r in cal), max(r[key] for r in cal)
        within = [lo - 1e-12 <= r[key] <= hi + 1e-12 for r in held]
        inside = [r for r, w in zip(held, within, strict=True) if w]
        outside = [r for r, w in zip(held, within, strict=True) if not w]
        inside_all = [r for r in inside_all if lo - 1e-12 <= r[key] <= hi + 1e-12]
        table.append({"feature": key, "low": lo, "high": hi, "outside": len(outside),
                      "mean_in": 100 * float(np.mean([r["error"] for r in inside])) if inside else math.nan,
                      "mean_out": 100 * float(np.mean([r["error"] for r in outside])) if outside else math.nan})
    return table, inside_all


def coverage_lines(rows: list[dict]) -> list[str]:
    table, inside = coverage(rows)
    if not table:
        return []
    lines = ["", "the calibration's coverage of each share: its range, held-out rows outside it, their mean error "
             "(points) inside / outside"]
    lines += [f"  {e['feature']:22s} {e['low']:8.4f}..{e['high']:<8.4f} outside {e['outside']:4d}  "
              f"{e['mean_in']:+6.2f} / {e['mean_out']:+6.2f}" for e in table]
    series = len({r["series"] for r in inside})
    lines.append(f"  held-out rows inside every range: {len(inside)} in {series} series, "
                 + (stats_line(np.array([r["error"] for r in inside])) if inside else "none"))
    return lines


def plot(rows: list[dict], features: list[str], path: Path) -> None:
    """Signed error against each feature: one dot a row (filled: calibration), series means as crosses."""
    from matplotlib.figure import Figure

    colours = {"Ampere": "C0", "Hopper": "C1", "Blackwell": "C2"}
    fig = Figure(figsize=(3.6 * len(features), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(features)))
    for ax, key in zip(axes, features, strict=True):
        for r in rows:
            c = colours.get(r["gpu_gen"], "k")
            ax.scatter(r[key], 100 * r["error"], s=14, color=c, facecolors=c if r["set"] == "cal" else "none",
                       linewidths=0.8)
        d = Design(rows, (key,))
        mx, my = series_means(d)
        ax.scatter(10 ** (mx * d.sd[0] + d.mean[0]) if key in LOG_SCALED else mx * d.sd[0] + d.mean[0], my,
                   marker="x", color="k", s=20, linewidths=0.8)
        ax.axhline(0, color="0.5", lw=0.8)
        if key in LOG_SCALED:
            ax.set_xscale("log")
        ax.set_xlabel(key, fontsize=9)
        ax.set_ylabel("signed error (%): + simulated fast", fontsize=8)
    fig.legend(handles=[axes[0].scatter([], [], color=c, label=g) for g, c in colours.items()]
               + [axes[0].scatter([], [], marker="x", color="k", label="series mean")],
               loc="outside lower center", ncol=4, fontsize=8)
    fig.savefig(path, dpi=80)


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("cal_json", type=Path)
    parser.add_argument("ho_json", type=Path)
    parser.add_argument("--csv", type=Path, default=None,
                        help="the per-row cache (default: residual_features-CODE.csv in the temporary folder, CODE "
                        "the code_key of this tree)")
    parser.add_argument("--only", default=None, help="comma-separated substrings: keep rows whose name has one")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap draws")
    parser.add_argument("--row", default="megatron-16b-h100", help="comma-separated rows to place on the fits")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--plot-features", default="overlap_tp_share,tc_share,bubble_share")
    parser.add_argument("--simulate-only", action="store_true", help="fill the CSV, no analysis")
    parser.add_argument("--what-if", default=None, help="part=factor,...: the errors with those parts scaled, instead")
    parser.add_argument("--refit", action="store_true",
                        help="with --what-if: then refit the fitted gap and pipeline step on the calibration rows")
    args = parser.parse_args(argv)
    only = tuple(p for p in (args.only or "").split(",") if p)
    if args.only is not None and not only:
        print(f"error: --only: expected comma-separated substrings of scenario names, got {args.only!r}",
              file=sys.stderr)
        return 2
    if not 10 <= args.boot <= 100_000:
        print(f"error: --boot: expected 10 to 100000 draws, got {args.boot}", file=sys.stderr)
        return 2
    if args.csv is None:
        args.csv = default_csv()
    try:
        factors = parse_what_if(args.what_if) if args.what_if is not None else None
        residuals.refuse_overwriting((args.cal_json, args.ho_json), csv=args.csv, plot=args.plot)
        rows = load(args.cal_json, args.ho_json, args.csv, only)
    except (InputError, ScenarioError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: --only: no row matches {args.only!r}", file=sys.stderr)
        return 2
    if args.simulate_only:
        return 0
    named = tuple(p for p in args.row.split(",") if p)
    if args.refit and factors is None:
        print("error: --refit: needs --what-if part=factor,...", file=sys.stderr)
        return 2
    if factors is not None:
        try:
            lines = refit_report(rows, factors, named) if args.refit else what_if_report(rows, factors, named)
        except ScenarioError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print("\n".join(lines))
        return 0
    series = len({r["series"] for r in rows})
    if series < MIN_SERIES:
        print(f"error: --only: the {len(rows)} row(s) matched are in {series} series; the fits need at least "
              f"{MIN_SERIES} (leave-one-series-out, cluster bootstrap)", file=sys.stderr)
        return 2
    print("\n".join(report(rows, args.boot, named)))
    if args.plot:
        return error_features.plot_chosen(rows, args.plot_features, [], NUMERIC, plot, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))  # Ctrl-C: one line, exit 130
