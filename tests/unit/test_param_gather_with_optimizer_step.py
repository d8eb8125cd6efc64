"""Megatron-Core's ``overlap_param_gather_with_optimizer_step`` (parallel/param_gather_overlap.py; engine/
data_parallel.py ``GatherDuringForward``; docs/calibration/round-37.md "Round 37: Megatron-Core's parameter gather
overlapped with the optimizer step").

Sources (NVIDIA/Megatron-LM, megatron/core): ``get_megatron_optimizer`` splits the rank's chunks into
``[[model_chunks[0]], model_chunks[1:]]``; ``ChainedOptimizer.step_with_ready_grads`` calls
``model_chunks[0].start_param_sync(force_dispatch=True)`` right after the first optimizer's update, so that chunk's
all-gather runs under the second optimizer's update and the next step's buffer zeroing; DDP ``start_param_sync``
returns early for that chunk when the schedule asks (the schedule still dispatches chunk 1 at its start);
``disable_bucketing=... or overlap_param_gather_with_optimizer_step``: every chunk one bucket.

The gradient norm is one over both optimizers and runs before the first update (``ChainedOptimizer.step``,
megatron-core 0.15.0-0.17.0 wheels); ``train_step`` then reduces over the model-parallel group (``logical_and_across_
model_parallel_group``, an all-reduce and ``.item()``) before the next step zeroes the buffers and starts the schedule,
so every stage starts it together: at the longest head + tail less the longest head after the engine's step barrier
(``param_gather_overlap.visible_tails_s``; review: docs/calibration/round-37.md "Round 37: review of the parameter
gather with the optimizer step").

The layouts: test_mcore_version's two stages of two virtual stages (one layer a chunk), dp 2 across the two nodes
(``order: tp-cp-pp-dp``), so that stage 0's first chunk gathers for longer than the optimizer tail (the gather
partly exposed), and dp 2 inside a node (``tp-cp-dp-pp``), where the tail outlasts it; the closed forms below tell
the instants apart. Analytic network: a transfer's time is its own.
"""

from __future__ import annotations

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.engine.data_parallel import chunk_buckets
from simcluster.engine.simulation import Simulation
from simcluster.parallel import param_gather_overlap, plan
from simcluster.parallel.plan import bucket_count, optimizer_step_ops, optimizer_time_s
from simcluster.spec import config
from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.workload import fp8_params, kernels
from simcluster.workload.ops import Op
from tests.unit.test_mcore_version import _pipeline


def _data(flag: bool, **parallelism) -> dict:
    data = _pipeline("0.15", 2)
    data["name"] = "param-gather-with-optimizer-step"
    data["parallelism"].update(overlap_param_gather_with_optimizer_step=flag, grad_bucket_size="10 MB",
                               order="tp-cp-pp-dp")
    data["parallelism"].update(parallelism)
    return data


def _run(data: dict):
    scenario = config.from_dict(data)
    result = simulate(scenario)
    events = result.events
    first = events[events["rank"] == events["rank"].min()].sort_values("start_s")
    last = events[events["rank"] == events["rank"].max()].sort_values("start_s")
    return result.summary["step_time_s"], first, Simulation(scenario).plan, last


@pytest.fixture(scope="module")
def runs():
    return {flag: _run(_data(flag)) for flag in (False, True)}


@pytest.fixture(scope="module")
def in_node():
    """dp 2 inside each node: the first chunk's gather (NVLink) is shorter than the optimizer tail."""
    return _run(_data(True, order="tp-cp-dp-pp"))


def _release_s(plan) -> float:
    """When the model-parallel reductions release the stages, after the step's start: the longest head + tail less
    the longest head (heads: the step less the tail)."""
    heads = [whole - tail for whole, tail in zip(plan.optimizer_s, plan.optimizer_tail_s, strict=True)]
    return max(h + t for h, t in zip(heads, plan.optimizer_tail_s, strict=True)) - max(heads)


def _rows(stage, prefix: str):
    return stage[stage["name"].str.startswith(prefix)]


def _first_forward_s(stage) -> float:
    return float(stage[stage["name"].str.startswith("forward") & (stage["stream"] == "compute")]["start_s"].min())


def test_the_first_chunk_is_one_bucket_with_the_flag(runs):
    # without the flag the first stage's first chunk keeps its 10 MB buckets (several gathers); with it one
    assert len(_rows(runs[False][1], "param all_gather c0b")) > 1
    assert len(_rows(runs[True][1], "param all_gather c0b")) == 1


def test_the_tail_runs_first_and_the_first_forward_waits_for_the_longer_of_it_and_the_gather(runs):
    _step, stage, plan, _last = runs[True]
    tail, release = plan.optimizer_tail_s[0], _release_s(plan)
    heads = [whole - t for whole, t in zip(plan.optimizer_s, plan.optimizer_tail_s, strict=True)]
    assert heads[0] == max(heads)     # this layout: stage 0's head is the longest, its whole tail after the barrier
    gather = _rows(stage, "param all_gather c0b").iloc[0]
    tail_event = _rows(stage, "optimizer tail").iloc[0]
    assert (tail_event["start_s"], tail_event["end_s"]) == (0.0, pytest.approx(tail, abs=1e-15))
    assert gather["start_s"] == 0.0   # dispatched by the previous step's optimizer: queued at the step's start
    assert gather["end_s"] > release  # this layout: partly exposed
    assert _first_forward_s(stage) == pytest.approx(max(release, gather["end_s"]), abs=1e-12)
    # chunk 1 (global chunk 2 on stage 0): the schedule's start, after the tail, queued behind chunk 0's gather
    assert _rows(stage, "param all_gather c2b").iloc[0]["start_s"] == pytest.approx(
        max(release, gather["end_s"]), abs=1e-12)
    # the optimizer's part before the dispatch stays at the step's end
    closing = _rows(stage, "optimizer").query("name == 'optimizer'").iloc[0]
    assert closing["end_s"] - closing["start_s"] == pytest.approx(plan.optimizer_s[0] - tail, rel=1e-9)


def test_a_tail_longer_than_the_gather_holds_the_schedule_for_every_stage(in_node):
    _step, first, plan, last = in_node
    release = _release_s(plan)
    gather = _rows(first, "param all_gather c0b").iloc[0]
    assert gather["end_s"] < release - 1e-5          # this layout: hidden by the tail
    # the first forward and chunk 1's gather start at the release, not when chunk 0's gather ends
    assert _first_forward_s(first) == pytest.approx(release, abs=1e-12)
    assert _rows(first, "param all_gather c2b").iloc[0]["start_s"] == pytest.approx(release, abs=1e-12)
    # the last stage (a longer tail, a shorter head: part of its tail ran in the last step's barrier) reaches the
    # release as its visible tail ends, at the same instant, and computes nothing before it
    visible = param_gather_overlap.visible_tails_s(plan.optimizer_s, plan.optimizer_tail_s)
    assert plan.optimizer_tail_s[1] > visible[1] > 0.0
    assert _rows(last, "optimizer tail").iloc[0]["end_s"] == pytest.approx(visible[1], abs=1e-15)
    assert max(visible) == pytest.approx(release, abs=1e-15)
    later = last[(last["stream"] == "compute") & ~last["name"].str.startswith("optimizer")]
    assert later["start_s"].min() >= release - 1e-12


def test_the_stages_start_together_after_the_longest_head_and_tail():
    # the last stage's tail made 0.5 ms longer (its head kept): its head + tail now the longest, so stage 0, its own
    # tail long done, waits for the model-parallel reductions as well
    scenario = config.from_dict(_data(True, order="tp-cp-dp-pp"))
    simulation = Simulation(scenario)
    plan = simulation.plan
    plan.optimizer_tail_s[1] += 5e-4
    plan.optimizer_s[1] += 5e-4
    events = simulation.run().events
    first = events[events["rank"] == events["rank"].min()]
    release = _release_s(plan)
    assert release > plan.optimizer_tail_s[0] + 1e-4
    assert _first_forward_s(first) == pytest.approx(release, abs=1e-12)


def test_the_split_step_costs_the_second_optimizers_launches(runs):
    # the same layout without the flag: one optimizer; with it the stage's step is head + tail, each with its own
    # calls: at least the second multi_tensor_adam call's gap, at most a few kernels (bf16: no fp8 scale kernels)
    gap = kernels.host_model().gap_s(Op(name="FusedAdam: multi_tensor_adam", kind="memory", flop=0.0,
                                        hbm_bytes=1.0))
    for one, two in zip(runs[False][2].optimizer_s, runs[True][2].optimizer_s, strict=True):
        assert gap <= two - one <= 3 * gap


def test_the_visible_tails_in_closed_form():
    # heads 3 and 2 (steps 7 and 8 less tails 4 and 6): the second stage ran 1 of its tail in the barrier
    assert param_gather_overlap.visible_tails_s([7.0, 8.0], [4.0, 6.0]) == [4.0, 5.0]
    # a stage whose head is shorter by more than its tail shows none of it
    assert param_gather_overlap.visible_tails_s([9.0, 2.0], [1.0, 1.0]) == [1.0, 0.0]


def test_exposed_gather_with_and_without_the_flag(runs):
    # without: the first forward waits for every bucket of chunk 0 (one layer: its first part opens them all), from
    # the step's start; with: for what of the one gather outlasts the tail
    _step, stage, _plan, _last = runs[False]
    assert _first_forward_s(stage) == pytest.approx(float(_rows(stage, "param all_gather c0b")["end_s"].max()),
                                                    abs=1e-12)
    _step, stage, plan, _last = runs[True]
    gather = _rows(stage, "param all_gather c0b").iloc[0]
    exposed = _first_forward_s(stage) - _release_s(plan)
    assert exposed == pytest.approx(gather["end_s"] - gather["start_s"] - _release_s(plan), abs=1e-12)
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
    # dense: every chunk but the first, whatever the sharding
    assert param_gather_overlap.later_share([1.0, 2.0, 1.0], [0.0] * 3, 4, 4) == pytest.approx(0.75)
    # uneven chunks tell the first from the last (round 37 test audit: [1, 2, 1] alone let a share taken without
    # the last chunk pass)
    assert param_gather_overlap.later_share([3.0, 1.0], [0.0] * 2, 4, 4) == pytest.approx(0.25)
    assert param_gather_overlap.later_share([2.0], [0.0], 4, 4) == 0.0
    # routed experts: the expert optimizer steps every chunk's after the dispatch; shards of 2 (dense) and 4
    # (experts): 1.5 + 2 elements, of which the first chunk's dense 1 before it
    assert param_gather_overlap.later_share([2.0, 1.0], [4.0, 4.0], 2, 4) == pytest.approx(2.5 / 3.5)


def _names(ops) -> dict[str, int]:
    out: dict[str, int] = {}
    for op in ops:
        out[op.name] = out.get(op.name, 0) + 1
    return out


def test_two_optimizers_launch_their_own_update_and_scale_kernels():
    # fp8 parameters (current scaling) in a shard of 40 tensors, the later chunks' share 3/4 (30 tensors)
    args = dict(params=4.0e8, precision="fp8", grad_dtype="bf16", buffer_elements=8.0e8, tensors=40.0, buffers=4,
                fp8=fp8_params.Fp8Shard(0.9, 0.5, "current"))
    whole, _ = optimizer_step_ops(**args)
    head, _ = optimizer_step_ops(**args, tail_share=0.75, head=True)
    tail, _ = optimizer_step_ops(**args, tail_share=0.75)
    whole, head, tail = _names(whole), _names(head), _names(tail)
    adam, sync, zero = "FusedAdam: multi_tensor_adam", kernels.HOST_SYNC, "zero_grad_buffer: grad_data.zero_()"
    scales = [f"fp8 parameter scales {i}" for i in range(fp8_params.SCALE_UPDATE_KERNELS)]
    # each optimizer its own multi_tensor_adam call and its own scale update; one norm (one sync), before the head's
    assert (whole[adam], head[adam], tail[adam]) == (1, 1, 1)
    assert all((whole[k], head[k], tail[k]) == (1, 1, 1) for k in scales)
    assert (whole[sync], head[sync], sync in tail) == (1, 1, False)
    # per-tensor loops split by the tensors (10 + 30 copies, 5 + 15 casts), the buffers zeroed in the tail only
    for name in ("_copy_main_params_to_model_params", "cast_to_fp8: fp8 parameter shard"):
        assert head[name] + tail[name] == whole[name]
    assert (head[name], tail[name]) == (5, 15)
    assert (whole[zero], zero in head, tail[zero]) == (4, False, 4)
    assert sum(head.values()) + sum(tail.values()) == sum(whole.values()) + 1 + fp8_params.SCALE_UPDATE_KERNELS


def test_the_flag_makes_every_chunk_one_bucket():
    # the first stage's first chunk of 8 layers and 1 GB of gradients in 100 MB buckets: 8 without, 1 with the flag
    assert bucket_count(1e9, 1e8, 8, megatron_core=True) == 8
    assert bucket_count(1e9, 1e8, 8, megatron_core=True, disable_bucketing=True) == 1
    # and so in the engine where it keeps equal buckets (grad_buckets megatron): two layers a chunk, two 10 MB
    # buckets on the first chunk without the flag
    counts = []
    for flag in (False, True):
        data = _data(flag, grad_buckets="megatron")
        data["model"]["layers"] = 8
        plan = Simulation(config.from_dict(data)).plan
        counts.append(chunk_buckets(plan, plan.chunks[0]))
    assert counts == [2, 1]

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
    share = param_gather_overlap.later_share
    monkeypatch.setattr(param_gather_overlap, "later_share", lambda dense, experts, *shards: seen.append(list(dense))
                        or share(dense, experts, *shards))
    tails = plan.plan(config.from_dict(_data(True)), lambda *_: 0.0).optimizer_tail_s
    assert layer == 12_598_784
    assert seen == [[embedding + layer, layer], [layer, layer + output]]
    assert tails[0] < tails[1]   # stage 0's second optimizer steps one layer; stage 1's a layer and the output


@pytest.mark.parametrize("parallelism", [{"virtual_stages": 1}, {"zero_stage": 0}, {"overlap_param_gather": False},
                                         {"grad_buckets": "apex"}, {}])
def test_refused_where_megatron_lm_refuses_it(parallelism):
    data = _data(True)
    data["parallelism"].update(parallelism)
    if parallelism.get("virtual_stages") == 1:
        data["model"]["layers"] = 4
    if not parallelism:   # a release before the option (0.9.0 ships it, 0.8.0 has none)
        data["training"]["mcore_version"] = "0.8"
    with pytest.raises(ScenarioError, match="overlap_param_gather_with_optimizer_step"):
        config.from_dict(data)
