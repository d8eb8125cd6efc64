"""Figures, in one style (``simcluster/data/simcluster.mplstyle``), written as PNG and PDF by ``save``.

The style and figure helpers of ``simcluster.analysis`` (the only package that imports matplotlib; its other
modules, ``scaling``, ``heatmap`` and ``timeline``, build on ``figure``, ``styled`` and ``save``). Nothing here
touches pyplot or the global backend: figures are ``matplotlib.figure.Figure`` objects, which render through Agg
(PNG) and the PDF backend without a display, so the package is safe headless, in tests, in worker processes and
inside other people's notebooks alike.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import matplotlib.style
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from simcluster.core import outputs, units
from simcluster.core.errors import ScenarioError
from simcluster.outcomes import laws

SECONDS_PER_DAY = 86400.0


def style_path() -> Path:
    return Path(str(resources.files("simcluster").joinpath("data", "simcluster.mplstyle")))


def styled(function):
    """Build the figure inside the simcluster style (rcParams are read when artists are created)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with matplotlib.style.context(style_path()):
            return function(*args, **kwargs)

    return wrapper


@styled
def figure(nrows: int = 1, ncols: int = 1, width_in: float | None = None, height_in: float | None = None):
    """A new Figure with a grid of axes (no pyplot): ``fig, axes = figure(1, 2)``."""
    fig = Figure(layout="constrained")
    if width_in or height_in:
        default_w, default_h = fig.get_size_inches()
        fig.set_size_inches(width_in or default_w, height_in or default_h)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, (axes[0, 0] if nrows == ncols == 1 else axes.ravel())


def save(fig: Figure, out_dir: str | Path, stem: str, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``<out_dir>/<stem>.png`` and ``.pdf`` (or the given ``formats``), each atomically; returns the paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ScenarioError("--out", f"cannot create {str(out)!r}: {err.strerror}") from None
    paths = [out / f"{stem}.{suffix}" for suffix in formats]
    with matplotlib.style.context(style_path()):
        for path in paths:
            with outputs.atomic_path(path) as tmp:
                fig.savefig(tmp)
    return paths


def _flop_grid(min_flop: float, max_flop: float, points: int = 200) -> np.ndarray:
    return np.geomspace(min_flop, max_flop, points)


# ---- scaling laws ------------------------------------------------------------------------------------------
@styled
def loss_vs_compute(law_list: Sequence[laws.Law], min_flop: float = 1e18, max_flop: float = 1e27) -> Figure:
    """Compute-optimal loss L(N_opt(C), D_opt(C)) per law, and Kaplan's L(C_min) when Kaplan is among them."""
    fig, ax = figure()
    flop = _flop_grid(min_flop, max_flop)
    for law in law_list:
        ax.plot(flop, law.optimal(flop).loss, label=f"{law.name}: compute-optimal L(N_opt, D_opt)")
        if isinstance(law, laws.KaplanLaw):
            ax.plot(flop, law.loss_of_compute(flop), linestyle="--", color=ax.lines[-1].get_color(),
                    label="kaplan: L(C_min), eq. 1.3")
        elif law.irreducible_loss > 0:
            ax.axhline(law.irreducible_loss, linestyle=":", linewidth=1.0, color=ax.lines[-1].get_color(),
                       label=f"{law.name}: irreducible E = {law.irreducible_loss:g}")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C = 6ND (FLOP)")
    ax.set_ylabel("loss (nats/token, each law on its own data)")
    ax.set_title("Loss vs. compute on the compute-optimal frontier")
    ax.legend(loc="upper right")
    return fig


@styled
def compute_optimal(law_list: Sequence[laws.Law], min_flop: float = 1e18, max_flop: float = 1e27) -> Figure:
    """N_opt(C) and D_opt(C) (closed forms) and the tokens-per-parameter ratio they imply."""
    fig, (left, right) = figure(1, 2, width_in=10.0)
    flop = _flop_grid(min_flop, max_flop)
    for law in law_list:
        best = law.optimal(flop)
        line, = left.plot(flop, best.params, label=f"{law.name}: parameters N_opt")
        left.plot(flop, best.tokens, linestyle="--", color=line.get_color(),
                  label=f"{law.name}: tokens D_opt")
        right.plot(flop, best.tokens / best.params, color=line.get_color(), label=law.name)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training compute C (FLOP)")
    left.set_ylabel("parameters, tokens (count)")
    left.set_title("Compute-optimal allocation (C = 6ND)")
    left.legend(loc="upper left")
    right.set_ylabel("tokens per parameter D_opt/N_opt")
    right.axhline(20.0, linestyle=":", color="0.4", linewidth=1.0,
                  label="20 tokens/param (Chinchilla rule of thumb)")
    right.set_title("Tokens per parameter")
    right.legend(loc="upper left")
    return fig


@styled
def relative_loss(gammas: Sequence[float], kappa: float, max_years: float = 10.0) -> Figure:
    """Lu 2025's figure: R(t) for several efficiency-doubling rates gamma."""
    fig, ax = figure()
    years = np.linspace(0.0, max_years, 400)
    for gamma in gammas:
        period = "no efficiency gain" if gamma == 0 else f"doubling every {12.0 / gamma:.3g} months"
        ax.plot(years, laws.relative_loss(years, gamma, kappa), label=f"gamma = {gamma:g} ({period})")
    ax.set_xlabel("time t (years)")
    ax.set_ylabel("relative loss R(t) = L(t)/L(C0) (dimensionless)")
    ax.set_title(f"Time-aware scaling (Lu 2025), kappa = {kappa:g}")
    ax.set_xlim(0.0, max_years)
    ax.legend(loc="lower left")
    return fig


@styled
def loss_vs_time(curve: dict, report: dict, title: str) -> Figure:
    """L(t) against wall-clock days for one run, with the target and the day it is reached."""
    fig, ax = figure()
    days = curve["time_s"] / SECONDS_PER_DAY
    ax.plot(days, curve["loss"], label=f"{curve['law']}, N = {curve['params']:.3g} params")
    ax.axhline(curve["loss_floor"], linestyle=":", color="0.4", linewidth=1.0,
               label=f"floor at this N (unlimited data): {curve['loss_floor']:.3f}")
    reached_day = report["time_to_target_s"] / SECONDS_PER_DAY
    what = "target" if report.get("target_loss") is not None else "loss at the token budget"
    ax.axhline(report["loss"], linestyle="--", color="C1", linewidth=1.0, label=f"{what} {report['loss']:.3f}")
    ax.axvline(reached_day, linestyle="--", color="C1", linewidth=1.0)
    ax.plot([reached_day], [report["loss"]], marker="o", color="C1",
            label=f"reached after {reached_day:.3g} days, {report['gpu_hours']:.3g} GPU-h, "
                  f"${report['cost_usd']:.3g}")
    ax.set_xlabel("wall-clock time (days)")
    ax.set_ylabel("loss (nats/token)")
    low = min(curve["loss_floor"], report["loss"])
    high = report["loss"] + 2.5 * (report["loss"] - curve["loss_floor"])
    ax.set_xlim(0.0, days[-1])
    ax.set_ylim(low - 0.1 * (high - low), high)
    ax.set_title(title)
    ax.legend(loc="upper right")
    return fig


# ---- projection --------------------------------------------------------------------------------------------
_CONSTRAINT_COLORS = {"compute": "#0072B2", "memory": "#56B4E9", "network": "#CC79A7", "budget": "#E69F00",
                      "energy": "#D55E00", "data": "#009E73"}


@styled
def projection(rows: list[dict], phase: dict, constraints: Sequence[str]) -> Figure:
    """Left: each constraint's FLOP ceiling by year, the binding one traced in black. Right: the phase map."""
    fig, (left, right) = figure(1, 2, width_in=11.0, height_in=4.6)
    years = [row["year"] for row in rows]

    def log10(key: str) -> np.ndarray:
        return np.log10([row[key] for row in rows])

    # log10 on a linear axis, as the table prints them: matplotlib's log axis overflows its tick positions to inf
    # for limits above ~1e280 FLOP (effective compute at gamma 9 over 100 years: 3e296), an OverflowError
    for name in constraints:
        left.plot(years, log10(f"{name}_flop"), color=_CONSTRAINT_COLORS[name], label=name)
    left.plot(years, log10("flop"), color="black", linewidth=3.0, alpha=0.35, label="achievable (binding)")
    left.plot(years, log10("effective_flop"), color="black", linestyle="--", linewidth=1.2,
              label="effective, x 2^(gamma t)")
    low = min(min(log10(f"{name}_flop").min() for name in constraints), log10("flop").min())
    left.set_ylim(low - 1.0, log10("effective_flop").max() + 1.5)
    left.set_xlabel("year")
    left.set_ylabel("log10 FLOP of one training run")
    left.set_title("Ceilings on one run (lowest binds)")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=4)

    index = {name: i for i, name in enumerate(constraints)}
    grid = np.array([[index[name] for name in row] for row in phase["binding"]])
    cmap = ListedColormap([_CONSTRAINT_COLORS[name] for name in constraints])
    right.imshow(grid, origin="lower", aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(constraints) - 0.5,
                 extent=(phase["years"][0] - 0.5, phase["years"][-1] + 0.5, -0.5, len(phase["values"]) - 0.5))
    right.grid(False)
    right.set_yticks(range(len(phase["values"])), [f"{value:.2g}" for value in phase["values"]])
    unit = {"budget_usd": "USD", "power_cap_w": "W", "compute_flop_per_s": "FLOP/s",
            "data_stock_tokens": "tokens"}[phase["field"]]
    right.set_xlabel("year")
    right.set_ylabel(f"start-year {phase['parameter']} ({unit})")
    right.set_title("Binding constraint (phase map)")
    present = sorted({name for row in phase["binding"] for name in row}, key=index.get)
    right.legend(handles=[Patch(color=_CONSTRAINT_COLORS[name], label=name) for name in present],
                 loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


# ---- topology comparison -----------------------------------------------------------------------------------
_IN_SERVER = ("nvlink", "pcie", "unattributed")


def _in_server_s(s: dict) -> float:
    """Exposed communication on NVLink/PCIe inside the servers (no fabric changes it); 0 without the split."""
    by_tier = s.get("exposed_comm_by_link_class_s") or {}
    return float(sum(by_tier.get(tier, 0.0) for tier in _IN_SERVER))


_PARTS = ((lambda s: s["compute_s"], "compute", "#0072B2"),
          (lambda s: s["exposed_comm_s"] - _in_server_s(s), "exposed comm: fabric", "#D55E00"),
          (_in_server_s, "exposed comm: NVLink/PCIe", "#CC79A7"),
          (lambda s: s["pipeline_bubble_s"], "pipeline bubble", "#E69F00"))


@styled
def step_breakdown(runs: Sequence[dict], title: str = "Step time per fabric") -> Figure:
    """Horizontal stacked bars, one per run (``{'label', 'summary'}``): compute, exposed communication on the fabric
    and inside the servers (NVLink/PCIe), pipeline bubble (their sum is the step time, results.summarize), with the
    step time and MFU written at the end."""
    fig, ax = figure(width_in=8.0, height_in=1.6 + 0.55 * len(runs))
    labels = [run["label"] for run in runs]
    y = np.arange(len(runs))
    left = np.zeros(len(runs))
    for part, name, colour in _PARTS:
        widths = np.maximum(np.array([float(part(run["summary"])) for run in runs]), 0.0)
        ax.barh(y, widths, left=left, height=0.6, color=colour, label=name)
        left += widths
    for index, run in enumerate(runs):
        s = run["summary"]
        ax.text(left[index], index, f"  {s['step_time_s']:.3g} s, MFU {s['mfu']:.1%}", va="center", fontsize=8.5)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0.0, left.max() * 1.3)
    ax.set_xlabel("time per optimizer step (s)")
    ax.grid(axis="y", visible=False)
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18 if len(runs) < 4 else -0.1), ncols=2)
    return fig


@styled
def loss_over_time(curves: Sequence[dict], target_loss: float, title: str = "Loss over wall-clock time") -> Figure:
    """L(t) per run (``{'label', 'curve': economics.loss_curve(...), 'report': economics.time_to_target(...)}``),
    the target loss and the day each run reaches it."""
    fig, ax = figure(width_in=7.5)
    floor = min(item["curve"]["loss_floor"] for item in curves)
    for item in curves:
        curve, report = item["curve"], item["report"]
        line, = ax.plot(curve["time_s"] / SECONDS_PER_DAY, curve["loss"],
                        label=f"{item['label']}: {report['time_to_target_s'] / SECONDS_PER_DAY:.3g} days, "
                              f"{units.fmt_usd(report['cost_usd'])}")
        ax.plot([report["time_to_target_s"] / SECONDS_PER_DAY], [target_loss], marker="o", color=line.get_color())
    ax.axhline(target_loss, linestyle="--", color="0.3", linewidth=1.0, label=f"target loss {target_loss:.3f}")
    ax.set_xlim(0.0, max(item["curve"]["time_s"][-1] for item in curves) / SECONDS_PER_DAY)
    high = target_loss + 2.5 * (target_loss - floor)
    ax.set_ylim(floor - 0.1 * (high - floor), high)
    ax.set_xlabel("wall-clock time (days)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend(loc="upper right")
    return fig
