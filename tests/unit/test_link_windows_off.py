"""A run without link windows (``simulate(..., link_windows=False)``, what ``validate`` runs since round 29) gives the
same step as the run with them, as floats: the windows are an output (the links' peak utilisation) that no rate,
completion or symmetry check reads. Each case of tests/unit/test_speed_keeps_results.py that exercises a different
path of the flow model (interleaved with TP overlap and CP; a 4:1 oversubscribed hash-ECMP leaf-spine whose symmetry
check holds classes back; ZeRO-2 with pipelining and bucketed reduce-scatters; an expanded run) is run both ways; the
step, the symmetry check's classes and bound, and every link's bytes must be equal (``==``, no tolerance), and the
run without windows must report no peak utilisation (it kept none). Fails if skipping the windows changed anything the
engine reads, or if the switch did not turn them off."""

from __future__ import annotations

import numpy as np
import pytest

from simcluster.engine import Simulation, simulate
from tests.unit.test_speed_keeps_results import CASES


@pytest.mark.parametrize("case", ["interleaved-cp-tp-overlap", "leaf-spine-4to1-ecmp", "zero2-pp-buckets",
                                  "expanded-3d"])
def test_step_and_link_bytes_are_the_same_floats_without_windows(case):
    make, expand = CASES[case]
    kept, bare = simulate(make(), expand=expand), simulate(make(), expand=expand, link_windows=False)
    for key in ("step_time_s", "exposed_comm_s", "pipeline_bubble_s"):
        assert bare.summary[key] == kept.summary[key], key
    for key in ("held_back_classes", "bound_s"):
        assert bare.summary["symmetry"][key] == kept.summary["symmetry"][key], key
    assert np.array_equal(np.asarray(bare.links["bytes"]), np.asarray(kept.links["bytes"]))
    assert kept.summary["peak_link_utilisation_by_kind"] is not None
    assert bare.summary["peak_link_utilisation_by_kind"] is None


def test_the_flow_model_keeps_no_windows_when_asked_not_to():
    make, _expand = CASES["gpipe-zero2"]
    bare = Simulation(make(), link_windows=False)
    bare.run()
    assert bare.model.link_windows() is None and bare.model._window_pending == {}
    kept = Simulation(make())
    kept.run()
    assert kept.model.link_windows().bytes.sum() > 0
