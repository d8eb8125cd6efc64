"""One-page timeline (Gantt) of a simulated step: a row per (rank, stream), bars coloured by kind of work."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

STREAM_ORDER = ["compute", "tp", "pp", "dp"]
COLOURS = {"forward": "#4C72B0", "backward": "#55A868", "optimizer": "#8172B2", "tp": "#C44E52",
           "pp": "#DD8452", "dp": "#937860"}
LABELS = {"forward": "forward", "backward": "backward (+recompute)", "optimizer": "optimizer",
          "tp": "tensor-parallel comm", "pp": "pipeline send/recv", "dp": "data-parallel comm"}


def _colour_key(stream: str, name: str) -> str:
    if stream != "compute":
        return stream
    first = name.split()[0]
    return first if first in COLOURS else "forward"


def plot_timeline(events: pd.DataFrame, path: Path, title: str = "", max_ranks: int = 32) -> Path:
    """Draw the events of the first ``max_ranks`` ranks as horizontal bars (time in ms) and save a PNG."""
    ranks = sorted(events["rank"].unique())[:max_ranks]
    shown = events[events["rank"].isin(ranks)]
    lanes = [(r, s) for r in ranks for s in STREAM_ORDER if ((shown["rank"] == r) & (shown["stream"] == s)).any()]
    lane_index = {lane: i for i, lane in enumerate(lanes)}
    fig, ax = plt.subplots(figsize=(14, max(3.0, 0.28 * len(lanes) + 1.5)))
    keys = [_colour_key(s, n) for s, n in zip(shown["stream"], shown["name"], strict=True)]
    for key, group in shown.groupby(pd.Series(keys, index=shown.index)):
        ys = [lane_index[(r, s)] for r, s in zip(group["rank"], group["stream"], strict=True)]
        ax.barh(ys, (group["end_s"] - group["start_s"]) * 1e3, left=group["start_s"] * 1e3, height=0.8,
                color=COLOURS.get(key, "#999999"), linewidth=0)
    ax.set_yticks(range(len(lanes)), [f"rank {r} {s}" for r, s in lanes], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_title(title or "step timeline")
    ax.legend(handles=[Patch(color=c, label=LABELS[k]) for k, c in COLOURS.items()], loc="upper center",
              bbox_to_anchor=(0.5, -0.12), ncol=6, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
