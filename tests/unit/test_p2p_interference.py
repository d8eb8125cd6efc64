"""Pipeline send/receive kernels beside compute (round 38): an asynchronous exchange to a peer on another node holds
NCCL's p2p kernel (NCCL_NCHANNELS_PER_NET_PEER = 2 CTAs, interference.yaml ctas.p2p_network) on both ends while the
message is on the wire, and slows the compute there by interference.slowdown's factor; blocking exchanges (the
non-interleaved 1F1B) and pp 1 are untouched."""

from __future__ import annotations

import pytest
from scenario_data import with_changes

from simcluster.collectives import nccl, timing
from simcluster.engine import Simulation, simulate
from simcluster.engine.overlap import PHASES, slowdowns
from simcluster.spec import hardware
from simcluster.workload import interference
from simcluster.workload.ops import layer_ops, shard_for

H100 = hardware.gpu("h100-sxm")


def test_a_p2p_kernel_across_nodes_holds_nccls_two_channels_per_net_peer():
    """NCCL_NCHANNELS_PER_NET_PEER defaults to 2 (NCCL 2.12-2.18 paths.cc; later "2 channels per NIC"): compute-bound
    work beside it keeps SMs - 2 of the H100's 132 SMs, memory-bound work loses 3 HBM bytes a wire byte."""
    assert interference.ctas("p2p_network", H100) == 2
    kernel = interference.comm_kernel("p2p_network", 45e9, H100)
    assert interference.slowdown(H100, kernel, 0.0) == pytest.approx(132 / 130)
    hbm = H100.hbm_bandwidth * interference.kernels.hbm_fraction(H100.name)
    assert interference.slowdown(H100, kernel, 1.0) == pytest.approx(hbm / (hbm - 3 * 45e9))


def _interleaved(small_scenario, **changes):
    """The 16-GPU scenario (tp 2, pp 2, dp 4 on two nodes: each stage on its own node) with two chunks a rank."""
    return with_changes(small_scenario, **{"parallelism__virtual_stages": 2, **changes})


def test_the_pipeline_factor_is_interference_slowdowns_for_the_p2p_kernel(small_scenario):
    """The engine's factor per phase is the existing model's, for 2 CTAs at the NIC's achieved rate and the phase's
    memory-bound share (as the data-parallel factor is); pp 1 has none."""
    scenario = _interleaved(small_scenario)
    layout = Simulation(scenario).plan.layout
    kernel = interference.CommKernel(2, scenario.cluster.nic.rate * nccl.efficiency("ring", "Simple", "network"))
    layer = layer_ops(scenario.model, shard_for(scenario))
    factors = slowdowns(scenario, layout).pp
    for phase, parts in PHASES.items():
        share = interference.memory_bound_share([op for part in parts for op in layer[part]], H100, "bf16")
        assert factors[phase] == pytest.approx(interference.slowdown(H100, kernel, share))
        assert 1.0 < factors[phase] < 2.0
    single = with_changes(small_scenario, parallelism__pp=1, parallelism__dp=8)
    assert slowdowns(single, Simulation(single).plan.layout).pp == {"forward": 1.0, "backward": 1.0}


def test_an_asynchronous_send_across_nodes_holds_both_ends_for_its_time_on_the_wire(small_scenario):
    sim = Simulation(_interleaved(small_scenario))
    assert not sim.plan.p2p_blocking
    sender, receiver = sim.agents[0], sim.agents[1]
    peer = int(sim.plan.layout.moved(sender.rank, "pp", 1))
    assert sender.rank // 8 != peer // 8   # stage 1 on the other node
    alone_s = timing.isolated_time_s(sim.fabric, "sendrecv_ring", (sender.rank, peer), sim.plan.p2p_bytes)
    assert alone_s > 0
    assert sim.pipeline_busy_s(sender) == sim.pipeline_busy_s(receiver) == 0.0
    sim.send(sender, ("forward", 0, 0, 0), 1, overlapped=False)   # a blocking exchange: its sender only waits
    assert sim.pipeline_busy_s(sender) == sim.pipeline_busy_s(receiver) == 0.0
    sim.send(sender, ("forward", 0, 0, 1), 1)
    assert sim.pipeline_busy_s(sender) == pytest.approx(alone_s)
    assert sim.pipeline_busy_s(receiver) == pytest.approx(alone_s)
    sim.send(sender, ("forward", 0, 1, 1), 1)   # a second kernel at once: the times add
    assert sim.pipeline_busy_s(sender) == pytest.approx(2 * alone_s)


def test_interleaved_runs_across_nodes_pay_for_their_p2p_kernels(small_scenario, monkeypatch):
    scenario = _interleaved(small_scenario)
    charged = simulate(scenario).summary["step_time_s"]
    monkeypatch.setattr(Simulation, "pipeline_busy_s", lambda self, agent: 0.0)
    free = simulate(scenario).summary["step_time_s"]
    assert charged > free
    # each exchange slows each end by at most its time on the wire times (1 - 1/f): a few percent here, not more
    assert charged < free * 1.05


@pytest.mark.parametrize("changes", [{"parallelism__virtual_stages": 1},   # non-interleaved 1F1B: blocking sends
                                     {"parallelism__pp": 1, "parallelism__dp": 8}])
def test_blocking_exchanges_and_pp_1_are_unchanged(small_scenario, monkeypatch, changes):
    scenario = with_changes(small_scenario, **changes)
    charged = simulate(scenario).summary
    monkeypatch.setattr(Simulation, "pipeline_busy_s", lambda self, agent: 0.0)
    free = simulate(scenario).summary
    assert {k: v for k, v in free.items() if k != "wall_time_s"} == {k: v for k, v in charged.items()
                                                                     if k != "wall_time_s"}
