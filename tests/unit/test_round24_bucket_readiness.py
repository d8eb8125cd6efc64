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
    # grad_buckets: megatron (Apex's Adam rows: equal buckets) and PyTorch's optimizer keep equal parts
    plan = _plan(config.load("nemo2407-llama3-8b-8-h100-fp8"))
    assert plan.scenario.parallelism.grad_buckets == "megatron"
    _, ready, parts = bucket_schedule(plan, plan.chunks[0])
    assert isinstance(parts, int) and ready == list(range(parts))
    plan = _plan(_scenario(grad_buckets="apex"))
    _, ready, parts = bucket_schedule(plan, plan.chunks[0])
    assert parts == plan.chunks[0].layers and ready == list(range(parts))
