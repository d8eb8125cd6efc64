"""Megatron-Core's ``overlap_param_gather_with_optimizer_step`` (parallel/param_gather_overlap.py; engine/
data_parallel.py ``GatherDuringForward``; docs/calibration.md "Round 37: Megatron-Core's parameter gather overlapped
with the optimizer step").

Sources (NVIDIA/Megatron-LM, megatron/core): ``get_megatron_optimizer`` splits the rank's chunks into
``[[model_chunks[0]], model_chunks[1:]]``; ``ChainedOptimizer.step_with_ready_grads`` calls
``model_chunks[0].start_param_sync(force_dispatch=True)`` right after the first optimizer's update, so that chunk's
all-gather runs under the second optimizer's update and the next step's buffer zeroing; DDP ``start_param_sync``
returns early for that chunk when the schedule asks (the schedule still dispatches chunk 1 at its start);
``disable_bucketing=... or overlap_param_gather_with_optimizer_step``: every chunk one bucket.

The layout: test_mcore_version's two stages of two virtual stages (one layer a chunk), dp 2 across the two nodes
(``order: tp-cp-pp-dp``), so that stage 0's first chunk gathers for longer than its optimizer tail: the gather is
partly exposed and the closed forms below tell the instants apart. Analytic network: a transfer's time is its own.
"""

from __future__ import annotations

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.engine.simulation import Simulation
from simcluster.parallel import param_gather_overlap, plan
from simcluster.parallel.plan import optimizer_time_s
from simcluster.spec import config
from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.workload import kernels
from simcluster.workload.ops import Op
from tests.unit.test_mcore_version import _pipeline


def _data(flag: bool, **parallelism) -> dict:
    data = _pipeline("0.15", 2)
    data["name"] = "param-gather-with-optimizer-step"
    data["parallelism"].update(overlap_param_gather_with_optimizer_step=flag, grad_bucket_size="10 MB",
                               order="tp-cp-pp-dp", **parallelism)
    return data


@pytest.fixture(scope="module")
def runs():
    out = {}
    for flag in (False, True):
        scenario = config.from_dict(_data(flag))
        result = simulate(scenario)
        events = result.events
        first = events[events["rank"] == events["rank"].min()].sort_values("start_s")
        plan = Simulation(scenario).plan
        out[flag] = (result.summary["step_time_s"], first, plan)
    return out


def _rows(stage, prefix: str):
    return stage[stage["name"].str.startswith(prefix)]


def _first_forward_s(stage) -> float:
    return float(stage[stage["name"].str.startswith("forward") & (stage["stream"] == "compute")]["start_s"].min())


def test_the_first_chunk_is_one_bucket_with_the_flag(runs):
    # without the flag the first stage's first chunk keeps its 10 MB buckets (several gathers); with it one
    assert len(_rows(runs[False][1], "param all_gather c0b")) > 1
    assert len(_rows(runs[True][1], "param all_gather c0b")) == 1


def test_the_tail_runs_first_and_the_first_forward_waits_for_the_longer_of_it_and_the_gather(runs):
    _step, stage, plan = runs[True]
    tail = plan.optimizer_tail_s[0]
    gather = _rows(stage, "param all_gather c0b").iloc[0]
    tail_event = _rows(stage, "optimizer tail").iloc[0]
    assert (tail_event["start_s"], tail_event["end_s"]) == (0.0, pytest.approx(tail, abs=1e-15))
    assert gather["start_s"] == 0.0   # dispatched by the previous step's optimizer: queued at the step's start
    assert gather["end_s"] > tail     # this layout: partly exposed
    assert _first_forward_s(stage) == pytest.approx(max(tail, gather["end_s"]), abs=1e-12)
    # chunk 1 (global chunk 2 on stage 0): the schedule's start, after the tail, queued behind chunk 0's gather
    assert _rows(stage, "param all_gather c2b").iloc[0]["start_s"] == pytest.approx(
        max(tail, gather["end_s"]), abs=1e-12)
    # the optimizer's part before the dispatch stays at the step's end
    closing = _rows(stage, "optimizer").query("name == 'optimizer'").iloc[0]
    assert closing["end_s"] - closing["start_s"] == pytest.approx(plan.optimizer_s[0] - tail, rel=1e-9)


def test_exposed_gather_with_and_without_the_flag(runs):
    # without: the first forward waits for every bucket of chunk 0 (one layer: its first part opens them all), from
    # the step's start; with: for what of the one gather outlasts the tail
    _step, stage, _plan = runs[False]
    assert _first_forward_s(stage) == pytest.approx(float(_rows(stage, "param all_gather c0b")["end_s"].max()),
                                                    abs=1e-12)
    _step, stage, plan = runs[True]
    gather = _rows(stage, "param all_gather c0b").iloc[0]
    exposed = _first_forward_s(stage) - plan.optimizer_tail_s[0]
    assert exposed == pytest.approx(gather["end_s"] - gather["start_s"] - plan.optimizer_tail_s[0], abs=1e-12)
    assert runs[True][0] < runs[False][0]


def test_the_tail_is_the_later_chunks_update_and_every_buffers_zeroing():
    gpu = config.from_dict(_data(True)).cluster.gpu
    params, buffer = 3.0e8, 6.0e8
    # share 0: only zero_grad_buffer, one kernel per gradient buffer writing 2 bytes (bf16) an element
    zero = Op(name="zero", kind="memory", flop=0.0, hbm_bytes=BYTES_PER_ELEMENT["bf16"] * buffer / 2)
    assert optimizer_time_s(params, gpu, "bf16", "bf16", "adam", buffer, buffers=2, tail_share=0.0) == \
        pytest.approx(kernels.ops_time_s([zero, zero], gpu, "bf16"), rel=1e-12)
    whole = optimizer_time_s(params, gpu, "bf16", "bf16", "adam", buffer, buffers=2)
    halves = [optimizer_time_s(params, gpu, "bf16", "bf16", "adam", buffer, buffers=2, tail_share=s)
              for s in (0.0, 0.5, 1.0)]
    assert halves[0] < halves[1] < halves[2] < whole   # the gradient cast and norm (before the dispatch) excluded
    # the second optimizer steps every chunk but the first (the one dispatched): uneven chunks tell the first from
    # the last (round 37 test audit: [1, 2, 1] alone let a share taken without the last chunk pass)
    assert param_gather_overlap.later_chunks_share([1.0, 2.0, 1.0]) == pytest.approx(0.75)
    assert param_gather_overlap.later_chunks_share([3.0, 1.0]) == pytest.approx(0.25)
    assert param_gather_overlap.later_chunks_share([2.0]) == 0.0


def test_each_stage_steps_its_first_chunk_before_the_dispatch_and_the_rest_after(monkeypatch):
    """The plan hands each stage's chunks, in model order, to the share (round 37 test audit: the runs above compare
    the engine with the plan's own tail, so a plan passing the chunks reversed went unseen). By hand, per TP rank of 4
    (hidden 2048, GeLU MLP 4 h, biases, learned positions, untied output of a 32,000 vocabulary; sequence parallel:
    the norms and the row-parallel biases whole): a layer 3 h^2 / 4 + 3 h / 4 (QKV) + h^2 / 4 + h (proj) + h^2 +
    h (fc1) + h^2 + h (fc2) + 4 h (two norms) = 12,598,784; the embedding 8,000 x h + 2,048 x h positions; the
    output 8,000 x h and the final norm. Stage 0 runs chunks 0 and 2, stage 1 chunks 1 and 3."""
    h, vocab_local = 2048, 32000 // 4
    layer = 3 * h * h // 4 + 3 * h // 4 + h * h // 4 + h + h * h + h + h * h + h + 4 * h
    embedding, output = vocab_local * h + 2048 * h, vocab_local * h + 2 * h
    seen = []
    share = param_gather_overlap.later_chunks_share
    monkeypatch.setattr(param_gather_overlap, "later_chunks_share", lambda counts: seen.append(list(counts)) or
                        share(counts))
    tails = plan.plan(config.from_dict(_data(True)), lambda *_: 0.0).optimizer_tail_s
    assert layer == 12_598_784
    assert seen == [[embedding + layer, layer], [layer, layer + output]]
    assert tails[0] < tails[1]   # stage 0's second optimizer steps one layer; stage 1's a layer and the output


@pytest.mark.parametrize("parallelism", [{"virtual_stages": 1}, {"zero_stage": 0}, {"overlap_param_gather": False},
                                         {"grad_buckets": "apex"}])
def test_refused_where_megatron_lm_refuses_it(parallelism):
    data = _data(True)
    data["parallelism"].update(parallelism)
    if parallelism.get("virtual_stages") == 1:
        data["model"]["layers"] = 4
    with pytest.raises(ScenarioError, match="overlap_param_gather_with_optimizer_step"):
        config.from_dict(data)
