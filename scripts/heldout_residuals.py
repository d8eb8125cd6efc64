"""The structure of the held-out residual: which run features the signed error follows across held-out rows, inside
each published series, and where the held-out rows leave the range the calibration rows cover (issue 15;
docs/calibration/round-25.md "Round 25: the structure of the held-out fast bias"). Analysis only: nothing here moves a
constant, and held-out rows never fit anything in the model.

    PYTHONPATH=. python scripts/heldout_residuals.py CAL.json HELD_OUT.json [--cache /tmp/error_features_cache.json]
                                                     [--top 4]

The two files are ``simcluster validate --json`` and ``simcluster validate --held-out --json`` outputs (the error of
each row, simulated / published throughput - 1, positive = simulated too fast, is read from them). The features are
``error_features.load``'s (engine-side ones from ``residuals.features``, one simulation per scenario cached by name
in ``--cache``, so a warm cache simulates nothing; config-derived ones from ``error_features.derived``), plus two
sums (``EXTRA``): the fitted host terms' share of the step (gap + pipeline step) and the per-GPU GEMM's rows x
columns (tokens a microbatch x hidden / tp).

Per numeric feature, on the held-out rows (``feature_table``; the log10 of the scale features, ``LOG_SCALED``):

- cross-section: Pearson r, the least-squares slope of the error on the feature (per unit, or per decade), and
  Spearman's rho;
- within the published series (the validation ``family``: one source, stack and conversion): the pooled slope and r
  after subtracting each series' mean from the error and from the feature (a fixed effect per series), with the rows
  and series that carry variation. A feature that only separates series shows a cross-section r and no within r;
- coverage: the calibration rows' range of the feature, how many held-out rows lie outside it, and their mean error
  against the rows inside.

Then (``report``): how much of the held-out error's variance the series means alone explain, the categorical levels
held out rows have and calibration rows do not (GPU, precision, stack), and the held-out rows grouped in quantile bins
of the strongest features (by |within r| and by |cross-section r|): rows, median and mean error, rows fast.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import error_features
import numpy as np
from accuracy_tables import InputError

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.spec import config

column = error_features.column
spearman = error_features.spearman

# features added to error_features.NUMERIC: (name, how it is made from a row, log-scaled)
EXTRA = {
    "host_share": (lambda r: r["gap_share"] + r["pipe_share"], False),
    "gemm_rows_x_cols": (lambda r: r["tokens_per_microbatch"] * r["gemm_hidden_tp"], True),
}
FEATURES = (*error_features.NUMERIC, *EXTRA)
LOG_SCALED = set(error_features.LOG_SCALED) | {k for k, (_, log) in EXTRA.items() if log}
CATEGORIES = ("gpu", "precision", "stack", "attention")
CROSSED = ("gpu", "attention")   # the crossed levels the report tabulates for both sets
MIN_SERIES_ROWS = 2     # a series needs two rows for its mean to leave a within-series deviation


def add_extra(rows: list[dict], attention: dict[str, str] | None = None) -> list[dict]:
    """The ``EXTRA`` features, and each row's attention kernel (``training.attention``; ``attention`` maps scenario
    names to it, read from the bundled configs when None)."""
    for r in rows:
        r["attention"] = (attention or {}).get(r["scenario"]) or config.load(r["scenario"]).training.attention
        for key, (make, _) in EXTRA.items():
            r[key] = float(make(r))
    return rows


def values(rows: list[dict], key: str, log: bool) -> np.ndarray:
    """The feature as floats, log10 when ``log`` (non-positive values become NaN)."""
    x = column(rows, key)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)
    return x


def ols(x: np.ndarray, y: np.ndarray) -> dict:
    """Least squares y = a + b x on the finite pairs: slope b, intercept a, Pearson r, rows (NaN slope and r with
    fewer than 3 rows or a constant x)."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0:
        return {"slope": math.nan, "intercept": math.nan, "r": math.nan, "n": int(len(x))}
    dx, dy = x - x.mean(), y - y.mean()
    slope = float(np.sum(dx * dy) / np.sum(dx * dx))
    r = float(np.sum(dx * dy) / math.sqrt(np.sum(dx * dx) * np.sum(dy * dy))) if np.any(dy) else math.nan
    return {"slope": slope, "intercept": float(y.mean() - slope * x.mean()), "r": r, "n": int(len(x))}


def within_series(x: np.ndarray, y: np.ndarray, series: np.ndarray) -> dict:
    """The pooled fixed-effects fit: x and y minus their series means (series of >= ``MIN_SERIES_ROWS`` finite rows),
    then ``ols`` on the deviations. ``series_n``: the series whose feature varies, ``n``: their rows; ``agree`` of
    ``signed``: the series with a slope of their own (>= 3 rows) whose slope has the pooled sign."""
    keep = np.isfinite(x) & np.isfinite(y)
    dx, dy = np.full(len(x), np.nan), np.full(len(x), np.nan)
    varying, rows, slopes = 0, 0, []
    for label in np.unique(series[keep]):
        inside = keep & (series == label)
        if inside.sum() < MIN_SERIES_ROWS:
            continue
        dx[inside] = x[inside] - x[inside].mean()
        dy[inside] = y[inside] - y[inside].mean()
        if np.ptp(x[inside]) > 0:
            varying += 1
            rows += int(inside.sum())
            slopes.append(ols(x[inside], y[inside])["slope"])
    fit = ols(dx, dy)
    fit["series_n"], fit["n"] = varying, rows
    signed = [b for b in slopes if np.isfinite(b) and b != 0]
    fit["agree"] = sum(np.sign(b) == np.sign(fit["slope"]) for b in signed) if np.isfinite(fit["slope"]) else 0
    fit["signed"] = len(signed)
    return fit


def coverage(cal: list[dict], held: list[dict], key: str) -> dict:
    """The calibration rows' range of a feature and the held-out rows outside it: how many, their mean error, and the
    mean error of the held-out rows inside."""
    c, h, err = column(cal, key), column(held, key), column(held, "error")
    finite = c[np.isfinite(c)]
    if finite.size == 0:
        return {"low": math.nan, "high": math.nan, "outside": 0, "err_out": math.nan, "err_in": math.nan}
    low, high = float(finite.min()), float(finite.max())
    out = np.isfinite(h) & ((h < low) | (h > high))
    inside = np.isfinite(h) & ~out
    return {"low": low, "high": high, "outside": int(out.sum()),
            "err_out": float(err[out].mean()) if out.any() else math.nan,
            "err_in": float(err[inside].mean()) if inside.any() else math.nan}


def feature_table(rows: list[dict], features: tuple[str, ...] = FEATURES,
                  log: set[str] = frozenset()) -> list[dict]:
    """Per feature: cross-section and within-series fits of the held-out error, Spearman's rho, coverage against the
    calibration rows; strongest |within r| first (NaN last)."""
    held = [r for r in rows if r["set"] == "ho"]
    cal = [r for r in rows if r["set"] == "cal"]
    err = column(held, "error")
    series = np.array([r["family"] for r in held])
    out = []
    for key in features:
        x = values(held, key, key in log)
        cross = ols(x, err)
        within = within_series(x, err, series)
        out.append({"feature": key, "log": key in log, "n": cross["n"], "r": cross["r"], "slope": cross["slope"],
                    "rho": spearman(x, err), "w_slope": within["slope"], "w_r": within["r"], "w_n": within["n"],
                    "w_series": within["series_n"], "agree": within["agree"], "signed": within["signed"],
                    **coverage(cal, held, key)})
    return sorted(out, key=lambda t: (math.isnan(t["w_r"]), -abs(np.nan_to_num(t["w_r"]))))


def between_series_share(rows: list[dict]) -> tuple[float, int]:
    """Share of the held-out error's variance (about its mean) that the series means explain, and the series."""
    held = [r for r in rows if r["set"] == "ho"]
    err = column(held, "error")
    series = np.array([r["family"] for r in held])
    fitted = np.array([err[series == s].mean() for s in series])
    total = float(np.sum((err - err.mean()) ** 2))
    return (float(np.sum((fitted - err.mean()) ** 2)) / total if total else math.nan), len(np.unique(series))


def uncovered_levels(rows: list[dict], key: str) -> list[tuple[str, int, float, float, int]]:
    """Levels of a categorical feature held-out rows have and calibration rows do not: (level, rows, median, mean
    error, rows fast), most rows first."""
    seen = {r[key] for r in rows if r["set"] == "cal"}
    groups: dict[str, list[float]] = {}
    for r in rows:
        if r["set"] == "ho" and r[key] not in seen:
            groups.setdefault(r[key], []).append(r["error"])
    return sorted(((level, len(e), float(np.median(e)), float(np.mean(e)), sum(v > 0 for v in e))
                   for level, e in groups.items()), key=lambda t: -t[1])


def crossed_levels(rows: list[dict], keys: tuple[str, ...] = CROSSED) -> list[tuple[str, int, int, float, float, int]]:
    """Every combination of the ``keys`` levels: (level, calibration rows, held-out rows, held-out median and mean
    error, held-out rows fast), most held-out rows first."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(" / ".join(str(r[k]) for k in keys), []).append(r)
    out = []
    for level, group in groups.items():
        held = [r["error"] for r in group if r["set"] == "ho"]
        out.append((level, sum(r["set"] == "cal" for r in group), len(held),
                    float(np.median(held)) if held else math.nan, float(np.mean(held)) if held else math.nan,
                    sum(e > 0 for e in held)))
    return sorted(out, key=lambda t: -t[2])


def grouped(rows: list[dict], key: str, bins: int = error_features.BINS) -> list[tuple[str, int, float, float, int]]:
    """Held-out rows in quantile bins of a feature (``error_features.bin_edges``: ties never split): (label, rows,
    median, mean error, rows fast)."""
    held = [r for r in rows if r["set"] == "ho"]
    x, err = column(held, key), column(held, "error")
    out, low = [], -math.inf
    for edge in error_features.bin_edges(x, bins):
        inside = np.isfinite(x) & (x > low) & (x <= edge)
        first = x[inside].min()
        label = f"{first:.4g}" if first == edge else f"{first:.4g}..{edge:.4g}"
        out.append((label, int(inside.sum()), float(np.median(err[inside])), float(err[inside].mean()),
                    int((err[inside] > 0).sum())))
        low = edge
    return out


def _pct(value: float) -> str:
    return "   nan" if math.isnan(value) else f"{value:+6.1%}"


def report(rows: list[dict], top: int = 4) -> list[str]:
    held = [r for r in rows if r["set"] == "ho"]
    err = column(held, "error")
    share, count = between_series_share(rows)
    lines = [f"{len(held)} held-out rows ({int((err > 0).sum())} fast, mean {err.mean():+.2%}, median |error| "
             f"{np.median(np.abs(err)):.2%}), {sum(r['set'] == 'cal' for r in rows)} calibration rows",
             f"series means alone explain {share:.0%} of the held-out error's variance ({count} series)", "",
             "Levels held out but never calibrated (rows, median, mean, fast):"]
    for key in CATEGORIES:
        levels = uncovered_levels(rows, key)
        lines.append(f"  {key}: " + (", ".join(f"{lvl} {n} {med:+.1%} {mean:+.1%} {fast}"
                                              for lvl, n, med, mean, fast in levels) or "none"))
    lines.append(f"  {' x '.join(CROSSED)} (calibration rows; held-out rows, median, mean, fast): " + ", ".join(
        f"{lvl} ({cal}; {n} {_pct(med).strip()} {_pct(mean).strip()} {fast})"
        for lvl, cal, n, med, mean, fast in crossed_levels(rows)))
    table = feature_table(rows, log=LOG_SCALED)
    lines += ["", "Held-out error against each feature (log: per decade of the feature). Cross-section: rows, r, slope,"
              " Spearman; within series (fixed effect per series): rows, series, r, slope, series of >= 3 rows whose"
              " own slope has the pooled sign; calibration range, held-out rows outside it, mean error out / in:",
              f"  {'feature':<22} {'n':>4} {'r':>6} {'slope':>8} {'rho':>6} | {'n':>4} {'ser':>3} {'r':>6} "
              f"{'slope':>8} {'sign':>5} | {'cal range':>21} {'out':>4} {'err out':>7} {'err in':>7}"]
    for t in table:
        name = t["feature"] + (" (log)" if t["log"] else "")
        lines.append(f"  {name:<22} {t['n']:>4} {t['r']:+6.2f} {t['slope']:+8.3f} {t['rho']:+6.2f} | {t['w_n']:>4} "
                     f"{t['w_series']:>3} {t['w_r']:+6.2f} {t['w_slope']:+8.3f} {t['agree']:>2}/{t['signed']:<2} | "
                     f"{t['low']:>10.4g}..{t['high']:<9.4g} "
                     f"{t['outside']:>4} {_pct(t['err_out']):>7} {_pct(t['err_in']):>7}")
    strongest = [t["feature"] for t in table[:top]]
    strongest += [t["feature"] for t in sorted(table, key=lambda t: -abs(np.nan_to_num(t["r"])))
                  if t["feature"] not in strongest][:top]
    lines += ["", f"Held-out rows by quantile bin of the {top} strongest features within series, then the {top} "
              "strongest across (rows, median, mean, fast):"]
    for key in strongest:
        lines.append(f"  {key:<22} " + "  ".join(f"[{lab}] {n} {med:+.1%} {mean:+.1%} {fast}"
                                                for lab, n, med, mean, fast in grouped(rows, key)))
    return lines


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("cal_json", type=Path)
    parser.add_argument("ho_json", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/error_features_cache.json"))
    parser.add_argument("--top", type=script_entry.count, default=4, help="features grouped per ranking")
    args = parser.parse_args(argv)
    try:
        for path in (args.cal_json, args.ho_json):
            error_features.check_cases(path)
        rows = add_extra(error_features.load(args.cal_json, args.ho_json, args.cache))
    except (InputError, ScenarioError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(report(rows, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
