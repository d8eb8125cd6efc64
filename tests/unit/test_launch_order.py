"""A collective launched behind a resident persistent-grid GEMM waits for its CTAs (workload.launch_order)."""

import types

import pytest
import simpy

from simcluster.engine import simulate, simulation
from simcluster.engine.overlap import launch_delays
from simcluster.spec import config
from simcluster.workload import interference, kernels, launch_order
from simcluster.workload.ops import Op

H100 = "h100-sxm"
SMS = 132  # H100 SXM (efficiency.yaml gemm.sms)


@pytest.fixture
def switch(monkeypatch):
    """Set ``launch_order.model`` for the test (the data file's value is restored after)."""
    def set_to(on: bool):
        monkeypatch.setitem(interference.constants()["launch_order"], "model", on)
    return set_to


def gemm(tiles: int, monkeypatch) -> Op:
    monkeypatch.setattr(launch_order.kernels, "gemm_tiles", lambda op, gpu_name: tiles)
    return Op("gemm", "gemm", 1.0, 1.0, m=4096, n=4096, k=4096)


def test_sm_count_is_hopper():
    assert kernels.sm_count(H100) == SMS


@pytest.mark.parametrize("tiles, expected", [
    (5 * SMS + 108, 5 / 6),  # 108 CTAs hold 6 tiles; the 24 with 5 retire at 5/6 of the GEMM
    (SMS + 1, 1 / 2),        # one CTA holds 2 tiles: the rest free their SMs halfway
    (4 * SMS, 1.0),          # whole waves: every CTA ends with the GEMM
    (SMS - 1, 0.0),          # a grid smaller than the GPU leaves an SM free: no wait
])
def test_blocked_fraction_static_schedule(monkeypatch, tiles, expected):
    assert launch_order.blocked_fraction(gemm(tiles, monkeypatch), H100, False) == pytest.approx(expected)


def test_behind_a_collective_the_late_ctas_take_the_freed_sms(monkeypatch):
    """Behind an NCCL kernel that held SMs, the GEMM's own pending CTAs take them: the wait is to its end."""
    assert launch_order.blocked_fraction(gemm(5 * SMS + 108, monkeypatch), H100, True) == 1.0
    assert launch_order.blocked_fraction(gemm(SMS - 1, monkeypatch), H100, True) == 0.0


def test_mean_wait_closed_form(monkeypatch):
    """A GEMM blocking for T beside an elementwise kernel of U: launched at a uniform instant, the wait is
    T^2 / 2 / (T + U) (the mean remaining time within the GEMM times the chance of landing in it)."""
    op = gemm(4 * SMS, monkeypatch)
    other = Op("add", "elementwise", 1.0, 1.0)
    t_s, u_s = 2e-3, 1e-3
    mix = interference._computed_mix(0.3, ((op, t_s, 0.0), (other, 0.0, u_s)), H100)
    assert launch_order.start_delay_s(mix, False) == pytest.approx(t_s * t_s / 2 / (t_s + u_s))


def test_off_or_not_hopper_changes_nothing(switch):
    switch(False)
    assert launch_delays(config.load("megatron-16b-h100")) is None
    switch(True)
    assert launch_delays(config.load("mpt-7b-8-a100-80gb")) is None  # A100: one CTA per tile, no persistent grid


def test_delays_only_add_time_bounded_by_their_count(switch):
    """Switched on, collectives only start later: the step is no shorter, and longer by at most one wait after a
    collective per data-parallel collective of the step (megatron-16b-h100: Megatron-Core's 50 buckets, 50
    reduce-scatters and 50 all-gathers, counted on rank 0)."""
    scenario = config.load("megatron-16b-h100")
    switch(False)
    result = simulate(scenario)
    off = result.summary["step_time_s"]
    events = result.events
    collectives = int((events["rank"] == 0).mul(events["name"].str.startswith(("grad reduce_scatter",
                                                                                "param all_gather"))).sum())
    assert collectives == 100
    switch(True)
    delays = launch_delays(scenario)
    on = simulate(scenario).summary["step_time_s"]
    longest = max(max(pair) for pair in delays.values())
    assert 0 < longest < 1e-3
    assert off <= on <= off + collectives * longest


def test_delays_are_computed_once_and_move_the_step(switch, monkeypatch):
    """Switched on, the step of an H100 run with data-parallel collectives queued under its compute is strictly
    longer (a hook that never waits fails here), and the per-phase waits are worked out once per simulation, not
    per collective."""
    scenario = config.load("megatron-16b-h100")
    switch(False)
    off = simulate(scenario).summary["step_time_s"]
    switch(True)
    calls = []
    monkeypatch.setattr(simulation, "launch_delays", lambda s: calls.append(s) or launch_delays(s))
    on = simulate(scenario).summary["step_time_s"]
    assert len(calls) == 1
    assert on > off


def test_zero_waits_add_no_events(switch, monkeypatch):
    """Waits of zero (grids smaller than the SMs everywhere) schedule nothing: the run is the run with the switch
    off, event for event."""
    timeouts = []
    made = simpy.events.Timeout.__init__
    monkeypatch.setattr(simpy.events.Timeout, "__init__", lambda *a, **k: timeouts.append(1) or made(*a, **k))
    scenario = config.load("megatron-16b-h100")
    switch(False)
    off = simulate(scenario).summary["step_time_s"]
    off_timeouts = len(timeouts)
    monkeypatch.setattr(simulation, "launch_delays", lambda s: {"forward": (0.0, 0.0), "backward": (0.0, 0.0)})
    on = simulate(scenario).summary["step_time_s"]
    assert on == off
    assert len(timeouts) == 2 * off_timeouts


@pytest.mark.parametrize("since_s, until_s, after_collective, started_s", [
    (0.5, 9.0, False, 1.0 + 0.25),  # issued into a running block: the first wait
    (0.5, 9.0, True, 1.0 + 0.75),   # ready behind a collective kernel: the wait to the GEMM's end
    (0.5, 1.1, False, 1.1),         # never past the block's end
    (1.0, 9.0, False, 1.0),         # the block starts now: the collective was issued before its GEMMs (one queue)
    (0.0, 0.9, True, 1.0),          # no block in flight: no wait
])
def test_run_collective_waits_by_the_rule(since_s, until_s, after_collective, started_s):
    """``Simulation._run_collective`` at t = 1 s with waits of 0.25 s (first) and 0.75 s (behind a collective):
    the collective starts after min(wait, the block's end), only for a block already running."""
    env = simpy.Environment(initial_time=1.0)
    started = []
    sim = types.SimpleNamespace(
        env=env, launch_delays={"backward": (0.25, 0.75)},
        collective_driver=types.SimpleNamespace(run=lambda op, groups, size: iter(())),
        recorder=types.SimpleNamespace(transfer=lambda agent, stream, name, mb, start, *_: started.append(start)))
    agent = types.SimpleNamespace(computing=("backward", since_s, until_s))
    run = simulation.Simulation._run_collective
    env.process(run(sim, [], agent, None, "reduce_scatter", 1.0, "rs", False, after_collective))
    env.run()
    assert started == [pytest.approx(started_s)]
