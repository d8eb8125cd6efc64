"""The collapse's stated error under variability against expanded runs (engine.variability ``collapse_bound_s`` and
the jitter tolerance in the summary's note), on small interleaved and plain pipelines with the GPT-3 recipe's
overlap settings (TP communication overlap, sequence parallelism, distributed optimizer).

Round 20 measured nemo2409-gpt3-175b-128-h100 (tp 4, pp 8, 12 virtual stages, dp 4) with the quantile speed spread
(cv 0.015, seed 0): collapsed 9.3611 s, expanded 9.3297 s, 0.0313 s apart, while the bound said 0.0083 s: it took
one model chunk's forward + backward as a stage's. The interleaved cases below break that bound the same way (gap
/ old bound 1.0-2.2) and hold the derived one, gap / bound 0.25-0.37 (docs/variability.md, "Honest with the
collapse"); the runs take 0.2-0.8 s each."""

from __future__ import annotations

import pytest

from simcluster.core.token_routing import expected_max_normal
from simcluster.engine import simulate
from simcluster.engine.simulation import Simulation
from simcluster.engine.variability import JITTER_TOLERANCE_CV
from simcluster.spec import config

QUANTILES = {"gpu_speed_cv": 0.015, "gpu_speed_draw": "quantiles"}
# with TP communication overlap (tp 4 here): the collapse's wait for the slowest of 4 draws per block + the drift
TP_OVERLAP_TOLERANCE = expected_max_normal(4) + JITTER_TOLERANCE_CV


def scenario(tp, pp, vp, dp, layers, variability=None, microbatches=4):
    gpus = tp * pp * dp
    data = {"name": "variability-bound",
            "cluster": {"gpu": "h100-sxm", "gpus_per_node": min(8, gpus), "nodes": max(1, gpus // 8)},
            "model": {"layers": layers, "hidden": 1024, "heads": 8, "vocab": 32000},
            "training": {"seq_len": 2048, "global_batch_size": microbatches * dp, "micro_batch_size": 1},
            # the GPT-3 175B recipe's overlaps (nemo2409-gpt3-175b-128-h100-bf16)
            "parallelism": {"tp": tp, "pp": pp, "dp": dp, "virtual_stages": vp, "sequence_parallel": tp > 1,
                            "zero_stage": 1, "overlap_param_gather": True, "tp_comm_overlap": tp > 1,
                            "defer_embedding_wgrad": False},
            "network": "analytic"}
    if variability is not None:
        data["variability"] = variability
    return config.from_dict(data)


def collapsed_and_expanded(spec):
    summary = simulate(spec).summary
    return summary, simulate(spec, expand=True).summary["step_time_s"]


@pytest.mark.parametrize(("tp", "pp", "vp", "dp", "layers", "seed"), [
    (4, 4, 8, 2, 32, 0), (4, 4, 8, 2, 32, 1),  # gap 790 / 1019 us; one-chunk bound 464 us, stage bound 2745 us
    (4, 2, 8, 2, 16, 0),                        # gap 198 us; 132 us, 783 us
    (2, 4, 4, 4, 16, 1), (4, 4, 4, 2, 16, 0),   # gap 580 / 462 us; 565 / 464 us, 1602 / 1442 us
])
def test_interleaved_speed_spread_collapse_is_pessimistic_within_its_bound(tp, pp, vp, dp, layers, seed):
    summary, expanded = collapsed_and_expanded(scenario(tp, pp, vp, dp, layers, {**QUANTILES, "seed": seed}))
    gap_s = summary["step_time_s"] - expanded
    assert -1e-9 <= gap_s <= summary["variability"]["collapse_bound_s"]
    # measured 0.25-0.37 of the bound: a bound with room, not an estimate of the gap
    assert gap_s <= 0.5 * summary["variability"]["collapse_bound_s"]


def test_the_bound_counts_every_chunk_of_a_stage():
    # (pp - 1) x (slowest - fastest factor) x the longest stage's forward + backward of one microbatch, summed over
    # its model chunks; without interleaving (one chunk per stage) the formula as it was
    for vp in (1, 4):
        spec = scenario(4, 4, vp, 2, 16, {**QUANTILES, "seed": 0})
        variability = simulate(spec).summary["variability"]
        plan = Simulation(spec, None).plan
        stage_s = max(sum(c.forward_compute_s + c.backward_compute_s for c in plan.chunks if c.stage == s)
                      for s in range(4))
        gap = variability["slowest_gpu_factor"] - variability["fastest_gpu_factor"]
        assert variability["collapse_bound_s"] == pytest.approx(3 * gap * stage_s, rel=1e-12)
        if vp == 1:
            assert len(plan.chunks) == 4
            old_s = 3 * gap * max(c.forward_compute_s + c.backward_compute_s for c in plan.chunks)
            assert variability["collapse_bound_s"] == pytest.approx(old_s, rel=1e-12)


def test_plain_pipeline_speed_spread_collapse_is_within_its_bound():
    summary, expanded = collapsed_and_expanded(scenario(4, 4, 1, 2, 16, {**QUANTILES, "seed": 1}))
    assert -1e-9 <= summary["step_time_s"] - expanded <= summary["variability"]["collapse_bound_s"]


@pytest.mark.parametrize(("vp", "seed"), [(1, 1), (4, 1), (8, 1)])
def test_speed_and_jitter_collapse_is_within_bound_and_tolerance(vp, seed):
    cv = 0.015
    summary, expanded = collapsed_and_expanded(
        scenario(4, 4, vp, 2, 32 if vp == 8 else 16, {**QUANTILES, "kernel_jitter_cv": cv, "seed": seed}))
    gap_s = summary["step_time_s"] - expanded
    tolerance_s = TP_OVERLAP_TOLERANCE * cv * expanded  # the note's, with TP communication overlap
    assert abs(gap_s) <= summary["variability"]["collapse_bound_s"] + tolerance_s


@pytest.mark.parametrize(("pp", "vp"), [(1, 1), (4, 1), (4, 4)])
def test_jitter_collapse_with_tp_overlap_is_within_the_stated_tolerance(pp, vp):
    # with TP communication overlap the collapse overstates jitter: here +1.7 .. +3.9 % of the step at cv 0.05
    # (tp 4, seeds 0-1; 0.33-0.79 x cv at cv 0.015 and 0.05), past the 0.5 x cv stated until round 20; now
    # E[max of tp normals] + 0.5 = 1.55 x cv (the GPT-3 128 row: 0.98 x cv)
    cv = 0.05
    summary, expanded = collapsed_and_expanded(scenario(4, pp, vp, 8 // pp if pp < 4 else 2, 16,
                                                        {"kernel_jitter_cv": cv, "seed": 1}))
    assert summary["variability"]["collapse_bound_s"] == 0.0
    assert f"either side, within about {TP_OVERLAP_TOLERANCE:.2g} x kernel_jitter_cv" in summary["variability"]["note"]
    assert abs(summary["step_time_s"] / expanded - 1) <= TP_OVERLAP_TOLERANCE * cv
    # and not far inside it: the collapse's own wait for the slowest draw is most of the difference (0.22 x cv at
    # pp 4 since round 23's Megatron-Core buckets and their review exposed a little more communication, which does
    # not jitter; 0.1998 x cv at pp 1 since round 32's bias-gradient reductions, short kernels that add gaps, which
    # do not jitter either: the floor is 0.15 x cv, still well outside the 0 a collapse without the wait would give)
    assert summary["step_time_s"] / expanded - 1 >= 0.15 * cv

