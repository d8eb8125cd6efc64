"""The links table of a run read from the fabric's codes (``record.FabricLinks.of``: ends, kinds and classes as
``core.table.Coded`` columns) equals the table of its per-link lists, cell for cell and byte for byte; the summary's
per-kind maxima read by code equal those read per row; the engine's network runs on the plan's calibrated view."""

from __future__ import annotations

import numpy as np
import pytest

from simcluster import collectives
from simcluster.collectives import timing
from simcluster.core.table import Coded
from simcluster.engine import Simulation
from simcluster.engine.record import FabricLinks
from simcluster.engine.results import link_table, max_by
from simcluster.fabric import topology
from simcluster.spec import config, hardware


def build(name: str, gpus: int, **options):
    return topology.build(name, gpus=gpus, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                          nic=hardware.nic("connectx-7"), options=options)


def per_link_lists(fabric) -> FabricLinks:
    """The fabric as the links table read it before codes: one Python value per link."""
    return FabricLinks(fabric.name, list(fabric.link_kind), fabric.link_bytes_per_s, fabric.link_ends,
                       list(fabric.link_class))


@pytest.mark.parametrize("name, gpus, options", [("rail-fat-tree", 256, {}), ("leaf-spine", 64, {}),
                                                 ("torus", 64, {"dims": [4, 4, 4]})])
def test_links_table_of_codes_is_the_table_of_the_per_link_lists(tmp_path, name, gpus, options):
    fabric = build(name, gpus, **options)
    coded = FabricLinks.of(fabric)
    assert all(isinstance(column, Coded) for column in (coded.kinds, coded.classes, coded.ends.sources,
                                                        coded.ends.destinations))
    rng = np.random.default_rng(0)
    some = np.where(rng.random(fabric.links) < 0.6, rng.choice([1e9, 2.5e9, 0.1 + 0.2], fabric.links), 0.0)
    for link_bytes in (some, np.full(fabric.links, 3e9)):   # some links unused (a subset), then every link
        peak = link_bytes / 7.0
        ours, theirs = (link_table(given, link_bytes, 1.5, peak) for given in (coded, per_link_lists(fabric)))
        assert ours.names == theirs.names
        for name_ in ours.names:
            assert list(ours[name_]) == list(theirs[name_]), name_
        ours.write_csv(tmp_path / "ours.csv")
        theirs.write_csv(tmp_path / "theirs.csv")
        assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "theirs.csv").read_bytes()
        for column in ("utilisation", "peak_utilisation"):
            assert max_by(ours["kind"], ours[column]) == max_by(theirs["kind"], theirs[column])


def test_maxima_by_code_equal_maxima_by_text_with_repeated_labels_and_nan():
    labels = ["nic", "nvlink", "nic", "spine-core"]        # a label twice: its codes are one key
    codes = np.array([0, 1, 2, 2, 1, 0, 2])
    values = np.array([0.5, np.nan, 0.7, 0.1, 0.2, np.nan, 0.3])
    texts = [labels[c] for c in codes.tolist()]
    assert max_by(Coded(labels, codes), values) == max_by(texts, values) == {"nic": 0.7, "nvlink": 0.2}


def test_the_engine_network_runs_on_the_plans_calibrated_view():
    scenario = config.from_dict({
        "name": "t", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2, "nic": "connectx-7",
                                 "topology": "rail-fat-tree"},
        "model": {"layers": 8, "hidden": 2048, "heads": 16, "vocab": 32000},
        "training": {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1},
        "parallelism": {"tp": 8, "pp": 1, "dp": 2}, "network": "flow"})
    sim = Simulation(scenario)
    assert sim.model.fabric is timing.calibrated_view(sim.fabric)   # one view, not one per model
    fresh = collectives.calibrated(sim.fabric)
    assert np.array_equal(sim.model.fabric.link_bytes_per_s, fresh.link_bytes_per_s)
    assert sim.model.fabric.raw is sim.fabric
