"""The flow model's clock may lead the event loop's by the loop's and the model's own time slack, no more
(network/flow.py ``_CLOCK_LEAD``): a start that little behind is taken as now, one further behind is an ordering
bug and fails its assertion. Truth: the two tolerances as engine/drivers.py and flow.py define them; the loop's is
absolute below 1 s of simulated time (``TIME_EPS_S * max(1, now)``), so a relative tolerance alone refuses valid
starts early in a step (round 19's 1e-9 relative did below about 1 ms) and hides late ones (a microsecond at 1000 s)."""

from __future__ import annotations

import pytest

from simcluster.engine import drivers
from simcluster.fabric import topology
from simcluster.network import flow
from simcluster.network.base import TransferClass
from simcluster.spec import hardware


def _network() -> flow.FlowNetwork:
    fabric = topology.build("rail-fat-tree", gpus=16, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                            nic=hardware.nic("connectx-7"), options={})
    return flow.FlowNetwork(fabric)


def test_the_lead_covers_the_event_loops_slack_and_the_models_own():
    # _settle advances to a completion up to TIME_EPS_S * max(1, now) past now; advance carries up to
    # _SAME_TIME_RTOL past its target
    assert flow._CLOCK_LEAD >= drivers.TIME_EPS_S + flow._SAME_TIME_RTOL
    assert flow._CLOCK_LEAD <= 10 * (drivers.TIME_EPS_S + flow._SAME_TIME_RTOL)   # and stays a rounding margin


@pytest.mark.parametrize("clock_s", [1e-5, 0.53, 1.0, 1000.0])
def test_a_start_within_the_loops_slack_is_taken_as_now(clock_s):
    net = _network()
    net.advance(clock_s)
    behind_s = drivers.TIME_EPS_S * max(1.0, clock_s) + flow._SAME_TIME_RTOL * clock_s
    net.start(TransferClass([[0, 8]], 1e6), clock_s - behind_s)
    assert net.now_s == clock_s
    assert net.next_completion_s() > clock_s


@pytest.mark.parametrize("clock_s", [1e-5, 0.53, 1000.0])
def test_a_start_further_behind_is_an_ordering_bug(clock_s):
    net = _network()
    net.advance(clock_s)
    behind_s = 3 * flow._CLOCK_LEAD * max(1.0, clock_s)   # e.g. 1.2e-8 s at 1000 s, which 1e-9 relative let pass
    with pytest.raises(AssertionError, match="cannot start in the past"):
        net.start(TransferClass([[0, 8]], 1e6), clock_s - behind_s)
    with pytest.raises(AssertionError, match="never runs backwards"):
        net.advance(clock_s - behind_s)
