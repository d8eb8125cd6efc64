"""Timeline (Gantt) of a simulated step: a row per (rank, stream), bars coloured by kind of work.

Built on ``plots.figure`` (the simcluster style, no pyplot, no global backend). With the symmetry collapse the
events hold one representative rank per pipeline stage (column ``group``: how many GPUs it stands for).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from simcluster.analysis.plots import figure, save, styled

# "dp-experts": the expert data-parallel group's own stream, where it has one (engine.results.OPTIONAL_STREAM_TIDS)
STREAM_ORDER = ["compute", "tp", "cp", "ep", "pp", "dp", "dp-experts"]
COLOURS = {"forward": "#0072B2", "backward": "#009E73", "optimizer": "#CC79A7", "compute": "#0072B2",
           "tp": "#D55E00", "cp": "#F0E442", "ep": "#000000", "pp": "#E69F00", "dp": "#56B4E9",
           "dp-experts": "#332288"}
LABELS = {"forward": "forward", "backward": "backward (+recompute)", "optimizer": "optimizer",
          "compute": "compute", "tp": "tensor-parallel comm", "cp": "context-parallel exchange",
          "ep": "expert all-to-all", "pp": "pipeline send/recv", "dp": "data-parallel comm",
          "dp-experts": "expert data-parallel comm"}


def _colour_key(stream: str, name: str) -> str:
    if stream != "compute":
        return stream
    first = name.split()[0] if name else ""
    return first if first in ("forward", "backward", "optimizer") else "compute"


def _lanes(events: pd.DataFrame, max_ranks: int, until_s: float | None):
    ranks = sorted(events["rank"].unique())[:max_ranks]
    shown = events[events["rank"].isin(ranks)]
    if until_s is not None:
        shown = shown[shown["start_s"] < until_s]
    shown = shown[shown["stream"].isin(STREAM_ORDER)]
    lanes = [(r, s) for r in ranks for s in STREAM_ORDER if ((shown["rank"] == r) & (shown["stream"] == s)).any()]
    return ranks, shown, lanes


def _draw(ax, ranks, shown: pd.DataFrame, lanes: list, title: str, stages: bool = True) -> set:
    """The bars of ``shown`` on ``ax``, one lane per (rank, stream); returns the colour keys drawn. ``stages``: a
    collapsed training run, whose representative ranks are its pipeline stages in order (a replay's are agents
    running one recorded program)."""
    lane_index = {lane: i for i, lane in enumerate(lanes)}
    keys = [_colour_key(s, n) for s, n in zip(shown["stream"], shown["name"], strict=True)]
    for key, group in shown.groupby(pd.Series(keys, index=shown.index)):
        # one PolyCollection per colour: tens of thousands of bars draw in well under a second (barh makes a
        # patch per bar)
        ys = np.array([lane_index[(r, s)] for r, s in zip(group["rank"], group["stream"], strict=True)], float)
        x0, x1 = group["start_s"].to_numpy() * 1e3, group["end_s"].to_numpy() * 1e3
        boxes = np.stack([np.stack([x0, ys - 0.4], 1), np.stack([x1, ys - 0.4], 1),
                          np.stack([x1, ys + 0.4], 1), np.stack([x0, ys + 0.4], 1)], axis=1)
        ax.add_collection(PolyCollection(boxes, facecolors=COLOURS.get(key, "#999999"), linewidths=0))
    if len(shown) and shown["end_s"].max() > shown["start_s"].min():  # a trace of zero length keeps the default
        ax.set_xlim(shown["start_s"].min() * 1e3, shown["end_s"].max() * 1e3)
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    stands_for = shown.groupby("rank")["group"].max().to_dict() if "group" in shown and len(shown) else {}
    collapsed = any(g > 1 for g in stands_for.values())
    # collapsed: one representative rank per pipeline stage, the lowest rank of the stage, so rank order is stage
    # order
    stage_of = {r: i for i, r in enumerate(ranks)}
    if collapsed and stages:
        names = [f"stage {stage_of[r]} (rank {r}) {s}" for r, s in lanes]
    elif collapsed:
        names = [f"rank {r} (x{stands_for[r]:,}) {s}" for r, s in lanes]
    else:
        names = [f"rank {r} {s}" for r, s in lanes]
    ax.set_yticks(range(len(lanes)), names, fontsize=7)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("simulated time (ms)")
    subtitle = ""
    if collapsed:
        sizes = sorted(set(stands_for.values()))
        each = f"{sizes[0]:,}" if len(sizes) == 1 else f"{sizes[0]:,} to {sizes[-1]:,}"
        subtitle = (f"\none row per pipeline stage: its lowest rank stands for {each} GPUs (the stage's data-, "
                    "tensor- and context-parallel replicas)" if stages else
                    f"\na row's rank stands for {each} ranks that run the same recorded program")
    ax.set_title((title or "step timeline") + subtitle)
    return set(keys)


def _legend(ax, present: set, below: float) -> None:
    ax.legend(handles=[Patch(color=c, label=LABELS[k]) for k, c in COLOURS.items() if k in present],
              loc="upper center", bbox_to_anchor=(0.5, below), ncols=6)


@styled
def timeline(events: pd.DataFrame, title: str = "", max_ranks: int = 32, until_s: float | None = None,
             stages: bool = True) -> Figure:
    """Events of the first ``max_ranks`` ranks as horizontal bars (time in ms); ``until_s`` keeps the events that
    start before it (e.g. the first step's time, for a run of several steps)."""
    ranks, shown, lanes = _lanes(events, max_ranks, until_s)
    fig, ax = figure(width_in=12.0, height_in=max(3.0, 0.22 * len(lanes) + 1.6))
    present = _draw(ax, ranks, shown, lanes, title, stages)
    _legend(ax, present, -0.08 if len(lanes) > 12 else -0.2)
    return fig


@styled
def timelines(panels: list[tuple[str, pd.DataFrame]], title: str = "", max_ranks: int = 16,
              stages: bool = False) -> Figure:
    """Several runs' timelines one above the other on one time axis (a recorded run and its replay; ``stages``
    as in ``_draw``)."""
    laid = [(name, *_lanes(events, max_ranks, None)) for name, events in panels]
    heights = [max(1, len(lanes)) for *_, lanes in laid]
    fig, axes = figure(len(panels), 1, width_in=12.0, height_in=max(4.0, 0.2 * sum(heights) + 2.0 * len(panels)))
    axes = np.atleast_1d(axes)
    present: set = set()
    for ax, (name, ranks, shown, lanes) in zip(axes, laid, strict=True):
        present |= _draw(ax, ranks, shown, lanes, name, stages)
    end_ms = max((shown["end_s"].max() * 1e3 for _, _, shown, _ in laid if len(shown)), default=1.0)
    for ax in axes:
        ax.set_xlim(0.0, end_ms or 1.0)  # a replay of zero length (one rank's collective alone): 1 ms
    if title:
        fig.suptitle(title)
    _legend(axes[-1], present, -0.25)
    return fig


def plot_timeline(events: pd.DataFrame, path: Path, title: str = "", max_ranks: int = 32, stages: bool = True) -> Path:
    """Draw ``timeline`` and write it as a PNG at ``path`` (used by ``simcluster run``)."""
    path = Path(path)
    fig = timeline(events, title=title, max_ranks=max_ranks, stages=stages)
    save(fig, path.parent, path.stem, formats=(path.suffix.lstrip(".") or "png",))
    return path
