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
