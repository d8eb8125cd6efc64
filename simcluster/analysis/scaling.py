"""Figures of a GPU-count sweep: throughput and scaling efficiency, time and cost to a target loss, with the
diminishing-returns knee (``returns.knee``) marked on every series.

Input: the series of ``sweep.table``, each ``{'label', 'rows': returns.sweep_table(...), 'knee': {...},
'law', 'target_loss'}``. GPU counts go on a log2 axis, so doubling steps are evenly spaced.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatter, NullLocator

from simcluster.analysis.plots import SECONDS_PER_DAY, figure, styled
from simcluster.core import units


def _gpu_axis(ax, counts: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(counts))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.0f}"))
    ax.set_xlabel("GPUs (log2 scale)")
    if len(set(counts)) > 7:
        for label in ax.get_xticklabels():
            label.set_rotation(30)


class _PlainLogFormatter(LogFormatter):
    """Tick labels of a log axis in plain numbers, ``text(value)``: 300k, 40, 1,000 (matplotlib's default, 3x10^5
    and 4x10^1, is unreadable on an axis of days or tokens/s, and most sweeps span less than a decade of either)."""

    def __init__(self, text, **kwargs):
        super().__init__(**kwargs)
        self.text = text

    def _num_to_string(self, x, vmin, vmax):
        return self.text(x)


def _plain_log_y(ax, text) -> None:
    """A log y axis labelled by ``text``: its decades and, on a short span, the ticks between them."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_PlainLogFormatter(text))
    ax.yaxis.set_minor_formatter(_PlainLogFormatter(text, labelOnlyBase=False))


def _days(value: float) -> str:
    return f"{value:,.0f}" if value >= 1 else f"{value:.2g}"


def _counts(series: Sequence[dict]) -> list[int]:
    return [row["gpus"] for group in series for row in group["rows"]]


def _mark_knee(ax, group: dict, colour, key: str, scale: float = 1.0, annotate: bool = True) -> None:
    knee = group["knee"]
    row = next(r for r in group["rows"] if r["gpus"] == knee["knee_gpus"])
    if knee["first_below_gpus"] is None:
        return  # efficiency never fell below the threshold: no knee inside the sweep
    ax.plot([row["gpus"]], [row[key] * scale], marker="D", markersize=9, markerfacecolor="none",
            markeredgewidth=1.6, color=colour, linestyle="none")
    if annotate:
        # above the point, on a white box, so that the threshold line under it cannot strike the label through
        ax.annotate(f"knee {row['gpus']:,}", (row["gpus"], row[key] * scale), textcoords="offset points",
                    xytext=(0, 11), ha="center", va="bottom", fontsize=8, color=colour, zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.9})


@styled
def scaling(series: Sequence[dict], threshold: float, title: str = "") -> Figure:
    """Left: cluster throughput vs GPUs, with linear scaling from each series' smallest run dashed and, dotted,
    the throughput with failures (x goodput: checkpoints, lost work and restarts, ``outcomes.reliability``).
    Right: scaling efficiency tokens/s(n) / (n/n0 * tokens/s(n0)), the threshold and the knee (diamond)."""
    fig, (left, right) = figure(1, 2, width_in=11.0, height_in=4.4)
    for group in series:
        rows = group["rows"]
        gpus = [r["gpus"] for r in rows]
        tps = [r["tokens_per_s"] for r in rows]
        line, = left.plot(gpus, tps, marker="o", label=group["label"])
        if all(r.get("tokens_per_s_low") is not None for r in rows):  # several seeds: the p10-p90 band
            left.fill_between(gpus, [r["tokens_per_s_low"] for r in rows], [r["tokens_per_s_high"] for r in rows],
                              color=line.get_color(), alpha=0.25, linewidth=0)
        left.plot(gpus, [tps[0] * n / gpus[0] for n in gpus], linestyle="--", linewidth=1.0,
                  color=line.get_color(), alpha=0.6)
        if all(r.get("goodput_tokens_per_s") is not None for r in rows):
            left.plot(gpus, [r["goodput_tokens_per_s"] for r in rows], linestyle=":", marker=".",
                      color=line.get_color(), label=f"{group['label']} with failures")
        right.plot(gpus, [r["efficiency"] for r in rows], marker="o", color=line.get_color(), label=group["label"])
        linear = [tps[0] * n / gpus[0] for n in gpus]  # efficiency = throughput / linear scaling of the first run
        if all(r.get("tokens_per_s_low") is not None for r in rows):
            right.fill_between(gpus, [r["tokens_per_s_low"] / x for r, x in zip(rows, linear, strict=True)],
                               [r["tokens_per_s_high"] / x for r, x in zip(rows, linear, strict=True)],
                               color=line.get_color(), alpha=0.25, linewidth=0, label="p10-p90 over seeds")
        if all(r.get("goodput_tokens_per_s") is not None for r in rows):
            right.plot(gpus, [r["goodput_tokens_per_s"] / x for r, x in zip(rows, linear, strict=True)],
                       linestyle=":", marker=".", color=line.get_color(), label=f"{group['label']} with failures")
        _mark_knee(right, group, line.get_color(), "efficiency")
    for ax in (left, right):
        _gpu_axis(ax, _counts(series))
    _plain_log_y(left, lambda value: units.fmt_count(value, 2))
    left.set_ylabel("throughput (tokens/s)")
    left.set_title("Throughput (dashed: linear scaling; dotted: with failures)")
    left.legend(loc="upper left")
    right.axhline(threshold, linestyle=":", color="0.3", linewidth=1.0, label=f"threshold {threshold:.0%}")
    low = min(min(min(r["efficiency"], r["goodput_tokens_per_s"] / r["tokens_per_s"] * r["efficiency"]
                      if r.get("goodput_tokens_per_s") else r["efficiency"]) for r in group["rows"])
              for group in series)
    right.set_ylim(min(low, threshold) - 0.05, 1.05)
    right.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:.0%}"))
    right.set_ylabel("scaling efficiency (vs. smallest run)")
    right.set_title("Per-GPU throughput vs smallest run (diamond: knee)")
    right.legend(loc="best")   # not "lower left": there it covered the threshold line
    if title:
        fig.suptitle(title)
    return fig


@styled
def time_and_cost(series: Sequence[dict], title: str = "") -> Figure:
    """Left: wall-clock days to the target loss vs GPUs. Right: cost in USD (GPU-hours x (price + the fabric's
    share)), from zero. Knees marked."""
    fig, (left, right) = figure(1, 2, width_in=11.0, height_in=4.4)
    for group in series:
        rows = group["rows"]
        gpus = [r["gpus"] for r in rows]
        line, = left.plot(gpus, [r["time_to_target_s"] / SECONDS_PER_DAY for r in rows], marker="o",
                          label=group["label"])
        right.plot(gpus, [r["cost_usd"] for r in rows], marker="o", color=line.get_color(),
                   label=group["label"])
        _mark_knee(left, group, line.get_color(), "time_to_target_s", 1.0 / SECONDS_PER_DAY, annotate=False)
        _mark_knee(right, group, line.get_color(), "cost_usd")
    for ax in (left, right):
        _gpu_axis(ax, _counts(series))
    _plain_log_y(left, _days)
    left.set_ylabel("time to target loss (days)")
    left.set_title("Time to target")
    left.legend(loc="upper right")
    right.set_ylim(bottom=0.0)   # costs are compared as ratios: the axis starts at zero
    right.yaxis.set_major_formatter(FuncFormatter(
        lambda value, _pos: units.fmt_usd(value) if value >= 1000 else f"${value:,.0f}"))
    right.set_ylabel("cost to target loss (USD, network included)")
    right.set_title("Cost to target (diamond: knee)")
    right.legend(loc="lower left")
    first = series[0]
    fig.suptitle(title or f"To loss {first['target_loss']:.3f} ({first['law']} law)")
    return fig


@styled
def trend_efficiency(panels: Sequence[tuple[str, Sequence[dict]]], title: str = "") -> Figure:
    """Published (solid) against simulated (dashed) scaling efficiency of validated trend series, one colour a
    series, one panel per set. ``panels``: (title, the ``series`` of ``studies.trends.trends``); each legend entry
    ends with the series' trend error at its largest GPU count (simulated / published efficiency - 1)."""
    fig, axes = figure(1, len(panels), width_in=6.0 * len(panels), height_in=4.8)
    for ax, (name, series) in zip(axes if len(panels) > 1 else [axes], panels, strict=True):
        for s in series:
            gpus = [p["gpus"] for p in s["points"]]
            line, = ax.plot(gpus, [p["published_efficiency"] for p in s["points"]], marker="o",
                            label=f"{s['model']} ({s['end_trend_error']:+.1%})")
            ax.plot(gpus, [p["simulated_efficiency"] for p in s["points"]], marker="s", markerfacecolor="none",
                    linestyle="--", color=line.get_color())
        ax.set_xscale("log", base=2)   # doublings evenly spaced; ticks at powers of two (counts differ per series)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.0f}"))
        ax.set_xlabel("GPUs (log2 scale)")
        ax.axhline(1.0, color="0.5", linewidth=0.8)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:.0%}"))
        ax.set_ylabel("throughput per GPU / at the smallest count")
        ax.set_title(f"{name}: published (solid) vs simulated (dashed)")
        ax.legend(loc="lower left", title="model (trend error at the end)", title_fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
