"""Recorded against replayed step times: one figure for a replay on one or several fabrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from simcluster.analysis.plots import figure, styled


@styled
def step_overlay(replays: Sequence[dict], title: str = "Recorded and replayed step time") -> Figure:
    """Per recorded step, the recorded step time (black) and each replay's (``{'label', 'steps':
    report.step_report rows}``), with each replay's exposed communication as a hatched bar underneath."""
    steps = replays[0]["steps"]
    x = np.arange(len(steps))
    fig, ax = figure(width_in=max(6.0, 1.2 * len(steps) + 3.0), height_in=4.0)
    width = 0.8 / len(replays)
    for i, replay in enumerate(replays):
        offset = (i - (len(replays) - 1) / 2) * width
        replayed = [s["replayed_step_s"] * 1e3 for s in replay["steps"]]
        exposed = [s["exposed_comm_s"] * 1e3 for s in replay["steps"]]
        bars = ax.bar(x + offset, replayed, width=width * 0.9, label=f"replayed on {replay['label']}", alpha=0.85)
        ax.bar(x + offset, exposed, width=width * 0.9, color=bars.patches[0].get_facecolor(), hatch="//",
               edgecolor="white", alpha=0.5)
    recorded = [s["recorded_step_s"] * 1e3 for s in steps]
    ax.plot(x, recorded, color="black", marker="o", linestyle="--", label="recorded")
    ax.set_xticks(x, ["all" if s["step"] is None else str(s["step"]) for s in steps])
    ax.set_xlabel("recorded step (hatched: exposed communication)")
    ax.set_ylabel("step time (ms)")
    ax.set_ylim(0.0, 1.15 * max([*recorded, *(s["replayed_step_s"] * 1e3 for r in replays for s in r["steps"])])
                or 1.0)  # steps of zero length (one rank's collective alone): 1 ms
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=min(3, len(replays) + 1))
    return fig
