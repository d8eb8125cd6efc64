"""NeMo's fp32 word-embedding gradients under Apex's distributed Adam (workload.fp32_embedding_grads), round 26.

From NeMo 2.0.0rc0 (the 24.05 container, Megatron-Core 0.7) NeMo 1.x's GPT model marks the first stage's word
embedding and learned positions, and the last stage's tied copy, ``_with_fp32_optimizer``; NeMo's
MegatronDistributedFusedAdam gives them Apex buckets of their own with grad_sync_dtype fp32 (nemo_toolkit 2.0.0rc0 and
2.0.0rc1 wheels: megatron_gpt_model.py configure_optimizers, core/optim/distributed_adam.py init_params_bucket).
Expected costs by hand: Apex's bucket is ``floor(cap / 2 B / ranks)`` elements floored to 64 (128 B of bf16) times the
ranks, the same element count for the fp32 buckets (``default_shard_size`` from the optimizer's bf16 default); a
bucket is communicated whole."""

from __future__ import annotations

import copy
import math

import pytest

from simcluster.core import catalog
from simcluster.engine.data_parallel import apex_group_elements, bucket_schedule
from simcluster.parallel.memory import layer_params_per_rank
from simcluster.parallel.plan import embedding_grad_bytes
from simcluster.parallel.plan import plan as step_plan
from simcluster.spec import config
from simcluster.workload import embedding_grad, fp32_embedding_grads
from simcluster.workload.ops import embedding_ops, shard_for

GPT3 = "nemo2409-gpt3-175b-128-h100-bf16"  # NeMo 24.05 (mcore 0.7), tp 4, pp 8, dp 4, 12 virtual stages, tied
MIB = 2**20


def _scenario(name: str, training=None, **parallelism) -> config.Scenario:
    raw = copy.deepcopy(catalog.load(f"scenarios/{name}"))  # the catalog's dict is shared: never edit it
    raw["training"].update(training or {})
    raw["parallelism"].update(parallelism)
    return config.from_dict(raw)


def _apex_bucket(cap_bytes: int, ranks: int) -> int:
    shard = cap_bytes // 2 // ranks
    return (shard - shard % 64) * ranks


def _accumulate_bytes(scenario) -> float:
    ops = embedding_ops(scenario.model, shard_for(scenario))["backward_weight"]
    return next(op.hbm_bytes for op in ops if op.name == embedding_grad.ACCUMULATE_OP)


def test_which_runs_keep_the_embedding_in_fp32():
    # every bundled Apex row that states its container's release (24.05 / 24.07) does
    for name in (
        GPT3,
        "nemo2407-gpt3-175b-128-h100-fp8",
        "nemo2407-llama3-8b-8-h100-fp8",
        "nemo2407-llama2-70b-64-h100-fp8",
        "nemo2407-llama2-7b-8-h100-fp8",
    ):
        scenario = config.load(name)
        assert fp32_embedding_grads.applies(scenario), name
        assert fp32_embedding_grads.note(scenario) is None
    # Nemotron-4 340B: its container is not known, the release left to the default: not applied, said in a note
    nemotron = config.load("nemotron4-340b-1536-h100")
    assert nemotron.training.mcore_version is not None and config.stated_mcore_version(nemotron.training) is None
    assert not fp32_embedding_grads.applies(nemotron)
    assert "mcore_version" in fp32_embedding_grads.note(nemotron)
    # a release before NeMo 24.05's, an fp32 reduction, or another optimizer's buckets: not applied
    assert not fp32_embedding_grads.applies(_scenario(GPT3, {"mcore_version": "0.6"}))
    assert not fp32_embedding_grads.applies(_scenario(GPT3, grad_reduce_dtype="fp32"))
    assert not fp32_embedding_grads.applies(_scenario(GPT3, grad_buckets="megatron"))


def test_the_gradient_copy_adds_into_an_fp32_buffer():
    # Apex's _grad_copy adds the bf16 .grad into the fp32 bucket every microbatch: read 2, read and write 4 + 4
    table = 51_200 // 4 * 12_288
    assert _accumulate_bytes(config.load(GPT3)) == table * (2 + 2 * 4)
    assert _accumulate_bytes(_scenario(GPT3, {"mcore_version": "0.6"})) == table * (2 + 2 * 2)  # the bf16 bucket
    # untied Llama 3 8B at tp 1: the whole 128,256 x 4,096 table
    assert _accumulate_bytes(config.load("nemo2407-llama3-8b-8-h100-fp8")) == 128_256 * 4_096 * 10


def test_the_tied_copies_are_all_reduced_in_fp32():
    # allreduce_first_last_embeddings all-reduces main_grad, the view into the fp32 buffer: 4 bytes an element
    assert embedding_grad_bytes(config.load(GPT3)) == 51_200 / 4 * 12_288 * 4
    assert embedding_grad_bytes(_scenario(GPT3, {"mcore_version": "0.6"})) == 51_200 / 4 * 12_288 * 2


@pytest.fixture(scope="module")
def gpt3_plan():
    return step_plan(config.load(GPT3), lambda *a, **k: 1e-3)


def test_fp32_buckets_of_their_own_in_the_group_of_the_parameters_of_no_layer(gpt3_plan):
    plan = gpt3_plan
    model = plan.scenario.model
    bucket = _apex_bucket(220 * MIB, 4)
    assert bucket == 115_343_360
    layer = layer_params_per_rank(model, 4)
    word, positions = 51_200 // 4 * 12_288, 2_048 * 12_288
    whole = lambda elements: math.ceil(elements / bucket) * bucket  # noqa: E731

    # first chunk (stage 0, one layer): the layer in bf16 buckets, word embedding + positions in two fp32 buckets
    first = plan.chunks[0]
    assert apex_group_elements(plan, first) == [(whole(layer), whole(word + positions))]
    assert whole(word + positions) == 2 * bucket
    grad_bytes = bucket_schedule(plan, first)[0][0][0]
    assert grad_bytes == whole(layer) * 2 + 2 * bucket * 4
    # before round 26 the whole group was cut in bf16 buckets: 4 buckets a layer + 2 for the embedding -> 6 x 2 bytes
    assert whole(layer + word + positions) * 2 == 6 * bucket * 2 < grad_bytes

    # last chunk (stage 7): the tied copy in fp32, the layer and final LayerNorm (2 x 12,288) in bf16
    last = plan.chunks[-1]
    assert apex_group_elements(plan, last) == [(whole(layer + 2 * 12_288), whole(word))]
    # a middle chunk has no embedding: nothing in fp32
    assert apex_group_elements(plan, plan.chunks[1]) == [(whole(layer), 0.0)]

    # the parameters are gathered at the bf16 width, the fp32 buckets included
    sizes = bucket_schedule(plan, first)[0]
    assert sizes[0][2] == pytest.approx((whole(layer) + 2 * bucket) * first.param_bytes / (first.grad_bytes / 2))


def test_unstated_release_keeps_the_bf16_buckets():
    # the same row leaving mcore_version to the default: no NeMo pinned, the group as before round 26
    raw = copy.deepcopy(catalog.load(f"scenarios/{GPT3}"))
    del raw["training"]["mcore_version"]
    scenario = config.from_dict(raw)
    assert not fp32_embedding_grads.applies(scenario)
    plan = step_plan(scenario, lambda *a, **k: 1e-3)
    layer = layer_params_per_rank(scenario.model, 4)
    bucket = _apex_bucket(220 * MIB, 4)
    rest = 51_200 // 4 * 12_288 + 2_048 * 12_288
    assert apex_group_elements(plan, plan.chunks[0]) == [(math.ceil((layer + rest) / bucket) * bucket, 0.0)]


@pytest.mark.parametrize("release, per_chunk", [("0.8", False), ("0.9", True), ("0.11", True), (None, False)])
def test_apex_groups_under_virtual_stages_by_nemo_release(release, per_chunk):
    # NeMo 2.0.0rc0/rc1 (24.05, 24.07: 0.7, 0.8) configure_optimizers cut Apex a group a layer even with virtual stages
    # (`buckets.extend(make_parameter_bucket(layer) for layer in layers)`); NeMo 2.0.0 (24.09: 0.9) one group a model
    # chunk (`buckets.append(make_parameter_bucket(module))`), read in the three wheels. No stated release: a layer.
    name = "nemo2407-gpt3-175b-128-h100-fp8"  # tp 4, pp 8, dp 4, 6 virtual stages: 96 / 48 = 2 layers a chunk
    raw = copy.deepcopy(catalog.load(f"scenarios/{name}"))
    if release is None:
        del raw["training"]["mcore_version"]
    else:
        raw["training"]["mcore_version"] = release
    scenario = config.from_dict(raw)
    plan = step_plan(scenario, lambda *a, **k: 1e-3)
    bucket = _apex_bucket(220 * MIB, 4)
    layer = layer_params_per_rank(scenario.model, 4)
    whole = lambda elements: math.ceil(elements / bucket) * bucket  # noqa: E731
    embedding = 51_200 // 4 * 12_288 + 2_048 * 12_288  # word embedding + learned positions, first chunk
    fp32 = whole(embedding) if release is not None else 0.0  # no stated release: in the bf16 part (round 26)
    bf16_rest = 0 if release is not None else embedding
    first, middle = plan.chunks[0], plan.chunks[1]
    assert first.layers == middle.layers == 2
    if per_chunk:
        # one group: both layers rounded to whole buckets together, reduced once the chunk's backward is done
        assert apex_group_elements(plan, first) == [(whole(2 * layer), fp32)]
        assert apex_group_elements(plan, middle) == [(whole(2 * layer), 0.0)]
        assert bucket_schedule(plan, middle)[1:] == ([0], 1)  # complete after the chunk's whole backward
    else:
        assert apex_group_elements(plan, first) == [(whole(layer), 0.0), (whole(layer + bf16_rest), fp32)]
        assert apex_group_elements(plan, middle) == [(whole(layer), 0.0)] * 2
        assert bucket_schedule(plan, middle)[1:] == ([0, 1], 2)
