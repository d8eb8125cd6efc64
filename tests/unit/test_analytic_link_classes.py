"""The analytic model counts link bytes and link windows per link class (round 37), and reads them per link the same.

Reference: the per-link definition, each start adding its class's pairs on a link x its size to that link (and, over
its sending time, to the link's windows: ``network.windows.LinkWindows`` kept per link, as the model did until round
36). Every link of a class gets the same additions in the same order, so the values must be equal bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from simcluster.fabric import topology
from simcluster.network import analytic, make
from simcluster.network.base import TransferClass, class_load
from simcluster.network.windows import LinkWindows
from simcluster.spec import hardware


@pytest.fixture(scope="module")
def fabric():
    return topology.build("leaf-spine", gpus=64, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                          nic=hardware.nic("connectx-7"), options={})


def classes(seed: int = 0) -> list[TransferClass]:
    """Overlapping classes: rings across nodes, sends into one GPU, shifts inside a node; sizes of several scales."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(12):
        shift = int(rng.integers(1, 64))
        members = np.sort(rng.choice(64, size=int(rng.integers(2, 40)), replace=False))
        pairs = [(int(g), int((g + shift) % 64)) for g in members]
        out.append(TransferClass(pairs, float(rng.choice([1e3, 7.5e6, 3.3e8])), "mixed"))
    out.append(TransferClass([(8, 0), (9, 0), (17, 0)], 2.1e7, "incast"))
    out.append(TransferClass([(i, (i + 1) % 8) for i in range(8)], 5e7, "nvlink ring"))
    return out


def run(fabric, transfers: list[TransferClass]):
    """Start each class when the one before completes (the windows widen as the run grows); the model and, per link,
    the reference bytes and windows."""
    model = make("analytic", fabric)
    capacity = np.asarray(fabric.link_bytes_per_s, dtype=float)
    expected_bytes = np.zeros(len(capacity))
    expected_windows = LinkWindows(len(capacity))
    now_s = 0.0
    for tc in transfers * 3:   # every route again, after its classes were split by the others
        links, counts, latency_s = class_load(fabric, tc)
        expected_bytes[links] += counts * tc.size_bytes
        end_s = now_s + (latency_s + tc.size_bytes * float(np.max(counts / capacity[links])))
        sending_s = end_s - now_s - latency_s   # as the model reads it: its end less its start and latency
        expected_windows.add(now_s, now_s + sending_s, links, counts * tc.size_bytes / sending_s)
        model.start(tc, now_s)
        assert model.next_completion_s() == end_s
        model.advance(end_s)
        now_s = end_s
    return model, expected_bytes, expected_windows


@pytest.mark.parametrize("kept", [2, analytic._ROUTES_KEPT])
def test_link_bytes_and_windows_per_class_equal_the_per_link_count(fabric, monkeypatch, kept):
    """Bit for bit, also when the routes are forgotten every second route (the classes and their counters stay)."""
    monkeypatch.setattr(analytic, "_ROUTES_KEPT", kept)
    model, expected_bytes, expected_windows = run(fabric, classes())
    assert np.array_equal(model.link_bytes, expected_bytes)
    windows = model.link_windows()
    assert windows.width_s == expected_windows.width_s > 1e-4   # widened
    assert np.array_equal(windows.bytes, expected_windows.bytes)
    capacity = np.asarray(fabric.link_bytes_per_s)
    assert np.array_equal(windows.peak_utilisation(capacity), expected_windows.peak_utilisation(capacity))
    # counted on fewer columns than the links it carried
    used = np.count_nonzero(expected_bytes)
    assert 0 < len(model._classes.links) < used


def test_link_bytes_set_from_outside_are_counted_per_link_from_then_on(fabric):
    """``collectives.timing.simulate`` adds a step's repeats to ``link_bytes``: later starts add to those values."""
    transfers = classes(1)
    model = make("analytic", fabric)
    model.start(transfers[0], 0.0)
    model.link_bytes += 2 * model.link_bytes
    tripled = model.link_bytes.copy()
    model.start(transfers[1], 1.0)
    links, counts, _ = class_load(fabric, transfers[1])
    tripled[links] += counts * transfers[1].size_bytes
    assert np.array_equal(model.link_bytes, tripled)


def test_a_model_keeping_neither_makes_no_link_classes(fabric):
    """A collective timed alone (``timing.isolated_time_s``) reads only the time: the same, without classes."""
    transfers = classes(2)[0]
    bare = make("analytic", fabric, windows=False, link_bytes=False)
    full = make("analytic", fabric)
    bare.start(transfers, 0.0)
    full.start(transfers, 0.0)
    assert bare._classes is None and bare.link_bytes is None and bare.link_windows() is None
    assert bare.next_completion_s() == full.next_completion_s() == bare.duration_s(transfers)
