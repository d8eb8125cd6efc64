"""Link-utilisation heatmap and step timeline: what each cell and bar stands for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simcluster.analysis import heatmap, timeline


def _links(rows):
    return pd.DataFrame(rows, columns=["link_id", "src", "dst", "kind", "bytes", "utilisation"])


def test_cell_holds_the_busiest_link_between_two_groups_and_servers_are_folded():
    links = _links([
        (0, "n0/nic0", "leaf/0", "ib", 1.0, 0.2),
        (1, "n0/nic1", "leaf/0", "ib", 1.0, 0.5),   # same server, same leaf: the busier link shows
        (2, "leaf/0", "spine/1", "ib", 1.0, 0.1),
        (3, "n1/gpu0", "n1/pcie0", "pcie", 1.0, 0.05),  # inside server n1: on the diagonal
        (4, "spine/1", "leaf/0", "ib", 1.0, 0.3),
    ])
    grid, names, blocks = heatmap.matrix(links)
    assert names == ["n0", "n1", "leaf/0", "spine/1"]
    assert [(role, start, end) for role, start, end in blocks] == [("host", 0, 2), ("leaf", 2, 3), ("spine", 3, 4)]
    at = {name: i for i, name in enumerate(names)}
    assert grid[at["n0"], at["leaf/0"]] == 0.5
    assert grid[at["n1"], at["n1"]] == 0.05
    assert grid[at["leaf/0"], at["spine/1"]] == 0.1 and grid[at["spine/1"], at["leaf/0"]] == 0.3
    assert np.isnan(grid).sum() == 16 - 4


def test_binning_a_large_matrix_keeps_the_hot_link_visible():
    grid = np.full((10, 10), np.nan)
    grid[7, 2] = 0.9
    grid[6, 3] = 0.1
    binned = heatmap._binned(grid, 4)
    assert binned.shape == (3, 3)
    assert binned[1, 0] == 0.9 and np.isnan(binned[0, 0])


def test_heatmap_needs_link_ends():
    with pytest.raises(ValueError, match="src/dst"):
        heatmap.matrix(pd.DataFrame({"link_id": [0], "utilisation": [0.1]}))


def test_timeline_writes_a_png_at_the_requested_path(tmp_path):
    events = pd.DataFrame([
        (0, "compute", "compute", "forward c0", 0, 0.0, 0.010, 0.0, 1),
        (0, "tp", "comm", "tp comm forward c0", 0, 0.010, 0.012, 0.0, 1),
        (1, "compute", "compute", "backward c1", 0, 0.012, 0.030, 0.0, 1),
        (1, "dp", "comm", "dp all-reduce", -1, 0.030, 0.040, 1e6, 1),
    ], columns=["rank", "stream", "kind", "name", "microbatch", "start_s", "end_s", "bytes", "group"])
    path = timeline.plot_timeline(events, tmp_path / "timeline.png", title="two ranks")
    assert path == tmp_path / "timeline.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure = timeline.timeline(events, until_s=0.011)
    assert len(figure.axes[0].get_yticklabels()) == 2  # rank 0's compute and tp lanes only
