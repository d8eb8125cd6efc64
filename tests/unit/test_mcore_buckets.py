"""Megatron-Core's own gradient buckets in the engine (docs/calibration/round-22.md, "Round 22: Megatron-Core's own
gradient buckets" and "Round 23: Megatron-Core's own gradient buckets, version by version"): its gradient buffer walks a
chunk's parameters in reverse registration order and closes a bucket once it holds at least ``bucket_size``
elements, padding its end to a multiple of the data-parallel size (NVIDIA/Megatron-LM megatron/core/distributed/
grad_buffer.py a8a5512 to param_and_grad_buffer.py 0011998); a shared (tied, pp > 1) embedding takes a bucket of its
own (``_does_param_require_new_bucket``); with fp8 parameters the fp8 weights and the rest are cut in two buffers
and every non-fp8 bucket joins the last fp8 bucket group (``partition_buckets``). Truth: the rules applied by hand to
a tiny model, and to Nemotron-4 15B at TP 8 (tests/unit/test_round22_nemodp_buckets.py's ``BY_HAND``), against what
the engine reduces and gathers; conservation of the gradient elements."""

from __future__ import annotations

import copy

import pytest

from simcluster.core import catalog
from simcluster.engine import simulate
from simcluster.engine.data_parallel import bucket_bytes, bucket_schedule, chunk_bucket_groups
from simcluster.parallel.mcore_buckets import (
    Bucket,
    gpt_param_tensors,
    layer_tensors,
    megatron_core_bucket_groups,
    megatron_core_buckets,
)
from simcluster.parallel.plan import plan as step_plan
from simcluster.spec import config
from tests.unit.test_round22_nemodp_buckets import BY_HAND

# hidden 4, one TP rank, 4 query and 4 KV channels, FFN 16, a two-matrix MLP, LayerNorm (8 norm parameters a layer),
# no biases: proj 16, qkv norm 4, qkv 4 x 12 = 48, fc1 norm 4, fc1 64, fc2 64 (200 a layer); embedding 40 (vocab 10),
# final norm 8, output layer 40; two layers: 488 elements
TINY_LAYER = [(16, True), (4, False), (48, True), (4, False), (64, True), (64, True)]


def _tiny(shared_embedding=False):
    return gpt_param_tensors(layer_tensors(4, 4, 4, 16, 2, 8, False), 2, embedding=40, head=40, final_norm=8,
                             shared_embedding=shared_embedding)


def test_layer_tensors_of_the_tiny_model():
    assert layer_tensors(4, 4, 4, 16, 2, 8, False) == TINY_LAYER
    assert sum(t.elements for t in _tiny()) == 488


def test_biases_follow_their_weights_and_are_not_gemm_weights():
    # proj bias h, qkv bias q + 2 kv, fc1 bias ffn, fc2 bias h: 4 + 12 + 16 + 4 = 36 more, none of them fp8
    with_biases = layer_tensors(4, 4, 4, 16, 2, 8, True)
    assert [n for n, _ in with_biases] == [16, 4, 4, 48, 12, 4, 64, 16, 64, 4]
    assert sum(n for n, gemm in with_biases if gemm) == sum(n for n, gemm in TINY_LAYER if gemm) == 192


@pytest.mark.parametrize(("dp", "expected"), [
    # reverse walk, bucket 100: head 40 + norm 8 + L1 fc2 64 = 112 (closed); L1 fc1 64 + norm 4 + qkv 48 = 116;
    # L1 norm 4 + proj 16 + L0 fc2 64 + fc1 64 = 148; L0 norm 4 + qkv 48 + norm 4 + proj 16 + embedding 40 = 112
    (1, [(1, 112), (1, 116), (0, 148), (0, 112)]),
    (4, [(1, 112), (1, 116), (0, 148), (0, 112)]),      # every end (112, 228, 376, 488) a multiple of 4
    # dp 3: ends padded 112 -> 114, 230 -> 231, 379 -> 381, 493 -> 495
    (3, [(1, 114), (1, 117), (0, 150), (0, 114)]),
])
def test_buckets_of_the_tiny_model_by_hand(dp, expected):
    assert megatron_core_buckets(_tiny(), 100, dp) == expected


def test_a_bucket_larger_than_the_model_is_one_bucket():
    assert megatron_core_buckets(_tiny(), 1000, 4) == [(0, 488)]


def test_a_shared_embedding_takes_a_bucket_of_its_own():
    # the last bucket (L0 norm 4 + qkv 48 + norm 4 + proj 16 = 72) closes before the embedding, which is alone (40)
    assert megatron_core_buckets(_tiny(shared_embedding=True), 100, 1) == [(1, 112), (1, 116), (0, 148), (0, 72),
                                                                           (0, 40)]
    # a bucket larger than the model: everything else, then the embedding
    assert megatron_core_buckets(_tiny(shared_embedding=True), 1000, 4) == [(0, 448), (0, 40)]


def test_learned_positions_follow_the_word_embedding_and_are_never_shared():
    # LanguageModelEmbedding builds word_embeddings, then position_embeddings; only the word embedding is marked
    # shared_embedding (language_module.py). Positions of 28: the walk reaches L0's 72 + 28 = 100 >= 100 and closes
    # before the word embedding (40), which is the remainder; one tensor of 68 would have closed at 140
    def tiny(shared):
        return gpt_param_tensors(layer_tensors(4, 4, 4, 16, 2, 8, False), 2, embedding=40, head=40, final_norm=8,
                                 shared_embedding=shared, positions=28)
    head = [(1, 112), (1, 116), (0, 148)]
    assert megatron_core_buckets(tiny(False), 100, 1) == head + [(0, 100), (0, 40)]
    # shared: the positions stay with layer 0 (72 + 28), the word embedding alone; with a bucket larger than the
    # model, everything but the word embedding (488 + 28 - 40), then the word embedding
    assert megatron_core_buckets(tiny(True), 100, 1) == head + [(0, 100), (0, 40)]
    assert megatron_core_buckets(tiny(True), 1000, 1) == [(0, 476), (0, 40)]
    assert megatron_core_buckets(tiny(False), 1000, 1) == [(0, 516)]


def test_fp8_parameters_cut_two_buffers_and_merge_the_rest_into_the_last_fp8_group():
    # fp8 buffer (GEMM weights, reverse): L1 fc2 64 + fc1 64 = 128 (closed); L1 qkv 48 + proj 16 + L0 fc2 64 = 128;
    # L0 fc1 64 + qkv 48 = 112; L0 proj 16 (the remainder). Other buffer: head 40 + norm 8 + L1 norms 8 + L0 norms 8
    # + embedding 40 = 104 (closed at the embedding, the last). The 104 join the last fp8 group (lowest layer 0),
    # which then holds two of Megatron-Core's buckets (each checked on its own by check_for_nan_in_grad).
    groups = megatron_core_bucket_groups(_tiny(), 100, 1, fp8_params=True)
    assert groups == [Bucket(1, 128, 128), Bucket(0, 128, 128), Bucket(0, 112, 112), Bucket(0, 16 + 104, 16, 2)]
    assert sum(g.elements for g in groups) == 488                     # conserved
    assert sum(g.gemm_elements for g in groups) == 2 * 192            # every GEMM weight in fp8
    assert megatron_core_bucket_groups(_tiny(), 100, 1, fp8_params=False) == [
        Bucket(low, n) for low, n in megatron_core_buckets(_tiny(), 100, 1)]


def _plan(name: str, **parallelism):
    raw = copy.deepcopy(catalog.load(f"scenarios/{name}"))   # the catalog's dict is shared: never edit it
    raw["parallelism"].update(parallelism)
    scenario = config.from_dict(raw)
    return step_plan(scenario, lambda *a, **k: 1e-3)


def test_the_engine_conserves_a_chunks_gradient_elements_and_orders_completion_by_layer():
    plan = _plan("nemo2409-llama31-8b-8-h100-bf16")
    cost = plan.chunks[0]
    groups = chunk_bucket_groups(plan, cost)
    width = 4                                                          # fp32 reduction (bf16 training)
    dp = plan.scenario.parallelism.dp
    total = sum(g.elements for g in groups)
    assert 0 <= total - cost.grad_bytes / width < len(groups) * dp     # padding only
    sizes, ready, parts = bucket_schedule(plan, cost)
    # complete in backward order; the backward cut where they complete (round 24: the output layer alone first,
    # then a part a layer, the embedding with layer 0)
    assert len(parts) == cost.layers + 1 and ready == sorted(ready)
    assert sum(s[2] for s in sizes) == pytest.approx(cost.param_bytes * total / (cost.grad_bytes / width))


def test_off_the_first_stages_first_chunk_and_without_overlap_one_bucket():
    plan = _plan("nemo2407-gpt3-175b-128-h100-fp8", grad_buckets="megatron_core")
    assert chunk_bucket_groups(plan, plan.chunks[0]) is not None
    assert all(chunk_bucket_groups(plan, c) is None for c in plan.chunks[1:])
    plan = _plan("nemo2409-llama31-8b-8-h100-bf16", overlap_grad_reduce=False)
    assert chunk_bucket_groups(plan, plan.chunks[0]) is None and len(bucket_schedule(plan, plan.chunks[0])[0]) == 1


def test_the_tied_gpt3_embedding_under_pipelining_is_alone():
    # GPT-3 175B at TP 4, PP 8, DP 4: the first chunk's last bucket is its word embedding alone (51,200 / 4 x 12,288
    # elements: models.yaml's vocabulary padded for TP; a multiple of dp, no padding); the learned positions (2,048 x
    # 12,288, not shared) end the bucket before it
    plan = _plan("nemo2407-gpt3-175b-128-h100-fp8", grad_buckets="megatron_core")
    model = plan.scenario.model
    groups = chunk_bucket_groups(plan, plan.chunks[0])
    word = -(-model.vocab // 4) * model.hidden
    dp = plan.scenario.parallelism.dp * plan.scenario.parallelism.cp
    assert groups[-1].low == 0 and word <= groups[-1].elements < word + dp
    assert groups[-2].low == 0 and groups[-2].elements >= 2048 * model.hidden


def test_the_last_stages_tied_output_layer_is_alone_without_virtual_stages():
    # GPT-3 175B (tied) at TP 8, PP 8, DP 16: the last stage does not bucket (bucket_size None on pipeline ranks > 0),
    # but its output layer is marked shared_embedding (language_module.py), so _does_param_require_new_bucket gives
    # it a bucket of its own, walked first: ceil(50,257 / 8) x 12,288 = 77,205,504 elements (a multiple of 16), then
    # everything else (12 layers and the final norm) as one bucket; each its own group (no fp8 buffer)
    plan = _plan("gpt3-175b-1024-h100")
    last = plan.chunks[-1]
    head = -(-plan.scenario.model.vocab // 8) * plan.scenario.model.hidden
    assert head == 77_205_504
    groups = chunk_bucket_groups(plan, last)
    # bf16 reduction; lows are units (round 24: the output layer L + 1, layer 0 unit 1)
    assert groups == [Bucket(last.layers + 1, head), Bucket(1, last.grad_bytes / 2 - head)]
    assert bucket_schedule(plan, last)[1] == [0, 1]           # after the output layer's backward, after layer 0's
    # with virtual stages the last stage's chunk is a later model chunk: bucketing disabled, one bucket group
    plan = _plan("gpt3-175b-1024-h100", virtual_stages=2)
    assert chunk_bucket_groups(plan, plan.chunks[-1]) is None and len(bucket_bytes(plan, plan.chunks[-1])) == 1
    # the middle stages: one bucket
    assert all(chunk_bucket_groups(plan, c) is None for c in plan.chunks[1:-1])


def test_megatron_core_is_the_default_on_its_stack_and_refused_elsewhere():
    assert _plan("nemo2409-llama31-8b-8-h100-bf16").scenario.parallelism.grad_buckets == "megatron_core"
    assert _plan("nemo2407-gpt3-175b-128-h100-fp8").scenario.parallelism.grad_buckets == "apex"   # Apex's Adam
    raw = copy.deepcopy(catalog.load("scenarios/nemo2409-llama31-8b-8-h100-bf16"))
    raw["training"]["optimizer"] = "torch_adamw"
    assert config.from_dict(raw).parallelism.grad_buckets == "megatron"
    raw["parallelism"]["grad_buckets"] = "megatron_core"
    with pytest.raises(config.ScenarioError, match="parallelism.grad_buckets"):
        config.from_dict(raw)


def test_the_engine_reduces_and_gathers_megatron_cores_buckets():
    # Nemotron-4 15B at DP 96 (grad_bucket_size 160 MB = 40M fp32 elements): 34 buckets, no padding at 96
    result = simulate(config.load("nemotron4-15b-768-h100"))
    rank0 = result.events[(result.events["rank"] == 0) & (result.events["kind"] == "comm")]
    grads = rank0[rank0["name"].str.startswith("grad reduce_scatter")].sort_values("start_s")
    gathers = rank0[rank0["name"].str.startswith("param all_gather")].sort_values("start_s")
    assert list(grads["bytes"]) == pytest.approx([4 * size for _, size in BY_HAND])      # fp32, formation order
    assert list(gathers["bytes"]) == pytest.approx([2 * size for _, size in BY_HAND[::-1]])  # bf16, forward order


def test_without_overlapped_gather_megatron_core_gathers_bucket_by_bucket_after_the_optimizer():
    # DistributedOptimizer.step without overlap_param_gather: one synchronous all-gather per bucket (a8a5512;
    # start_param_sync(force_sync=True) per bucket group later), all after the step's last reduce-scatter, back to
    # back on the data-parallel stream, bf16 in forward order
    raw = copy.deepcopy(catalog.load("scenarios/nemotron4-15b-768-h100"))
    raw["parallelism"]["overlap_param_gather"] = False
    events = simulate(config.from_dict(raw)).events
    rank0 = events[(events["rank"] == 0) & (events["kind"] == "comm")]
    gathers = rank0[rank0["name"].str.startswith("param all_gather")].sort_values("start_s")
    grads = rank0[rank0["name"].str.startswith("grad reduce_scatter")]
    assert list(gathers["bytes"]) == pytest.approx([2 * size for _, size in BY_HAND[::-1]])
    assert gathers["start_s"].min() >= grads["end_s"].max()
    assert list(gathers["start_s"])[1:] == pytest.approx(list(gathers["end_s"])[:-1])
