"""The figure fixes of issue 18, each held: pipeline-stage lanes say what they stand for, the knee label is not
struck through by the threshold line, cost axes start at zero and read money without exponent notation, and a
recorded run and its replay share one image on one time axis."""

from __future__ import annotations

import pandas as pd
import pytest

from simcluster import simulate
from simcluster.analysis import scaling, timeline
from simcluster.spec import config
from tests.conftest import SMALL


def _drawn(fig):
    """Lay the figure out as it is saved (the Agg canvas of ``plots.save``); returns the canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas


@pytest.fixture(scope="module")
def collapsed_events() -> pd.DataFrame:
    return simulate(config.from_dict(SMALL, source="test"), network="analytic").events


def _series(efficiencies: list[float], threshold: float, costs: list[float]) -> list[dict]:
    gpus = [64 * 2 ** i for i in range(len(efficiencies))]
    rows = [{"gpus": n, "tokens_per_s": 1e4 * n / 64 * e, "efficiency": e, "time_to_target_s": 86400 * 1e3 / n * 64,
             "cost_usd": c} for n, e, c in zip(gpus, efficiencies, costs, strict=True)]
    above = [r for r in rows if r["efficiency"] >= threshold]
    below = next(r["gpus"] for r in rows if r["efficiency"] < threshold)
    return [{"label": "leaf-spine", "rows": rows, "knee": {"knee_gpus": above[-1]["gpus"], "first_below_gpus": below},
             "law": "chinchilla-refit", "target_loss": 1.9}]


def test_pipeline_stage_lanes_are_named_and_the_title_says_what_a_row_stands_for(collapsed_events):
    fig = timeline.timeline(collapsed_events, title="small")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert any(label.startswith("stage 0 (rank 0)") for label in labels)
    assert any(label.startswith("stage 1 (rank ") for label in labels)
    # 16 GPUs in 2 stages: each stage row stands for 8
    assert "one row per pipeline stage" in ax.get_title() and "stands for 8 GPUs" in ax.get_title()


def test_recorded_and_replayed_timelines_are_one_image_on_one_time_axis(collapsed_events):
    later = collapsed_events.assign(start_s=collapsed_events["start_s"] * 1.5, end_s=collapsed_events["end_s"] * 1.5)
    fig = timeline.timelines([("recorded", collapsed_events), ("replayed on leaf-spine", later)])
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["recorded", "replayed on leaf-spine"]
    assert panels[0].get_xlim() == panels[1].get_xlim()  # the same time axis: the slower replay is visibly longer
    assert panels[0].get_xlim()[1] == pytest.approx(later["end_s"].max() * 1e3)


def test_knee_label_is_not_struck_through_by_the_threshold_line():
    # a knee just above the threshold: its label used to sit on the threshold line
    threshold = 0.8
    fig = scaling.scaling(_series([1.0, 0.9, 0.81, 0.7], threshold, [1e6] * 4), threshold)
    right = fig.axes[1]
    renderer = _drawn(fig).get_renderer()
    label = next(t for t in right.texts if t.get_text().startswith("knee"))
    box = label.get_window_extent(renderer)
    _, line_y = right.transData.transform((64, threshold))
    assert not box.y0 <= line_y <= box.y1, (box, line_y)


def test_cost_axis_starts_at_zero_and_reads_money_without_exponent_notation():
    costs = [6.32e6, 6.5e6, 6.9e6, 8.3e6]  # a range far from zero, which autoscaling would have zoomed into
    fig = scaling.time_and_cost(_series([1.0, 0.9, 0.81, 0.7], 0.8, costs))
    cost_axis = fig.axes[1]
    assert cost_axis.get_ylim()[0] == 0.0
    _drawn(fig)
    ticks = [t.get_text() for t in cost_axis.get_yticklabels() if t.get_text()]
    assert ticks and all(t.startswith("$") and "e+" not in t for t in ticks), ticks
    assert any(t.endswith("M") for t in ticks)
