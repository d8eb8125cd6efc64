"""PyTorch FSDP1 as Composer runs it for llm-foundry (parallel/fsdp_runtime.py): autograd's SplitWithSizesBackward
copies every unit's unsharded bf16 gradient once per microbatch on the compute stream (read 2 B + write 2 B a
parameter, one kernel a unit: torch 2.0/2.1 flat_param.py views, FunctionsManual.cpp split_with_sizes_backward).
FSDP2 (torchtitan) and Megatron-FSDP rows run other code and must not pay it."""

from __future__ import annotations

import pytest

from simcluster.parallel import fsdp_runtime, memory, plan
from simcluster.spec import config


def _chunk(name: str, monkeypatch=None, off: bool = False):
    scenario = config.load(name)
    if off:
        monkeypatch.setattr(fsdp_runtime, "applies", lambda s: False)
    return scenario, plan.plan(scenario, lambda op, group, size: 0.0).chunks[0]


def test_backward_copy_is_one_bf16_read_and_write_per_parameter_one_kernel_a_unit():
    """Unsharded (one rank: no pre-divide, ``_get_gradient_predivide_factor(1)`` is 1): only autograd's cat."""
    ops = fsdp_runtime.backward_ops(1.2e9, 42, 2.0, world=1)
    assert len(ops) == 42
    assert sum(op.hbm_bytes for op in ops) == pytest.approx(4.0 * 1.2e9)


@pytest.mark.parametrize(("world", "factor"), [(1, 1), (2, 2), (4, 2), (8, 4), (16, 4), (32, 8), (64, 8),
                                               (128, 16), (256, 16), (48, 8), (24, 8)])
def test_predivide_factor_is_torchs(world, factor):
    """torch/distributed/algorithms/_comm_hooks/default_hooks.py ``_get_gradient_predivide_factor`` (torch 2.0/2.1,
    which FSDP1's _init_utils uses): the largest power
    of two f reached while world % f == 0 and world / f > f, worked by hand; the post-divide is world / f."""
    assert fsdp_runtime.predivide_factor(world) == factor


def test_post_backward_pre_divide_reads_and_writes_the_unsharded_gradient_at_the_reduce_dtype():
    """``_reduce_grad``'s in-place ``_div_if_needed`` on the padded unsharded gradient, one kernel a unit: with bf16
    reduction (Composer PURE, or DEFAULT with FSDP1's inferred reduce dtype) 2 B + 2 B a parameter beside the cat's
    4 B; with fp32 reduction the cast ``grad.to(float32)`` (read 2 B, write 4 B) then the divide at 4 B + 4 B."""
    bf16 = fsdp_runtime.backward_ops(1.2e9, 42, 2.0, 2.0, world=8)
    assert len(bf16) == 2 * 42
    assert sum(op.hbm_bytes for op in bf16) == pytest.approx((4.0 + 4.0) * 1.2e9)
    fp32 = fsdp_runtime.backward_ops(1.2e9, 42, 2.0, 4.0, world=64)
    assert len(fp32) == 3 * 42
    assert sum(op.hbm_bytes for op in fp32) == pytest.approx((4.0 + 6.0 + 8.0) * 1.2e9)


def test_mpt_rows_reduce_gradients_in_bf16():
    """Every MPT row of llm-foundry's tables ran Composer's DEFAULT (param and buffer dtype only: FSDP1 infers the
    reduce dtype from the parameter dtype) or PURE (reduce dtype bf16): bf16 reduction either way."""
    names = [name for name in config.bundled_names() if name.startswith("mpt-")]
    assert len(names) == 16
    assert {config.load(name).parallelism.grad_reduce_dtype for name in names} == {"bf16"}


def test_mpt_backward_pays_the_side_stream_copy_only_in_its_hbm_bound_share(monkeypatch):
    """The cat runs on the unshard stream (autograd: a backward op on its forward op's stream; FSDP1 records the
    split under the unshard stream): no kernel of the compute stream, which loses the copy's HBM time only in its
    HBM-bound share -- more than nothing, less than the copy run serially at the roofline."""
    scenario, with_copy = _chunk("mpt-13b-8-h100")
    _, without = _chunk("mpt-13b-8-h100", monkeypatch, off=True)
    m = scenario.model
    params = memory.chunk_params(m, 1, m.layers, True, True, 1)
    serial = 4.0 * params / scenario.cluster.gpu.hbm_bandwidth   # 2 B read + 2 B written, at the roofline
    added = with_copy.backward_compute_s - without.backward_compute_s
    assert 0.0 < added < serial
    # no compute-stream kernel, hence no gap: the serial copy would add one 33 us gap a unit on top of ``serial``
    assert with_copy.forward_compute_s == without.forward_compute_s   # forward views cost no kernel


@pytest.mark.parametrize("name", ["torchtitan-llama31-8b-8-h100-fp8-32k", "moezoo-qwen3-235b-256-h100-fsdp",
                                  "nemo2511-llama3-70b-64-gb200-fp8"])
def test_other_fsdp_stacks_do_not_pay_it(name):
    assert not fsdp_runtime.applies(config.load(name))
    assert fsdp_runtime.applies(config.load("mpt-30b-32-h100"))


def test_optimizer_pieces_count_every_tensor_unsharded_and_one_a_unit_when_shards_are_small():
    # 40 layers of 12 tensors and the embedding unit: unsharded, every tensor is its own piece
    assert fsdp_runtime.optimizer_tensors(40, 41, 12, 1) == 40 * 12 + 1
    # shards much smaller than any tensor: one piece a unit, plus the boundaries' share
    assert fsdp_runtime.optimizer_tensors(40, 41, 12, 8) == pytest.approx(41 + 40 * 11 / 8)
    assert fsdp_runtime.optimizer_tensors(40, 41, 12, 10**9) == pytest.approx(41)


def test_side_stream_copy_costs_nothing_beside_compute_bound_kernels_and_its_roofline_beside_hbm_bound_ones():
    gpu = config.load("mpt-13b-8-h100").cluster.gpu
    assert fsdp_runtime.backward_interference_s(1.2e9, 42, 2.0, 0.0, gpu, "bf16") == 0.0
    full = fsdp_runtime.backward_interference_s(1.2e9, 42, 2.0, 1.0, gpu, "bf16", world=1)
    assert 4.0 * 1.2e9 / gpu.hbm_bandwidth <= full <= 4.0 * 1.2e9 / gpu.hbm_bandwidth / 0.7   # HBM efficiency
    # with the pre-divide beside it (8 ranks, bf16 reduction): twice the bytes
    both = fsdp_runtime.backward_interference_s(1.2e9, 42, 2.0, 1.0, gpu, "bf16", 2.0, 8)
    assert both == pytest.approx(2.0 * full)


def _with_zero(name: str, stage: int):
    scenario = config.load(name)
    return scenario.model_copy(update={"parallelism": scenario.parallelism.model_copy(update={"zero_stage": stage})})


def test_composer_shard_grad_op_runs_the_same_fsdp1_code():
    # Composer's SHARD_GRAD_OP (ZeRO-2) is FSDP1's flat-parameter code too; no sharding (ZeRO-0) is not FSDP1's
    assert fsdp_runtime.applies(_with_zero("mpt-7b-8-h100", 2))
    assert not fsdp_runtime.applies(_with_zero("mpt-7b-8-h100", 0))


def test_unsharded_decoupled_adamw_steps_every_local_tensor(monkeypatch):
    """ZeRO-0 (Composer has no ZeRO-1): DecoupledAdamW loops over every local parameter tensor, the layers' and the
    embedding's, not a distributed optimizer's share."""
    seen = []
    real = plan.optimizer_time_s
    monkeypatch.setattr(plan, "optimizer_time_s", lambda *a, **k: seen.append(a[6]) or real(*a, **k))
    scenario = _with_zero("mpt-7b-8-h100", 0)
    plan.plan(scenario, lambda op, group, size: 0.0)
    m = scenario.model
    layer_tensors = plan.optimizer_step.parameter_tensors_per_layer(m.norm, m.linear_biases)
    units = memory.zero3_units(m, m.layers, True, True, 1)
    assert seen == [pytest.approx(m.layers * layer_tensors + (units - m.layers))]
