"""Round 24: a Megatron-Core gradient bucket is ready when the backward has really reached it.

Megatron-Core hooks every parameter's gradient accumulator (distributed_data_parallel.py
``_make_backward_post_hook``); a bucket group starts its reduction once all of its parameters' hooks have fired
(param_and_grad_buffer.py ``register_grad_ready``). Autograd runs a GPT model's backward in reverse: the loss and
output layer first, the layers from the top, the embedding last. So the first bucket (the output layer and the last
layers, registered last, walked first) is ready after the output layer's backward plus its layers', not after an
equal 1/L of the whole chunk's backward (the engine before round 24: early by up to the output layer's backward).
"""

from __future__ import annotations

import copy
import math

import pytest

from simcluster.core import catalog
from simcluster.engine import simulate
from simcluster.engine.agents import share
from simcluster.engine.data_parallel import Cuts, bucket_schedule, chunk_bucket_groups, portion
from simcluster.parallel.plan import plan as step_plan
from simcluster.spec import config

# Llama 3 8B (models.yaml) on one TP rank, elements: the output layer (vocab x hidden) and one layer (q and proj
# 4096 x 4096, k and v 4096 x 1024, SwiGLU fc1 2 x 4096 x 14336 and fc2 14336 x 4096, two RMSNorm weights)
HIDDEN, VOCAB, FFN, KV = 4096, 128256, 14336, 1024
HEAD = VOCAB * HIDDEN
LAYER = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * KV + 3 * HIDDEN * FFN + 2 * HIDDEN
FINAL_NORM = HIDDEN


def _scenario(**parallelism):
    # one stage (pp 1), no TP, no context parallelism: each backward part is compute alone
    raw = copy.deepcopy(catalog.load("scenarios/nemo2409-llama31-8b-8-h100-bf16"))   # shared dict: copy
    raw["parallelism"].update(dp=8, cp=1, **parallelism)
    return config.from_dict(raw)


def _plan(scenario):
    return step_plan(scenario, lambda *a, **k: 1e-3)


def _layers_in_first_bucket(bucket_elements: float) -> int:
    """Layers with a parameter in the first bucket, by hand: the walk takes the output layer, the final norm, then
    whole layers from the top (fc2 first, 3 x 4096 x 14336 of the MLP before anything else of the layer), and closes
    at >= the bucket size."""
    if HEAD >= bucket_elements:
        return 0
    left = bucket_elements - HEAD - FINAL_NORM
    return math.ceil(left / LAYER)


@pytest.mark.parametrize("bucket_mb, layers", [(160, 0), (3200, 2)])   # 40M (the default) and 800M fp32 elements
def test_the_first_bucket_is_ready_after_the_output_layer_and_its_layers(bucket_mb, layers):
    scenario = _scenario(grad_bucket_size=f"{bucket_mb} MB")
    assert _layers_in_first_bucket(bucket_mb * 1e6 / 4) == layers
    plan = _plan(scenario)
    cost = plan.chunks[0]
    first = chunk_bucket_groups(plan, cost)[0]
    assert first.low == cost.layers + 1 - layers            # units: the output layer L + 1, layer i i + 1
    embedding_s, head_s = cost.edge_s["backward"]
    layer_s = (cost.backward_compute_s - embedding_s - head_s) / cost.layers
    # the output layer's backward: its two GEMMs' FLOP (dgrad and wgrad, 2 x 2 x tokens x hidden x vocab) against
    # a layer's, plus the cross-entropy's memory-bound passes: longer than the FLOP ratio, within 25 % of it
    tokens = scenario.training.seq_len * scenario.training.micro_batch_size
    head_flop = 4 * tokens * HIDDEN * VOCAB
    flop_ratio = head_flop / ((cost.backward_flop - head_flop) / cost.layers)
    assert flop_ratio <= head_s / layer_s <= 1.25 * flop_ratio
    assert head_s > layer_s                                  # the case the round is about

    events = simulate(scenario, check_memory=False).events
    rank0 = events[events["rank"] == 0]
    last = scenario.microbatches - 1
    backward = rank0[(rank0["name"] == "backward c0 b0") & (rank0["microbatch"] == last)]["start_s"].min()
    ready = rank0[rank0["name"] == "grad reduce_scatter c0b0"]["start_s"].min()
    assert ready - backward == pytest.approx(head_s + layers * layer_s, rel=1e-9)
    # before round 24 the first bucket was ready after one equal part (the whole backward / L) per layer of it,
    # at least one: the output layer's backward was spread over every part
    assert ready - backward > max(layers, 1) * cost.backward_compute_s / cost.layers


def _cases():
    for name, chunks in (("megatron-16b-h100", (0,)), ("nemo2409-llama31-8b-8-h100-bf16", (0,)),
                         ("gpt3-175b-1024-h100", (0, -1)), ("megatron-462b-h100", (0,))):
        plan = _plan(config.load(name))
        for chunk in chunks:
            yield name, plan, plan.chunks[chunk]


@pytest.mark.parametrize("phase", ["forward", "backward"])
def test_the_parts_add_up_to_the_block_and_its_layers(phase):
    seen = 0
    for name, plan, cost in _cases():
        _, ready, parts = bucket_schedule(plan, cost)
        if not isinstance(parts, Cuts):
            continue
        seen += 1
        pieces = [portion(cost, phase, part, parts) for part in range(len(parts))]
        total = getattr(cost, f"{phase}_compute_s")
        assert sum(seconds for seconds, *_ in pieces) == pytest.approx(total, rel=1e-12), name
        assert all(seconds >= 0 for seconds, *_ in pieces)
        # the layers' spans tile 0..L once, in the order the phase runs them
        spans = sorted((lo, hi) for _, lo, hi, _ in pieces)
        assert spans[0][0] == 0 and spans[-1][1] == cost.layers
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        if phase == "backward":                              # the first part holds the output layer on a last chunk
            assert pieces[0][2] == cost.layers
        # the per-layer collectives are conserved
        for calls in cost.tp_collectives.values():
            for op, count in calls:
                assert sum(dict(share(calls, lo, hi, n)).get(op, 0) for _, lo, hi, n in pieces) == count
        assert max(ready) == len(parts) - 1                  # the last group completes with the chunk's backward
    assert seen >= 4


def test_equal_buckets_and_apex_keep_equal_parts():
    # grad_buckets: megatron (equal buckets; round 26 set the last Apex rows that kept them, the GPT-3 175B FP8
    # pair, to apex) and PyTorch's optimizer keep equal parts
    raw = copy.deepcopy(catalog.load("scenarios/nemo2407-gpt3-175b-128-h100-fp8"))
    raw["parallelism"].update(grad_buckets="megatron", grad_bucket_size=None)
    plan = _plan(config.from_dict(raw))
    assert plan.scenario.parallelism.grad_buckets == "megatron"
    _, ready, parts = bucket_schedule(plan, plan.chunks[0])
    assert isinstance(parts, int) and ready == list(range(parts))
    plan = _plan(_scenario(grad_buckets="apex"))
    _, ready, parts = bucket_schedule(plan, plan.chunks[0])
    assert parts == plan.chunks[0].layers and ready == list(range(parts))


# ---- round 24 review: each layout's order, counted by hand ----------------------------------------------------------

def _small(pp: int, tied: bool, virtual_stages: int | None = None, **training):
    """A 8-layer model small enough to simulate fast, on 8 GPUs (dp 8 / pp), 20 MB buckets: several groups."""
    raw = copy.deepcopy(catalog.load("scenarios/nemo2409-llama31-8b-8-h100-bf16"))
    raw["model"] = dict(layers=8, hidden=1024, heads=8, vocab=64000, ffn_hidden=4096, mlp="swiglu", norm="rmsnorm",
                        position="rope", tied_embeddings=tied, dropout=False)
    raw["training"].update(seq_len=2048, global_batch_size=32, **training)
    raw["parallelism"].update(dp=8 // pp, cp=1, pp=pp, tp=1, grad_bucket_size="20 MB")
    if virtual_stages:
        raw["parallelism"]["virtual_stages"] = virtual_stages
    return config.from_dict(raw)


def test_the_forward_waits_for_the_output_layers_gather_last():
    # overlap_param_gather: Megatron-Core's forward pre-hooks wait for a group before the first module using it, so
    # the output layer's group (alone at 40M elements: the first made in the backward, the last gathered) is waited
    # for only before the output layer's forward, the chunk's last part; the first part waits for the embedding's
    # and layer 0's groups only
    scenario = _scenario()
    plan = _plan(scenario)
    cost = plan.chunks[0]
    groups = chunk_bucket_groups(plan, cost)
    assert groups[0].low == cost.layers + 1
    _, _, parts = bucket_schedule(plan, cost)
    seconds, lo, hi, _ = portion(cost, "forward", len(parts) - 1, parts)
    assert (seconds, lo, hi) == (cost.edge_s["forward"][1], cost.layers, cost.layers)   # the output layer alone
    events = simulate(scenario, check_memory=False).events
    rank0 = events[(events["rank"] == 0)]
    head_gather = rank0[rank0["name"] == f"param all_gather c0b{len(groups) - 1}"]["end_s"].min()
    forwards = rank0[(rank0["microbatch"] == 0) & rank0["name"].str.startswith("forward c0 b")]
    first = forwards[forwards["name"] == "forward c0 b0"]["start_s"].min()
    last = forwards[forwards["name"] == f"forward c0 b{len(parts) - 1}"]["start_s"].min()
    assert first < head_gather <= last


def test_the_first_stage_ends_with_the_embedding_and_the_tied_last_stage_starts_with_the_output_layer():
    plan = _plan(_small(pp=2, tied=True))
    first, last = plan.chunks
    # first stage: no output layer; the shared embedding's bucket (alone) completes with the backward's last part,
    # which holds the embedding's backward and layer 0's
    groups = chunk_bucket_groups(plan, first)
    _, ready, parts = bucket_schedule(plan, first)
    assert first.edge_s["backward"][1] == 0 and parts.bounds[0] == 0 and parts.bounds[-1] == first.layers + 1
    assert ready[[g.low for g in groups].index(0)] == len(parts) - 1
    embedding_s = first.edge_s["backward"][0]
    layer_s = (first.backward_compute_s - embedding_s) / first.layers
    seconds, lo, hi, _ = portion(first, "backward", len(parts) - 1, parts)
    assert lo == 0 and seconds == pytest.approx(embedding_s + hi * layer_s, rel=1e-12)
    # last stage: its tied output layer's bucket alone, ready after the output layer's backward, the first part
    groups = chunk_bucket_groups(plan, last)
    _, ready, parts = bucket_schedule(plan, last)
    assert [g.low for g in groups] == [last.layers + 1, 1] and ready == [0, 1]
    assert portion(last, "backward", 0, parts)[0] == last.edge_s["backward"][1] > 0
    assert portion(last, "forward", 1, parts)[0] == last.edge_s["forward"][1]   # and its forward last


def test_interleaved_chunks_hold_the_output_layer_only_on_the_last():
    plan = _plan(_small(pp=2, tied=True, virtual_stages=2))
    heads = [cost.edge_s["backward"][1] > 0 for cost in plan.chunks]
    embeddings = [cost.edge_s["backward"][0] > 0 for cost in plan.chunks]
    assert heads == [False, False, False, True] and embeddings == [True, False, False, False]
    _, _, parts = bucket_schedule(plan, plan.chunks[0])           # the walked chunk: stage 0's first
    assert parts.bounds == (0, 2, 3)                               # the embedding with layer 0, then layer 1
    assert sum(portion(plan.chunks[0], "backward", i, parts)[0] for i in range(2)) == pytest.approx(
        plan.chunks[0].backward_compute_s, rel=1e-12)


def test_a_recomputed_layers_share_holds_its_recompute():
    # full recompute: each layer's backward re-runs its forward first (the checkpoint's backward, one layer a
    # checkpoint: Megatron-Core's default recompute_num_layers 1), so its hooks fire after both; the output layer is
    # not recomputed. The first group (the output layer alone) is ready after the same output-layer seconds, and a
    # layer's share is longer by exactly the layer's forward (the workload's recompute phase is its forward's ops)
    plain, full = (_plan(_small(pp=1, tied=False, activation_recompute=r)).chunks[0] for r in ("none", "full"))
    assert full.edge_s["backward"] == plain.edge_s["backward"]
    _, _, parts = bucket_schedule(_plan(_small(pp=1, tied=False, activation_recompute="full")), full)
    head = portion(full, "backward", 0, parts)
    assert head[0] == full.edge_s["backward"][1] and head[1:3] == (full.layers, full.layers)
    share = (full.backward_compute_s - sum(full.edge_s["backward"])) / full.layers
    plain_share = (plain.backward_compute_s - sum(plain.edge_s["backward"])) / plain.layers
    forward_share = (plain.forward_compute_s - sum(plain.edge_s["forward"])) / plain.layers
    assert share == pytest.approx(plain_share + forward_share, rel=1e-9)
