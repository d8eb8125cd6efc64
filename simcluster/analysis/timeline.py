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

STREAM_ORDER = ["compute", "tp", "cp", "ep", "pp", "dp"]
COLOURS = {"forward": "#0072B2", "backward": "#009E73", "optimizer": "#CC79A7", "compute": "#0072B2",
           "tp": "#D55E00", "cp": "#F0E442", "ep": "#000000", "pp": "#E69F00", "dp": "#56B4E9"}
LABELS = {"forward": "forward", "backward": "backward (+recompute)", "optimizer": "optimizer",
          "compute": "compute", "tp": "tensor-parallel comm", "cp": "context-parallel exchange",
          "ep": "expert all-to-all", "pp": "pipeline send/recv", "dp": "data-parallel comm"}


def _colour_key(stream: str, name: str) -> str:
    if stream != "compute":
        return stream
    first = name.split()[0] if name else ""
    return first if first in ("forward", "backward", "optimizer") else "compute"


@styled
def timeline(events: pd.DataFrame, title: str = "", max_ranks: int = 32, until_s: float | None = None) -> Figure:
    """Events of the first ``max_ranks`` ranks as horizontal bars (time in ms); ``until_s`` keeps the events that
    start before it (e.g. the first step's time, for a run of several steps)."""
    ranks = sorted(events["rank"].unique())[:max_ranks]
    shown = events[events["rank"].isin(ranks)]
    if until_s is not None:
        shown = shown[shown["start_s"] < until_s]
    shown = shown[shown["stream"].isin(STREAM_ORDER)]
    lanes = [(r, s) for r in ranks for s in STREAM_ORDER if ((shown["rank"] == r) & (shown["stream"] == s)).any()]
    lane_index = {lane: i for i, lane in enumerate(lanes)}
    fig, ax = figure(width_in=12.0, height_in=max(3.0, 0.22 * len(lanes) + 1.6))
    keys = [_colour_key(s, n) for s, n in zip(shown["stream"], shown["name"], strict=True)]
    for key, group in shown.groupby(pd.Series(keys, index=shown.index)):
        # one PolyCollection per colour: tens of thousands of bars draw in well under a second (barh makes a
        # patch per bar)
        ys = np.array([lane_index[(r, s)] for r, s in zip(group["rank"], group["stream"], strict=True)], float)
        x0, x1 = group["start_s"].to_numpy() * 1e3, group["end_s"].to_numpy() * 1e3
        boxes = np.stack([np.stack([x0, ys - 0.4], 1), np.stack([x1, ys - 0.4], 1),
                          np.stack([x1, ys + 0.4], 1), np.stack([x0, ys + 0.4], 1)], axis=1)
        ax.add_collection(PolyCollection(boxes, facecolors=COLOURS.get(key, "#999999"), linewidths=0))
    if len(shown):
        ax.set_xlim(shown["start_s"].min() * 1e3, shown["end_s"].max() * 1e3)
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    ax.set_yticks(range(len(lanes)), [f"rank {r} {s}" for r, s in lanes], fontsize=7)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("simulated time (ms)")
    ax.set_title(title or "step timeline")
    present = set(keys)
    ax.legend(handles=[Patch(color=c, label=LABELS[k]) for k, c in COLOURS.items() if k in present],
              loc="upper center",
              bbox_to_anchor=(0.5, -0.08 if len(lanes) > 12 else -0.2), ncols=6)
    return fig


def plot_timeline(events: pd.DataFrame, path: Path, title: str = "", max_ranks: int = 32) -> Path:
    """Draw ``timeline`` and write it as a PNG at ``path`` (used by ``simcluster run``)."""
    path = Path(path)
    fig = timeline(events, title=title, max_ranks=max_ranks)
    save(fig, path.parent, path.stem, formats=(path.suffix.lstrip(".") or "png",))
    return path
