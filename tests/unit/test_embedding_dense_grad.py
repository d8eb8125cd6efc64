"""The word embedding's dense weight gradient (workload.embedding_grad): PyTorch's embedding_dense_backward zero-fills
the whole [vocab/tp, hidden] gradient every microbatch, and the stack adds that whole tensor to its main gradient.
Bytes checked against the closed form vocab/tp x hidden x bytes per element, per microbatch."""

from __future__ import annotations

import copy
import math

import pytest

from simcluster.core import catalog
from simcluster.spec import config
from simcluster.workload import embedding_grad, grad_accumulation
from simcluster.workload.ops import embedding_ops, shard_for


def _ops(scenario):
    shard = shard_for(scenario)
    ops = embedding_ops(scenario.model, shard)["backward_weight"]
    return {op.name: op for op in ops}, ops, shard


def test_megatron_core_bf16_row_fills_and_adds_the_whole_table():
    # Llama 3.1 8B (vocab 128,256, hidden 4,096, tp 1), Megatron-Core: bf16 .grad, main gradient fp32 here
    scenario = config.load("nemo2409-llama31-8b-8-h100-bf16")
    by_name, ops, _ = _ops(scenario)
    table = 128_256 * 4_096
    assert by_name[embedding_grad.ZERO_OP].hbm_bytes == table * 2             # at::zeros, bf16
    main = {"fp32": 4, "bf16": 2}[scenario.parallelism.grad_reduce_dtype]
    assert by_name[embedding_grad.ACCUMULATE_OP].hbm_bytes == table * (2 + 2 * main)   # read .grad, r/w main_grad
    # the fill comes before the scatter-add, the add into the main gradient after it (the hook runs last)
    assert [op.name for op in ops] == [embedding_grad.ZERO_OP, "embedding", embedding_grad.ACCUMULATE_OP]


def test_tensor_parallel_slice_and_bf16_main_gradient():
    # GPT-3 175B NeMo run: vocab 51,200 split by tp 4, gradients reduced (and accumulated) in bf16
    scenario = config.load("nemo2409-gpt3-175b-128-h100-bf16")
    assert scenario.parallelism.grad_reduce_dtype == "bf16"
    by_name, _, _ = _ops(scenario)
    table = 51_200 // 4 * 12_288
    assert by_name[embedding_grad.ZERO_OP].hbm_bytes == table * 2
    assert by_name[embedding_grad.ACCUMULATE_OP].hbm_bytes == table * (2 + 2 + 2)


def test_padded_vocabulary_slice_rounds_up():
    assert embedding_grad.table_params(50_257, 1_024, 8) == math.ceil(50_257 / 8) * 1_024


def test_sharded_fsdp_fills_but_adds_nothing_and_fp32_params_fill_fp32():
    # llm-foundry FSDP1 FULL_SHARD: the gradient is reduce-scattered every microbatch (no unsharded add, the
    # layers' rule); autocast keeps the embedding's weight fp32, so its gradient is fp32 as well
    scenario = config.load("mpt-13b-16-h100")
    assert scenario.parallelism.zero_stage == 3
    by_name, _, shard = _ops(scenario)
    assert embedding_grad.ACCUMULATE_OP not in by_name
    width = 4 if scenario.training.autocast_fp32_params else 2
    table = embedding_grad.table_params(scenario.model.vocab, scenario.model.hidden, shard.tp)
    assert by_name[embedding_grad.ZERO_OP].hbm_bytes == table * width


def test_the_add_follows_the_layers_accumulation_rule():
    # the embedding is no GEMM, so the fusion never applies to it: its add is the unfused charge of the stack
    for name in ("nemo2409-llama31-8b-8-h100-bf16", "mpt-13b-16-h100", "nemo2407-llama2-7b-8-h100-fp8"):
        scenario = config.load(name)
        assert shard_for(scenario).embedding_grad_accumulation_bytes == \
            grad_accumulation.charged_bytes_per_param(scenario, fused=False)


def test_charged_every_microbatch_and_independent_of_the_batch():
    # the fill is per microbatch (one backward), its bytes do not grow with the tokens: a microbatch twice as large
    # keeps the same fill and add, while the scatter-add doubles
    raw = copy.deepcopy(catalog.load("scenarios/nemo2409-llama31-8b-8-h100-bf16"))
    one, _, _ = _ops(config.from_dict(raw))
    raw["training"]["micro_batch_size"] *= 2
    raw["training"]["global_batch_size"] *= 2
    two, _, _ = _ops(config.from_dict(raw))
    for name in (embedding_grad.ZERO_OP, embedding_grad.ACCUMULATE_OP):
        assert two[name].hbm_bytes == one[name].hbm_bytes
    assert two["embedding"].hbm_bytes == pytest.approx(2 * one["embedding"].hbm_bytes)
