"""scripts/ep_overlap_host_race.py: the combined 1F1B schedule's MoE layer pair raced against the host (docs/
calibration/round-37.md "Round 37: the host side of Megatron-Core's EP overlap"). The race against closed forms
(device-bound, host-bound, a sync whose queued work hides the host or not), the node split conserving the plan's ops and
its device time per layer, the node calls counted by Megatron-Core release (5 a phase in 0.14 / 0.15, 4 from 0.16, read
in the wheels), and the break-even price bounded by the totals."""

from __future__ import annotations

import pytest
from scripts_loader import load_script

from simcluster.parallel import plan as plan_module
from simcluster.spec import config
from simcluster.workload import host_dispatch, kernels

ROW_015 = "nemo2511-qwen3-235b-256-h100-fp8"   # Megatron-Core 0.15, alltoall dispatcher, ep_overlap
ROW_017 = "nemo2604-qwen3-235b-256-h100-fp8"   # the same layout on 0.17


@pytest.fixture(scope="module")
def race():
    return load_script("ep_overlap_host_race")


def test_the_race_against_closed_forms(race):
    kernel = lambda host_s, stream_s: ("k", host_s, stream_s)   # noqa: E731
    # device-bound: the stream's time; host-bound: the host's (each kernel waits for its launch)
    assert race.race_period_s([kernel(1.0, 2.0)] * 3) == pytest.approx(6.0, rel=1e-12)
    assert race.race_period_s([kernel(2.0, 1.0)] * 3) == pytest.approx(6.0, rel=1e-12)
    # a sync waiting for A with B queued behind it: the host's C (4) outlasts B (3) by 1, idled every repetition;
    # period d_A + d_B + d_C + max(0, h_C - d_B)
    sequence = [kernel(0.1, 5.0), (race.MARK, 0.0, None), kernel(0.1, 3.0), (race.SYNC, 0.0, None), kernel(4.0, 1.0)]
    assert race.race_period_s(sequence) == pytest.approx(10.0, rel=1e-12)
    sequence[-1] = kernel(2.0, 1.0)   # B hides C's launch: no idle
    assert race.race_period_s(sequence) == pytest.approx(9.0, rel=1e-12)


@pytest.mark.parametrize(("name", "off_forward", "off_backward"), [
    (ROW_015, {"unpermute", "mlp_residual"}, {"unpermute"}),   # alltoall: the combine node's unpermute and add
    ("nemo2509-deepseek-v3-1024-h100-fp8", {"mlp_residual"}, set()),   # flex: DeepEP's permutations in the mlp node
])
def test_the_node_split_conserves_the_plans_layer(race, name, off_forward, off_backward):
    scenario = config.load(name)
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    phases = race.layer_phases(scenario)
    te = host_dispatch.transformer_engine_layers(scenario)
    streams = [kernels.stream_time(phases.get(phase, []), gpu, precision, phase if te else None)
               for phase in ("forward", "recompute", "backward_input", "backward_weight")]
    sequence = race.pair_sequence(scenario)
    assert race.host_s(sequence) == pytest.approx(sum(s.host_bound_s() for s in streams), rel=1e-9)
    # the combine node's kernels run on the communication stream: off the raced stream, nothing else lost
    combine = [item[2] for item in race.costs(phases["forward"], "forward", scenario) if item[0] in off_forward]
    combine += [item[2] for item in race.costs(phases["backward_input"], "backward_input", scenario)
                if item[0] in off_backward]
    assert race.device_s(sequence) + sum(combine) == pytest.approx(
        sum(s.device_bound_s() - s.stall_s for s in streams), rel=1e-9)
    if name != ROW_015:
        return
    # the layer is the plan's: a middle chunk of MoE layers only takes its forward per layer
    chunk = plan_module.plan(scenario, lambda *_: 0.0).chunks[1]
    assert chunk.forward_stream.device_bound_s() / chunk.layers == pytest.approx(streams[0].device_bound_s(),
                                                                                 rel=1e-9)


def test_node_calls_by_release_and_the_break_even_bound(race):
    for name, nodes in ((ROW_015, 5), (ROW_017, 4)):
        scenario = config.load(name)
        plain = race.pair_sequence(scenario)
        priced = race.pair_sequence(scenario, 1e-4)
        assert race.host_s(priced) - race.host_s(plain) == pytest.approx(2 * nodes * 1e-4, rel=1e-9)
        assert race.device_s(priced) == race.device_s(plain)
    # the raced period is never below the host's total, so the pair binds no later than the totals say
    scenario = config.load(ROW_015)
    device, host = race.device_s(race.pair_sequence(scenario)), race.host_s(race.pair_sequence(scenario))
    even = race.break_even_node_s(scenario)
    assert 0.0 < even <= (1.001 * device - host) / 10 + 1e-6
    assert race.race_period_s(race.pair_sequence(scenario, even)) > 1.001 * device


def test_bad_input_is_one_line_and_exit_2(race, capsys):
    assert race.main(["no-such-scenario"]) == 2
    assert race.main(["moezoo-qwen3-235b-256-h100-a2a"]) == 2   # no ep_overlap: not the combined schedule
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "parallelism.ep_overlap" in err[1]
    assert race.main(["--node-us", "-1", ROW_015]) == 2
