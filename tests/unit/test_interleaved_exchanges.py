"""scripts/interleaved_exchanges.py interleaved_step_s: Megatron-LM 2021's interleaved 1F1B with its blocking batched
exchanges against the closed form of the schedule (Narayanan et al. 2021, section 2.2.2: the bubble is (p - 1) / v
of a microbatch's time), and what blocking adds over asynchronous sends (docs/calibration/round-24.md "Round 24: what a
Megatron step costs per model chunk")."""

import pytest
from scripts_loader import load_script

schedule_host = load_script("interleaved_exchanges")

# the three fixed-batch series' pipelines (narayanan2021-t2 175B, 530B, megascale2024 batch 768), m cut to keep it fast
LAYOUTS = [(12, 4, 24), (35, 3, 70), (8, 6, 16), (4, 2, 4), (2, 3, 6)]


@pytest.mark.parametrize(("pp", "v", "m"), LAYOUTS)
@pytest.mark.parametrize("blocking", [True, False])
def test_without_a_hop_the_step_is_the_papers_closed_form(pp, v, m, blocking):
    forward, backward = 1.0 / v, 3.0 / v   # a microbatch's forward and backward (recomputed) split over v chunks
    step = schedule_host.interleaved_step_s(pp, v, m, forward, backward, 0.0, blocking)
    assert step == pytest.approx((m + (pp - 1) / v) * v * (forward + backward))


@pytest.mark.parametrize(("pp", "v", "m"), [layout for layout in LAYOUTS if layout[2] > layout[0]])
def test_blocking_exchanges_cost_one_hop_a_microbatch_not_one_a_chunk(pp, v, m):
    """The synchronous exchanges put a hop on the critical path once per microbatch after the first (lockstep
    steady state), whatever pp and v: a rate, not the p v-proportional step constant the round asked about. Holds
    with a steady state (m > pp) and a hop short against a chunk's pass (at m = pp, all warm-up, it is 2 (pp - 1))."""
    forward, backward, hop = 0.011, 0.033, 0.0005   # 175B chunk times (s), a scattered exchange plus its gather
    blocking = schedule_host.interleaved_step_s(pp, v, m, forward, backward, hop, True)
    asynchronous = schedule_host.interleaved_step_s(pp, v, m, forward, backward, hop, False)
    assert blocking - asynchronous == pytest.approx((m - 1) * hop, rel=1e-9)
    assert asynchronous > (m + (pp - 1) / v) * v * (forward + backward)   # hops on the critical path either way
