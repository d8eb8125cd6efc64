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
    # GPT-3 175B NeMo run: vocab 51,200 split by tp 4, gradients reduced (and accumulated) in bf16; round 26: NeMo
    # 24.05 keeps the word embedding's own gradient buffer in fp32 (workload.fp32_embedding_grads), so the row's
    # release before that container (0.6) is the bf16 case
    raw = copy.deepcopy(catalog.load("scenarios/nemo2409-gpt3-175b-128-h100-bf16"))
    raw["training"]["mcore_version"] = "0.6"
    scenario = config.from_dict(raw)
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
    # (NeMo's Apex rows of 24.05 on add into an fp32 buffer instead: tests/unit/test_nemo_fp32_embedding_grads.py)
    for name in ("nemo2409-llama31-8b-8-h100-bf16", "mpt-13b-16-h100", "nemotron4-340b-1536-h100"):
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


def test_fp32_parameters_fill_and_add_at_fp32_width():
    # review (round 25): FlashAttention-2's GPT-3 1.3B row keeps its parameters fp32 under autocast
    # (autocast_fp32_params); autocast leaves the embedding lookup in the weight's dtype, so at::zeros writes the
    # [vocab, hidden] gradient at 4 bytes, and the add reads that 4-byte .grad (50,257 padded to 50,304 x 2,048, tp 1)
    scenario = config.load("dao2023-gpt3-1.3b-2k-8-a100")
    assert scenario.training.autocast_fp32_params and scenario.parallelism.tp == 1
    by_name, _, shard = _ops(scenario)
    table = embedding_grad.table_params(scenario.model.vocab, scenario.model.hidden, 1)
    assert table == scenario.model.vocab * scenario.model.hidden
    assert by_name[embedding_grad.ZERO_OP].hbm_bytes == table * 4
    add = by_name.get(embedding_grad.ACCUMULATE_OP)
    share = grad_accumulation.charged_share(scenario, fused=False)
    assert (add is None) == (share == 0.0)
    if add is not None:
        assert add.hbm_bytes == pytest.approx(table * shard.embedding_grad_accumulation_bytes)
        assert add.flop == table    # one addition an element


def test_default_gpt3_step_hides_the_charge_behind_its_gradient_reduce_scatters(monkeypatch):
    # review (round 25): the default GPT-3 175B keeps its step with the dense gradient in. Not a wiring miss: the
    # kernels are on stage 0 (the only stage with the lookup), and a charge 20x larger moves the step; the step's
    # end is set by stage 0's queue of data-parallel reduce-scatters, which the last microbatch's backward (the only
    # one on the critical path, the others wait on stage 1's gradients) finishes well ahead of
    from simcluster.engine import simulate

    scenario = config.load(config.DEFAULT_SCENARIO)
    by_name, _, _ = _ops(scenario)
    assert by_name[embedding_grad.ZERO_OP].hbm_bytes == math.ceil(50_257 / 8) * 12_288 * 2   # tp 8, bf16
    kernels = embedding_grad.kernels

    def step(scale):
        monkeypatch.setattr(embedding_grad, "kernels",
                            lambda *a: [(n, f * scale, b * scale) for n, f, b in kernels(*a)])
        return simulate(scenario).summary["step_time_s"]

    on, off, large = step(1.0), step(0.0), step(20.0)
    assert on == off
    assert large > on + 0.1


def test_tied_table_on_one_stage_sums_two_dense_gradients_and_adds_once():
    # review (round 25): at pp 1 with tied embeddings the lookup and the output layer's GEMM both send a dense
    # [V/tp, h] gradient to the one weight; autograd's input buffer adds them in place (read two, write one) and
    # the stack's add into the main gradient stays one. llm-foundry's MPT-7B (the catalog's 50,368 x 4,096, tp 1,
    # bf16 .grad); FlashAttention-2's GPT-3 1.3B with fp32 parameters sums at 4 bytes
    scenario = config.load("mpt-7b-8-h100")
    assert scenario.model.tied_embeddings and scenario.parallelism.pp == 1
    by_name, ops, _ = _ops(scenario)
    assert by_name[embedding_grad.TIED_SUM_OP].hbm_bytes == 50_368 * 4_096 * 3 * 2
    assert sum(op.name == embedding_grad.ACCUMULATE_OP for op in ops) <= 1
    scenario = config.load("dao2023-gpt3-1.3b-2k-8-a100")
    by_name, ops, _ = _ops(scenario)
    table = scenario.model.vocab * scenario.model.hidden
    assert by_name[embedding_grad.TIED_SUM_OP].hbm_bytes == table * 3 * 4
    assert [op.name for op in ops][:4] == [embedding_grad.ZERO_OP, "embedding", embedding_grad.TIED_SUM_OP,
                                           embedding_grad.ACCUMULATE_OP]


@pytest.mark.parametrize("name", ["gpt3-175b-1024-h100", "bigscience-bloom-176b-384-a100",
                                  "nemo2409-llama31-8b-8-h100-bf16", "torchtitan-llama31-70b-256-h100-fp8-asynctp",
                                  "korthikanti2022-22b-a100"])
def test_no_sum_where_the_lookups_gradient_is_the_only_dense_one(name):
    # tied with pp > 1 (the default GPT-3, BLOOM's DeepSpeed pipeline: the last stage's copy has no lookup), untied
    # (Llama 3.1 on Megatron-Core, torchtitan's FSDP2 at pp 1), or tied at pp 1 with the fused accumulation
    # (Megatron-LM 2022's output layer hands autograd None: korthikanti 22B)
    scenario = config.load(name)
    if name.startswith("korthikanti"):
        assert scenario.model.tied_embeddings and scenario.parallelism.pp == 1 and shard_for(scenario).main_grad_bytes
    by_name, _, _ = _ops(scenario)
    assert embedding_grad.TIED_SUM_OP not in by_name
