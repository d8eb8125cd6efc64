"""Figures carry labelled axes with units, log scales where the quantity spans decades, and a legend; ``save``
writes a PNG and a PDF."""

import pytest

from simcluster.analysis import plots
from simcluster.core.errors import ScenarioError
from simcluster.outcomes import laws


def test_loss_vs_compute_has_log_compute_axis_with_units_and_a_legend():
    fig = plots.loss_vs_compute([laws.get(name) for name in laws.LAW_NAMES])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "FLOP" in ax.get_xlabel() and "nats/token" in ax.get_ylabel()
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any("kaplan" in label for label in labels) and any("chinchilla-refit" in label for label in labels)


def test_compute_optimal_is_log_log_in_both_panels():
    fig = plots.compute_optimal([laws.get("chinchilla")])
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in fig.axes)
    assert all(ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() for ax in fig.axes)


def test_relative_loss_figure_draws_one_curve_per_gamma_starting_at_one():
    fig = plots.relative_loss([0.0, 1.0, 2.0], kappa=0.05)
    ax = fig.axes[0]
    assert len(ax.lines) == 3
    assert all(line.get_ydata()[0] == pytest.approx(1.0) for line in ax.lines)
    assert "years" in ax.get_xlabel()


def test_save_writes_png_and_pdf(tmp_path):
    fig = plots.relative_loss([0.0], kappa=0.05)
    paths = plots.save(fig, tmp_path / "figs", "lu")
    assert [path.name for path in paths] == ["lu.png", "lu.pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"


def test_save_into_an_impossible_folder_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ScenarioError, match="--out"):
        plots.save(plots.relative_loss([0.0], kappa=0.05), blocker / "sub", "lu")


def _sweep_series(days: list[float], tokens_per_s: list[float]) -> list[dict]:
    """One series of a sweep's table (``studies.sweep.table``) over 8..64 GPUs, spanning less than a decade."""
    rows = [{"gpus": g, "tokens_per_s": t, "efficiency": t / (tokens_per_s[0] * g / 8), "time_to_target_s": d * 86400,
             "cost_usd": 16_000.0 + g} for g, d, t in zip((8, 16, 32, 64), days, tokens_per_s, strict=True)]
    return [{"label": "rail-fat-tree", "rows": rows, "knee": {"knee_gpus": 64, "first_below_gpus": None},
             "law": "chinchilla-refit", "target_loss": 2.176}]


def _tick_labels(axis) -> list[str]:
    return [t.get_text() for t in axis.get_majorticklabels() + axis.get_minorticklabels() if t.get_text()]


def test_sweep_figures_label_their_log_axes_in_plain_numbers():
    """Days and tokens/s over less than a decade: matplotlib's default labels its minor ticks 4x10^1 and 3x10^5;
    the figures read 40 and 300k, as the sweep's table does."""
    from simcluster.analysis import scaling

    series = _sweep_series([42.1, 20.9, 10.5, 5.24], [38.4e3, 77.2e3, 155e3, 309e3])
    for fig, wanted in ((scaling.time_and_cost(series), {"10", "20", "40"}),
                        (scaling.scaling(series, 0.8), {"100k", "200k", "300k"})):
        fig.canvas.draw()
        labels = _tick_labels(fig.axes[0].yaxis)
        assert wanted <= set(labels), labels
        assert not any("times" in label or "^" in label or "e+" in label for label in labels), labels
